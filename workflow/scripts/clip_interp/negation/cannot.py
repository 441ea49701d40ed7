"""CANNOT negation pairs: loading the v1.1 table and selecting "no" -> "some" pairs.

CANNOT v1.1 is a TSV with columns ``premise, hypothesis, label`` where ``label == 1``
means the hypothesis negates the premise. The study's selection (:func:`select_no_some_pairs`)
keeps negated hypotheses with a "no" as a determiner, and pairs each with the sentence
obtained by replacing that "no" with "some". The study says the "no" determines the sentence's
subject, but its own example puts it on an object ("recommend *no* alcohol during pregnancy"),
so there are two readings (:data:`READINGS`): ``noun_chunk`` (default, matches the example):
"no" opens a spaCy noun chunk; ``subject_only`` (strict): in spaCy's dependency parse "no"
is a ``det`` of a noun that is ``nsubj`` or ``nsubjpass``, or the noun after an existential
"there is/are" (a noun whose verb has an ``expl`` child).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InputError, SourceError
from ..sources import LFS_POINTER_PREFIX
from ..tokenizers import ClipTokenizer
from .positions import NEGATOR, single_token_id, token_index

V11_COLUMNS = ["premise", "hypothesis", "label"]
SENTENCE_COLUMNS = ["sentence", "negated"]
QUANTIFIER = "some"
_HAS_NO = re.compile(r"\bno\b", re.IGNORECASE)
READINGS = {"noun_chunk": "after_no_opens_noun_chunk", "subject_only": "after_no_determines_subject"}
SUBJECT_DEPS = ("nsubj", "nsubjpass")


def _read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False)


def build_cannot_v11_from_parts(parts_dir: str | os.PathLike) -> pd.DataFrame:
    """A v1.1-format table (``premise, hypothesis, label``) built from CANNOT's component TSVs.

    This is a stand-in for tests and offline runs, not the released CANNOT v1.1 (which
    merges, filters and balances the components differently). Every ``*.tsv`` in
    ``parts_dir`` is read in name order: a ``sentence, negated`` file gives rows
    premise = sentence, hypothesis = negated, label = 1; a ``premise, hypothesis, label``
    file is taken as it is.
    """
    parts_dir = Path(parts_dir)
    files = sorted(parts_dir.glob("*.tsv"))
    if not files:
        raise InputError(f"no *.tsv files in {str(parts_dir)!r}; point it at CANNOT's component TSVs")
    tables = []
    for path in files:
        part = _read_tsv(path)
        columns = list(part.columns)
        if set(V11_COLUMNS) <= set(columns):
            table = part[V11_COLUMNS].copy()
        elif set(SENTENCE_COLUMNS) <= set(columns):
            table = pd.DataFrame({"premise": part["sentence"], "hypothesis": part["negated"], "label": "1"})
        else:
            raise InputError(
                f"CANNOT component {str(path)!r} has columns {columns}; expected 'sentence, negated' "
                "or 'premise, hypothesis, label'"
            )
        tables.append(_with_int_labels(table, path))
    return pd.concat(tables, ignore_index=True)


def _with_int_labels(df: pd.DataFrame, path: Path, source: str | None = None) -> pd.DataFrame:
    labels = pd.to_numeric(df["label"], errors="coerce")
    bad = df.index[labels.isna() | ~labels.isin([0, 1])]
    if len(bad):
        shown = ", ".join(f"row {i + 2}: {df['label'].iloc[i]!r}" for i in bad[:5])
        raise InputError(
            f"{source or repr(str(path))}: {len(bad)} labels are not 0 or 1 ({shown}); fix the file or use the "
            "released CANNOT v1.1 TSV"
        )
    out = df.copy()
    out["label"] = labels.astype("int64")
    return out


def configured_source(key: str, url: str) -> str:
    """How messages name a source: its config key and the path or URL the user gave there."""
    return f"`{key}` ({str(url)!r})"


def load_cannot(path: str | os.PathLike, source: str | None = None) -> pd.DataFrame:
    """Read a CANNOT v1.1 TSV and check its columns ``premise, hypothesis, label`` (label 0/1).

    ``source`` names the file in messages as the user configured it (:func:`configured_source`), for ``path``
    being the workflow's copy of it; by default messages name ``path``.
    """
    path = Path(path)
    where = f"CANNOT file {source or repr(str(path))}"
    if not path.is_file():
        raise InputError(f"{where} does not exist; fetch it first or fix its path in the config")
    with open(path, "rb") as handle:
        head = handle.read(len(LFS_POINTER_PREFIX) + 64).lstrip(b"\xef\xbb\xbf").lstrip()
    if head.startswith(LFS_POINTER_PREFIX):
        raise SourceError(
            f"{where} is a Git LFS pointer, not the data. Fetch the real TSV from the "
            "LFS media URL (https://media.githubusercontent.com/media/<owner>/<repo>/<ref>/<path> for the "
            "GitHub file) or from a dataset-hub copy, or give a local path to a downloaded copy."
        )
    df = _read_tsv(path)
    if list(df.columns) != V11_COLUMNS:
        raise InputError(
            f"{where} has columns {list(df.columns)}; expected exactly "
            f"{V11_COLUMNS} (tab-separated, with a header line). Is this the v1.1 TSV?"
        )
    return _with_int_labels(df, path, source)


def _determines_subject(token) -> bool:
    """``token`` is a ``det`` of a subject noun, or of the noun after an existential "there is/are"."""
    if token.dep_ != "det":
        return False
    noun = token.head
    if noun.dep_ in SUBJECT_DEPS:
        return True
    verb = noun.head
    return verb is not noun and verb.lemma_ == "be" and any(c.dep_ == "expl" for c in verb.children)


def _no_candidate(doc, reading: str = "noun_chunk") -> tuple[Any | None, str]:
    """The first "no" of ``reading`` (:data:`READINGS`) not followed by punctuation, or the reason none is."""
    if reading == "noun_chunk":
        openers = [chunk[0] for chunk in doc.noun_chunks if chunk[0].lower_ == NEGATOR]
    else:
        openers = [token for token in doc if token.lower_ == NEGATOR and _determines_subject(token)]
    if not openers:
        return None, "no_candidate"
    for token in openers:
        nxt = token.nbor() if token.i + 1 < len(doc) else None
        if nxt is not None and not nxt.is_punct:
            return token, ""
    return None, "followed_by_punct"


def _counterpart(text: str, start: int) -> str:
    word = text[start:start + len(NEGATOR)]
    replacement = QUANTIFIER.capitalize() if word[:1].isupper() else QUANTIFIER
    return text[:start] + replacement + text[start + len(NEGATOR):]


def select_no_some_pairs(df: pd.DataFrame, tokenizer: ClipTokenizer, nlp, batch_size: int = 512,
                         reading: str = "noun_chunk") -> tuple[pd.DataFrame, dict[str, Any]]:
    """Negated sentences with a determiner "no" of ``reading`` and their "some" counterparts.

    Filters, in order (the report counts the rows left after each, in ``steps`` too):
    ``label == 1``; the hypothesis contains the word "no" (case-insensitive; a regex
    pre-filter); a "no" of the reading (:data:`READINGS`: it opens a noun chunk, or it
    determines the subject); that "no" is neither followed by a punctuation token nor
    sentence-final (the first such "no" is used); both sentences fit the tokenizer's context
    length; both have the same number of CLIP tokens; the negator's token is "no"; the pair
    is not a duplicate of an earlier one (same negated sentence). The counterpart replaces
    that "no" with "some" ("No" -> "Some"). Columns:
    ``source_index`` (index in ``df``), ``negated``, ``non_negated``, ``negator_pos``
    (SOT = 0), ``eot_pos``, ``n_tokens``.
    """
    if reading not in READINGS:
        raise InputError(f"negation.selectivity.cannot_reading is {reading!r}; choose one of {sorted(READINGS)}")
    missing = [c for c in ("hypothesis", "label") if c not in df.columns]
    if missing:
        raise InputError(f"CANNOT table lacks columns {missing} (found {list(df.columns)}); load it with load_cannot")
    no_id = single_token_id(tokenizer, NEGATOR)
    negated = df.loc[pd.to_numeric(df["label"], errors="coerce") == 1, "hypothesis"].astype(str)
    with_no = negated[negated.map(lambda s: bool(_HAS_NO.search(s)))]
    rows: list[dict[str, Any]] = []
    counts = {"no_candidate": 0, "followed_by_punct": 0, "too_long": 0, "unequal_length": 0, "misaligned": 0}
    for index, text, doc in zip(with_no.index, with_no.tolist(), nlp.pipe(with_no.tolist(), batch_size=batch_size)):
        token, reason = _no_candidate(doc, reading)
        if token is None:
            counts[reason] += 1
            continue
        other = _counterpart(text, token.idx)
        try:
            neg_ids, other_ids = tokenizer.encode(text), tokenizer.encode(other)
        except ValueError:
            counts["too_long"] += 1
            continue
        if len(neg_ids) != len(other_ids):
            counts["unequal_length"] += 1
            continue
        pos = token_index(tokenizer, text, token.idx)
        if neg_ids[pos] != no_id:
            counts["misaligned"] += 1
            continue
        rows.append({
            "source_index": index, "negated": text, "non_negated": other, "negator_pos": pos,
            "eot_pos": len(neg_ids) - 1, "n_tokens": len(neg_ids),
        })
    pairs = pd.DataFrame(rows, columns=["source_index", "negated", "non_negated", "negator_pos", "eot_pos", "n_tokens"])
    for col in ("source_index", "negator_pos", "eot_pos", "n_tokens"):
        pairs[col] = pairs[col].astype("int64")
    after_aligned = len(pairs)
    pairs = pairs[~pairs["negated"].duplicated()].reset_index(drop=True)
    after_candidate = len(with_no) - counts["no_candidate"]
    after_punct = after_candidate - counts["followed_by_punct"]
    after_context = after_punct - counts["too_long"]
    steps = {
        "rows": len(df),
        "after_label_1": len(negated),
        "after_contains_no": len(with_no),
        READINGS[reading]: after_candidate,
        "after_not_followed_by_punct": after_punct,
        "after_fits_context": after_context,
        "after_equal_length": after_context - counts["unequal_length"],
        "after_negator_aligned": after_aligned,
        "after_duplicates_removed": len(pairs),
    }
    report = {"reading": reading, **steps, "misaligned_negator": counts["misaligned"],
              "duplicates_removed": after_aligned - len(pairs), "pairs": len(pairs), "steps": list(steps)}
    return pairs, report


def require_pairs_left(pairs: pd.DataFrame, report: dict, source, model: str) -> None:
    """Fail when the filters of :func:`select_no_some_pairs` left no pair, naming the file (``source``), the reading,
    the rows left after each step and the other reading to try, since an empty table would make every selectivity
    score undefined."""
    if not pairs.empty:
        return
    counts = ", ".join(f"{step}: {report[step]}" for step in report["steps"])
    others = [reading for reading in READINGS if reading != report["reading"]]
    raise InputError(f"no \"no\"/\"some\" pair of {source} is left for model {model} under the reading "
                     f"{report['reading']!r} (rows left after each step: {counts}); check that the file is the "
                     f"CANNOT dataset, or choose negation.selectivity.cannot_reading: {' or '.join(others)}")
