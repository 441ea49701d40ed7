"""Association by human judgement, as the paper measured it: a judging sheet to fill, and the filled sheet read back.

The sheet (:func:`association_sheet`, TSV) has one row per labeller and head of a model, with the columns
``model, layer, layer_paper, head, label, labeller, text_1..text_n, match_1..match_n``: ``layer`` numbers layers
from 1 as this workflow does, ``layer_paper`` from 0 as the paper does (``layer - 1``, for the reader only);
``text_i`` is the head's i-th TEXTSPAN text (the label table's ``texts``, in rank order), and ``match_i`` is empty,
for a person to write whether ``text_i`` matches ``label``. Accepted judgements (any case, surrounding spaces
ignored): ``1``, ``y``, ``yes``, ``true`` (matches) and ``0``, ``n``, ``no``, ``false`` (does not match).

Read back (:func:`read_judgements`), a head is associated with its label when at least ``min_matches`` of its
``n`` texts are judged to match; the association of a labeller is the share of its heads so judged. The sheet must
hold exactly one row per head of every configured labeller of the model, with the current label and texts (a
sheet written before the labels changed is refused); rows of other models are ignored. Any other problem is an
:class:`~clip_interp.errors.InputError` naming the file, the line and what to fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd

from ..errors import InputError

YES = frozenset({"1", "y", "yes", "true"})
NO = frozenset({"0", "n", "no", "false"})
KEY_COLUMNS = ["model", "layer", "layer_paper", "head", "label", "labeller"]


def sheet_columns(n_texts: int) -> list[str]:
    """The sheet's columns for ``n_texts`` texts per head."""
    return [*KEY_COLUMNS, *(f"text_{i}" for i in range(1, n_texts + 1)),
            *(f"match_{i}" for i in range(1, n_texts + 1))]


def association_sheet(model: str, labels: Mapping[str, pd.DataFrame], n_texts: int) -> pd.DataFrame:
    """The empty judging sheet of ``model`` (module docstring): per labeller of ``labels`` ({labeller: label
    table}, in that order) and head (by layer, head), the label and the first ``n_texts`` texts."""
    rows = []
    for labeller, table in labels.items():
        for row in table.sort_values(["layer", "head"]).itertuples(index=False):
            texts = list(row.texts)
            if len(texts) < n_texts:
                raise InputError(f"head (layer {row.layer}, head {row.head}) of labeller {labeller} has {len(texts)} "
                                 f"texts, fewer than `heads.association.n_texts` ({n_texts}); lower it or raise "
                                 "`heads.n_texts`")
            rows.append({"model": model, "layer": int(row.layer), "layer_paper": int(row.layer) - 1,
                         "head": int(row.head), "label": "" if pd.isna(row.label) else str(row.label),
                         "labeller": labeller, **{f"text_{i + 1}": str(t) for i, t in enumerate(texts[:n_texts])},
                         **{f"match_{i + 1}": "" for i in range(n_texts)}})
    return pd.DataFrame(rows, columns=sheet_columns(n_texts))


def judgement(value: str) -> bool | None:
    """True for an accepted "matches" value, False for a "does not match" one, None for anything else."""
    text = str(value).strip().lower()
    return True if text in YES else False if text in NO else None


def _read(path: Path, n_texts: int) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"judging sheet {path} does not exist; fill a copy of results/heads/<model>/"
                         "association_sheet.tsv and give its path in `heads.association.judgements`")
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise InputError(f"judging sheet {path} is not a readable TSV: {error}") from None
    missing = [c for c in sheet_columns(n_texts) if c != "layer_paper" and c not in table.columns]
    if missing:
        raise InputError(f"judging sheet {path} lacks the columns {missing}; it needs the columns of the sheet the "
                         f"workflow writes for `heads.association.n_texts` = {n_texts}")
    return table.assign(line=range(2, len(table) + 2))


def _expected(labels: Mapping[str, pd.DataFrame]) -> dict[tuple[str, int, int], tuple[str, list[str]]]:
    return {(labeller, int(r.layer), int(r.head)): ("" if pd.isna(r.label) else str(r.label), list(r.texts))
            for labeller, table in labels.items() for r in table.itertuples(index=False)}


def _row_key(row, path: Path, labels: Mapping[str, pd.DataFrame]) -> tuple[str, int, int]:
    where = f"judging sheet {path}, line {row['line']}"
    if row["labeller"] not in labels:
        raise InputError(f"{where}: labeller {row['labeller']!r} is not one of the configured labellers "
                         f"{list(labels)}; delete the row or fix the labeller")
    try:
        layer, head = int(row["layer"]), int(row["head"])
    except ValueError:
        raise InputError(f"{where}: layer {row['layer']!r} and head {row['head']!r} must be integers "
                         "(layer from 1, as the workflow writes it)") from None
    return row["labeller"], layer, head


def _matches(row, path: Path, n_texts: int) -> int:
    where = f"judging sheet {path}, line {row['line']}"
    values = [row[f"match_{i}"] for i in range(1, n_texts + 1)]
    if all(not str(v).strip() for v in values):
        raise InputError(f"{where}: the row is left blank; write 1/0 or y/n in each of match_1..match_{n_texts}")
    count = 0
    for i, value in enumerate(values, start=1):
        judged = judgement(value)
        if judged is None:
            what = "is blank" if not str(value).strip() else f"holds {value!r}"
            raise InputError(f"{where}: match_{i} {what}; write one of 1, 0, y, n, yes, no, true, false")
        count += judged
    return count


def read_judgements(path, model: str, labels: Mapping[str, pd.DataFrame], n_texts: int,
                    min_matches: int) -> pd.DataFrame:
    """Per labeller and head of ``labels`` ({labeller: label table} of ``model``): ``labeller, layer, head, label,
    matches`` (texts judged to match) and ``associated`` (``matches >= min_matches``), from the filled sheet at
    ``path`` (module docstring)."""
    path = Path(path)
    table = _read(path, n_texts)
    table = table[table["model"] == model]
    expected, seen, rows = _expected(labels), {}, []
    for row in table.to_dict("records"):
        key = _row_key(row, path, labels)
        where = f"judging sheet {path}, line {row['line']}"
        if key not in expected:
            raise InputError(f"{where}: head (layer {key[1]}, head {key[2]}) of labeller {key[0]} is not a labelled "
                             f"head of model {model}; delete the row")
        if key in seen:
            raise InputError(f"{where}: repeats the head (layer {key[1]}, head {key[2]}) of labeller {key[0]} of "
                             f"line {seen[key]}; keep one row per head")
        seen[key] = row["line"]
        label, texts = expected[key]
        if row["label"] != label or [row[f"text_{i}"] for i in range(1, n_texts + 1)] != texts[:n_texts]:
            raise InputError(f"{where}: the label or texts are not the head's current ones (label {label!r}); the "
                             "labels changed since the sheet was written: judge a new sheet")
        matches = _matches(row, path, n_texts)
        rows.append({"labeller": key[0], "layer": key[1], "head": key[2], "label": label, "matches": matches,
                     "associated": matches >= min_matches})
    absent = [key for key in expected if key not in seen]
    if absent:
        labeller, layer, head = absent[0]
        raise InputError(f"judging sheet {path} has no row for head L{layer} H{head} (paper L{layer - 1}.H{head}) of "
                         f"labeller {labeller} of model {model} ({len(absent)} heads missing); add them")
    return pd.DataFrame(rows, columns=["labeller", "layer", "head", "label", "matches", "associated"])
