"""Summaries and figures of the single-colour ablation of the image tower's attention and MLP blocks.

Per instance there is a caption ``c``, a foil ``f`` and an image ``i``; ``S(t, i)`` is CLIP's
logit ``logit_scale * cos(image embedding, text embedding)`` and ``d = S(c, i) - S(f, i)``.
The single-colour image sets every channel of the preprocessed image to its mean over the
image. Ablating block ``l`` (1..L) of component ``"mha"`` (``"mlp"``) replaces, in the real
image's forward, the attention (MLP) output of block ``l`` at every position by the
single-colour image's output of the same block. ``S*`` uses the ablated image embedding,
``d* = S*(c, i) - S*(f, i)`` and the image ablation effect is ``IAE(l) = d - d*``.

An ablation *improved* an instance if ``d* > d`` (``IAE < 0``), *worsened* it if ``d* < d``
(``IAE > 0``) and left it *unchanged* if ``d* = d``; it *ends correct* if ``d* > 0``.
Instances are correct before the ablation if ``d > 0``.

:func:`.image_ablation.image_ablation_from_caches` computes the per-instance table;
:func:`ablation_summary` aggregates it per component, negation side, segment and layer, and
:func:`plot_component_ablation` / :func:`plot_mha_vs_mlp` draw Figures 12-14.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from ..errors import InputError
from ..plotting import layer_profile, new_figure
from .labels import COMPONENTS, NEGATION_SIDES
from .scores import SEGMENTS, segment_of
from .statistics import standard_error

COMPONENT_LABELS = {"mha": "MHA (attention)", "mlp": "MLP"}
OUTCOMES = ("improved_correct", "improved_incorrect", "worsened_correct", "worsened_incorrect")
SUMMARY_COLUMNS = [
    "component", "negation", "segment", "layer", "n", "mean_iae", "sem_iae", "mean_d", "mean_d_star",
    "mean_delta_S_caption", "mean_delta_S_foil", *OUTCOMES, "unchanged", "accuracy_before", "accuracy_after",
]
SUMMARY_SEGMENTS = ("all", *SEGMENTS)
FIGURE_SEGMENT = "correct"
IAE_AVERAGE_COLUMNS = ["component", "segment", "negation", "n", "n_layers", "mean_iae_over_layers"]


def ablation_summary(table: pd.DataFrame, correct: float = 1.0, incorrect: float = -1.0) -> pd.DataFrame:
    """Per component x negation side x segment x layer: IAE statistics, outcome counts and accuracies.

    ``segment`` is the instance's segment before the ablation (``segment_of(d, correct,
    incorrect)``) or ``"all"``. ``mean_iae`` and ``sem_iae`` are the mean of ``IAE = d - d*``
    and its standard error (sample standard deviation / sqrt(n)); ``improved_correct`` counts
    ``d* > d`` and ``d* > 0``, ``improved_incorrect`` ``d* > d`` and ``d* <= 0``,
    ``worsened_*`` likewise with ``d* < d``, ``unchanged`` ``d* = d``; ``accuracy_before`` and
    ``accuracy_after`` are the fractions with ``d > 0`` and ``d* > 0``. ``mean_delta_S_caption`` and
    ``mean_delta_S_foil`` are the means of ``S*(c,i) − S(c,i)`` and ``S*(f,i) − S(f,i)``, which show
    how each score moves on its own (``IAE = ΔS(f) − ΔS(c)``). Every combination of
    the table's components and layers, both sides and all segments has a row (``n = 0`` and NaN
    statistics where no instance falls in it).
    """
    needed = {"key", "negation", "layer", "component", "d", "d_star", "iae", "S_caption", "S_foil",
              "S_caption_patched", "S_foil_patched"}
    missing = needed - set(table.columns)
    if missing:
        raise InputError(f"image ablation table lacks column(s) {sorted(missing)}; re-run the image_ablation rule")
    if not incorrect < correct:
        raise InputError(f"negation.segments: incorrect ({incorrect}) must be below correct ({correct})")
    unknown = sorted(set(table["component"]) - set(COMPONENTS))
    if unknown:
        raise InputError(f"image ablation table has unknown component(s) {unknown}; expected {sorted(COMPONENTS)}")
    bad_sides = sorted(set(table["negation"].astype(str)) - set(NEGATION_SIDES))
    if bad_sides:
        raise InputError(f"image ablation table has negation values {bad_sides}, not 'caption' or 'foil'")
    df = table.assign(segment=segment_of(table["d"].to_numpy(), correct, incorrect))
    df = pd.concat([df.assign(segment="all"), df], ignore_index=True)
    improved, worsened = df["d_star"] > df["d"], df["d_star"] < df["d"]
    ends_correct = df["d_star"] > 0
    df = df.assign(
        improved_correct=improved & ends_correct, improved_incorrect=improved & ~ends_correct,
        worsened_correct=worsened & ends_correct, worsened_incorrect=worsened & ~ends_correct,
        unchanged=df["d_star"] == df["d"], before=df["d"] > 0, after=ends_correct,
        delta_S_caption=df["S_caption_patched"] - df["S_caption"], delta_S_foil=df["S_foil_patched"] - df["S_foil"],
    )
    group = ["component", "negation", "segment", "layer"]
    grouped = df.groupby(group, sort=False)
    stats = grouped.agg(
        n=("iae", "size"), mean_iae=("iae", "mean"), sem_iae=("iae", standard_error), mean_d=("d", "mean"),
        mean_d_star=("d_star", "mean"), mean_delta_S_caption=("delta_S_caption", "mean"),
        mean_delta_S_foil=("delta_S_foil", "mean"), **{o: (o, "sum") for o in (*OUTCOMES, "unchanged")},
        accuracy_before=("before", "mean"), accuracy_after=("after", "mean"),
    )
    components = [c for c in COMPONENTS if c in set(table["component"])]
    full = pd.MultiIndex.from_product(
        [components, list(NEGATION_SIDES), list(SUMMARY_SEGMENTS), sorted(table["layer"].unique())], names=group)
    out = stats.reindex(full).reset_index()
    count_cols = ["n", *OUTCOMES, "unchanged"]
    out[count_cols] = out[count_cols].fillna(0).astype(np.int64)
    out["layer"] = out["layer"].astype(np.int16)
    return out[SUMMARY_COLUMNS]


def iae_averages(table: pd.DataFrame, correct: float = 1.0, incorrect: float = -1.0) -> pd.DataFrame:
    """The study's IAE average per component: the mean over ablated layers of the mean IAE over
    instances, per segment (``all`` and each segment of d before the ablation) and negation side,
    with ``negation = "both"`` pooling the instances of both sides (the study: MLP 0.73, MHA 0.38).

    ``n`` is the number of instances, ``n_layers`` the number of layers averaged; NaN where no
    instance falls in the group.
    """
    summary = ablation_summary(table, correct, incorrect)
    df = table.assign(segment=segment_of(table["d"].to_numpy(), correct, incorrect))
    df = pd.concat([df.assign(segment="all"), df], ignore_index=True)
    df = pd.concat([df, df.assign(negation="both")], ignore_index=True)
    per_layer = df.groupby(["component", "segment", "negation", "layer"])["iae"].mean()
    averages = per_layer.groupby(["component", "segment", "negation"]).agg(["mean", "size"])
    counts = df.groupby(["component", "segment", "negation"])["key"].nunique()
    components = [c for c in COMPONENTS if c in set(summary["component"])]
    full = pd.MultiIndex.from_product([components, list(SUMMARY_SEGMENTS), ["both", *NEGATION_SIDES]],
                                      names=["component", "segment", "negation"])
    out = pd.DataFrame({
        "n": counts.reindex(full, fill_value=0).astype(np.int64),
        "n_layers": averages["size"].reindex(full, fill_value=0).astype(np.int64),
        "mean_iae_over_layers": averages["mean"].reindex(full),
    }).reset_index()
    return out[IAE_AVERAGE_COLUMNS]


def _segment_words(segment: str) -> str:
    return "all instances" if segment == "all" else f"{segment} segment"


def _not_configured(ax, component: str) -> None:
    ax.text(0.5, 0.5, f"{COMPONENT_LABELS[component]} ablation not configured\n"
            "(negation.image_ablation.components)", ha="center", va="center", transform=ax.transAxes, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_component_ablation(summary: pd.DataFrame, component: str, model: str, segment: str = FIGURE_SEGMENT):
    """Figures 12 (MHA) and 13 (MLP): per negation side, mean IAE per layer and the outcome counts per layer,
    over the instances of one ``segment`` (the study's correct segment by default, or ``"all"``).

    Top row: mean ``IAE = d - d*`` over the segment's instances per ablated layer, with the standard
    error as error bars. Bottom row: per layer the instances improved (``d* > d``, above zero)
    and worsened (``d* < d``, below zero), each split into ending correct (``d* > 0``) and
    ending incorrect. A component absent from ``summary`` gives a figure saying it was not configured.
    """
    from matplotlib.ticker import FuncFormatter

    label = COMPONENT_LABELS[component]
    title = f"{model}: single-colour ablation of the image tower's {label} output per layer, {_segment_words(segment)}"
    part = summary[(summary["component"] == component) & (summary["segment"] == segment)]
    if part.empty:
        fig, ax = new_figure(figsize=(10, 3))
        _not_configured(ax, component)
        fig.suptitle(title, fontsize=11)
        fig.tight_layout()
        return fig
    fig, axes = new_figure(2, 2, figsize=(10, 6.5), sharex="col", gridspec_kw={"height_ratios": [1, 1.2]})
    fig.suptitle(title, fontsize=11)
    colours = {"improved_correct": "#1a9850", "improved_incorrect": "#a6d96a",
               "worsened_correct": "#fdae61", "worsened_incorrect": "#d73027"}
    names = {"improved_correct": "improved, ends correct", "improved_incorrect": "improved, ends incorrect",
             "worsened_correct": "worsened, ends correct", "worsened_incorrect": "worsened, ends incorrect"}
    for c, side in enumerate(NEGATION_SIDES):
        rows = part[part["negation"] == side].sort_values("layer")
        layers = rows["layer"].to_numpy()
        n = int(rows["n"].max()) if len(rows) else 0
        top, bottom = axes[0, c], axes[1, c]
        top.bar(layers, rows["mean_iae"], yerr=rows["sem_iae"].fillna(0), color="tab:blue", alpha=0.8,
                capsize=3, ecolor="black", error_kw={"lw": 0.8})
        top.axhline(0, color="black", lw=0.6)
        acc = rows["accuracy_before"].iloc[0] if len(rows) else np.nan
        top.set_title(f"negation in {side}, {_segment_words(segment)} (n={n}, accuracy before ablation {acc:.2f})",
                      fontsize=9)
        top.set_ylabel("mean IAE = d − d*  (± s.e.m.)")
        up = np.zeros(len(rows))
        for outcome in ("improved_correct", "improved_incorrect"):
            bottom.bar(layers, rows[outcome], bottom=up, color=colours[outcome], label=names[outcome])
            up += rows[outcome].to_numpy()
        down = np.zeros(len(rows))
        for outcome in ("worsened_correct", "worsened_incorrect"):
            bottom.bar(layers, -rows[outcome], bottom=down, color=colours[outcome], label=names[outcome])
            down -= rows[outcome].to_numpy()
        bottom.axhline(0, color="black", lw=0.6)
        top_count, bottom_count = max(up.max(initial=0), 1), down.min(initial=0)
        pad = 0.08 * (top_count - bottom_count)
        bottom.set_ylim(bottom_count - pad, top_count + pad)
        bottom.set_ylabel("instances: improved (↑) / worsened (↓)")
        bottom.set_xlabel("ablated layer of the image tower")
        bottom.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{abs(v):g}"))
        bottom.set_xticks(layers)
    handles, labels = axes[1, 0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    return fig


def plot_mha_vs_mlp(summary: pd.DataFrame, model: str, segment: str = FIGURE_SEGMENT):
    """Figure 14: mean IAE per layer of the MHA and MLP ablations, one panel per negation side, over
    the instances of one ``segment`` (the study's correct segment by default, or ``"all"``).

    Dashed horizontal lines give each component's mean IAE averaged over the layers (the
    value is in the legend). A component absent from ``summary`` is named as not configured.
    """
    fig, axes = new_figure(1, 2, figsize=(10, 3.8), sharey=True)
    part = summary[summary["segment"] == segment]
    colours = {COMPONENT_LABELS["mha"]: "tab:blue", COMPONENT_LABELS["mlp"]: "tab:orange"}
    absent = [c for c in COMPONENTS if c not in set(part["component"])]
    for ax, side in zip(axes, NEGATION_SIDES):
        n = 0
        lines, errors, averages = {}, {}, {}
        for comp in COMPONENTS:
            rows = part[(part["component"] == comp) & (part["negation"] == side)].sort_values("layer")
            if rows.empty:
                continue
            n = int(rows["n"].max())
            lines[COMPONENT_LABELS[comp]] = (rows["layer"].to_numpy(), rows["mean_iae"].to_numpy(dtype=float))
            errors[COMPONENT_LABELS[comp]] = rows["sem_iae"].to_numpy(dtype=float)
            averages[COMPONENT_LABELS[comp]] = rows["mean_iae"].mean()
        layer_profile(ax, lines, errors=errors, colours=colours, markersize=4, integer_ticks=True, grid=False,
                      title=f"negation in {side}, {_segment_words(segment)} (n={n})",
                      xlabel="ablated layer of the image tower")
        for label, average in averages.items():
            ax.axhline(average, color=colours[label], ls="--", lw=1,
                       label=f"{label}: average over layers {average:.3f}")
        ax.axhline(0, color="black", lw=0.6)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    axes[0].set_ylabel("mean IAE = d − d*  (± s.e.m.)")
    note = f"\n(not configured: {', '.join(COMPONENT_LABELS[c] for c in absent)})" if absent else ""
    fig.suptitle(f"{model}: image ablation effect of the MHA vs the MLP output per layer{note}", fontsize=11)
    fig.tight_layout()
    return fig


def plot_ablation_by_segment(summary: pd.DataFrame, model: str, components: Iterable[str]):
    """Figures 12-14 by segment: mean IAE per layer (± s.e.m.) of ``components`` (one line each), one
    panel per negation side (rows) and segment of d before the ablation (columns)."""
    components = list(components)
    fig, axes = new_figure(len(NEGATION_SIDES), len(SEGMENTS), figsize=(4.2 * len(SEGMENTS), 6.4), sharey=True,
                           squeeze=False)
    colours = {COMPONENT_LABELS["mha"]: "tab:blue", COMPONENT_LABELS["mlp"]: "tab:orange"}
    present = [c for c in components if c in set(summary["component"])]
    for r, side in enumerate(NEGATION_SIDES):
        for c, seg in enumerate(SEGMENTS):
            ax = axes[r, c]
            lines, errors, n = {}, {}, 0
            for comp in present:
                rows = summary[(summary["component"] == comp) & (summary["negation"] == side)
                               & (summary["segment"] == seg)].sort_values("layer")
                n = int(rows["n"].max()) if len(rows) else 0
                lines[COMPONENT_LABELS[comp]] = (rows["layer"].to_numpy(), rows["mean_iae"].to_numpy(dtype=float))
                errors[COMPONENT_LABELS[comp]] = rows["sem_iae"].to_numpy(dtype=float)
            layer_profile(ax, lines, errors=errors, colours=colours, markersize=4, integer_ticks=True, grid=False,
                          title=f"negation in {side}, {seg} (n={n})", xlabel="ablated layer")
            ax.axhline(0, color="black", lw=0.6)
            if n == 0:
                ax.text(0.5, 0.5, "n = 0", ha="center", va="center", transform=ax.transAxes, color="0.4")
        axes[r, 0].set_ylabel("mean IAE = d − d*  (± s.e.m.)")
    absent = [COMPONENT_LABELS[c] for c in components if c not in present]
    if present:
        axes[0, 0].legend(fontsize=8)
    note = f" (no data: {', '.join(absent)})" if absent else ""
    names = " and ".join(COMPONENT_LABELS[c] for c in components)
    fig.suptitle(f"{model}: image ablation effect of the {names} output by segment{note}", fontsize=11)
    fig.tight_layout()
    return fig


def plot_caption_foil_scores(summary: pd.DataFrame, model: str, segment: str = FIGURE_SEGMENT):
    """The ablation follow-up: per negation side (columns) and component (rows), the mean change of
    each score, ``ΔS(c) = S*(c,i) − S(c,i)`` and ``ΔS(f) = S*(f,i) − S(f,i)``, per ablated layer,
    over the instances of ``segment``; their difference is ``−IAE``. A component absent from
    ``summary`` is named as not configured."""
    fig, axes = new_figure(len(COMPONENTS), len(NEGATION_SIDES), figsize=(10, 6.4), sharex=True, squeeze=False)
    part = summary[summary["segment"] == segment]
    for r, comp in enumerate(COMPONENTS):
        for c, side in enumerate(NEGATION_SIDES):
            ax = axes[r, c]
            rows = part[(part["component"] == comp) & (part["negation"] == side)].sort_values("layer")
            if rows.empty:
                _not_configured(ax, comp)
                continue
            n = int(rows["n"].max())
            layers = rows["layer"].to_numpy()
            layer_profile(ax, {"ΔS(c) = S*(c,i) − S(c,i)": (layers, rows["mean_delta_S_caption"]),
                               "ΔS(f) = S*(f,i) − S(f,i)": (layers, rows["mean_delta_S_foil"])},
                          colours={"ΔS(c) = S*(c,i) − S(c,i)": "tab:green", "ΔS(f) = S*(f,i) − S(f,i)": "tab:red"},
                          markersize=4, integer_ticks=True, grid=False, zero_line=True,
                          title=f"{COMPONENT_LABELS[comp]}, negation in {side} (n={n})",
                          xlabel="ablated layer of the image tower")
            ax.set_ylabel("mean score change")
            if n == 0:
                ax.text(0.5, 0.5, "n = 0", ha="center", va="center", transform=ax.transAxes, color="0.4")
            else:
                ax.legend(fontsize=7)
    fig.suptitle(f"{model}: how the caption's and the foil's scores move under single-colour ablation, "
                 f"{_segment_words(segment)}", fontsize=11)
    fig.tight_layout()
    return fig
