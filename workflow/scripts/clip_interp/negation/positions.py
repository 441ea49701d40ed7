"""Token positions of a negated / non-negated sentence pair under one CLIP tokenizer.

Positions index the encoded sequence including the start-of-text token, so SOT is
position 0 and EOT is the last position (``len(ids) - 1``). Definitions:

* **negator** (``negator_pos``): the CLIP token of the word "no" that spaCy finds as the
  first token of a noun chunk in the negated sentence. Where no noun chunk starts with
  "no" (the parser sometimes misses one, e.g. "There are no floor grates visible."), the
  first spaCy token "no" is used and the subject is taken from the dependency tree (see
  ``subject``). The spaCy token is mapped to CLIP tokens by encoding the text before it.
* **quantifier** (``quantifier_pos``): the negator's position in the non-negated sentence
  when both sentences have the same number of tokens, else -1.
* **subject_first** (``subject_first_pos``): the token right after the negator.
* **full stop** (``full_stop_pos``): the last "." token before EOT, -1 if there is none.
* **further subject tokens** (``n_further_subject``): the tokens strictly between the first
  subject token and the full stop (EOT when there is no full stop).
* **subject**: the text of the noun chunk holding the negator without the determiner "no"
  ("people" in "There are no people in the picture."); empty when the chunk is "no" alone
  (spaCy reads "no" as a pronoun in "There are no of his feet ..."). In the dependency
  fallback: the words after "no" up to its syntactic head, extended along compound and
  adjectival/numeric modifier links to the right ("floor grates" in "There are no floor
  grates visible.").
* **generic_ok**: the negated sentence is SOT, "there", "is"/"are", "no", at least one
  subject token, ".", EOT; its positions then map onto the 8 generic positions
  :data:`GENERIC_NAMES` (see :func:`generic_position_map`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import pandas as pd

from ..errors import InputError

if TYPE_CHECKING:
    from ..tokenizers import ClipTokenizer

NEGATOR = "no"
_MODIFIER_DEPS = ("compound", "amod", "nummod", "nmod")
FULL_STOP = "."
GENERIC_NAMES = ("SOT", "There", "is/are", "negator", "subject_first", "subject_further", "full_stop", "EOT")
POSITION_COLUMNS = [
    "negated_ids", "non_negated_ids", "negator_pos", "quantifier_pos", "subject_first_pos",
    "n_further_subject", "full_stop_pos", "eot_pos_negated", "eot_pos_non_negated", "subject",
    "subject_source", "equal_length", "generic_ok",
]


def single_token_id(tokenizer: ClipTokenizer, word: str) -> int:
    """The id of ``word`` as one whole-word token; ValueError if it splits into several."""
    ids = tokenizer.encode_fn(word)
    if len(ids) != 1:
        raise ValueError(f"{word!r} is not a single token for this tokenizer (ids {ids})")
    return ids[0]


def token_index(tokenizer: ClipTokenizer, text: str, char_start: int) -> int:
    """Position (SOT = 0) of the first CLIP token of the word starting at ``char_start``."""
    return 1 + len(tokenizer.encode_fn(text[:char_start]))


def find_negator(doc) -> tuple[Any, str, str]:
    """The spaCy token "no" acting as negator, the subject text, and how it was found.

    Returns ``(token, subject, source)`` with source ``"noun_chunk"`` or ``"dependency"``;
    raises InputError when the sentence has no word "no".
    """
    for chunk in doc.noun_chunks:
        if chunk[0].lower_ == NEGATOR:
            return chunk[0], chunk[1:].text, "noun_chunk"
    for token in doc:
        if token.lower_ == NEGATOR:
            head = token.head if token.head.i > token.i else doc[min(token.i + 1, len(doc) - 1)]
            while head.dep_ in _MODIFIER_DEPS and head.head.i > head.i:
                head = head.head
            return token, doc[token.i + 1:head.i + 1].text, "dependency"
    raise InputError(f"negated sentence {doc.text!r} has no word {NEGATOR!r}")


def _encode(tokenizer: ClipTokenizer, text: str, which: str) -> list[int]:
    try:
        return tokenizer.encode(text)
    except ValueError as exc:
        raise InputError(f"{which} sentence: {exc}") from exc


def positions_from_doc(negated: str, non_negated: str, tokenizer: ClipTokenizer, doc) -> dict[str, Any]:
    """:func:`sentence_positions` with the spaCy parse ``doc`` of ``negated`` given."""
    neg_ids = _encode(tokenizer, negated, "negated")
    non_ids = _encode(tokenizer, non_negated, "non-negated")
    token, subject, source = find_negator(doc)
    negator_pos = token_index(tokenizer, negated, token.idx)
    eot = len(neg_ids) - 1
    no_id = single_token_id(tokenizer, NEGATOR)
    if not 0 < negator_pos < eot or neg_ids[negator_pos] != no_id:
        found = tokenizer.token_str(neg_ids[negator_pos]) if 0 <= negator_pos < len(neg_ids) else None
        raise InputError(
            f"negated sentence {negated!r}: spaCy's {NEGATOR!r} at character {token.idx} maps to CLIP "
            f"position {negator_pos}, which holds {found!r}, not {NEGATOR!r}"
        )
    subject_first = negator_pos + 1
    if subject_first >= eot:
        raise InputError(f"negated sentence {negated!r}: nothing follows {NEGATOR!r}")
    stop_id = single_token_id(tokenizer, FULL_STOP)
    full_stop = next((i for i in range(eot - 1, 0, -1) if neg_ids[i] == stop_id), -1)
    bound = full_stop if full_stop > subject_first else eot
    equal_length = len(neg_ids) == len(non_ids)
    generic_ok = (
        len(neg_ids) >= 7
        and tokenizer.token_str(neg_ids[1]).lower() == "there"
        and tokenizer.token_str(neg_ids[2]).lower() in ("is", "are")
        and negator_pos == 3
        and full_stop == eot - 1
        and subject_first < full_stop
    )
    return {
        "negated_ids": neg_ids,
        "non_negated_ids": non_ids,
        "negator_pos": negator_pos,
        "quantifier_pos": negator_pos if equal_length else -1,
        "subject_first_pos": subject_first,
        "n_further_subject": bound - subject_first - 1,
        "full_stop_pos": full_stop,
        "eot_pos_negated": eot,
        "eot_pos_non_negated": len(non_ids) - 1,
        "subject": subject,
        "subject_source": source,
        "equal_length": equal_length,
        "generic_ok": bool(generic_ok),
    }


def sentence_positions(negated: str, non_negated: str, tokenizer: ClipTokenizer, nlp) -> dict[str, Any]:
    """Token ids and the positions defined in the module docstring for one sentence pair.

    Keys: :data:`POSITION_COLUMNS`. Raises InputError when the negator cannot be placed.
    """
    return positions_from_doc(negated, non_negated, tokenizer, nlp(negated))


def _failed(negated: str, non_negated: str, tokenizer: ClipTokenizer) -> dict[str, Any]:
    def ids(text: str) -> list[int]:
        try:
            return tokenizer.encode(text)
        except ValueError:
            return []

    neg_ids, non_ids = ids(negated), ids(non_negated)
    return {
        "negated_ids": neg_ids, "non_negated_ids": non_ids, "negator_pos": -1, "quantifier_pos": -1,
        "subject_first_pos": -1, "n_further_subject": -1, "full_stop_pos": -1,
        "eot_pos_negated": len(neg_ids) - 1, "eot_pos_non_negated": len(non_ids) - 1, "subject": "",
        "subject_source": "", "equal_length": bool(neg_ids) and len(neg_ids) == len(non_ids),
        "generic_ok": False,
    }


TOO_LONG_REASON = "a sentence has more tokens than the model's context length; such an instance is excluded"


def over_long_rows(df: pd.DataFrame, tokenizer: ClipTokenizer) -> list[tuple[Any, dict[str, Any]]]:
    """``(index, entry)`` of each row whose ``negated`` or ``non_negated`` sentence has more tokens
    (SOT and EOT included) than ``tokenizer.context_length``; the entry names the key, the
    sentence, its token count and the context length."""
    out = []
    for index, row in df.iterrows():
        for column in ("negated", "non_negated"):
            n_tokens = len(tokenizer.encode_fn(str(row[column]))) + 2
            if n_tokens > tokenizer.context_length:
                out.append((index, {"key": str(row.get("key", index)), "sentence": column, "text": str(row[column]),
                                    "tokens": n_tokens, "context_length": tokenizer.context_length}))
                break
    return out


def add_positions(df: pd.DataFrame, tokenizer: ClipTokenizer, nlp,
                  batch_size: int = 256) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Add the :data:`POSITION_COLUMNS` of each row's ``negated``/``non_negated`` pair.

    Rows whose negated or non-negated sentence has more tokens (with SOT and EOT) than the
    tokenizer's context length are left out, never truncated: the model cannot read them whole,
    and an empty or cut sequence would be scored as if it were the sentence. They are counted in
    ``too_long`` and listed in ``too_long_entries`` (key, sentence, tokens, context length).

    Also adds ``positions_ok`` and ``positions_error`` (the reason, "" when fine) and, when
    ``df`` has a ``negation`` column (``"caption"``/``"foil"``), ``caption_ids`` and
    ``foil_ids``. Rows whose negator cannot be placed are kept with ``positions_ok`` False
    and positions -1. Report: ``rows``, ``positions_ok``, ``positions_failed``,
    ``failed_entries`` (key and reason), ``generic_ok``, ``equal_length``,
    ``subject_from_dependency``/``empty_subject`` and their ``..._keys``.
    """
    missing = [c for c in ("negated", "non_negated") if c not in df.columns]
    if missing:
        raise InputError(
            f"add_positions needs columns 'negated' and 'non_negated'; missing {missing} "
            f"(found {list(df.columns)})"
        )
    too_long = over_long_rows(df, tokenizer)
    if too_long:
        df = df.loc[~df.index.isin([row for row, _ in too_long])]
    keys = df["key"].astype(str).tolist() if "key" in df.columns else [str(i) for i in df.index]
    negated = df["negated"].astype(str).tolist()
    non_negated = df["non_negated"].astype(str).tolist()
    records, errors, failed = [], [], []
    for key, neg, non, doc in zip(keys, negated, non_negated, nlp.pipe(negated, batch_size=batch_size)):
        try:
            records.append(positions_from_doc(neg, non, tokenizer, doc))
            errors.append("")
        except InputError as exc:
            records.append(_failed(neg, non, tokenizer))
            errors.append(str(exc))
            failed.append({"key": key, "reason": str(exc)})
    out = df.copy()
    table = pd.DataFrame.from_records(records, columns=POSITION_COLUMNS, index=out.index)
    for col in POSITION_COLUMNS:
        out[col] = table[col]
    out["positions_ok"] = [e == "" for e in errors]
    out["positions_error"] = errors
    if "negation" in out.columns:
        in_caption = (out["negation"] == "caption").tolist()
        out["caption_ids"] = [n if c else p for c, n, p in zip(in_caption, out["negated_ids"], out["non_negated_ids"])]
        out["foil_ids"] = [p if c else n for c, n, p in zip(in_caption, out["negated_ids"], out["non_negated_ids"])]
    dependency = [k for k, r, e in zip(keys, records, errors) if not e and r["subject_source"] == "dependency"]
    empty_subject = [k for k, r, e in zip(keys, records, errors) if not e and not r["subject"]]
    report = {
        "rows": len(out),
        "too_long": len(too_long),
        "too_long_entries": [entry for _, entry in too_long],
        "positions_ok": int(sum(e == "" for e in errors)),
        "positions_failed": len(failed),
        "failed_entries": failed,
        "generic_ok": int(sum(r["generic_ok"] for r in records)),
        "equal_length": int(sum(r["equal_length"] for r in records)),
        "subject_from_dependency": len(dependency),
        "subject_from_dependency_keys": dependency,
        "empty_subject": len(empty_subject),
        "empty_subject_keys": empty_subject,
    }
    return out, report


def generic_position_map(row: Mapping[str, Any], sentence: str = "negated") -> list[tuple[str, list[int]]]:
    """The token positions each of the 8 :data:`GENERIC_NAMES` stands for in one row.

    For the negated sentence: SOT [0], There [1], is/are [2], negator [negator_pos],
    subject_first [negator_pos + 1], subject_further [every position strictly between the
    first subject token and the full stop] (may be empty), full_stop [full_stop_pos],
    EOT [eot_pos_negated]. For ``sentence="non_negated"``: the same positions when both
    sentences have equal length (negator -> the quantifier slot); when the non-negated
    sentence is the negated one without its negator token, "negator" maps to [] and later
    positions shift by one. The row must have ``generic_ok``.
    """
    key = row.get("key", "?")
    if sentence not in ("negated", "non_negated"):
        raise InputError(f"sentence must be 'negated' or 'non_negated', not {sentence!r}")
    if not row.get("generic_ok", False):
        raise InputError(
            f"row {key}: the negated sentence {row.get('negated')!r} does not have the generic shape "
            "SOT, There, is/are, no, ..., ., EOT; select rows with generic_ok first"
        )
    neg = int(row["negator_pos"])
    first = int(row["subject_first_pos"])
    stop = int(row["full_stop_pos"])
    eot = int(row["eot_pos_negated"])
    shift = 0
    negator = [neg]
    if sentence == "non_negated" and not row["equal_length"]:
        neg_ids, non_ids = list(row["negated_ids"]), list(row["non_negated_ids"])
        if non_ids != neg_ids[:neg] + neg_ids[neg + 1:]:
            raise InputError(
                f"row {key}: the non-negated sentence {row.get('non_negated')!r} differs from the "
                "negated one by more than the negator token, so its generic positions are undefined"
            )
        shift, negator = -1, []
    return [
        ("SOT", [0]),
        ("There", [1]),
        ("is/are", [2]),
        ("negator", negator),
        ("subject_first", [first + shift]),
        ("subject_further", [p + shift for p in range(first + 1, stop)]),
        ("full_stop", [stop + shift]),
        ("EOT", [eot + shift]),
    ]


def generic_slot_positions(instances: pd.DataFrame, sentence: str = "negated") -> list[dict[str, list[int]]]:
    """Per row of ``instances`` (rows of the positions table with ``generic_ok``), the token positions each of
    the :data:`GENERIC_NAMES` stands for in ``sentence`` (:func:`generic_position_map`)."""
    return [dict(generic_position_map(row, sentence)) for _, row in instances.iterrows()]


def with_generic_positions(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the positions table's generic columns, for sentences of the shape "There is/are no SUBJECT ... .":
    the negated sentence's subject one token after ``negator_pos`` (``subject_first_pos``), its full stop just
    before EOT (``full_stop_pos = eot_pos - 1``, ``eot_pos_negated = eot_pos``), ``generic_ok`` and ``equal_length``
    true. ``frame`` needs ``negator_pos`` and ``eot_pos`` (:func:`.tracing_kernel.tracing_instances`)."""
    out = frame.copy()
    out["subject_first_pos"] = out["negator_pos"] + 1
    out["full_stop_pos"] = out["eot_pos"] - 1
    out["eot_pos_negated"] = out["eot_pos"]
    out["generic_ok"] = True
    out["equal_length"] = True
    return out
