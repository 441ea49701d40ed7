"""Figures of the decomposition study, drawn from its tables (and image files); no torch needed.

Layers are 1..L and heads 0..H-1 in every label, as in the tables.
"""

from __future__ import annotations

import textwrap
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..plotting import new_figure, ranked_picture_row, save_figure, symmetric_limit
from .spurious import ablation_label


def accuracy_vs_ablated_layers(table: pd.DataFrame, paths, title: str) -> None:
    """Zero-shot accuracy against k, the first k attention layers mean-ablated; dashed: no ablation and the
    mean embedding (everything ablated); the paper's rows where the table has them: the MLP group (the embedding
    term and every MLP) and the class-token-to-class-token attention terms mean-ablated."""
    curve = table.dropna(subset=["attention_layers_ablated"]).sort_values("attention_layers_ablated")
    fig, ax = new_figure(figsize=(5, 3.5))
    ax.plot(curve["attention_layers_ablated"], curve["accuracy"], marker="o", label="first k attention layers")
    reference = {"none": ("no ablation", "--", "grey"), "everything": ("mean embedding", ":", "grey"),
                 "mlp_group": ("MLP group ablated", "-.", "tab:orange"),
                 "class_attention": ("class-to-class attention ablated", "-.", "tab:green"),
                 "mlp_group_and_class_attention": ("both", ":", "tab:red")}
    for name, (label, style, colour) in reference.items():
        row = table[table["ablation"] == name]
        if not row.empty:
            ax.axhline(float(row["accuracy"].iloc[0]), linestyle=style, color=colour, linewidth=1, label=label)
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


SWEEP_STYLES = {"textspan": ("TEXTSPAN texts", "-", "o"), "random_texts": ("random pool texts", ":", "x"),
                "principal_components": ("principal components", "--", "s")}


def accuracy_vs_texts_per_head(table: pd.DataFrame, paths, title: str) -> None:
    """One panel per text pool (a ``textspan_sweep`` table): zero-shot accuracy against K, every head of the last
    layers replaced by its first K TEXTSPAN texts, by K random texts of the pool or by its top-K principal
    components (pool-free: the same line in every panel); grey: no ablation, and the heads kept exactly."""
    pools = list(dict.fromkeys(table["pool"].dropna()))
    fig, axes = new_figure(1, len(pools), figsize=(4.2 * len(pools), 3.4), squeeze=False, sharey=True)
    for ax, pool in zip(axes[0], pools):
        for method, (label, style, marker) in SWEEP_STYLES.items():
            rows = table[(table["method"] == method) & (table["pool"].isna() | (table["pool"] == pool))]
            rows = rows.sort_values("texts_per_head")
            ax.plot(rows["texts_per_head"], rows["accuracy"], linestyle=style, marker=marker, label=label)
        for column, label, style in (("accuracy_no_ablation", "no ablation", "--"),
                                     ("accuracy_heads_exact", "heads kept exactly", ":")):
            ax.axhline(float(table[column].iloc[0]), color="grey", linestyle=style, linewidth=1, label=label)
        ax.set_xlabel("texts per head K")
        ax.set_title(f"pool: {pool}", fontsize=9)
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("zero-shot accuracy")
    axes[0][0].legend(fontsize=7)
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


def _patch_grid(rows: pd.DataFrame) -> np.ndarray:
    """The (rows, columns) grid of a table's patch values (one image, text, scope, layer and head)."""
    grid = np.full((int(rows["patch_row"].max()) + 1, int(rows["patch_col"].max()) + 1), np.nan)
    grid[rows["patch_row"].to_numpy(dtype=int), rows["patch_col"].to_numpy(dtype=int)] = rows["value"].to_numpy()
    return grid


def _overlay(ax, picture: np.ndarray, grid: np.ndarray, limit: float, title: str):
    """The picture in grey (so that its colours do not mix with the map's) with the patch map over it (bilinear,
    diverging scale ``[-limit, limit]``, partly transparent)."""
    height, width = picture.shape[:2]
    white = 255 if np.issubdtype(picture.dtype, np.integer) else 1.0  # uint8, or floats in [0, 1]
    ax.imshow(np.asarray(picture, dtype=float).mean(axis=2), cmap="gray", vmin=0, vmax=white)
    image = ax.imshow(grid, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.7, extent=(0, width, height, 0),
                      interpolation="bilinear")
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(f"{title}\nsum {np.nansum(grid):+.3f}", fontsize=6)
    return image


def _pair_panels(table: pd.DataFrame, heads: Sequence[tuple[int, int]], last_layers: int):
    """The two rows of panels of one (image, text): [(title, grid)] for the model, the earlier layers summed (if
    any) and each of the last ``last_layers`` layers; and for each head."""
    n_layers = int(table["layer"].max())
    first = max(1, n_layers - last_layers + 1)
    layers = table[table["scope"] == "layer"]
    top = [("whole model", _patch_grid(table[table["scope"] == "model"]))]
    if first > 1:
        earlier = layers[layers["layer"] < first].groupby(["patch_row", "patch_col"], as_index=False)["value"].sum()
        top.append(("layer 1" if first == 2 else f"layers 1-{first - 1} summed", _patch_grid(earlier)))
    top += [(f"layer {layer}", _patch_grid(layers[layers["layer"] == layer])) for layer in range(first, n_layers + 1)]
    head_rows = table[table["scope"] == "head"]
    bottom = [(f"L{layer} H{head}", _patch_grid(head_rows[(head_rows["layer"] == layer) & (head_rows["head"] == head)]))
              for layer, head in heads]
    return top, bottom


def spatial_map_grids(table: pd.DataFrame, pictures: Mapping[str, np.ndarray],
                      heads: Mapping[tuple[str, str], Sequence[tuple[int, int]]], last_layers: int, paths,
                      title: str) -> None:
    """For each (image, text) of the spatial-maps table (in its order), two rows over the image: the image, the
    whole-model map, the earlier layers' maps summed and each of the last ``last_layers`` layers' maps (one colour
    scale); then the maps of the heads ``heads[(image, text)]`` (one colour scale). Red: adds to the text's score,
    blue: takes from it; each panel gives its sum over patches."""
    pairs = list(dict.fromkeys(zip(table["image"], table["text"])))
    panels = {pair: _pair_panels(table[(table["image"] == pair[0]) & (table["text"] == pair[1])], heads[pair],
                                 last_layers) for pair in pairs}
    n_cols = max(max(1 + len(top), len(bottom)) for top, bottom in panels.values())
    height = 1.6 * 2 * len(pairs) + 0.5
    fig, axes = new_figure(2 * len(pairs), n_cols, figsize=(1.45 * n_cols, height), squeeze=False)
    fig.subplots_adjust(top=1 - 0.75 / height, bottom=0.1 / height, hspace=0.4)
    for i, pair in enumerate(pairs):
        top, bottom = panels[pair]
        picture = pictures[pair[0]]
        axes[2 * i][0].imshow(picture)
        axes[2 * i][0].set_xticks([]), axes[2 * i][0].set_yticks([])
        label = "\n".join(textwrap.wrap(f"{pair[0]}: {pair[1]}", 24)[:4])
        axes[2 * i][0].set_title(label, fontsize=6)
        for row, cells, offset in ((2 * i, top, 1), (2 * i + 1, bottom, 0)):
            limit = symmetric_limit(*[grid for _, grid in cells]) if cells else 1.0
            for j, (name, grid) in enumerate(cells):
                drawn = _overlay(axes[row][offset + j], picture, grid, limit, name)
            for ax in axes[row][offset + len(cells):]:
                ax.axis("off")
            if cells:
                fig.colorbar(drawn, ax=list(axes[row]), fraction=0.015, pad=0.01).ax.tick_params(labelsize=5)
    fig.suptitle("\n".join(textwrap.wrap(title, int(14 * 1.45 * n_cols))), fontsize=9, y=1 - 0.1 / height)
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


def protocol_report_figure(report: pd.DataFrame, paths, title: str) -> None:
    """One panel per experiment: each setting and metric's difference (alternative - paper's protocol) under every
    alternative, as horizontal bars; a zero line marks no change."""
    experiments = list(dict.fromkeys(report["experiment"])) or ["(no experiment)"]
    heights = [max(1, report[report["experiment"] == e].groupby(["setting", "metric"]).ngroups) for e in experiments]
    fig, axes = new_figure(len(experiments), 1, figsize=(7, 1.0 + 0.22 * sum(heights) + 0.5 * len(experiments)),
                           squeeze=False, gridspec_kw={"height_ratios": heights})
    alternatives = sorted(report["alternative"].unique())
    for ax, experiment in zip(axes[:, 0], experiments):
        rows = report[report["experiment"] == experiment]
        labels = list(dict.fromkeys(f"{s} · {m}" for s, m in zip(rows["setting"], rows["metric"])))
        width = 0.8 / max(len(alternatives), 1)
        for k, alternative in enumerate(alternatives):
            part = rows[rows["alternative"] == alternative]
            positions = [labels.index(f"{s} · {m}") + k * width for s, m in zip(part["setting"], part["metric"])]
            ax.barh(positions, part["difference"], height=width, label=alternative)
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.set_yticks([i + 0.4 - width / 2 for i in range(len(labels))], labels, fontsize=6)
        ax.invert_yaxis()
        ax.set_title(experiment, fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    axes[-1, 0].set_xlabel("difference from the paper's protocol (alternative - paper)")
    if alternatives:
        axes[0, 0].legend(fontsize=6, loc="best")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, paths)
