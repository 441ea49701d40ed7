"""Figures of the decomposition study, drawn from its tables (and image files); no torch needed.

Layers are 1..L and heads 0..H-1 in every label, as in the tables.
"""

from __future__ import annotations

import textwrap
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..plotting import new_figure, ranked_picture_row, save_figure


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


def waterbirds_groups(table: pd.DataFrame, class_names: Sequence[str], paths, title: str) -> None:
    """Accuracy of each (class, place) group, the average and the worst group, before and after the ablation."""
    labels = [c.replace("landbird", class_names[0]).replace("waterbird", class_names[1]).replace("_", " ")
              for c in GROUP_COLUMNS]
    x = np.arange(len(GROUP_COLUMNS))
    fig, ax = new_figure(figsize=(7, 3.5))
    width = 0.8 / len(table)
    for k, row in enumerate(table.itertuples()):
        values = [getattr(row, c) for c in GROUP_COLUMNS]
        name = row.condition if row.condition == "baseline" else f"{row.n_heads_ablated} heads mean-ablated"
        ax.bar(x + (k - (len(table) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=25, ha="right", fontsize=7)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("zero-shot accuracy")
    ax.set_title(title)
    ax.legend(fontsize=7)
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
