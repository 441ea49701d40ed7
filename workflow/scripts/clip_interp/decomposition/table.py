"""Per-image component terms in the joint space, read in batches: the in-memory table and its protocol.

A component source is any object with ``n`` (images), ``n_layers``, ``n_heads`` and
``batches(batch_size)``, which yields ``(rows, terms)`` with ``rows`` a slice and ``terms`` a dict of
float32 tensors: ``embedding`` (B, E), the model's image embedding, and the terms
``embedding_term`` (B, E), ``heads`` (B, L, H, E) summed over sources, ``attn_bias`` (B, L, E),
``mlps`` (B, L, E) and ``ln_bias`` (B, E), which sum to ``embedding``
(:mod:`~clip_interp.decomposition.components`); a source may add the per-image parts
(:data:`~clip_interp.contributions.PARTS`): ``embedding_norm`` (B,) and ``class_attention`` (B, L, E), the
class-token-to-class-token part of ``heads`` per layer. :class:`ComponentTable` holds them in memory;
:class:`~clip_interp.decomposition.store.DecompositionStore` reads them from HDF5 shards.
"""

from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import torch

from ..batching import row_slices
from ..contributions import FIELDS, PARTS, TERMS, Decomposition  # noqa: F401
from ..models import layer_index


class ComponentTable:
    """The terms of N images held in memory (tests, small sets)."""

    def __init__(self, arrays: Mapping[str, torch.Tensor]):
        missing = [name for name in FIELDS if name not in arrays]
        if missing:
            raise ValueError(f"component table lacks {missing}")
        self.arrays = {name: torch.as_tensor(arrays[name]).float() for name in (*FIELDS, *PARTS)
                       if arrays.get(name) is not None}
        self.n = len(self.arrays["embedding"])
        self.n_layers, self.n_heads = self.arrays["heads"].shape[1:3]

    @classmethod
    def from_decompositions(cls, parts: Sequence[Decomposition]) -> "ComponentTable":
        if any(p.sources != "sum" for p in parts):
            raise ValueError("a component table holds heads summed over sources (sources='sum')")
        names = [name for name in (*FIELDS, *PARTS) if all(getattr(p, name) is not None for p in parts)]
        return cls({name: torch.cat([getattr(p, name) for p in parts]) for name in names})

    def head(self, layer: int, head: int) -> torch.Tensor:
        """The contributions (N, E) of head (layer 1..L, head 0..H-1) to every image."""
        return self.arrays["heads"][:, layer_index(layer), head]

    def batches(self, batch_size: int = 256) -> Iterator[tuple[slice, dict[str, torch.Tensor]]]:
        for sl in row_slices(self.n, batch_size):
            yield sl, {name: value[sl] for name, value in self.arrays.items()}


def component_means(source, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """The mean over the image set of each term (and of the embedding), accumulated in float64."""
    sums: dict[str, torch.Tensor] = {}
    for _, terms in source.batches(batch_size):
        for name, value in terms.items():
            part = value.double().sum(0)
            sums[name] = part if name not in sums else sums[name] + part
    return {name: (value / source.n).float() for name, value in sums.items()}
