"""The default, deterministic head labeller: each top TEXTSPAN text goes to its nearest taxonomy property.

Matching (:class:`PropertyMatcher`): every text and every seed description is embedded by the analysed
model's own text encoder and L2-normalised. The similarity of a text to a property is, by default
(``reduce="max"``), the largest cosine between the text and any of the property's seeds (the nearest seed
decides, so a property whose seeds cover different kinds of thing, e.g. dogs and birds, is not blurred into
their average); with ``reduce="mean"`` it is the cosine to the normalised mean of the seed embeddings.
A text's property is the one of largest similarity; an exact tie goes to the property listed first in the
taxonomy.

Labelling (:func:`label_heads`): a head's label is the property that most of its first ``n_texts`` TEXTSPAN
texts (in TEXTSPAN order) are matched to, and its confidence is that property's share of those texts.
A tie between properties with equally many texts goes to the one whose first text comes earliest in the
head's TEXTSPAN order (the text that explains more of the head's variance).
"""

from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F

from ..errors import InputError
from .taxonomy import Taxonomy

LABEL_COLUMNS = ["layer", "head", "label", "confidence", "texts", "labeller"]
TEXTSPAN_COLUMNS = ("layer", "head", "rank", "text")
REDUCTIONS = ("max", "mean")

Encoder = Callable[[list[str]], torch.Tensor]


def model_text_encoder(model, *, batch_size: int = 256) -> Encoder:
    """``encode(texts) -> (len(texts), E)`` unit text embeddings (float32, CPU) by a HookedCLIP's text tower."""
    from ..encoding import encode_texts

    def encode(texts: list[str]) -> torch.Tensor:
        return F.normalize(encode_texts(model, list(texts), batch_size=batch_size).float().cpu(), dim=-1)

    return encode


class PropertyMatcher:
    """Nearest taxonomy property of texts by the cosine of their embeddings to the properties' seeds.

    ``encode`` maps a list of strings to a (n, E) tensor of embeddings (normalised again here); ``reduce``
    is ``"max"`` (nearest seed, the default) or ``"mean"`` (the normalised mean seed); see the module docstring.
    """

    def __init__(self, encode: Encoder, taxonomy: Taxonomy, *, reduce: str = "max"):
        if reduce not in REDUCTIONS:
            raise InputError(f"unknown seed reduction {reduce!r}; choose from {list(REDUCTIONS)}")
        self.encode, self.taxonomy, self.reduce = encode, taxonomy, reduce
        self._seeds: torch.Tensor | None = None
        self._owner: torch.Tensor | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return self.taxonomy.names

    def _embed(self, texts: Sequence[str]) -> torch.Tensor:
        texts = [str(t) for t in texts]
        embedded = torch.as_tensor(self.encode(texts)).float()
        if embedded.ndim != 2 or embedded.shape[0] != len(texts):
            raise InputError(f"the text encoder returned shape {tuple(embedded.shape)} for {len(texts)} texts; "
                             f"it must return one embedding row per text")
        return F.normalize(embedded, dim=-1)

    def _seed_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._seeds is None:
            seeds = [s for name in self.names for s in self.taxonomy.properties[name]]
            owner = [i for i, name in enumerate(self.names) for _ in self.taxonomy.properties[name]]
            self._seeds, self._owner = self._embed(seeds), torch.as_tensor(owner)
        return self._seeds, self._owner

    def similarities(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), n_properties): cosine of each text to each property (max or mean over its seeds)."""
        if len(texts) == 0:
            return torch.zeros(0, len(self.names))
        seeds, owner = self._seed_embeddings()
        embedded = self._embed(texts)
        groups = [owner == i for i in range(len(self.names))]
        if self.reduce == "mean":
            centres = torch.stack([F.normalize(seeds[mine].mean(0), dim=0) for mine in groups])
            return embedded @ centres.T
        cosines = embedded @ seeds.T
        return torch.stack([cosines[:, mine].max(dim=1).values for mine in groups], dim=1)

    def properties(self, texts: Sequence[str]) -> list[str]:
        """The nearest property of each text (an exact tie goes to the property listed first)."""
        if len(texts) == 0:
            return []
        return [self.names[int(i)] for i in self.similarities(texts).argmax(dim=1)]


def majority(properties: Sequence[str]) -> tuple[str, float]:
    """The most frequent property and its share; ties go to the property that appears first in the sequence."""
    if not properties:
        raise InputError("a head needs at least one text to be labelled")
    counts: dict[str, int] = {}
    for name in properties:
        counts[name] = counts.get(name, 0) + 1
    best = max(counts, key=lambda name: (counts[name], -properties.index(name)))
    return best, counts[best] / len(properties)


def head_texts(textspan: pd.DataFrame, n_texts: int) -> dict[tuple[int, int], list[str]]:
    """The first ``n_texts`` TEXTSPAN texts (by rank) of every (layer, head) of the TEXTSPAN table."""
    missing = [c for c in TEXTSPAN_COLUMNS if c not in textspan.columns]
    if missing:
        raise InputError(f"the TEXTSPAN table lacks the columns {missing} (has {list(textspan.columns)})")
    if n_texts < 1:
        raise InputError(f"n_texts must be at least 1, got {n_texts}")
    if textspan.empty:
        raise InputError("the TEXTSPAN table has no rows; there are no heads to label")
    out = {}
    for (layer, head), rows in textspan.sort_values(["layer", "head", "rank"]).groupby(["layer", "head"], sort=True):
        if len(rows) < n_texts:
            raise InputError(f"head (layer {layer}, head {head}) has {len(rows)} TEXTSPAN texts, fewer than the "
                             f"{n_texts} asked for; lower n_texts or raise the TEXTSPAN texts per head")
        out[(int(layer), int(head))] = [str(t) for t in rows["text"].iloc[:n_texts]]
    return out


def label_table(rows: list[dict]) -> pd.DataFrame:
    """The label table (columns :data:`LABEL_COLUMNS`, sorted by layer and head) from one dict per head."""
    table = pd.DataFrame(rows, columns=LABEL_COLUMNS)
    table = table.astype({"layer": "int64", "head": "int64", "confidence": "float64"})
    return table.sort_values(["layer", "head"], ignore_index=True)


def label_heads(textspan: pd.DataFrame, matcher: PropertyMatcher, n_texts: int) -> pd.DataFrame:
    """The label table (labeller ``"taxonomy"``): per head, the majority property of its first ``n_texts``
    TEXTSPAN texts and that property's share of them (see the module docstring for ties)."""
    texts = head_texts(textspan, n_texts)
    flat = [t for judged in texts.values() for t in judged]
    matched = iter(matcher.properties(flat))
    rows = []
    for (layer, head), judged in texts.items():
        properties = [next(matched) for _ in judged]
        label, confidence = majority(properties)
        rows.append({"layer": layer, "head": head, "label": label, "confidence": confidence,
                     "texts": judged, "labeller": "taxonomy"})
    return label_table(rows)
