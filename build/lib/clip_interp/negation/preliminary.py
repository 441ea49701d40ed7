"""Preliminary analyses of the negation study: what instance properties go with the score d?

Per instance of one dataset variant (definitions):

* ``seq_len``: the study's sequence length, the number of CLIP tokens of the caption, SOT
  and EOT included (``caption_len``); ``foil_len`` and ``seq_len_negated`` likewise for the
  foil and the negated sentence.
* ``negator_pos``: position of "no" in the negated sentence (SOT = 0);
  ``subject_len = 1 + n_further_subject``: the subject's tokens between the negator and
  the full stop. Both are missing where the positions table could not place the negator.
* ``cosine_similarity``: cosine of the caption's and the foil's text embeddings (the
  cached ``negated``/``non_negated`` embeddings; the cosine is symmetric, so which of the
  two is the caption does not matter).
* ``relative_size`` and ``binary_size``: the subject's image area
  (:mod:`clip_interp.subject_size`), defined only for negation in the foil.
* ``d = S(c, i) - S(f, i)``, ``correct = d > 0`` and ``segment`` from the scores table.

Table 3 (:func:`pairwise_correlation_table`, as in the study) correlates each pair of
:data:`TABLE3_VARIABLES` over every instance, of either negation side, where both variables
exist, with ``n`` per cell: the size exists only for negation in the foil, so its cells are
foil-only while the others pool both sides. :func:`correlation_table` is the stricter second
table: the complete cases with the negation in the foil. Figure 6 plots cosine similarity
against d per negation side; Figure 7 plots subject size against d with the accuracy of the
instances whose size is at least x. :func:`length_accuracy` and :func:`size_accuracy` are the
study's filters: accuracy over the instances up to a sequence length, and from a subject size.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import InputError
from ..plotting import new_figure, plt
from .statistics import pearson

TABLE3_VARIABLES = {
    "negator_pos": "negator position",
    "subject_len": "subject length (tokens)",
    "seq_len": "sequence length (caption tokens)",
    "relative_size": "relative subject size",
    "binary_size": "binary subject size",
    "cosine_similarity": "cos(caption, foil)",
    "d": "score d",
}
REPEATED_CAPTION = "There are no people."
SIDES = ("caption", "foil")
INSTANCE_COLUMNS = [
    "key", "negation", "caption", "foil", "seq_len", "seq_len_negated", "caption_len", "foil_len", "negator_pos",
    "subject_len", "cosine_similarity", "relative_size", "binary_size", "d", "correct", "segment",
]


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{what} lacks columns {missing} (found {list(df.columns)}); re-run the rule that writes it")


def _unique_keys(df: pd.DataFrame, what: str) -> None:
    duplicated = df["key"][df["key"].duplicated()].tolist()
    if duplicated:
        raise InputError(f"{what} has {len(duplicated)} repeated keys, e.g. {duplicated[:3]}; each instance must "
                         "appear once (filter the scores by variant first)")


def pairwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, E) arrays, computed in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise InputError(f"embeddings must be two (N, E) arrays of one shape, got {a.shape} and {b.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    if np.any(norms == 0):
        raise InputError(f"{int((norms == 0).sum())} text embeddings are all zeros; their cosine is undefined")
    return (a * b).sum(1) / norms


def instance_table(scores: pd.DataFrame, positions: pd.DataFrame, cache_keys: Sequence[str],
                   cosine: np.ndarray, sizes: pd.DataFrame | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per instance of ``scores`` (one variant) with the columns :data:`INSTANCE_COLUMNS`.

    ``cosine[i]`` belongs to ``cache_keys[i]``. Instances missing from ``sizes`` (or all
    of them when ``sizes`` is None) get NaN sizes; the returned counts say how many.
    """
    _require(scores, ["key", "negation", "d", "correct", "segment"], "the scores table")
    _require(positions, ["key", "negation", "caption", "foil", "negated_ids", "caption_ids", "foil_ids",
                         "negator_pos", "n_further_subject", "positions_ok"], "the positions table")
    _unique_keys(scores, "the scores table")
    _unique_keys(positions, "the positions table")
    if len(cache_keys) != len(cosine):
        raise InputError(f"{len(cache_keys)} cached keys but {len(cosine)} cosine similarities")

    keys = scores["key"].astype(str).tolist()
    pos = positions.set_index("key")
    absent = [k for k in keys if k not in pos.index]
    if absent:
        raise InputError(f"{len(absent)} scored instances are not in the positions table, e.g. {absent[:3]}; "
                         "the scores and the positions come from different runs, re-run compute_scores")
    pos = pos.loc[keys]
    side_mismatch = np.flatnonzero(pos["negation"].to_numpy() != scores["negation"].to_numpy())
    if side_mismatch.size:
        raise InputError(f"{side_mismatch.size} instances have a different negation side in the scores and the "
                         f"positions table, e.g. {keys[side_mismatch[0]]!r}; re-run compute_scores")
    cosine_by_key = pd.Series(np.asarray(cosine, dtype=float), index=[str(k) for k in cache_keys])
    uncached = [k for k in keys if k not in cosine_by_key.index]
    if uncached:
        raise InputError(f"{len(uncached)} scored instances are not in the text cache, e.g. {uncached[:3]}; "
                         "re-run cache_text_activations and compute_scores")

    placed = pos["positions_ok"].to_numpy(dtype=bool)
    table = pd.DataFrame({
        "key": keys,
        "negation": scores["negation"].tolist(),
        "caption": pos["caption"].tolist(),
        "foil": pos["foil"].tolist(),
        "seq_len": pd.array([len(x) for x in pos["caption_ids"]], dtype="Int64"),
        "seq_len_negated": pd.array([len(x) for x in pos["negated_ids"]], dtype="Int64"),
        "caption_len": pd.array([len(x) for x in pos["caption_ids"]], dtype="Int64"),
        "foil_len": pd.array([len(x) for x in pos["foil_ids"]], dtype="Int64"),
        "negator_pos": pd.array(np.where(placed, pos["negator_pos"], pd.NA), dtype="Int64"),
        "subject_len": pd.array(np.where(placed, 1 + pos["n_further_subject"].to_numpy(), pd.NA), dtype="Int64"),
        "cosine_similarity": cosine_by_key.loc[keys].to_numpy(),
        "d": scores["d"].to_numpy(dtype=float),
        "correct": scores["correct"].to_numpy(dtype=bool),
        "segment": scores["segment"].tolist(),
    })
    n_missing_size = len(keys)
    if sizes is not None:
        _require(sizes, ["key", "relative_size", "binary_size"], "the subject size table")
        _unique_keys(sizes, "the subject size table")
        by_key = sizes.set_index(sizes["key"].astype(str))
        known = table["key"].isin(by_key.index).to_numpy()
        n_missing_size = int((~known).sum())
        for column in ("relative_size", "binary_size"):
            table[column] = by_key[column].reindex(keys).to_numpy(dtype=float)
    else:
        table["relative_size"] = np.nan
        table["binary_size"] = np.nan
    foil = table["negation"] == "foil"
    counts = {
        "n_instances": len(table),
        "n_negation_in_caption": int((~foil).sum()),
        "n_negation_in_foil": int(foil.sum()),
        "n_positions_failed": int((~placed).sum()),
        "n_missing_from_size_table": n_missing_size,
        "n_foil_with_size": int((foil & table["relative_size"].notna()).sum()),
    }
    return table[INSTANCE_COLUMNS], counts


def correlation_table(instances: pd.DataFrame,
                      variables: Sequence[str] = tuple(TABLE3_VARIABLES)) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Table 3: Pearson correlations of ``variables`` over complete cases with negation in the foil.

    Wide: one row per ``variable`` with one column per variable, plus ``n`` (the number of
    complete cases). A variable that is constant over those cases has NaN correlations,
    its diagonal included; it is listed in the returned ``constant_variables``.
    """
    _require(instances, ["negation", *variables], "the preliminary instance table")
    foil = instances[instances["negation"] == "foil"]
    values = foil[list(variables)].astype(float)
    complete = values.dropna()
    n = len(complete)
    constant = [v for v in variables if n == 0 or np.ptp(complete[v].to_numpy()) == 0]
    matrix = np.full((len(variables), len(variables)), np.nan)
    for i, a in enumerate(variables):
        for j, b in enumerate(variables):
            if j >= i:
                matrix[i, j] = matrix[j, i] = pearson(complete[a], complete[b])[0]
    table = pd.DataFrame(matrix, columns=list(variables))
    table.insert(0, "variable", list(variables))
    table["n"] = n
    info = {"n": n, "n_negation_in_foil": len(foil), "n_incomplete": len(foil) - n, "constant_variables": constant,
            "incomplete_by_variable": {v: int(values[v].isna().sum()) for v in variables}}
    return table, info


PAIRWISE_COLUMNS = ["variable_x", "variable_y", "r", "p", "n", "n_caption", "n_foil"]


def pairwise_correlation_table(instances: pd.DataFrame,
                               variables: Sequence[str] = tuple(TABLE3_VARIABLES)) -> pd.DataFrame:
    """Table 3 as the study computes it: Pearson's r of each pair of ``variables`` over every
    instance (both negation sides) where both are finite.

    Long format, one row per ordered pair (diagonal included): ``r``, its two-sided ``p``,
    ``n`` (instances used) and how many of them have the negation in the caption / the foil.
    r is NaN where fewer than 3 instances remain or a variable is constant over them.
    """
    _require(instances, ["negation", *variables], "the preliminary instance table")
    values = instances[list(variables)].astype(float)
    foil = (instances["negation"] == "foil").to_numpy()
    rows = []
    for a in variables:
        for b in variables:
            both = (np.isfinite(values[a]) & np.isfinite(values[b])).to_numpy()
            r, p = pearson(values[a][both], values[b][both])
            rows.append({"variable_x": a, "variable_y": b, "r": r, "p": p, "n": int(both.sum()),
                         "n_caption": int((both & ~foil).sum()), "n_foil": int((both & foil).sum())})
    return pd.DataFrame(rows, columns=PAIRWISE_COLUMNS)


LENGTH_COLUMNS = ["negation", "max_seq_len", "n", "n_total", "share_kept", "accuracy"]


def length_accuracy(instances: pd.DataFrame) -> pd.DataFrame:
    """The study's length analysis: for each observed sequence length L (caption tokens) and
    negation side (``caption``, ``foil``, ``all``), the accuracy over the instances with
    ``seq_len <= L``, their number ``n`` and their share of the side's ``n_total``."""
    _require(instances, ["negation", "seq_len", "correct"], "the preliminary instance table")
    rows = []
    lengths = sorted(int(x) for x in instances["seq_len"].dropna().unique())
    for side in (*SIDES, "all"):
        part = instances if side == "all" else instances[instances["negation"] == side]
        seq_len = part["seq_len"].to_numpy(dtype=float)
        correct = part["correct"].to_numpy(dtype=bool)
        for length in lengths:
            kept = seq_len <= length
            rows.append({"negation": side, "max_seq_len": length, "n": int(kept.sum()), "n_total": len(part),
                         "share_kept": kept.sum() / len(part) if len(part) else np.nan,
                         "accuracy": correct[kept].mean() if kept.any() else np.nan})
    return pd.DataFrame(rows, columns=LENGTH_COLUMNS)


SIZE_FILTER_COLUMNS = ["size", "min_size", "n_total", "n_kept", "share_removed", "accuracy_all", "accuracy_kept"]


def size_accuracy(instances: pd.DataFrame, min_size: float) -> pd.DataFrame:
    """Figure 7's filter: over the instances with the negation in the foil and a subject size, the
    accuracy of those with size ``>= min_size``, and the share of instances removed; one row per
    size measure (``relative_size``, ``binary_size``)."""
    _require(instances, ["negation", "relative_size", "binary_size", "correct"], "the preliminary instance table")
    foil = instances[instances["negation"] == "foil"]
    rows = []
    for column in ("relative_size", "binary_size"):
        part = foil[foil[column].notna()]
        kept = part[column].to_numpy(dtype=float) >= min_size
        correct = part["correct"].to_numpy(dtype=bool)
        rows.append({"size": column, "min_size": float(min_size), "n_total": len(part), "n_kept": int(kept.sum()),
                     "share_removed": 1 - kept.mean() if len(part) else np.nan,
                     "accuracy_all": correct.mean() if len(part) else np.nan,
                     "accuracy_kept": correct[kept].mean() if kept.any() else np.nan})
    return pd.DataFrame(rows, columns=SIZE_FILTER_COLUMNS)


def repeated_caption_similarity(instances: pd.DataFrame, caption: str = REPEATED_CAPTION) -> dict[str, Any]:
    """Mean caption–foil cosine similarity of the instances whose caption is ``caption``, and
    their number: the study reports about 0.91 for "There are no people." on the variant it used."""
    _require(instances, ["caption", "cosine_similarity"], "the preliminary instance table")
    part = instances[instances["caption"].str.strip() == caption]
    return {"caption": caption, "n": len(part),
            "mean_cosine": float(part["cosine_similarity"].mean()) if len(part) else None}


def accuracy_at_least(size: np.ndarray, correct: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each threshold x: the share of correct instances among those with size ≥ x, and their number.

    The share is NaN where no instance reaches x. NaN sizes are ignored.
    """
    size = np.asarray(size, dtype=float)
    correct = np.asarray(correct, dtype=bool)
    ok = np.isfinite(size)
    size, correct = size[ok], correct[ok]
    order = np.argsort(size, kind="stable")
    size, correct = size[order], correct[order]
    first = np.searchsorted(size, np.asarray(thresholds, dtype=float), side="left")
    n = len(size) - first
    correct_from = np.concatenate([np.cumsum(correct[::-1])[::-1], [0]])
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(n > 0, correct_from[first] / np.maximum(n, 1), np.nan)
    return share, n


def _r_text(r: float) -> str:
    return "n/a" if not np.isfinite(r) else f"{r:.2f}"


def plot_similarity_vs_score(instances: pd.DataFrame, model: str, repeated_caption: str = REPEATED_CAPTION):
    """Figure 6: cosine similarity of caption and foil (x) against d (y) per negation side,
    coloured by the sequence length (caption tokens), with Pearson r with and without ``repeated_caption``."""
    from matplotlib.colors import BoundaryNorm

    lengths = instances["seq_len"].astype(float)
    low, high = int(lengths.min()), int(lengths.max())
    bounds = np.arange(low - 0.5, high + 1.5)
    cmap = plt.get_cmap("viridis", len(bounds) - 1)
    norm = BoundaryNorm(bounds, cmap.N)
    fig, axes = new_figure(1, 2, figsize=(11, 4.4), sharey=True, constrained_layout=True)
    points = None
    for ax, side in zip(axes, SIDES):
        part = instances[instances["negation"] == side]
        points = ax.scatter(part["cosine_similarity"], part["d"], c=part["seq_len"].astype(float), cmap=cmap,
                            norm=norm, s=14, alpha=0.8, edgecolors="none")
        ax.axhline(0, color="grey", lw=0.8, ls="--")
        r = pearson(part["cosine_similarity"], part["d"])[0]
        rest = part[part["caption"].str.strip() != repeated_caption]
        r_rest = pearson(rest["cosine_similarity"], rest["d"])[0]
        ax.set_title(f"negation in the {side}: r = {_r_text(r)}, n = {len(part)}\n"
                     f"without \"{repeated_caption}\" ({len(part) - len(rest)} excl.): "
                     f"r = {_r_text(r_rest)}, n = {len(rest)}", fontsize=9)
        ax.set_xlabel("cosine similarity of caption and foil embeddings")
    axes[0].set_ylabel("d = S(c,i) − S(f,i)")
    ticks = np.arange(low, high + 1, max(1, (high - low) // 8 + 1))
    colour_bar = fig.colorbar(points, ax=list(axes), ticks=ticks)
    colour_bar.set_label("sequence length: caption tokens, incl. SOT and EOT")
    fig.suptitle(f"{model}: caption–foil similarity and classification score", fontsize=11)
    return fig


def plot_subject_size(instances: pd.DataFrame, model: str, min_count: int = 10, min_size: float | None = None):
    """Figure 7: subject size (x) against d (y) for negation in the foil, relative and binary
    size in two panels, with (twin axis) the accuracy of instances whose size is ≥ x where at
    least ``min_count`` instances remain; ``min_size`` draws the study's filter (a dotted line,
    with the share removed and the accuracy of the rest, :func:`size_accuracy`)."""
    foil = instances[instances["negation"] == "foil"]
    fig, axes = new_figure(1, 2, figsize=(11, 4.2), constrained_layout=True)
    panels = [("relative_size", "relative subject size (mean subject probability)"),
              ("binary_size", "binary subject size (share of subject pixels)")]
    for ax, (column, label) in zip(axes, panels):
        part = foil[foil[column].notna()]
        size = part[column].to_numpy(dtype=float)
        correct = part["correct"].to_numpy(dtype=bool)
        ax.scatter(size[correct], part["d"][correct], s=14, alpha=0.75, color="tab:green", edgecolors="none",
                   label="correct (d > 0)")
        ax.scatter(size[~correct], part["d"][~correct], s=14, alpha=0.75, color="tab:red", edgecolors="none",
                   label="incorrect (d ≤ 0)")
        ax.axhline(0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel(label)
        ax.set_ylabel("d = S(c,i) − S(f,i)")
        r = pearson(size, part["d"])[0]
        ax.set_title(f"{column.replace('_', ' ')}: r(size, d) = {_r_text(r)}, n = {len(part)}", fontsize=10)
        twin = ax.twinx()
        thresholds = np.unique(size)
        share, n = accuracy_at_least(size, correct, thresholds)
        shown = n >= min_count
        twin.plot(thresholds[shown], share[shown], color="black", drawstyle="steps-post", lw=1.5,
                  label=f"accuracy of instances with size ≥ x (n ≥ {min_count})")
        twin.set_ylim(-0.02, 1.02)
        twin.set_ylabel("accuracy of instances with size ≥ x")
        if min_size is not None and len(part):
            row = size_accuracy(part, min_size).set_index("size").loc[column]
            ax.axvline(min_size, color="tab:blue", lw=1, ls=":",
                       label=f"size ≥ {min_size:g}: {row.share_removed:.0%} removed, accuracy {row.accuracy_kept:.2f}")
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(handles=handles, fontsize=7, loc="lower right")
    fig.suptitle(f"{model}: subject size and classification score (negation in the foil)", fontsize=11)
    return fig
