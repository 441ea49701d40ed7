"""Classification scores of the existence benchmark and their segments.

For caption c, foil f and image i, ``S(t, i) = logit_scale * cos(image, text)``; the score
is ``d = S(c, i) - S(f, i)`` and an instance is correct iff ``d > 0``. Segments:
``correct`` if ``d > correct``, ``incorrect`` if ``d <= incorrect``, else ``ambiguous``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..plotting import new_figure

SEGMENTS = ("correct", "ambiguous", "incorrect")


def segment_of(d: np.ndarray, correct: float = 1.0, incorrect: float = -1.0) -> np.ndarray:
    """The segment of each score ``d`` for the two thresholds (``incorrect < correct``)."""
    if not incorrect < correct:
        raise ValueError(f"segment thresholds need incorrect < correct, got {incorrect} and {correct}")
    d = np.asarray(d, dtype=float)
    return np.where(d > correct, "correct", np.where(d <= incorrect, "incorrect", "ambiguous"))


def _unit_rows(x) -> np.ndarray:
    """Rows of ``x`` scaled to unit Euclidean norm, in float64."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def classification_scores(keys, negation, caption_embedding, foil_embedding, image_embedding, logit_scale: float,
                          correct: float = 1.0, incorrect: float = -1.0) -> pd.DataFrame:
    """One row per instance: ``S_caption, S_foil, d, correct, segment``."""
    img, cap, foil = (_unit_rows(x) for x in (image_embedding, caption_embedding, foil_embedding))
    s_cap = logit_scale * (img * cap).sum(-1)
    s_foil = logit_scale * (img * foil).sum(-1)
    d = s_cap - s_foil
    return pd.DataFrame({
        "key": list(keys), "negation": list(negation), "S_caption": s_cap, "S_foil": s_foil, "d": d,
        "correct": d > 0, "segment": segment_of(d, correct, incorrect),
    })


def accuracy_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Table 1: accuracy by negation side (and overall) per variant, with the study's difference
    column ``standard − rephrased`` (variant ``standard_minus_rephrased``; e.g. .676 − .668 = .008)."""
    rows = []
    for variant, df in scores.groupby("variant"):
        for side, part in [("caption", df[df.negation == "caption"]), ("foil", df[df.negation == "foil"]), ("all", df)]:
            rows.append({"variant": variant, "negation": side, "n": len(part), "accuracy": part["correct"].mean()})
    table = pd.DataFrame(rows)
    wide = table.pivot(index="negation", columns="variant", values="accuracy")
    if {"standard", "rephrased"} <= set(wide.columns):
        diff = (wide["standard"] - wide["rephrased"]).rename("accuracy").reset_index()
        diff["variant"] = "standard_minus_rephrased"
        diff["n"] = np.nan
        table = pd.concat([table, diff[table.columns]], ignore_index=True)
    return table


def segment_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Table 2: instances per segment by negation side, per variant."""
    counts = scores.groupby(["variant", "negation", "segment"]).size().rename("n").reset_index()
    full = pd.MultiIndex.from_product([sorted(scores.variant.unique()), ["caption", "foil"], list(SEGMENTS)],
                                      names=["variant", "negation", "segment"])
    return counts.set_index(["variant", "negation", "segment"]).reindex(full, fill_value=0).reset_index()


def threshold_aligned_bins(d: np.ndarray, correct: float, incorrect: float, per_segment: int = 4,
                           max_bins: int = 80) -> np.ndarray:
    """Equal-width histogram edges that include both thresholds, so that no bin mixes segments.

    The width is ``(correct - incorrect) / k``: ``k = per_segment`` bins span the ambiguous
    segment unless that makes more than ``max_bins`` bins over the data, then the largest
    ``k < per_segment`` that does not (at least ``k = 1``).
    """
    d = np.asarray(d, dtype=float)
    d = d[np.isfinite(d)]
    low = min(incorrect, d.min()) if d.size else incorrect
    high = max(correct, d.max()) if d.size else correct
    gap = correct - incorrect
    for k in range(per_segment, 0, -1):
        width = gap / k
        if (high - low) / width <= max_bins:
            break
    below = int(np.ceil((incorrect - low) / width)) + 1
    above = int(np.ceil((high - incorrect) / width)) + 1
    return incorrect + width * np.arange(-below, above + 1)


def plot_score_distribution(scores: pd.DataFrame, correct: float, incorrect: float, model: str):
    """Figure 3: histogram of d per variant and negation side, coloured by segment."""
    variants = sorted(scores.variant.unique())
    fig, axes = new_figure(len(variants), 2, figsize=(9, 3 * len(variants)), squeeze=False, sharex=True)
    colours = {"correct": "tab:green", "ambiguous": "tab:orange", "incorrect": "tab:red"}
    bins = threshold_aligned_bins(scores.d.to_numpy(), correct, incorrect)
    for r, variant in enumerate(variants):
        for c, side in enumerate(["caption", "foil"]):
            ax = axes[r, c]
            part = scores[(scores.variant == variant) & (scores.negation == side)]
            ax.hist([part.d[part.segment == s] for s in SEGMENTS], bins=bins, stacked=True,
                    color=[colours[s] for s in SEGMENTS], label=list(SEGMENTS))
            for x in (correct, incorrect):
                ax.axvline(x, color="grey", lw=0.8, ls="--")
            ax.set_title(f"{variant}: negation in {side} (n={len(part)}, acc={part.correct.mean():.2f})", fontsize=9)
            ax.set_xlabel("d = S(c,i) − S(f,i)")
            ax.set_ylabel("instances")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{model}: distribution of the classification score d by segment", fontsize=10)
    fig.tight_layout()
    return fig
