"""Figures of the decomposition study, drawn from its tables (and image files); no torch needed.

Layers are 1..L and heads 0..H-1 in every label, as in the tables.
"""

from __future__ import annotations

import textwrap
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..plotting import new_figure, ranked_picture_row, save_figure
from .spurious import ablation_label


def accuracy_vs_ablated_layers(table: pd.DataFrame, paths, title: str) -> None:
    """Zero-shot accuracy against k, the first k attention layers mean-ablated; dashed: no ablation and the
    mean embedding (everything ablated); dotted: every MLP ablated, where the table has it."""
    curve = table.dropna(subset=["attention_layers_ablated"]).sort_values("attention_layers_ablated")
    fig, ax = new_figure(figsize=(5, 3.5))
    ax.plot(curve["attention_layers_ablated"], curve["accuracy"], marker="o", label="first k attention layers")
    reference = {"none": ("no ablation", "--"), "everything": ("mean embedding", ":"),
                 "all_mlps": ("all MLPs ablated", "-.")}
    for name, (label, style) in reference.items():
        row = table[table["ablation"] == name]
        if not row.empty:
            ax.axhline(float(row["accuracy"].iloc[0]), linestyle=style, color="grey", linewidth=1, label=label)
    ax.set_xlabel("attention layers mean-ablated (1..k)")
    ax.set_ylabel("zero-shot accuracy")
    ax.set_xticks(curve["attention_layers_ablated"].astype(int).tolist())
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=7)
    save_figure(fig, paths)


def head_cards(table: pd.DataFrame, paths, n_texts: int, title: str) -> None:
    """One card per head (rows: layers, columns: heads): its first ``n_texts`` TEXTSPAN texts with their shares."""
    layers = sorted(table["layer"].unique())
    heads = sorted(table["head"].unique())
    fig, axes = new_figure(len(layers), len(heads), figsize=(3.2 * len(heads), (0.65 + 0.17 * n_texts) * len(layers)),
                           squeeze=False)
    for i, layer in enumerate(layers):
        for j, head in enumerate(heads):
            ax = axes[i][j]
            ax.set_xticks([]), ax.set_yticks([])
            rows = table[(table["layer"] == layer) & (table["head"] == head)].sort_values("rank").head(n_texts)
            lines = [f"{r.rank}. {textwrap.shorten(str(r.text), 38)} ({100 * r.share:.1f}%)" for r in rows.itertuples()]
            ax.text(0.03, 0.95, "\n".join(lines), va="top", ha="left", fontsize=6.5, transform=ax.transAxes)
            ax.set_title(f"L{layer} H{head}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, paths)


def segmentation_examples(images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                          maps: Mapping[str, Sequence[np.ndarray]], paths, title: str) -> None:
    """Rows: images; columns: the image, its true mask, then each method's soft map with its mean threshold contour."""
    methods = list(maps)
    fig, axes = new_figure(len(images), 2 + len(methods), figsize=(1.7 * (2 + len(methods)), 1.7 * len(images)),
                           squeeze=False)
    for i, (image, mask) in enumerate(zip(images, masks)):
        panels = [(image, "image", None), (mask, "true mask", "gray")]
        panels += [(maps[m][i], m.replace("_", " "), "viridis") for m in methods]
        for j, (panel, label, cmap) in enumerate(panels):
            ax = axes[i][j]
            ax.imshow(panel, cmap=cmap, vmin=0 if cmap else None, vmax=1 if cmap else None)
            if j >= 2:
                ax.contour(panel > panel.mean(), levels=[0.5], colors="white", linewidths=0.6)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(label, fontsize=7)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, paths)


GROUP_COLUMNS = ("landbird_on_land", "landbird_on_water", "waterbird_on_land", "waterbird_on_water",
                 "average", "worst_group")


def waterbirds_groups(table: pd.DataFrame, class_names: Sequence[str], paths, title: str, n_layers: int) -> None:
    """Accuracy of each (class, place) group, the average and the worst group: baseline and every ablation of
    :func:`~clip_interp.decomposition.spurious.spurious_table`, each named by
    :func:`~clip_interp.decomposition.spurious.ablation_label` (the configured one marked)."""
    labels = [c.replace("landbird", class_names[0]).replace("waterbird", class_names[1]).replace("_", " ")
              for c in GROUP_COLUMNS]
    x = np.arange(len(GROUP_COLUMNS))
    fig, ax = new_figure(figsize=(7.5, 3.8))
    width = 0.8 / len(table)
    for k, row in enumerate(table.itertuples()):
        values = [getattr(row, c) for c in GROUP_COLUMNS]
        ax.bar(x + (k - (len(table) - 1) / 2) * width, values, width, label=ablation_label(row, n_layers),
               hatch=None if row.ablation_mode == "none" or row.configured else "//")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=25, ha="right", fontsize=7)
    ax.set_ylim(0, 1.02 + 0.09 * len(table))  # room above the bars for the legend
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("zero-shot accuracy")
    ax.set_title(title)
    ax.legend(fontsize=6, loc="upper left")
    save_figure(fig, paths)


def neighbour_grids(table: pd.DataFrame, images: Mapping[int, np.ndarray], paths, title: str) -> None:
    """One row per (head, query): the query's label, then its neighbours in rank order with their scores."""
    groups = list(table.groupby(["layer", "head", "query"], sort=False))
    k = int(table["rank"].max())
    fig, axes = new_figure(len(groups), k, figsize=(1.3 * k, 1.5 * len(groups)), squeeze=False)
    for i, ((layer, head, query), rows) in enumerate(groups):
        ranked_picture_row(axes[i][:k], rows, images)
        label = "\n".join(textwrap.wrap(str(query), 22)[:3])
        axes[i][0].set_ylabel(f"L{layer} H{head}\n{label}", fontsize=6)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, paths)
