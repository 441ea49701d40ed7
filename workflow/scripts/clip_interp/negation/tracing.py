"""Causal tracing of negation in the text tower, summarised over the 8 generic token positions.

Per instance (caption ``c``, foil ``f``, image ``i``, ``S`` = logit_scale · cos) the score is
``d = S(c, i) − S(f, i)``. The non-negated sentence is run with the image while the residual
stream at one layer ``l`` (0 = embedding output, ..., L = last block's output) and one token
position ``p`` is overwritten with the negated sentence's activation at ``(l, p)``; ``S*`` is
the similarity of this patched sentence. With the negation in the foil
``d* = S(c, i) − S*(c, i)``; with the negation in the caption ``d* = S*(f, i) − S(f, i)``; the
causal tracing effect is ``CTE(l, p) = d* / d`` (the share of the score that the patch
restores). :func:`clip_interp.negation.causal_tracing.causal_tracing_effects` computes it per
instance × layer × token position; this module selects the instances, maps token positions
onto the generic positions and aggregates.

**Generic positions** (:data:`GENERIC_NAMES`): SOT, There, is/are, negator (the quantifier
slot of the non-negated sentence), first subject token, further subject tokens (every token
strictly between the first subject token and the full stop), full stop, EOT. An instance's
CTE at a generic position is the mean CTE over the token positions the slot stands for; the
slot's **weight** is the number of those positions (1 for every slot but the further
subject tokens, which may stand for 0 tokens; their CTE is then 0 with weight 0).

**Averages over instances** are weighted by these weights: the mean CTE of a slot over a
group of instances is ``Σ_n w_n · CTE_n / Σ_n w_n``, which equals the plain mean over all
token positions the slot stands for in the group.

**Localisation** of a layer is the population standard deviation (``ddof = 0``) of the CTE
over the generic positions from the negator on (:data:`LOCALISATION_POSITIONS`: negator,
subject_first, subject_further, full_stop, EOT). The main value (``localisation``) is taken
on the group's averaged CTE profile (the row of the averaged heatmap); positions that stand
for no token in the whole group are left out. ``localisation_instance_mean`` is the mean over
instances of the same standard deviation taken on each instance's own profile (leaving out
its weight-0 slot). A low value means the effect is spread evenly over the positions from
the negator on; a high value means it sits at few positions.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from ..errors import InputError
from ..plotting import new_figure
from ..store import match_rows, read_array, read_keys
from .labels import NEGATION_SIDES
from .positions import GENERIC_NAMES, generic_position_map
from .scores import SEGMENTS

LOCALISATION_POSITIONS = ("negator", "subject_first", "subject_further", "full_stop", "EOT")
ALL_SEGMENTS = "all"
SUMMARY_SEGMENTS = (ALL_SEGMENTS, *SEGMENTS)
GENERIC_COLUMNS = ["key", "negation", "layer", "generic_position", "cte", "weight", "d"]
SUMMARY_COLUMNS = ["negation", "segment", "layer", "generic_position", "cte", "n", "n_tokens"]
LOCALISATION_COLUMNS = ["negation", "segment", "layer", "localisation", "localisation_instance_mean", "n"]
EXCLUSION_REASONS = ("positions_failed", "unequal_length", "not_generic", "differs_before_negator")
POSITION_LABELS = {
    "SOT": "SOT", "There": "There", "is/are": "is/are", "negator": "negator", "subject_first": "subject\n(first)",
    "subject_further": "subject\n(further)", "full_stop": "full stop", "EOT": "EOT",
}
_REQUIRED_POSITION_COLUMNS = (
    "key", "negation", "negated_ids", "non_negated_ids", "negator_pos",
    "subject_first_pos", "full_stop_pos", "eot_pos_negated", "equal_length", "generic_ok", "positions_ok",
)


# --------------------------------------------------------------------------- instances


def _differs_before_negator(row) -> bool:
    neg_pos = int(row["negator_pos"])
    return list(row["negated_ids"])[:neg_pos] != list(row["non_negated_ids"])[:neg_pos]


def _differs_beyond_negator(row) -> bool:
    neg, non = list(row["negated_ids"]), list(row["non_negated_ids"])
    p = int(row["negator_pos"])
    return neg[p + 1:] != non[p + 1:]


def select_tracing_instances(positions: pd.DataFrame, source: str | Path = "positions table"
                             ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The rows of a token-positions table that causal tracing over generic positions can use.

    A row is kept when ``positions_ok``, ``equal_length`` and ``generic_ok`` hold and both
    sentences agree on every token before the negator. Each excluded row is counted under the
    first reason it fails (:data:`EXCLUSION_REASONS`, in that order). Returns the kept rows
    (all columns, plus ``eot_pos`` and the id columns as lists of ints, in table order) and a
    report: ``rows``, ``kept``, ``excluded`` (count per reason), ``excluded_keys`` (keys per
    reason) and ``differs_beyond_negator`` (kept rows whose sentences also differ after the
    negator, so patching the negator alone does not turn one sentence into the other).
    Raises InputError naming ``source`` when a column is missing, keys repeat or no row is left.
    """
    missing = [c for c in _REQUIRED_POSITION_COLUMNS if c not in positions.columns]
    if missing:
        raise InputError(f"{source}: missing column(s) {missing}; re-run the token_positions rule")
    duplicated = positions["key"][positions["key"].duplicated()].unique().tolist()
    if duplicated:
        raise InputError(f"{source}: {len(duplicated)} keys occur more than once, e.g. {duplicated[:3]}")
    table = positions.reset_index(drop=True)
    reason = pd.Series("", index=table.index, dtype=object)
    reason[~table["positions_ok"].astype(bool)] = "positions_failed"
    undecided = reason == ""
    reason[undecided & ~table["equal_length"].astype(bool)] = "unequal_length"
    undecided = reason == ""
    reason[undecided & ~table["generic_ok"].astype(bool)] = "not_generic"
    undecided = reason == ""
    before = np.array([_differs_before_negator(r) if u else False for (_, r), u in zip(table.iterrows(), undecided)],
                      dtype=bool)
    reason[undecided & before] = "differs_before_negator"
    kept = table[reason == ""].copy()
    excluded = {r: int((reason == r).sum()) for r in EXCLUSION_REASONS}
    report = {
        "rows": len(table),
        "kept": len(kept),
        "excluded": excluded,
        "excluded_keys": {r: table.loc[reason == r, "key"].astype(str).tolist() for r in EXCLUSION_REASONS},
        "differs_beyond_negator": int(sum(_differs_beyond_negator(r) for _, r in kept.iterrows())),
    }
    if kept.empty:
        raise InputError(
            f"{source}: no instance is left for causal tracing out of {len(table)} rows (excluded: "
            + ", ".join(f"{r} {n}" for r, n in excluded.items())
            + "); it needs rows with positions_ok, equal_length (the rephrased variant) and generic_ok"
        )
    kept["negated_ids"] = [[int(i) for i in ids] for ids in kept["negated_ids"]]
    kept["non_negated_ids"] = [[int(i) for i in ids] for ids in kept["non_negated_ids"]]
    kept["eot_pos"] = kept["eot_pos_negated"].astype(np.int64)
    return kept.reset_index(drop=True), report


def image_embeddings_for_keys(image_cache: str | Path, keys: Iterable[str]) -> np.ndarray:
    """The rows of the image cache's ``real/embedding`` for ``keys``, in that order (matched by key).

    Raises InputError naming the cache when a key has no row in it.
    """
    rows = match_rows([str(k) for k in keys], read_keys(image_cache), what="causal tracing instances",
                      where=f"the image cache {image_cache}")
    embeddings = read_array(image_cache, "real/embedding")
    return embeddings[rows]


# --------------------------------------------------------------------------- generic positions


def generic_labels(instances: pd.DataFrame) -> pd.DataFrame:
    """One row per instance × token position: ``key``, ``position``, ``generic_position``.

    ``generic_position`` is the :data:`GENERIC_NAMES` slot the position belongs to in the
    negated sentence (:func:`clip_interp.positions.generic_position_map`), "" for none.
    """
    keys, positions, labels = [], [], []
    for _, row in instances.iterrows():
        label = [""] * (int(row["eot_pos_negated"]) + 1)
        for name, slot in generic_position_map(row):
            for p in slot:
                label[p] = name
        keys.extend([row["key"]] * len(label))
        positions.extend(range(len(label)))
        labels.extend(label)
    return pd.DataFrame({"key": keys, "position": np.asarray(positions, dtype=np.int16), "generic_position": labels})


def label_generic_positions(effects: pd.DataFrame, instances: pd.DataFrame) -> pd.DataFrame:
    """The token-level causal tracing table with the column ``generic_position`` added (see :func:`generic_labels`)."""
    labels = generic_labels(instances)
    out = effects.merge(labels, on=["key", "position"], how="left", validate="many_to_one")
    unlabelled = out["generic_position"].isna()
    if unlabelled.any():
        bad = out.loc[unlabelled, ["key", "position"]].drop_duplicates().head(3).to_dict("records")
        raise InputError(f"{int(unlabelled.sum())} causal tracing rows have a key or position outside the "
                         f"instances' sentences, e.g. {bad}")
    return out


def generic_effects(labelled: pd.DataFrame) -> pd.DataFrame:
    """The causal tracing table per instance × layer × generic position (:data:`GENERIC_COLUMNS`).

    ``cte`` is the mean CTE over the token positions of the slot and ``weight`` their number;
    a slot with no token (only ``subject_further`` can be empty) has ``cte = 0`` and
    ``weight = 0``. Tokens labelled "" are in no slot. ``generic_position`` is categorical in
    :data:`GENERIC_NAMES` order; rows come in instance order, then layer, then slot.
    """
    per_key = labelled.drop_duplicates("key").set_index("key")[["negation", "d"]]
    layers = np.sort(labelled["layer"].unique())
    in_slot = labelled[labelled["generic_position"] != ""]
    grouped = in_slot.groupby(["key", "layer", "generic_position"], sort=False)["cte"].agg(["mean", "size"])
    grid = pd.MultiIndex.from_product([per_key.index, layers, list(GENERIC_NAMES)],
                                      names=["key", "layer", "generic_position"])
    full = grouped.reindex(grid)
    empty = full["size"].isna()
    empty_slots = set(full.index[empty].get_level_values("generic_position"))
    if empty_slots - {"subject_further"}:
        example = full.index[empty & (full.index.get_level_values("generic_position") != "subject_further")][0]
        raise InputError(f"causal tracing table has no token for generic position {example[2]!r} of instance "
                         f"{example[0]!r} at layer {example[1]}; only subject_further may be empty")
    out = full.reset_index()
    out["cte"] = out["mean"].fillna(0.0).astype(float)
    out["weight"] = out["size"].fillna(0).astype(np.int16)
    out["negation"] = per_key.loc[out["key"], "negation"].to_numpy()
    out["d"] = per_key.loc[out["key"], "d"].to_numpy()
    out["layer"] = out["layer"].astype(np.int16)
    out["generic_position"] = pd.Categorical(out["generic_position"], categories=list(GENERIC_NAMES), ordered=True)
    return out[GENERIC_COLUMNS]


# --------------------------------------------------------------------------- segments and summaries


def attach_segments(generic: pd.DataFrame, scores: pd.DataFrame, variant: str,
                    source: str | Path = "scores table") -> pd.DataFrame:
    """``generic`` with a ``segment`` column: each key's segment in ``scores`` rows of ``variant``.

    Raises InputError naming ``source`` when a key has no score row of that variant or has several.
    """
    missing_cols = [c for c in ("key", "variant", "segment") if c not in scores.columns]
    if missing_cols:
        raise InputError(f"{source}: missing column(s) {missing_cols}; re-run compute_scores")
    part = scores[scores["variant"] == variant]
    repeated = part["key"][part["key"].duplicated()].unique().tolist()
    if repeated:
        raise InputError(f"{source}: {len(repeated)} keys have several {variant!r} rows, e.g. {repeated[:3]}")
    segment = part.set_index("key")["segment"]
    keys = pd.unique(generic["key"])
    missing = [k for k in keys if k not in segment.index]
    if missing:
        raise InputError(
            f"{source}: {len(missing)} of {len(keys)} causal tracing instances have no {variant!r} score, "
            f"e.g. {missing[:3]}; the scores and the causal tracing must come from the same dataset"
        )
    unknown = sorted(set(segment.loc[keys]) - set(SEGMENTS))
    if unknown:
        raise InputError(f"{source}: unknown segment(s) {unknown}; expected {list(SEGMENTS)}")
    return generic.assign(segment=segment.loc[generic["key"]].to_numpy())


def drop_undefined_effects(generic: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``generic`` without the instances that have a non-finite CTE anywhere (``d = 0``), and their keys."""
    bad_rows = ~np.isfinite(generic["cte"].to_numpy(dtype=float))
    bad = pd.unique(generic.loc[bad_rows, "key"]).tolist()
    return generic[~generic["key"].isin(bad)].reset_index(drop=True), [str(k) for k in bad]


def with_all_segment(generic: pd.DataFrame) -> pd.DataFrame:
    """``generic`` twice: first every row with segment :data:`ALL_SEGMENTS` (pooling the segments), then as it is."""
    return pd.concat([generic.assign(segment=ALL_SEGMENTS), generic], ignore_index=True)


def summarise_effects(generic: pd.DataFrame, n_layers: int | None = None) -> pd.DataFrame:
    """Mean CTE per negation side × segment × layer × generic position (:data:`SUMMARY_COLUMNS`).

    ``generic`` is :func:`generic_effects`' table with a ``segment`` column (see
    :func:`attach_segments`) and finite CTEs. ``cte`` is the weighted mean
    ``Σ w·CTE / Σ w`` over the group's instances, ``n`` the number of instances in the
    negation side × segment, ``n_tokens`` the sum of the weights. Segment ``"all"`` pools the
    segments. The table holds every combination of :data:`NEGATION_SIDES`,
    :data:`SUMMARY_SEGMENTS`, layers 0..``n_layers`` (default: the largest layer present) and
    :data:`GENERIC_NAMES`; groups without instances have ``n = 0`` and ``cte`` NaN, as do
    slots with ``n_tokens = 0``.
    """
    if not np.isfinite(generic["cte"].to_numpy(dtype=float)).all():
        raise InputError("the causal tracing table has non-finite CTEs (d = 0); drop those instances first "
                         "(drop_undefined_effects)")
    if n_layers is None:
        n_layers = int(generic["layer"].max())
    data = with_all_segment(generic)
    data = data.assign(weighted=data["cte"] * data["weight"], generic_position=data["generic_position"].astype(str))
    sums = data.groupby(["negation", "segment", "layer", "generic_position"])[["weighted", "weight"]].sum()
    counts = data.groupby(["negation", "segment"])["key"].nunique()
    grid = pd.MultiIndex.from_product(
        [list(NEGATION_SIDES), list(SUMMARY_SEGMENTS), range(n_layers + 1), list(GENERIC_NAMES)],
        names=["negation", "segment", "layer", "generic_position"])
    sums = sums.reindex(grid, fill_value=0)
    out = sums.reset_index()
    with np.errstate(divide="ignore", invalid="ignore"):
        out["cte"] = np.where(out["weight"] > 0, out["weighted"] / out["weight"].where(out["weight"] > 0, 1), np.nan)
    out["n_tokens"] = out["weight"].astype(np.int64)
    index = pd.MultiIndex.from_frame(out[["negation", "segment"]])
    out["n"] = counts.reindex(index, fill_value=0).to_numpy().astype(np.int64)
    out["layer"] = out["layer"].astype(np.int16)
    out["generic_position"] = pd.Categorical(out["generic_position"], categories=list(GENERIC_NAMES), ordered=True)
    return out[SUMMARY_COLUMNS]


def localisation_table(summary: pd.DataFrame, generic: pd.DataFrame) -> pd.DataFrame:
    """Localisation per negation side × segment × layer (:data:`LOCALISATION_COLUMNS`).

    ``localisation``: population SD (ddof 0) of the averaged CTE profile (``summary``, from
    :func:`summarise_effects`) over :data:`LOCALISATION_POSITIONS`, leaving out slots with
    ``n_tokens = 0``. ``localisation_instance_mean``: the mean over the group's instances
    (``generic`` with ``segment``) of the population SD of each instance's own CTEs over the
    same positions, leaving out its weight-0 slots. ``n``: instances in the group; empty
    groups have NaN values.
    """
    profile = summary[summary["generic_position"].astype(str).isin(LOCALISATION_POSITIONS) & (summary["n_tokens"] > 0)]
    main = profile.groupby(["negation", "segment", "layer"])["cte"].agg(lambda v: float(np.std(v, ddof=0)))
    counts = summary.groupby(["negation", "segment", "layer"])["n"].first()
    rows = with_all_segment(generic)
    rows = rows[rows["generic_position"].astype(str).isin(LOCALISATION_POSITIONS) & (rows["weight"] > 0)]
    per_instance = rows.groupby(["negation", "segment", "layer", "key"])["cte"].agg(
        lambda v: float(np.std(v, ddof=0)))
    instance_mean = per_instance.groupby(["negation", "segment", "layer"]).mean()
    out = pd.DataFrame({"n": counts})
    out["localisation"] = main.reindex(out.index)
    out["localisation_instance_mean"] = instance_mean.reindex(out.index)
    out.loc[out["n"] == 0, ["localisation", "localisation_instance_mean"]] = np.nan
    out = out.reset_index()
    order = {s: i for i, s in enumerate(SUMMARY_SEGMENTS)}
    out = out.sort_values(["negation", "segment", "layer"], key=lambda c: c.map(order) if c.name == "segment" else c)
    out["layer"] = out["layer"].astype(np.int16)
    return out[LOCALISATION_COLUMNS].reset_index(drop=True)


def heatmap(summary: pd.DataFrame, negation: str, segment: str) -> np.ndarray:
    """The mean CTE of one negation side and segment as an array (layers 0..L) × :data:`GENERIC_NAMES`."""
    part = summary[(summary["negation"] == negation) & (summary["segment"] == segment)]
    wide = part.pivot(index="layer", columns="generic_position", values="cte")
    return wide.reindex(columns=list(GENERIC_NAMES)).sort_index().to_numpy(dtype=float)


# --------------------------------------------------------------------------- figures


COLOUR_LIMIT = 1.0


def _cell_text(value: float) -> str:
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def colour_bar_extend(values: Iterable[np.ndarray], limit: float) -> str:
    """The colour bar's ``extend`` for values outside ``[-limit, limit]`` (beyond rounding, 1e-3)."""
    finite = np.concatenate([v[np.isfinite(v)].ravel() for v in values] + [np.zeros(0)])
    low, high = bool((finite < -limit - 1e-3).any()), bool((finite > limit + 1e-3).any())
    return {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[(low, high)]


def draw_cte_heatmap(ax, values: np.ndarray, annotate: bool, rotate: bool = False):
    """A layers × generic positions heatmap on a diverging scale fixed to ``±COLOUR_LIMIT``, layer 0 at the bottom."""
    n_rows, n_cols = values.shape
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu_r", vmin=-COLOUR_LIMIT, vmax=COLOUR_LIMIT,
                      origin="lower", aspect="auto", interpolation="nearest")
    ax.set_facecolor("0.8")
    labels = [POSITION_LABELS[name] for name in GENERIC_NAMES]
    if rotate:
        ax.set_xticks(range(n_cols), [label.replace("\n", " ") for label in labels], fontsize=7, rotation=40,
                      ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(range(n_cols), labels, fontsize=7)
    ax.set_yticks(range(n_rows))
    ax.tick_params(axis="y", labelsize=7)
    if annotate:
        for layer in range(n_rows):
            for col in range(n_cols):
                v = values[layer, col]
                if np.isfinite(v):
                    ax.text(col, layer, _cell_text(v), ha="center", va="center", fontsize=6,
                            color="white" if abs(v) > 0.6 * COLOUR_LIMIT else "black")
    return image


def _readable(values: np.ndarray, max_cells: int = 160) -> bool:
    return values.size <= max_cells


def _side_title(side: str) -> str:
    return f"negation in the {side}"


def _group_size(summary: pd.DataFrame, side: str, segment: str) -> int:
    part = summary[(summary["negation"] == side) & (summary["segment"] == segment)]
    return int(part["n"].max()) if len(part) else 0


FIGURE_SEGMENT = "correct"


def _localisation_bars(bar_ax, part: pd.DataFrame, n_layers: int, bar_max: float, n: int) -> None:
    """Horizontal bars of the localisation per layer (``part``: one side and segment of the localisation table)."""
    part = part.sort_values("layer")
    values = part["localisation"].to_numpy(dtype=float)
    bar_ax.barh(part["layer"], np.nan_to_num(values), color="tab:purple", height=0.7)
    for layer, value in zip(part["layer"], values):
        if np.isfinite(value):
            bar_ax.text(value, layer, f" {value:.2f}", va="center", fontsize=6)
    bar_ax.set_xlim(0, bar_max * 1.25 if bar_max > 0 else 1)
    bar_ax.set_ylim(-0.5, n_layers + 0.5)
    bar_ax.set_yticks(range(n_layers + 1))
    bar_ax.tick_params(labelsize=7)
    bar_ax.set_xlabel("localisation: SD of mean CTE\nover negator … EOT", fontsize=7)
    bar_ax.set_title(f"localisation (n = {n})", fontsize=9)
    bar_ax.grid(axis="x", color="0.9")
    bar_ax.set_axisbelow(True)


def _bar_max(localisation: pd.DataFrame, segments: Iterable[str]) -> float:
    values = localisation.loc[localisation["segment"].isin(list(segments)), "localisation"].to_numpy(dtype=float)
    return float(np.nanmax(np.append(values, 0.0)))


def _segment_words(segment: str) -> str:
    return "all instances" if segment == ALL_SEGMENTS else f"{segment} segment"


def plot_causal_tracing(summary: pd.DataFrame, localisation: pd.DataFrame, model: str, variant: str,
                        segment: str = FIGURE_SEGMENT):
    """Figure 8: per negation side, the heatmap of the mean CTE of one ``segment`` and the localisation per layer.

    The study's figure is the correct segment (the default); ``segment="all"`` pools every
    instance, where instances with d near 0 make d*/d large. The colour scale is fixed to
    [-1, 1] (CTE 1: the patch restores the whole score), values beyond it saturate (arrows on
    the colour bar) and every cell is annotated when readable.
    """
    if segment not in SUMMARY_SEGMENTS:
        raise InputError(f"unknown segment {segment!r} for Figure 8; expected one of {list(SUMMARY_SEGMENTS)}")
    maps = {side: heatmap(summary, side, segment) for side in NEGATION_SIDES}
    extend = colour_bar_extend(maps.values(), COLOUR_LIMIT)
    n_layers = next(iter(maps.values())).shape[0] - 1
    height = max(2.6, 0.32 * (n_layers + 1) + 1.4)
    fig, axes = new_figure(len(NEGATION_SIDES), 2, figsize=(10, height * len(NEGATION_SIDES)), squeeze=False,
                           gridspec_kw={"width_ratios": [3.2, 1]})
    loc = localisation[localisation["segment"] == segment]
    bar_max = _bar_max(localisation, [segment])
    for r, side in enumerate(NEGATION_SIDES):
        ax, bar_ax = axes[r]
        n = _group_size(summary, side, segment)
        image = draw_cte_heatmap(ax, maps[side], _readable(maps[side]))
        ax.set_ylabel("layer (0 = embeddings)")
        ax.set_xlabel("generic token position")
        ax.set_title(f"{_side_title(side)}, {_segment_words(segment)}: mean CTE (n = {n})", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="CTE = d* / d", extend=extend)
        _localisation_bars(bar_ax, loc[loc["negation"] == side], n_layers, bar_max, n)
        bar_ax.set_ylabel("layer", fontsize=8)
    fig.suptitle(f"{model}: causal tracing of negation in the text tower, {_segment_words(segment)} "
                 f"({variant} variant)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_causal_tracing_by_segment(summary: pd.DataFrame, localisation: pd.DataFrame, model: str, variant: str):
    """Figure 8 by segment: per negation side (rows) and segment, the heatmap of the mean CTE and
    the localisation per layer beside it.

    Same colour scale as :func:`plot_causal_tracing`; a segment without instances is an empty
    panel "n = 0" with empty bars.
    """
    maps = {(side, seg): heatmap(summary, side, seg) for side in NEGATION_SIDES for seg in SEGMENTS}
    extend = colour_bar_extend(maps.values(), COLOUR_LIMIT)
    n_layers = next(iter(maps.values())).shape[0] - 1
    height = max(3.0, 0.32 * (n_layers + 1) + 1.8)
    fig, axes = new_figure(len(NEGATION_SIDES), 2 * len(SEGMENTS), figsize=(6.0 * len(SEGMENTS) + 1, height * 2),
                           squeeze=False, layout="constrained",
                           gridspec_kw={"width_ratios": [3.2, 1] * len(SEGMENTS)})
    bar_max = _bar_max(localisation, SEGMENTS)
    image = None
    for r, side in enumerate(NEGATION_SIDES):
        for c, seg in enumerate(SEGMENTS):
            ax, bar_ax = axes[r, 2 * c], axes[r, 2 * c + 1]
            n = _group_size(summary, side, seg)
            ax.set_title(f"{_side_title(side)}, {seg} (n = {n})", fontsize=9)
            part = localisation[(localisation["negation"] == side) & (localisation["segment"] == seg)]
            _localisation_bars(bar_ax, part, n_layers, bar_max, n)
            if n == 0:
                ax.set_xticks([])
                ax.set_yticks([])
                ax.text(0.5, 0.5, "n = 0", ha="center", va="center", transform=ax.transAxes, fontsize=12,
                        color="0.4")
                continue
            image = draw_cte_heatmap(ax, maps[(side, seg)], _readable(maps[(side, seg)], 120), rotate=True)
            ax.set_ylabel("layer (0 = embeddings)", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes, fraction=0.02, pad=0.01, label="CTE = d* / d", extend=extend)
    fig.suptitle(f"{model}: mean causal tracing effect and localisation by segment and negation side "
                 f"({variant} variant)", fontsize=10)
    return fig


def selection_summary(report: Mapping[str, Any]) -> str:
    """One line describing an instance selection report (:func:`select_tracing_instances`)."""
    excluded = ", ".join(f"{r} {n}" for r, n in report["excluded"].items())
    return f"{report['kept']} of {report['rows']} instances kept (excluded: {excluded})"


def read_tracing_instances(path: str | Path, log: logging.Logger) -> tuple[pd.DataFrame, dict[str, Any]]:
    """:func:`select_tracing_instances` on the token-positions table at ``path``, with its report logged.

    The report's one-line summary goes to ``log`` at INFO and each exclusion reason with its count and
    first keys at WARNING, so that every rule working on the selected instances states what it left out.
    """
    instances, selection = select_tracing_instances(pd.read_parquet(path), path)
    log.info("%s: %s", path, selection_summary(selection))
    for reason, keys in selection["excluded_keys"].items():
        if keys:
            log.warning("excluded (%s): %d instances, e.g. %s", reason, len(keys), keys[:5])
    return instances, selection
