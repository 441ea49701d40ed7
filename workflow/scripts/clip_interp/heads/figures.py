"""Figures of the heads study: grids of the explorer's analyses over the image set, and the cross-model figures.

Every grid cell shows an image as the model sees it (shorter side resized to the model's input size, centre
crop: :func:`clip_interp.images.centre_view`); maps are drawn over it with a colour scale from 0 to 1.
"""

from __future__ import annotations

import textwrap
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from ..images import centre_view
from ..plotting import annotated_heatmap, new_figure, ranked_picture_row, save_figure

MAP_ALPHA = 0.55


def model_view(path, size: int) -> np.ndarray:
    """The image at ``path`` as the model sees it (:func:`clip_interp.images.centre_view`, bicubic), (size, size, 3)
    floats in [0, 1]."""
    with Image.open(path) as image:
        return np.asarray(centre_view(image.convert("RGB"), size, Image.BICUBIC)) / 255.0


def _blank(ax) -> None:
    ax.set_xticks([]), ax.set_yticks([])


def _wrapped(text: str, width: int = 24, lines: int = 3) -> str:
    return "\n".join(textwrap.wrap(str(text), width)[:lines])


def neighbour_grid(groups: Sequence[tuple[str, np.ndarray | None, pd.DataFrame]], pictures: Mapping[int, np.ndarray],
                   paths, title: str) -> None:
    """One row per query: ``(label, query picture or None, neighbours table)``; the query (when it is an image)
    in the first column, then the neighbours in rank order with their scores."""
    k = max(int(rows["rank"].max()) for _, _, rows in groups)
    has_query = any(picture is not None for _, picture, _ in groups)
    n_cols = k + int(has_query)
    fig, axes = new_figure(len(groups), n_cols, figsize=(1.25 * n_cols, 1.45 * len(groups)), squeeze=False)
    for i, (label, picture, rows) in enumerate(groups):
        offset = int(has_query)
        if has_query:
            ax = axes[i][0]
            _blank(ax)
            if picture is None:
                ax.axis("off")
            else:
                ax.imshow(picture)
                ax.set_xlabel("query", fontsize=6)
        ranked_picture_row(axes[i][offset:offset + k], rows, pictures, caption="#{rank} {score:.3f}")
        axes[i][0].set_ylabel(_wrapped(label), fontsize=6)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, paths)


def map_grid(rows: Sequence[tuple[str, np.ndarray, Sequence[tuple[str, np.ndarray]]]], paths, title: str) -> None:
    """One row per (query image, text or pair): the image, then each ``(column title, map in [0, 1])`` over it. The
    titles are drawn over the first row when every row has the same columns, else over every map."""
    n_cols = 1 + max(len(maps) for _, _, maps in rows)
    same_columns = len({tuple(name for name, _ in maps) for _, _, maps in rows}) == 1
    fig, axes = new_figure(len(rows), n_cols, figsize=(1.4 * n_cols, 1.55 * len(rows)), squeeze=False)
    image_artist = None
    for i, (label, picture, maps) in enumerate(rows):
        ax = axes[i][0]
        _blank(ax)
        ax.imshow(picture)
        ax.set_ylabel(_wrapped(label), fontsize=6)
        for j in range(1, n_cols):
            ax = axes[i][j]
            _blank(ax)
            if j - 1 >= len(maps):
                ax.axis("off")
                continue
            name, values = maps[j - 1]
            ax.imshow(picture)
            image_artist = ax.imshow(values, cmap="inferno", vmin=0.0, vmax=1.0, alpha=MAP_ALPHA)
            if i == 0 or not same_columns:
                ax.set_title(_wrapped(name, 18, 2), fontsize=6)
    if image_artist is not None:
        fig.colorbar(image_artist, ax=axes, shrink=0.6, label="map (0 to 1 per image)")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, paths)


SCORE_COLUMNS = (("entanglement", "paper_entanglement", "entanglement (lower: more distinct heads)"),
                 ("association", "paper_association", "association (higher: texts match the label)"),
                 ("agreement", None, "label agreement with the published labels"))


def scores_per_model(table: pd.DataFrame, paths, title: str) -> None:
    """One panel per score: ours per model (bars) beside the paper's value (hatched) where it reports one."""
    fig, axes = new_figure(1, len(SCORE_COLUMNS), figsize=(4.2 * len(SCORE_COLUMNS), 3.6), squeeze=False)
    models = table["model"].tolist()
    x = np.arange(len(models))
    for ax, (ours, paper, label) in zip(axes[0], SCORE_COLUMNS):
        values = table[ours].to_numpy(dtype=float)
        ax.bar(x - 0.2 if paper else x, np.nan_to_num(values), width=0.4, label="this workflow", color="tab:blue")
        for xi, value in zip(x, values):
            shown = f"{value:.3f}" if np.isfinite(value) else "n/a"
            ax.text(xi - (0.2 if paper else 0), (value if np.isfinite(value) else 0) + 0.01, shown, ha="center",
                    va="bottom", fontsize=6, rotation=90)
        if paper:
            published = table[paper].to_numpy(dtype=float)
            ax.bar(x + 0.2, np.nan_to_num(published), width=0.4, label="paper", color="none", edgecolor="tab:orange",
                   hatch="//")
        ax.set_xticks(x, models, rotation=35, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(label, fontsize=8)
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, paths)


def property_distribution(counts: pd.DataFrame, paths, title: str) -> None:
    """Heads per property (rows) and model (columns), annotated counts."""
    fig, ax = new_figure(figsize=(1.1 * counts.shape[1] + 3, 0.32 * counts.shape[0] + 1.6))
    annotated_heatmap(ax, counts.to_numpy(dtype=float), limit=float(max(1, counts.to_numpy().max())), fmt="{:.0f}")
    ax.set_xticks(range(counts.shape[1]), counts.columns, rotation=35, ha="right", fontsize=7)
    ax.set_yticks(range(counts.shape[0]), counts.index, fontsize=7)
    ax.set_title(title, fontsize=9)
    save_figure(fig, paths)


def property_layers(table: pd.DataFrame, paths, title: str) -> None:
    """Per property (rows) and model (columns): the layers (1..L) where the property labels a head, with counts."""
    properties = sorted(table["label"].unique())
    models = list(dict.fromkeys(table["model"]))
    fig, ax = new_figure(figsize=(1.9 * len(models) + 2.5, 0.32 * len(properties) + 1.6))
    ax.set_xlim(-0.5, len(models) - 0.5), ax.set_ylim(len(properties) - 0.5, -0.5)
    for i, prop in enumerate(properties):
        for j, model in enumerate(models):
            rows = table[(table["label"] == prop) & (table["model"] == model)].sort_values("layer")
            text = ", ".join(f"L{int(r.layer)}×{int(r.n_heads)}" for r in rows.itertuples())
            ax.text(j, i, text or "-", ha="center", va="center", fontsize=6)
    ax.set_xticks(range(len(models)), models, rotation=35, ha="right", fontsize=7)
    ax.set_yticks(range(len(properties)), properties, fontsize=7)
    ax.grid(False)
    ax.set_title(title, fontsize=9)
    save_figure(fig, paths)
