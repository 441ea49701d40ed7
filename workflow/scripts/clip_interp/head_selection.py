"""Heads named by a configured list of ``[layer, head]`` pairs, resolved and checked against a model.

Layers are 1..L and heads 0..H-1 (:mod:`clip_interp.models.hooked`); a negative layer counts from the end,
``layer + L + 1`` (-1 is the last layer L). This is the only meaning of a negative layer: it appears in
configuration lists, never in tables.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import InputError


class HeadOutsideModel(InputError):
    """A configured pair that names no allowed head: ``given`` is the pair as configured, ``resolved`` the pair with
    its layer counted from the end; the caller re-raises it with a message naming its config key."""

    def __init__(self, given: tuple[int, int], resolved: tuple[int, int], layers: Sequence[int], n_heads: int):
        super().__init__(f"head {list(given)} is not in layers {list(layers)} x heads 0..{n_heads - 1}")
        self.given = given
        self.resolved = resolved


def select_heads(heads: Sequence[Sequence[int]], n_layers: int, n_heads: int,
                 layers: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """``(layer, head)`` of each configured ``[layer, head]`` pair, in the given order, with a negative layer
    resolved to ``layer + n_layers + 1``; every resolved layer must be one of ``layers`` (default 1..n_layers) and
    every head in 0..n_heads-1, else :class:`HeadOutsideModel` for the first pair that is not."""
    allowed = range(1, n_layers + 1) if layers is None else layers
    selected = []
    for layer, head in heads:
        resolved = layer + n_layers + 1 if layer < 0 else layer
        if resolved not in allowed or not 0 <= head < n_heads:
            raise HeadOutsideModel((layer, head), (resolved, head), allowed, n_heads)
        selected.append((int(resolved), int(head)))
    return selected
