"""VALSE "existence" preprocessing as defined by the negation study.

Definitions applied, in order:

1. **Well-formed entries.** An entry must be a mapping with string ``caption``, ``foil``,
   ``image_file`` and ``provenance_of_foils`` (caption and foil non-empty after stripping)
   and a mapping ``mturk`` whose ``caption`` is an integer vote count. Other entries are
   skipped and reported by key with the reason.
2. **Vote threshold.** An instance is kept when ``mturk.caption >= min_caption_votes``
   (default 2 of the 3 annotators judged the caption a correct description).
3. **Negated side.** When ``provenance_of_foils == "zero_to_something"`` the caption holds
   the negation ("There are no ..."), otherwise the foil does. Column ``negation`` is
   ``"caption"`` or ``"foil"``; ``negated`` and ``non_negated`` hold the two sentences.
4. **Variants.**

   * ``standard``: the sentences as they are.
   * ``rephrased``: the two sentences are made equal in length by giving the non-negated
     one a quantifier in the negator's slot. An item whose negated sentence starts with
     ``"There are no "`` and whose non-negated sentence starts with ``"There are "`` gets
     ``"some"`` inserted right after ``"are"`` in the non-negated sentence
     ("There are people." -> "There are some people."). An item whose negated sentence
     starts with ``"There is no "`` and whose non-negated sentence starts with
     ``"There is "`` is kept unchanged (its non-negated sentence already carries "a").
     Every other item is dropped and reported by key with the reason. Prefixes are
     matched exactly (case-sensitive).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InputError

VARIANTS = ("standard", "rephrased")
NEGATION_IN_CAPTION = "zero_to_something"
_STRING_FIELDS = ("caption", "foil", "image_file", "provenance_of_foils")
_ARE_NEG, _ARE = "There are no ", "There are "
_IS_NEG, _IS = "There is no ", "There is "

COLUMNS = [
    "key", "caption", "foil", "negation", "negated", "non_negated", "image_file", "dataset",
    "provenance_of_foils", "mturk_caption", "mturk_foil", "mturk_other",
]


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry_problem(entry: Any) -> str | None:
    """Why ``entry`` cannot be used, or None when it is well-formed."""
    if not isinstance(entry, dict):
        return f"entry is a {type(entry).__name__}, not an object"
    for field in _STRING_FIELDS:
        if field not in entry:
            return f"missing field {field!r}"
        if not isinstance(entry[field], str):
            return f"field {field!r} is {type(entry[field]).__name__} {entry[field]!r}, not a string"
    for field in ("caption", "foil"):
        if not entry[field].strip():
            return f"field {field!r} is empty"
    mturk = entry.get("mturk")
    if not isinstance(mturk, dict):
        return "missing field 'mturk'" if mturk is None else f"field 'mturk' is {type(mturk).__name__}, not an object"
    if "caption" not in mturk:
        return "missing field 'mturk.caption'"
    if not _is_count(mturk["caption"]):
        return f"field 'mturk.caption' is {mturk['caption']!r}, not an integer vote count"
    for field in ("foil", "other"):
        if field in mturk and mturk[field] is not None and not _is_count(mturk[field]):
            return f"field 'mturk.{field}' is {mturk[field]!r}, not an integer vote count"
    return None


def read_valse_entries(path: str | os.PathLike) -> dict[str, Any]:
    """The entries of a VALSE piece: a non-empty JSON object mapping instance keys to entries.

    A missing file, invalid JSON, another top-level type or an empty object is an InputError
    naming the file and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"VALSE file {str(path)!r} does not exist; fetch it first or fix its path in the config")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(
            f"VALSE file {str(path)!r} is not valid JSON ({exc}); fetch the raw file again "
            "(e.g. VALSE data/existence.json)"
        ) from exc
    if not isinstance(data, dict):
        raise InputError(
            f"VALSE file {str(path)!r} holds a JSON {type(data).__name__}, expected an object mapping "
            "instance keys to entries; is this the right file?"
        )
    if not data:
        raise InputError(
            f"VALSE file {str(path)!r} is an empty JSON object (no entries), expected an object mapping "
            "instance keys to entries; fetch the complete file again or fix the source in the config"
        )
    return data


def load_valse(path: str | os.PathLike) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Read a VALSE piece (:func:`read_valse_entries`) into one row per well-formed entry.

    Returns the table (columns :data:`COLUMNS`, file order) and the skipped entries as
    ``[{"key", "reason"}]``. ``negation``/``negated``/``non_negated`` follow rule 3 of the
    module docstring.
    """
    data = read_valse_entries(path)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for key, entry in data.items():
        problem = _entry_problem(entry)
        if problem is not None:
            skipped.append({"key": str(key), "reason": problem})
            continue
        mturk = entry["mturk"]
        negation = "caption" if entry["provenance_of_foils"] == NEGATION_IN_CAPTION else "foil"
        other = "foil" if negation == "caption" else "caption"
        rows.append({
            "key": str(key),
            "caption": entry["caption"],
            "foil": entry["foil"],
            "negation": negation,
            "negated": entry[negation],
            "non_negated": entry[other],
            "image_file": entry["image_file"],
            "dataset": entry.get("dataset") if isinstance(entry.get("dataset"), str) else None,
            "provenance_of_foils": entry["provenance_of_foils"],
            "mturk_caption": mturk["caption"],
            "mturk_foil": mturk.get("foil"),
            "mturk_other": mturk.get("other"),
        })
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["mturk_caption"] = df["mturk_caption"].astype("int64")
    for col in ("mturk_foil", "mturk_other"):
        df[col] = pd.array(df[col].tolist(), dtype="Int64")
    return df, skipped


def rephrase(negated: str, non_negated: str) -> tuple[str, str, str | None]:
    """Apply the ``rephrased`` rule to one pair.

    Returns ``(shape, new_non_negated, reason)``: shape ``"there_are"`` (``"some"``
    inserted after ``"are"``), ``"there_is"`` (unchanged) or ``"other"`` with ``reason``
    saying why the item does not fit; ``reason`` is None for the two kept shapes.
    """
    if negated.startswith(_ARE_NEG):
        if non_negated.startswith(_ARE) and not non_negated.startswith(_ARE_NEG):
            return "there_are", _ARE + "some " + non_negated[len(_ARE):], None
        return "other", non_negated, (
            f"negated sentence starts with {_ARE_NEG.strip()!r} but the non-negated one "
            f"{non_negated!r} does not start with {_ARE.strip()!r} (without 'no')"
        )
    if negated.startswith(_IS_NEG):
        if non_negated.startswith(_IS) and not non_negated.startswith(_IS_NEG):
            return "there_is", non_negated, None
        return "other", non_negated, (
            f"negated sentence starts with {_IS_NEG.strip()!r} but the non-negated one "
            f"{non_negated!r} does not start with {_IS.strip()!r} (without 'no')"
        )
    return "other", non_negated, (
        f"negated sentence {negated!r} starts with neither {_ARE_NEG.strip()!r} nor {_IS_NEG.strip()!r}"
    )


def prepare_variant(path: str | os.PathLike, variant: str,
                    min_caption_votes: int = 2) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The instances of one VALSE existence variant and a report of what was removed.

    Columns: :data:`COLUMNS` plus ``variant``, ``shape`` (``there_are``/``there_is``/
    ``other``), ``caption_original`` and ``foil_original`` (the sentences before
    rephrasing). In the ``rephrased`` variant ``caption``/``foil``/``negated``/
    ``non_negated`` hold the rephrased sentences. Report counts: ``total_entries``,
    ``malformed``, ``below_vote_threshold``, ``dropped_by_shape``, ``kept``,
    ``kept_negation_caption``, ``kept_negation_foil``; with the keys and reasons in
    ``malformed_entries`` and ``dropped_by_shape_entries`` and the keys in
    ``below_vote_threshold_keys``. No instance left is an InputError naming these counts.
    """
    if variant not in VARIANTS:
        raise InputError(f"unknown VALSE variant {variant!r}; use one of {', '.join(VARIANTS)}")
    if not _is_count(min_caption_votes) or not 0 <= min_caption_votes <= 3:
        raise InputError(
            f"min_caption_votes={min_caption_votes!r} must be an integer between 0 and 3 (VALSE has 3 annotators)"
        )
    df, skipped = load_valse(path)
    total = len(df) + len(skipped)
    votes_ok = df["mturk_caption"] >= min_caption_votes
    below_keys = df.loc[~votes_ok, "key"].tolist()
    df = df.loc[votes_ok].reset_index(drop=True)
    df["variant"] = variant
    df["caption_original"] = df["caption"]
    df["foil_original"] = df["foil"]
    dropped: list[dict[str, str]] = []
    if len(df):
        results = [rephrase(n, p) for n, p in zip(df["negated"], df["non_negated"])]
        df["shape"] = [r[0] for r in results]
        if variant == "rephrased":
            df["non_negated"] = [r[1] for r in results]
            keep = [r[2] is None for r in results]
            dropped = [{"key": k, "reason": r[2]} for k, r in zip(df["key"], results) if r[2] is not None]
            df = df.loc[keep].reset_index(drop=True)
            in_caption = df["negation"] == "caption"
            df["caption"] = df["negated"].where(in_caption, df["non_negated"])
            df["foil"] = df["non_negated"].where(in_caption, df["negated"])
    else:
        df["shape"] = pd.Series(dtype=object)
    report = {
        "path": str(path),
        "variant": variant,
        "min_caption_votes": min_caption_votes,
        "total_entries": total,
        "malformed": len(skipped),
        "below_vote_threshold": len(below_keys),
        "dropped_by_shape": len(dropped),
        "kept": len(df),
        "kept_negation_caption": int((df["negation"] == "caption").sum()),
        "kept_negation_foil": int((df["negation"] == "foil").sum()),
        "kept_by_shape": {str(k): int(v) for k, v in df["shape"].value_counts().sort_index().items()},
        "malformed_entries": skipped,
        "below_vote_threshold_keys": below_keys,
        "dropped_by_shape_entries": dropped,
    }
    if df.empty:
        raise InputError(
            f"no instance of VALSE file {str(path)!r} is left in the {variant} variant: {total} entries, "
            f"{len(skipped)} malformed, {len(below_keys)} below min_caption_votes={min_caption_votes}, "
            f"{len(dropped)} dropped by sentence shape; check the file (the .report.json of a good run lists "
            "the reasons by key) or lower `negation.dataset.min_caption_votes`"
        )
    return df, report
