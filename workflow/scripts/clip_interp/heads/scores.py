"""Interpretability scores of a model's head labels (CLIP-InterpreT, Madasu et al.).

Notation: N labelled heads, head i with label l_i, n_l the number of heads with label l, K the number of
distinct labels. Heads without a label (null; e.g. a published label that maps to no taxonomy property)
are left out of every entanglement reading and counted (``n_unlabelled``).

Entanglement, the paper's definition: "the mean frequency at which heads exhibit the same TEXTSPAN label"
(lower is better; 0 when every head has its own property). Read here as the frequency of repeated labels,
the number of heads that exhibit a label another head already exhibits, per head::

    entanglement = sum_l (n_l - 1) / N = (N - K) / N

i.e. the mean over heads of "this head repeats a label", counting each label's first head as not
repeating. It is 0 when all labels differ and (N - 1) / N when all heads share one label.

Two alternative readings (:func:`entanglement_readings`):

- ``shared_share``: the share of heads whose label is shared by at least one other head,
  ``sum_{l: n_l >= 2} n_l / N`` (0 when all differ, 1 when all share one label);
- ``pairwise_share``: the mean over heads of the share of the other heads with the same label,
  ``(1/N) sum_i (n_{l_i} - 1) / (N - 1) = sum_l n_l (n_l - 1) / (N (N - 1))``, the chance that two distinct
  heads drawn at random share a label (0 when all differ, 1 when all share one; 0 for N = 1).

Association (:func:`association`): the share of heads for which at least ``min_matches`` of their first
``n_texts`` TEXTSPAN texts are matched, by the default labeller's :class:`~clip_interp.heads.labels.PropertyMatcher`,
to the head's own label. The paper judged it by hand with at least 3 of the top 5 texts; here the
matcher judges, so for the default labeller it is the share of heads whose majority reaches ``min_matches``
(with ``heads.n_texts`` equal to the association's ``n_texts``, exactly the heads of confidence at least
``min_matches / n_texts``). Free-form labels (the open-vocabulary LLM's, the published ones) are mapped onto the
taxonomy first (:func:`clip_interp.heads.steps.label_readings`). A filled judging sheet
(:mod:`clip_interp.heads.judgements`, ``heads.association.judgements``) replaces the matcher by a person's judgement.

Label agreement (:func:`label_agreement`): over the heads in both tables, the share whose labels name the
same taxonomy property once both are mapped onto the taxonomy (labels that map to no property disagree, and
are counted per table).
"""

from __future__ import annotations

import pandas as pd

from ..errors import InputError
from .labels import PropertyMatcher
from .taxonomy import Taxonomy

READINGS = ("entanglement", "shared_share", "pairwise_share")


def _require(table: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(f"the {what} lacks the columns {missing} (has {list(table.columns)})")


def _check_heads(table: pd.DataFrame, what: str) -> None:
    duplicated = table.duplicated(["layer", "head"])
    if duplicated.any():
        first = table.loc[duplicated, ["layer", "head"]].iloc[0].tolist()
        raise InputError(f"the {what} holds (layer, head) {tuple(first)} more than once "
                         f"({int(duplicated.sum())} duplicate rows); give one label per head")


def _label_counts(labels: pd.DataFrame) -> tuple[pd.Series, int]:
    _require(labels, ("layer", "head", "label"), "label table")
    _check_heads(labels, "label table")
    present = labels["label"].dropna()
    if present.empty:
        raise InputError(f"the label table has no labelled heads ({len(labels)} rows, all unlabelled)")
    return present.astype(str).value_counts(), int(len(labels) - len(present))


def entanglement_readings(labels: pd.DataFrame) -> dict:
    """The three entanglement readings (module docstring) and the counts they rest on:
    ``entanglement``, ``shared_share``, ``pairwise_share``, ``n_heads`` (labelled), ``n_labels`` (distinct),
    ``n_unlabelled``."""
    counts, unlabelled = _label_counts(labels)
    n, k = int(counts.sum()), int(len(counts))
    return {
        "entanglement": (n - k) / n,
        "shared_share": float(counts[counts >= 2].sum()) / n,
        "pairwise_share": float((counts * (counts - 1)).sum()) / (n * (n - 1)) if n > 1 else 0.0,
        "n_heads": n,
        "n_labels": k,
        "n_unlabelled": unlabelled,
    }


def entanglement(labels: pd.DataFrame) -> float:
    """The paper's entanglement score as read here: ``(N - K) / N``, the frequency of repeated labels."""
    return entanglement_readings(labels)["entanglement"]


def association_per_head(labels: pd.DataFrame, matcher: PropertyMatcher, n_texts: int = 5,
                         min_matches: int = 3) -> pd.DataFrame:
    """Per head: ``layer, head, label, matches`` (of its first ``n_texts`` texts, how many the matcher assigns
    to ``label``) and ``associated`` (``matches >= min_matches``). A head without a label matches nothing."""
    _require(labels, ("layer", "head", "label", "texts"), "label table")
    _check_heads(labels, "label table")
    if not 1 <= min_matches <= n_texts:
        raise InputError(f"association needs 1 <= min_matches <= n_texts, got min_matches={min_matches}, "
                         f"n_texts={n_texts}")
    judged = []
    for row in labels.itertuples(index=False):
        texts = list(row.texts) if row.texts is not None else []
        if len(texts) < n_texts:
            raise InputError(f"head (layer {row.layer}, head {row.head}) has {len(texts)} texts in the label "
                             f"table, fewer than n_texts={n_texts}; lower n_texts or label with more texts")
        judged.append(texts[:n_texts])
    flat = matcher.properties([t for texts in judged for t in texts])
    rows = []
    for i, row in enumerate(labels.itertuples(index=False)):
        label = None if pd.isna(row.label) else str(row.label)
        matched = flat[i * n_texts:(i + 1) * n_texts]
        matches = sum(m == label for m in matched) if label is not None else 0
        rows.append({"layer": int(row.layer), "head": int(row.head), "label": label, "matches": matches,
                     "associated": matches >= min_matches})
    return pd.DataFrame(rows, columns=["layer", "head", "label", "matches", "associated"])


def association(labels: pd.DataFrame, matcher: PropertyMatcher, n_texts: int = 5, min_matches: int = 3) -> float:
    """The share of heads with at least ``min_matches`` of their first ``n_texts`` texts matched to their label."""
    if labels.empty:
        raise InputError("the label table has no rows; association needs labelled heads")
    return float(association_per_head(labels, matcher, n_texts, min_matches)["associated"].mean())


def _mapped(table: pd.DataFrame, taxonomy: Taxonomy | None) -> pd.Series:
    if taxonomy is None:
        return table["label"].where(table["label"].notna(), None)
    return table["label"].map(taxonomy.canonical)


def label_agreement(ours: pd.DataFrame, published: pd.DataFrame, taxonomy: Taxonomy | None = None) -> dict:
    """Agreement of two label tables of one model over the (layer, head) pairs they share.

    Both tables' labels are mapped onto ``taxonomy`` (:meth:`Taxonomy.canonical`; with ``taxonomy=None`` the
    labels are compared as given). Returns ``agreement`` (same property, over all shared heads; a head whose
    label maps nowhere in either table disagrees), ``agreement_mapped`` (over the shared heads whose labels
    both map; NaN when none), ``n_heads`` (shared), ``n_same``, ``n_both_mapped``, ``n_ours_unmapped``,
    ``n_published_unmapped``, ``published_unmapped_labels`` (the distinct published strings that map
    nowhere), ``n_only_ours`` and ``n_only_published`` (heads in one table only).
    """
    for table, what in ((ours, "our label table"), (published, "published label table")):
        _require(table, ("layer", "head", "label"), what)
        _check_heads(table, what)
    left = ours[["layer", "head"]].assign(ours=_mapped(ours, taxonomy).values, ours_raw=ours["label"].values)
    right = published[["layer", "head"]].assign(published=_mapped(published, taxonomy).values,
                                                published_raw=published["label"].values)
    joined = left.merge(right, on=["layer", "head"], how="inner")
    if joined.empty:
        raise InputError("the two label tables share no (layer, head); check that they are of the same model and "
                         "that both number layers 1..L")
    ours_ok, published_ok = joined["ours"].notna(), joined["published"].notna()
    same = ours_ok & published_ok & (joined["ours"] == joined["published"])
    both = int((ours_ok & published_ok).sum())
    unmapped = joined.loc[~published_ok, "published_raw"].dropna().astype(str)
    return {
        "agreement": float(same.sum()) / len(joined),
        "agreement_mapped": float(same.sum()) / both if both else float("nan"),
        "n_heads": int(len(joined)),
        "n_same": int(same.sum()),
        "n_both_mapped": both,
        "n_ours_unmapped": int((~ours_ok).sum()),
        "n_published_unmapped": int((~published_ok).sum()),
        "published_unmapped_labels": sorted(set(unmapped)),
        "n_only_ours": int(len(left) - len(joined)),
        "n_only_published": int(len(right) - len(joined)),
    }
