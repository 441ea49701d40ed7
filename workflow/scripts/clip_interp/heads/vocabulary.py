"""Free-form (open-vocabulary) head labels: reading an LLM's answer, normalising labels, mapping them onto a taxonomy.

CLIP-InterpreT's LLM answers with a free-form property ("Timepieces", "Night-scenes"), and its published labels
are such strings. Two readings make them comparable:

- :func:`normalise_free_label` folds spellings of one name together (case, punctuation, plural), so that the
  entanglement counts "Animals" and "animal" as one label;
- :func:`label_mapping` maps each label to its nearest taxonomy property by text embedding (the
  :class:`~clip_interp.heads.labels.PropertyMatcher` of the default labeller: the analysed model's text tower,
  nearest seed), so that free labels can be scored like the taxonomy labeller's.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Sequence

import pandas as pd

from ..errors import InputError
from .labels import PropertyMatcher

MAPPING_COLUMNS = ["label", "normalised", "property", "similarity"]
MAX_LABEL_WORDS = 6
MAX_LABEL_CHARS = 60
# Words that end in -s in the singular (or have no singular); :func:`singular` keeps them as they are.
UNCHANGED_WORDS = frozenset({"news", "series", "species", "clothes", "means"})
_APOSTROPHES = "'\u2018\u2019\u02bc`"


def singular(word: str) -> str:
    """The singular of a lower-case English word by simple suffix rules, tried in this order:

    1. words of at most 3 letters, words of :data:`UNCHANGED_WORDS`, and words ending in ``ss``, ``us`` or
       ``is`` stay as they are (``gas``, ``glass``, ``bus``, ``analysis``);
    2. ``-ies`` after at least 2 letters becomes ``-y`` (``cities`` -> ``city``);
    3. ``-sses``, ``-ches``, ``-shes``, ``-xes`` lose the ``es`` (``classes`` -> ``class``, ``watches`` ->
       ``watch``, ``boxes`` -> ``box``);
    4. any other final ``s`` is dropped (``timepieces`` -> ``timepiece``, ``sizes`` -> ``size``).

    No other irregular form (``mice``, ``wolves``, ``children``) is handled.
    """
    if len(word) <= 3 or word in UNCHANGED_WORDS or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "ches", "shes", "xes")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word


def normalise_free_label(label) -> str:
    """The normalised form of a free-form label, by exactly these rules, in order:

    1. Unicode NFKC, then lower case (``str.casefold``);
    2. apostrophes (``'``, ``\u2018``, ``\u2019``, ``\u02bc``, backtick) are removed;
    3. every other character that is not a letter or a digit (punctuation, hyphens, underscores, symbols)
       becomes a space;
    4. runs of whitespace become one space, and the ends are stripped;
    5. every word is made singular by :func:`singular`.

    So ``"Timepieces"`` and ``"timepiece."`` both give ``"timepiece"``, ``"Night-scenes"`` and ``"night scene"``
    give ``"night scene"``, ``"Body_parts"`` gives ``"body part"``. A label of no letter or digit gives ``""``.
    """
    text = unicodedata.normalize("NFKC", str(label)).casefold()
    text = re.sub(f"[{_APOSTROPHES}]", "", text)
    text = "".join(c if c.isalnum() else " " for c in text)
    return " ".join(singular(word) for word in text.split())


def _clean(candidate: str) -> str:
    return candidate.strip().strip(" .,;:!?\"'`*_").strip()


def parse_open_answer(answer: str) -> str | None:
    """The free-form label an LLM answer gives, else None.

    The label is taken from a JSON object ``{"label": "..."}`` (a JSON object without a string ``label`` gives
    None); else from the text after ``Label:`` (or ``label =``) on its line; else from the whole answer when it is
    one line. Surrounding spaces, quotes, asterisks and end punctuation are stripped. It is accepted when it is
    one line of at most :data:`MAX_LABEL_CHARS` characters and :data:`MAX_LABEL_WORDS` words whose
    :func:`normalise_free_label` is not empty; anything else (an empty answer, several lines without a
    ``Label:`` line, a sentence) gives None.
    """
    text = answer.strip()
    candidate = None
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        candidate = parsed.get("label") if isinstance(parsed.get("label"), str) else None
    else:
        match = re.search(r"label\s*[:=]\s*(.*)", text, flags=re.IGNORECASE)
        if match:
            candidate = match.group(1).splitlines()[0] if match.group(1) else ""
        elif text and len(text.splitlines()) == 1:
            candidate = text
    if candidate is None:
        return None
    label = _clean(candidate)
    if ("\n" in label or len(label) > MAX_LABEL_CHARS or len(label.split()) > MAX_LABEL_WORDS
            or not normalise_free_label(label)):
        return None
    return label


def label_mapping(labels: Sequence[str], matcher: PropertyMatcher) -> pd.DataFrame:
    """The nearest taxonomy property of each distinct label: ``label`` (as given), ``normalised``
    (:func:`normalise_free_label`), ``property`` and ``similarity``.

    The normalised form is what is embedded, so labels that normalise equal map to the same property; its
    similarity to a property is :meth:`PropertyMatcher.similarities` (the cosine to the property's nearest seed,
    or to its mean seed), and the property is the one of largest similarity (ties to the first listed). Rows are
    sorted by label."""
    distinct = sorted({str(label) for label in labels if label is not None and not pd.isna(label)})
    normalised = [normalise_free_label(label) for label in distinct]
    empty = [label for label, norm in zip(distinct, normalised) if not norm]
    if empty:
        raise InputError(f"labels {empty} have no letter or digit; they cannot be mapped onto a property")
    forms = sorted(set(normalised))
    similarity = matcher.similarities(forms)
    best = {form: (matcher.names[int(i)], float(similarity[row, int(i)]))
            for row, (form, i) in enumerate(zip(forms, similarity.argmax(dim=1).tolist()))} if forms else {}
    rows = [{"label": label, "normalised": norm, "property": best[norm][0], "similarity": best[norm][1]}
            for label, norm in zip(distinct, normalised)]
    return pd.DataFrame(rows, columns=MAPPING_COLUMNS).astype({"similarity": "float64"})


def mapped_labels(labels: pd.Series, mapping: pd.DataFrame, source: str = "the label mapping") -> pd.Series:
    """Each label replaced by its ``property`` in ``mapping`` (:func:`label_mapping`); null stays null. A label
    missing from the mapping is an error (the mapping is older than the labels)."""
    lookup = dict(zip(mapping["label"].astype(str), mapping["property"]))
    missing = sorted({str(label) for label in labels.dropna() if str(label) not in lookup})
    if missing:
        raise InputError(f"{source} has no row for the labels {missing[:5]}; it is older than the label table: "
                         "re-run its rule")
    return pd.Series([None if label is None or pd.isna(label) else lookup[str(label)] for label in labels],
                     index=labels.index, dtype=object)
