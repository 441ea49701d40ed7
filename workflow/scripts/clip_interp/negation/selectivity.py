"""Negator-selective attention heads of the text tower.

A pair is a negated sentence ("There are no dogs.") and a non-negated sentence of the
same token length whose quantifier ("some"/"a") sits in the negator's slot, so token
positions agree between the two. ``A[l, h, q, k]`` is the attention weight of head ``h``
in block ``l`` from query position ``q`` to key position ``k`` (positions count SOT as 0;
the cache's pattern index 0 is block 1). For the negator position ``n`` and the EOT
position ``e`` of a pair:

* ``s(l, h, q) = A_neg[l, h, q, n] - A_non[l, h, q, n]`` for every later position
  ``n < q <= e``: how much more position ``q`` attends to the negator's slot when it holds
  the negator. Positions up to the negator and padding after EOT do not count.
* ``a(l, h) = max_q s(l, h, q)``, the head's negator selectivity for the pair.

On VALSE existence the later positions are mapped onto the generic positions
subject_first, subject_further, full_stop and EOT
(:func:`clip_interp.positions.generic_position_map`); ``s`` of subject_further is the mean
over its tokens and carries the token count as weight. A head is *selective* when its mean
``a`` over instances exceeds a threshold. Tables number layers from 1 (block ``l``) and
heads from 0 (the index into the model's heads).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

import h5py
import numpy as np
import pandas as pd

from ..errors import InputError
from ..plotting import annotated_heatmap, layer_head_heatmap, new_figure, plt, symmetric_limit
from ..store import read_keys
from .labels import NEGATION_SIDES
from .positions import generic_position_map
from .statistics import pearson

LATER_GENERIC = ("subject_first", "subject_further", "full_stop", "EOT")
SELECTIVITY_COLUMNS = ["key", "negation", "layer", "head", "a", "argmax_position", "argmax_generic"]
BY_POSITION_COLUMNS = ["key", "negation", "layer", "head", "position", "s", "weight"]
HEAD_COLUMNS = ["layer", "head", "mean_a", "median_a", "share_above_threshold", "selective", "pearson_r",
                "pearson_p", "pearson_r_caption", "pearson_r_foil", "n"]
LAYER_COLUMNS = ["layer", "mean_a", "max_head", "max_head_mean_a", "share_selective", "n_heads"]
CANNOT_COLUMNS = ["key", "layer", "head", "a", "argmax_position"]
CANNOT_HEAD_COLUMNS = ["layer", "head", "mean_a", "median_a", "share_above_threshold", "selective", "n",
                       "valse_mean_a"]
NUMBERING = {"layer": "1-based (attention pattern index + 1)", "head": "0-based (index into the model's heads)"}


# --------------------------------------------------------------------------- core definitions


def negator_attention_difference(negated_pattern, non_negated_pattern, negator_pos, eot_pos) -> np.ndarray:
    """``s[i, l, h, q] = A_neg[i, l, h, q, n_i] - A_non[i, l, h, q, n_i]`` for ``n_i < q <= e_i``, NaN elsewhere.

    Patterns are (N, L, H, T, T) arrays (query, then key); ``negator_pos`` (``n_i``) and
    ``eot_pos`` (``e_i``) hold each pair's negator and EOT positions, the same in both
    sentences. Returns a float64 array (N, L, H, T) with layer index 0 for block 1.
    """
    neg = np.asarray(negated_pattern)
    non = np.asarray(non_negated_pattern)
    if neg.shape != non.shape or neg.ndim != 5 or neg.shape[-1] != neg.shape[-2]:
        raise InputError(
            f"attention patterns must both be (N, layers, heads, T, T); got {neg.shape} (negated) and "
            f"{non.shape} (non-negated). Selectivity needs pairs of equal token length."
        )
    n, t = neg.shape[0], neg.shape[-1]
    negator = np.asarray(negator_pos, dtype=np.int64).reshape(-1)
    eot = np.asarray(eot_pos, dtype=np.int64).reshape(-1)
    if len(negator) != n or len(eot) != n:
        raise InputError(f"{n} patterns but {len(negator)} negator and {len(eot)} EOT positions")
    bad = np.flatnonzero((negator < 0) | (negator >= eot) | (eot >= t))
    if len(bad):
        i = bad[0]
        raise InputError(
            f"{len(bad)} pairs need 0 <= negator < EOT < {t} (the padded length), e.g. pair {i} has negator "
            f"{negator[i]} and EOT {eot[i]}"
        )
    rows = np.arange(n)
    s = neg[rows, ..., negator].astype(np.float64) - non[rows, ..., negator].astype(np.float64)
    q = np.arange(t)
    later = (q[None, :] > negator[:, None]) & (q[None, :] <= eot[:, None])
    return np.where(later[:, None, None, :], s, np.nan)


def head_selectivity(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a = max_q s`` over the later positions and the position ``q`` attaining it, both (N, L, H)."""
    s = np.asarray(s, dtype=np.float64)
    if np.isnan(s).all(axis=-1).any():
        raise InputError("a pair has no position after its negator up to EOT, so its selectivity is undefined")
    argmax = np.nanargmax(s, axis=-1)
    return np.take_along_axis(s, argmax[..., None], axis=-1)[..., 0], argmax


# --------------------------------------------------------------------------- reading the cache


def read_negator_differences(cache_path, keys: Sequence[str], negator_pos, eot_pos, *, negated_ids=None,
                             batch_size: int = 256) -> tuple[np.ndarray, dict]:
    """:func:`negator_attention_difference` of the cached patterns of ``keys`` (in that order).

    The text cache must hold both sentences of every key with length ``eot_pos + 1`` (equal
    lengths); when ``negated_ids`` is given the cached negated ids must equal it (a stale
    cache otherwise). Rows are read ``batch_size`` at a time. Returns ``s`` (N, L, H, T)
    and the cache's attributes ``n_layers``, ``n_heads``.
    """
    keys = [str(k) for k in keys]
    negator = np.asarray(negator_pos, dtype=np.int64)
    eot = np.asarray(eot_pos, dtype=np.int64)
    duplicated = sorted(k for k, count in Counter(keys).items() if count > 1)
    if duplicated:
        raise InputError(f"keys must be unique; {duplicated[:3]} occur more than once")
    index = {k: i for i, k in enumerate(read_keys(cache_path))}
    missing = [k for k in keys if k not in index]
    if missing:
        raise InputError(
            f"{len(missing)} keys are not in the text cache {cache_path}, e.g. {missing[:3]}; the cache is "
            "out of date with its table: delete it and re-run its rule"
        )
    rows = np.asarray([index[k] for k in keys], dtype=np.int64)
    with h5py.File(cache_path, "r") as f:
        for group in ("negated", "non_negated"):
            if f"{group}/pattern" not in f:
                raise InputError(f"text cache {cache_path} has no dataset {group}/pattern; re-run its rule")
        lengths = {g: f[f"{g}/length"][:][rows] for g in ("negated", "non_negated")}
        unequal = np.flatnonzero(lengths["negated"] != lengths["non_negated"])
        if len(unequal):
            i = unequal[0]
            raise InputError(
                f"{len(unequal)} pairs in {cache_path} have sentences of unequal token length, e.g. key "
                f"{keys[i]!r} ({lengths['negated'][i]} vs {lengths['non_negated'][i]} tokens); negator "
                "selectivity compares the same positions and needs equal-length pairs (the rephrased variant)"
            )
        off = np.flatnonzero(lengths["negated"] != eot + 1)
        if len(off):
            i = off[0]
            raise InputError(
                f"{len(off)} pairs have a cached length other than EOT + 1 in {cache_path}, e.g. key {keys[i]!r} "
                f"(cached {lengths['negated'][i]} tokens, EOT at {eot[i]}); the cache is out of date with its "
                "table: delete it and re-run its rule"
            )
        if negated_ids is not None:
            cached_ids = f["negated/ids"][:][rows]
            for i, expected in enumerate(negated_ids):
                expected = np.asarray(expected, dtype=np.int64)
                if not np.array_equal(cached_ids[i, :len(expected)], expected):
                    raise InputError(
                        f"the cached negated token ids of key {keys[i]!r} in {cache_path} differ from its table's; "
                        "the cache is out of date: delete it and re-run its rule"
                    )
        neg_ds, non_ds = f["negated/pattern"], f["non_negated/pattern"]
        out = np.empty((len(keys), *neg_ds.shape[1:4]), dtype=np.float64)
        order = np.argsort(rows)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            file_rows = rows[chunk]
            out[chunk] = negator_attention_difference(neg_ds[file_rows], non_ds[file_rows], negator[chunk], eot[chunk])
        info = {"n_layers": int(neg_ds.shape[1]), "n_heads": int(neg_ds.shape[2])}
    return out, info


# --------------------------------------------------------------------------- tables


def _long(keys: Sequence[str], shape: tuple[int, int, int], **columns) -> pd.DataFrame:
    """Rows key, layer (1-based), head for an (N, L, H) grid in key-major order, plus ``columns``:
    (N, L, H) arrays flattened in that order, or per-key (N,) arrays repeated over layers and heads."""
    n, n_layers, n_heads = shape
    frame = {
        "key": np.repeat(np.asarray(keys, dtype=object), n_layers * n_heads),
        "layer": np.tile(np.repeat(np.arange(1, n_layers + 1), n_heads), n),
        "head": np.tile(np.arange(n_heads), n * n_layers),
    }
    for name, column in columns.items():
        column = np.asarray(column)
        frame[name] = column.reshape(-1) if column.ndim == 3 else np.repeat(column, n_layers * n_heads)
    return pd.DataFrame(frame)


def _generic_positions(row, key: str) -> dict[str, list[int]]:
    """The later generic positions of a row; they must cover negator < q <= EOT exactly once."""
    mapping = dict(generic_position_map(row))
    covered = [p for name in LATER_GENERIC for p in mapping[name]]
    later = list(range(int(row["negator_pos"]) + 1, int(row["eot_pos_negated"]) + 1))
    if sorted(covered) != later:
        raise InputError(
            f"instance {key!r}: the generic positions {covered} do not cover the positions after the negator "
            f"up to EOT {later} once each"
        )
    return {name: mapping[name] for name in LATER_GENERIC}


def valse_selectivity(s: np.ndarray, instances: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-head and per-source-position tables of VALSE pairs.

    ``s`` is :func:`negator_attention_difference` for the rows of ``instances`` (positions
    table rows with ``generic_ok``). Returns (selectivity, by_position): selectivity has
    :data:`SELECTIVITY_COLUMNS`, ``argmax_generic`` naming the generic position of the
    maximising ``q``; by_position has :data:`BY_POSITION_COLUMNS`, one row per instance,
    layer, head and generic later position with at least one token (subject_further may
    have none), ``s`` the mean over its tokens and ``weight`` their number.
    """
    if len(s) != len(instances):
        raise InputError(f"{len(s)} selectivity rows for {len(instances)} instances")
    n, n_layers, n_heads, _ = s.shape
    a, argmax = head_selectivity(s)
    keys = instances["key"].astype(str).tolist()
    negation = instances["negation"].to_numpy()
    names = np.asarray(LATER_GENERIC, dtype=object)
    name_index = np.full(s.shape[-1], -1)
    argmax_generic = np.empty(argmax.shape, dtype=object)
    mean_s = np.full((n, len(LATER_GENERIC), n_layers, n_heads), np.nan)
    weight = np.zeros((n, len(LATER_GENERIC)), dtype=np.int64)
    for i, (_, row) in enumerate(instances.iterrows()):
        name_index[:] = -1
        for j, positions in enumerate(_generic_positions(row, keys[i]).values()):
            name_index[positions] = j
            weight[i, j] = len(positions)
            if positions:
                mean_s[i, j] = s[i][..., positions].mean(axis=-1)
        argmax_generic[i] = names[name_index[argmax[i]]]
    selectivity = _long(keys, a.shape, negation=negation, a=a, argmax_position=argmax,
                        argmax_generic=argmax_generic)
    kept = np.flatnonzero(weight.reshape(-1) > 0)
    instance_of, position_of = np.divmod(kept, len(LATER_GENERIC))
    by_position = _long([keys[i] for i in instance_of], (len(kept), n_layers, n_heads),
                        negation=negation[instance_of], position=names[position_of],
                        s=mean_s[instance_of, position_of], weight=weight[instance_of, position_of])
    return selectivity[SELECTIVITY_COLUMNS], by_position[BY_POSITION_COLUMNS]


def cannot_selectivity(s: np.ndarray, keys: Sequence[str]) -> pd.DataFrame:
    """Per pair, layer (1-based) and head: ``a`` and the maximising position (:data:`CANNOT_COLUMNS`)."""
    a, argmax = head_selectivity(s)
    return _long([str(k) for k in keys], a.shape, a=a, argmax_position=argmax)[CANNOT_COLUMNS]


def _head_stats(selectivity: pd.DataFrame, threshold: float) -> pd.DataFrame:
    grouped = selectivity.groupby(["layer", "head"], sort=True)["a"]
    table = pd.DataFrame({
        "mean_a": grouped.mean(),
        "median_a": grouped.median(),
        "share_above_threshold": grouped.apply(lambda a: float((a > threshold).mean())),
        "n": grouped.size(),
    }).reset_index()
    table["selective"] = table["mean_a"] > threshold
    return table


def head_summary(selectivity: pd.DataFrame, d: Mapping[str, float] | pd.Series, threshold: float) -> pd.DataFrame:
    """Per layer and head over instances: mean and median ``a``, the share of instances with
    ``a > threshold``, ``selective`` (mean ``a > threshold``), Pearson's r of ``a`` with the
    classification score ``d`` (``d[key]``) and its p-value over all instances, r within each
    negation side (``pearson_r_caption``, ``pearson_r_foil``: a negated caption and a negated
    foil pull d in opposite directions), and the instance count ``n``."""
    d = pd.Series(d, dtype=np.float64) if not isinstance(d, pd.Series) else d.astype(np.float64)
    missing = sorted(set(selectivity["key"]) - set(d.index))
    if missing:
        raise InputError(f"{len(missing)} instances have no score d, e.g. {missing[:3]}; re-run compute_scores")
    table = _head_stats(selectivity, threshold)
    with_d = selectivity.assign(d=d.reindex(selectivity["key"]).to_numpy())
    heads = list(zip(table["layer"], table["head"]))
    correlations = {name: pearson(part["a"], part["d"]) for name, part in with_d.groupby(["layer", "head"], sort=True)}
    table["pearson_r"] = [correlations[h][0] for h in heads]
    table["pearson_p"] = [correlations[h][1] for h in heads]
    for side in ("caption", "foil"):
        part = with_d[with_d["negation"] == side] if "negation" in with_d else with_d.iloc[:0]
        by_head = {name: pearson(g["a"], g["d"]) for name, g in part.groupby(["layer", "head"], sort=True)}
        table[f"pearson_r_{side}"] = [by_head.get(h, (np.nan, np.nan))[0] for h in heads]
    return table[HEAD_COLUMNS]


def layer_summary(selectivity: pd.DataFrame, heads: pd.DataFrame) -> pd.DataFrame:
    """Per layer: mean ``a`` over heads and instances, the head of highest mean ``a`` and that
    mean, the share of the layer's heads that are selective, and the head count."""
    rows = []
    for layer, part in heads.groupby("layer", sort=True):
        best = part.loc[part["mean_a"].idxmax()]
        rows.append({
            "layer": int(layer), "mean_a": float(selectivity.loc[selectivity["layer"] == layer, "a"].mean()),
            "max_head": int(best["head"]), "max_head_mean_a": float(best["mean_a"]),
            "share_selective": float(part["selective"].mean()), "n_heads": len(part),
        })
    return pd.DataFrame(rows, columns=LAYER_COLUMNS)


def position_summary(by_position: pd.DataFrame, layer: int) -> pd.DataFrame:
    """Per head of ``layer`` (1-based) and generic later position: the token-weighted mean of ``s``
    over instances (``sum(s * weight) / sum(weight)``), as a heads × positions frame."""
    part = by_position[by_position["layer"] == layer]
    if part.empty:
        raise InputError(f"no per-position selectivity rows for layer {layer}")
    weighted = part.assign(sw=part["s"] * part["weight"]).groupby(["head", "position"])[["sw", "weight"]].sum()
    mean = (weighted["sw"] / weighted["weight"]).unstack("position")
    return mean.reindex(columns=[p for p in LATER_GENERIC if p in mean.columns])


def cannot_head_summary(selectivity: pd.DataFrame, valse_heads: pd.DataFrame,
                        threshold: float) -> tuple[pd.DataFrame, dict]:
    """Per layer and head on CANNOT: mean and median ``a``, the share of pairs with ``a > threshold``,
    ``selective``, ``n``, and the VALSE head's mean ``a`` (``valse_mean_a``); plus Pearson's r
    across heads between the VALSE and the CANNOT mean ``a`` (``pearson_r``, ``pearson_p``,
    ``heads_compared``)."""
    table = _head_stats(selectivity, threshold)
    valse = valse_heads.set_index(["layer", "head"])["mean_a"]
    ours = set(zip(table["layer"], table["head"]))
    theirs = set(valse.index)
    if ours != theirs:
        raise InputError(
            f"the VALSE selectivity table has heads {len(theirs)} (layers × heads) but the CANNOT cache has "
            f"{len(ours)}; both must come from the same model"
        )
    table["valse_mean_a"] = valse.reindex(list(zip(table["layer"], table["head"]))).to_numpy()
    r, p = pearson(table["valse_mean_a"], table["mean_a"])
    return table[CANNOT_HEAD_COLUMNS], {"pearson_r": r, "pearson_p": p, "heads_compared": len(table)}


def check_layer(layer: int, n_layers: int, key: str = "negation.selectivity.layer") -> int:
    """``layer`` as a 1-based layer of a model with ``n_layers`` blocks; InputError otherwise."""
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 1 <= layer <= n_layers:
        raise InputError(
            f"config {key} is {layer!r}, but the text tower has layers 1..{n_layers} (1-based); "
            f"choose a layer in that range"
        )
    return int(layer)


def select_instances(positions: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The positions-table rows usable for selectivity: ``positions_ok``, then ``equal_length``,
    then ``generic_ok``; the counts dropped at each step are returned."""
    missing = [c for c in ("key", "negation", "positions_ok", "equal_length", "generic_ok") if c not in positions]
    if missing:
        raise InputError(f"the positions table lacks columns {missing}; re-run token_positions")
    ok = positions["positions_ok"].astype(bool)
    equal = ok & positions["equal_length"].astype(bool)
    generic = equal & positions["generic_ok"].astype(bool)
    counts = {
        "positions_rows": len(positions),
        "dropped_positions_not_ok": int((~ok).sum()),
        "dropped_unequal_length": int((ok & ~equal).sum()),
        "dropped_not_generic": int((equal & ~generic).sum()),
        "instances": int(generic.sum()),
    }
    return positions[generic].reset_index(drop=True), counts


# --------------------------------------------------------------------------- figures


def _grid(heads: pd.DataFrame, column: str = "mean_a") -> np.ndarray:
    """A (layers, heads) array of ``column``, row 0 = layer 1."""
    return heads.pivot(index="layer", columns="head", values=column).sort_index().sort_index(axis=1).to_numpy()


def side_panels(selectivity: pd.DataFrame, by_position: pd.DataFrame, d: pd.Series, threshold: float,
                layer: int) -> list[dict[str, Any]]:
    """The panels of Figures 9 and 10 split by negation side, as in the study: per side with
    instances, ``label``, ``n`` (instances), ``heads`` (:func:`head_summary`), ``layers``
    (:func:`layer_summary`) and ``position`` (:func:`position_summary` of ``layer``)."""
    panels = []
    for side in NEGATION_SIDES:
        part = selectivity[selectivity["negation"] == side]
        if part.empty:
            continue
        heads = head_summary(part, d, threshold)
        panels.append({"label": f"negation in the {side}", "n": int(part["key"].nunique()), "heads": heads,
                       "layers": layer_summary(part, heads),
                       "position": position_summary(by_position[by_position["negation"] == side], layer)})
    return panels


def plot_selectivity_heads(panels: Sequence[Mapping[str, Any]], threshold: float, model: str, variant: str):
    """Figure 9: per panel (a negation side, or both pooled), mean ``a`` per head (x) and layer (y,
    layer 1 at the top), selective heads framed, with the per-layer mean ``a`` as a bar chart
    beside it; one colour scale for all panels."""
    grids = [_grid(panel["heads"]) for panel in panels]
    limit = symmetric_limit(*grids)
    n_layers, n_heads = grids[0].shape
    width = max(6.0, 0.55 * n_heads + 4.0)
    height = max(3.2, 0.42 * n_layers + 1.8)
    fig, axes = new_figure(len(panels), 2, figsize=(width, height * len(panels)), layout="constrained",
                           squeeze=False, gridspec_kw={"width_ratios": [max(n_heads, 3), 2.5]})
    for (ax, side), panel, grid in zip(axes, panels, grids):
        heads = panel["heads"]
        share = float(heads["selective"].mean())
        layer_head_heatmap(ax, grid, first_layer=1, limit=limit, highlight=_grid(heads, "selective").astype(bool),
                           title=f"{panel['label']} (n = {panel['n']}): mean a per head\n(framed: mean a > "
                                 f"{threshold:g}; {int(heads['selective'].sum())} of {len(heads)} heads, "
                                 f"{share:.0%})",
                           colorbar_label="mean a (attention to the negator, negated − non-negated)",
                           colorbar_kw={"location": "bottom", "fraction": 0.06, "pad": 0.02, "aspect": 30})
        layer_means = panel["layers"].sort_values("layer")["mean_a"].to_numpy()
        bars = side.barh(np.arange(n_layers), layer_means, color="tab:purple", height=0.6)
        side.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
        side.margins(x=0.25)
        side.axvline(0, color="black", linewidth=0.6)
        side.axvline(threshold, color="grey", linestyle="--", linewidth=0.8)
        side.set_xlabel("mean a over heads and instances")
        side.set_title(f"layer mean (dashed: {threshold:g})", fontsize=9)
        side.set_ylim(n_layers - 0.5, -0.5)
        side.set_yticks(np.arange(n_layers), [str(layer) for layer in range(1, n_layers + 1)])
        ax.set_ylim(n_layers - 0.5, -0.5)
    fig.suptitle(f"{model}: negator selectivity of text-tower attention heads, VALSE existence ({variant})",
                 fontsize=9)
    return fig


def plot_selectivity_by_position(panels: Sequence[Mapping[str, Any]], layer: int, model: str):
    """Figure 10: per panel (a negation side, or both pooled), the token-weighted mean ``s`` per
    head (rows) of one layer and generic later position (columns); one colour scale."""
    grids = [panel["position"].to_numpy(dtype=np.float64) for panel in panels]
    limit = symmetric_limit(*grids)
    n_heads, n_positions = grids[0].shape
    fig, axes = new_figure(1, len(panels), figsize=(len(panels) * max(5.0, 1.2 * n_positions + 2.5),
                                                    max(3.0, 0.45 * n_heads + 1.8)), squeeze=False,
                           layout="constrained")
    image = None
    for ax, panel, grid in zip(axes[0], panels, grids):
        mean_s = panel["position"]
        image = annotated_heatmap(ax, grid, limit=limit)
        ax.set_xticks(range(grid.shape[1]), [p.replace("_", " ") for p in mean_s.columns])
        ax.set_yticks(range(grid.shape[0]), [str(h) for h in mean_s.index])
        ax.set_xlabel("source (query) position attending to the negator")
        ax.set_ylabel(f"head of layer {layer}")
        ax.set_title(f"{panel['label']} (n = {panel['n']})", fontsize=9)
    colour_bar = fig.colorbar(image, ax=list(axes[0]), fraction=0.05, pad=0.03)
    colour_bar.set_label("mean s (attention to the negator, negated − non-negated)", fontsize=7)
    fig.suptitle(f"{model}: attention to the negator by source position, layer {layer} "
                 "(subject further weighted by token count)", fontsize=9)
    return fig


def plot_cannot_comparison(valse_heads: pd.DataFrame, cannot_heads: pd.DataFrame, r: float, p: float,
                           threshold: float, model: str, n_pairs: int, n_valse: int | None = None):
    """Figure 11: mean ``a`` per head and layer on VALSE and on CANNOT (one colour scale, selective
    heads framed) and the scatter of the two per head with Pearson's r."""
    from matplotlib.colors import BoundaryNorm

    valse_grid, cannot_grid = _grid(valse_heads), _grid(cannot_heads)
    n_layers, n_heads = valse_grid.shape
    limit = symmetric_limit(valse_grid, cannot_grid)
    width = 2 * max(3.0, 0.5 * n_heads + 1.2) + 4.5
    fig, axes = new_figure(1, 3, figsize=(width, max(3.8, 0.42 * n_layers + 2.4)), layout="constrained",
                           gridspec_kw={"width_ratios": [max(n_heads, 3), max(n_heads, 3), max(n_heads, 5)]})
    valse_label = f"VALSE existence (n = {n_valse})" if n_valse is not None else "VALSE existence"
    for ax, grid, heads, title in ((axes[0], valse_grid, valse_heads, valse_label),
                                   (axes[1], cannot_grid, cannot_heads, f"CANNOT (n = {n_pairs} pairs)")):
        image = layer_head_heatmap(ax, grid, first_layer=1, limit=limit,
                                   highlight=_grid(heads, "selective").astype(bool), title=f"{title}: mean a")
    colour_bar = fig.colorbar(image, ax=axes[:2], location="bottom", fraction=0.05, pad=0.02, aspect=40)
    colour_bar.set_label(f"mean a (attention to the negator, negated − non-negated; framed: > {threshold:g})",
                         fontsize=7)
    scatter_ax = axes[2]
    merged = cannot_heads.sort_values(["layer", "head"])
    layer_norm = BoundaryNorm(np.arange(0.5, n_layers + 1.5), plt.get_cmap("viridis").N)
    points = scatter_ax.scatter(merged["valse_mean_a"], merged["mean_a"], c=merged["layer"], cmap="viridis",
                                norm=layer_norm, s=24, edgecolor="black", linewidth=0.3)
    low = float(np.nanmin([merged["valse_mean_a"].min(), merged["mean_a"].min(), 0.0]))
    high = float(np.nanmax([merged["valse_mean_a"].max(), merged["mean_a"].max(), threshold]))
    pad = 0.05 * (high - low if high > low else 1.0)
    scatter_ax.plot([low - pad, high + pad], [low - pad, high + pad], color="grey", linewidth=0.8, linestyle=":",
                    label="y = x")
    scatter_ax.axhline(threshold, color="grey", linestyle="--", linewidth=0.6)
    scatter_ax.axvline(threshold, color="grey", linestyle="--", linewidth=0.6, label=f"threshold {threshold:g}")
    scatter_ax.set_xlabel("VALSE mean a")
    scatter_ax.set_ylabel("CANNOT mean a")
    p_text = "n/a" if not np.isfinite(p) else f"{p:.2g}"
    r_text = "n/a" if not np.isfinite(r) else f"{r:.2f}"
    scatter_ax.set_title(f"per head: Pearson r = {r_text} (p = {p_text}, {len(merged)} heads)", fontsize=9)
    scatter_ax.set_aspect("equal", adjustable="datalim")
    scatter_ax.legend(fontsize=7, loc="upper left")
    layer_bar = fig.colorbar(points, ax=scatter_ax, location="bottom", fraction=0.05, pad=0.02, aspect=30,
                             ticks=np.arange(1, n_layers + 1))
    layer_bar.set_label("layer", fontsize=7)
    fig.suptitle(f"{model}: negator-selective heads on VALSE and on CANNOT ({n_pairs} CANNOT pairs)", fontsize=10)
    return fig
