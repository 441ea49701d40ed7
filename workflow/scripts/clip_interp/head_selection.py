"""Heads named by a configured list of ``[layer, head]`` pairs, resolved and checked against a model, and heads
published per model in a table (the decomposition paper's hand-chosen Waterbirds heads).

Layers are 1..L and heads 0..H-1 (:mod:`clip_interp.models.hooked`); a negative layer counts from the end,
``layer + L + 1`` (-1 is the last layer L). This is the only meaning of a negative layer: it appears in
configuration lists, never in tables. A published table numbers layers from 0, as the papers' code does
(``paper_layer``); here ``layer = paper_layer + 1``.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

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


PUBLISHED_HEAD_COLUMNS = ("architecture", "pretrained", "property", "paper_layer", "head")


@dataclass(frozen=True)
class PublishedHead:
    """One row of a published head table: a head of the model ``architecture`` with weights ``pretrained`` (open_clip
    names), the ``property`` it was chosen for, and its layer both 0-based (``paper_layer``) and 1-based
    (``layer``)."""

    architecture: str
    pretrained: str
    property: str
    paper_layer: int
    head: int

    @property
    def layer(self) -> int:
        return self.paper_layer + 1


def read_published_heads(path) -> list[PublishedHead]:
    """The rows of a tab-separated head table with the columns :data:`PUBLISHED_HEAD_COLUMNS` (lines starting with
    ``#`` are comments), in file order; a missing file, a missing column or a non-integer layer or head is an
    InputError naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"published head table {str(path)!r} not found; give the path of a tab-separated file "
                         f"with the columns {', '.join(PUBLISHED_HEAD_COLUMNS)}")
    with open(path, newline="") as handle:
        lines = [(number, line) for number, line in enumerate(handle, 1) if line.strip() and not line.startswith("#")]
    reader = csv.DictReader((line for _, line in lines), delimiter="\t")
    missing = [c for c in PUBLISHED_HEAD_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(f"published head table {str(path)!r} lacks the columns {missing}; its header must name "
                         f"{', '.join(PUBLISHED_HEAD_COLUMNS)} (tab-separated)")
    rows = []
    for (number, _), row in zip(lines[1:], reader):
        try:
            paper_layer, head = int(row["paper_layer"]), int(row["head"])
        except (TypeError, ValueError):
            raise InputError(f"{str(path)!r} line {number}: paper_layer {row['paper_layer']!r} and head "
                             f"{row['head']!r} must be integers (0-based)") from None
        if paper_layer < 0 or head < 0:
            raise InputError(f"{str(path)!r} line {number}: paper_layer and head are 0-based, not negative")
        rows.append(PublishedHead(row["architecture"], row["pretrained"], row["property"], paper_layer, head))
    return rows


def published_heads_of(table: Sequence[PublishedHead], spec: Mapping) -> list[PublishedHead]:
    """The rows of ``table`` for the open_clip model entry ``spec``: same architecture (``name``) and same weights
    (``pretrained``); empty for any other entry, e.g. other weights of the architecture, whose heads are unrelated."""
    if spec.get("backend") != "open_clip":
        return []
    return [row for row in table if row.architecture == spec.get("name") and row.pretrained == spec.get("pretrained")]


def published_head_pairs(rows: Sequence[PublishedHead]) -> list[tuple[int, int]]:
    """The distinct ``(layer 1..L, head)`` of ``rows`` in their first order: the union over their properties."""
    return list(dict.fromkeys((row.layer, row.head) for row in rows))


def published_head_models(table: Sequence[PublishedHead]) -> list[str]:
    """``architecture (pretrained)`` of every model the table has heads for, in file order (for messages)."""
    return list(dict.fromkeys(f"{row.architecture} ({row.pretrained})" for row in table))
