"""Per-head nearest neighbours: the images of a set ranked by one head's contribution against a query direction.

For head (l, h) (layers 1..L, heads 0..H-1; the paper numbers layers from 0, so its layer l-1), image i's
contribution ``c_i = c_{l,h}(i)`` (E,) is the head's term summed over sources, as the component source holds it
(the decomposition store: divided by the norm ``||e_i||`` of the image's embedding, as the paper's code does). A
query ``q`` (E,) is a direction in the joint space: a unit text embedding, or the contribution of the same head to
a query image (an image of the set, :func:`image_head_terms`, or a file outside it, :func:`file_head_terms`, each
divided by its own ``||e||``). The score of image i is, by ``similarity`` (:data:`SIMILARITIES`):

- ``dot`` (the paper's search, the default): ``c_i . q``, the query not rescaled. Its ranking is the ranking by
  the projection ``c_i . q / ||q||`` on the unit query (``||q||`` is one positive number per query); for a text
  query (``||q|| = 1``) the scores are that projection.
- ``cosine``: ``cos(c_i, q) = c_i . q / (||c_i|| ||q||)`` (0 where ``c_i`` is 0). It ignores how large the head's
  contribution is, so it ranks differently from ``dot`` whenever the ``||c_i||`` differ.

The top-k images by score are the neighbours; ties are broken by the lower row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd
import torch

from ..errors import InputError
from ..models import layer_index

SIMILARITIES = ("dot", "cosine")
# The similarity of the paper's search: the rows of the other are compared with its top-k.
PAPER_SIMILARITY = "dot"


def _check_head(source, layer: int, head: int) -> None:
    if not 1 <= layer <= source.n_layers or not 0 <= head < source.n_heads:
        raise InputError(f"head ({layer}, {head}) does not exist; layers are 1..{source.n_layers}, "
                         f"heads 0..{source.n_heads - 1}")


def _check_similarity(similarity: str) -> None:
    if similarity not in SIMILARITIES:
        raise InputError(f"unknown neighbour similarity {similarity!r}; choose from {SIMILARITIES}")


def image_head_terms(source, rows: Sequence[int], batch_size: int = 256) -> torch.Tensor:
    """The head terms (R, L, H, E) of the source's images ``rows`` (in that order), read in one pass."""
    bad = [row for row in rows if not 0 <= row < source.n]
    if bad:
        raise InputError(f"image rows {bad} are outside 0..{source.n - 1}")
    if not rows:
        return torch.zeros(0, source.n_layers, source.n_heads, 0)
    found: dict[int, torch.Tensor] = {}
    for sl, terms in source.batches(batch_size):
        for row in rows:
            if sl.start <= row < sl.stop:
                found[row] = terms["heads"][row - sl.start].float().clone()
    return torch.stack([found[row] for row in rows])


def image_query(source, layer: int, head: int, row: int, batch_size: int = 256) -> torch.Tensor:
    """The contribution (E,) of head (layer, head) to image ``row`` of the source: a query direction."""
    _check_head(source, layer, head)
    return image_head_terms(source, [row], batch_size)[0, layer_index(layer), head]


@torch.no_grad()
def file_head_terms(model, paths: Sequence[str], convention: str) -> torch.Tensor:
    """The head terms (R, L, H, E) of image files (outside the set), each divided by the norm of its own image
    embedding ``||e||``: the head's term summed over sources,
    ``decompose(model.vision, pixels, convention=convention).heads / ||e||``, in the store's units.

    ``convention`` must be the store's (``store.convention``), so that the terms are shared out as the set's are.
    A missing or unreadable file is an InputError naming it.
    """
    from ..contributions import decompose
    from ..images import load_images

    pixels = load_images(list(paths), model.preprocess, keys=[str(p) for p in paths]).to(model.device)
    parts = decompose(model.vision, pixels, convention=convention)
    norm = parts.embedding.float().norm(dim=-1).clamp_min(1e-30)
    return (parts.heads.float() / norm.view(-1, 1, 1, 1)).cpu()


def head_scores(source, layer: int, head: int, query: torch.Tensor, *, similarity: str = PAPER_SIMILARITY,
                batch_size: int = 256) -> torch.Tensor:
    """The score (N,) float64 of every image of the source against ``query`` (E,) (module docstring)."""
    _check_head(source, layer, head)
    _check_similarity(similarity)
    q = query.float().flatten()
    parts = []
    for _, terms in source.batches(batch_size):
        contributions = terms["heads"][:, layer_index(layer), head].float()
        score = contributions @ q.to(contributions.device)
        if similarity == "cosine":
            lengths = contributions.norm(dim=-1) * q.norm()
            score = torch.where(lengths > 0, score / lengths.clamp_min(1e-30), torch.zeros_like(score))
        parts.append(score.cpu().double())
    return torch.cat(parts)


def top_k(scores: torch.Tensor, k: int, exclude: int | None = None) -> pd.DataFrame:
    """The ``k`` rows of largest score: ``rank`` (1..k), ``row``, ``score``; ``exclude`` leaves one row out; ties
    go to the lower row."""
    if k < 1:
        raise InputError(f"the number of neighbours must be at least 1, got {k}")
    scores = scores.double().clone()
    if exclude is not None:
        scores[exclude] = float("-inf")
    order = torch.sort(-scores, stable=True).indices
    order = order[torch.isfinite(scores[order])][:k]
    return pd.DataFrame({"rank": range(1, len(order) + 1), "row": order.numpy(), "score": scores[order].numpy()})


def head_neighbours(source, layer: int, head: int, query: torch.Tensor, k: int, *, batch_size: int = 256,
                    exclude: int | None = None, similarity: str = PAPER_SIMILARITY) -> pd.DataFrame:
    """The ``k`` images of largest score (:func:`head_scores` with ``similarity``): ``rank`` (1..k), ``row``,
    ``score``. ``exclude`` leaves out one row (a query image of the set). Ties are broken by the lower row."""
    return top_k(head_scores(source, layer, head, query, similarity=similarity, batch_size=batch_size), k, exclude)


@dataclass
class NeighbourQuery:
    """A query of the neighbour search: ``name`` (as the table shows it), ``kind`` (``text``, ``image`` of the
    set or ``file`` outside it), and either one ``direction`` (E,) for every head or per-head ``head_terms``
    (L, H, E); ``exclude``: the row of a query image of the set (left out of its own ranking)."""

    name: str
    kind: str
    direction: torch.Tensor | None = None
    head_terms: torch.Tensor | None = None
    exclude: int | None = None

    def at(self, layer: int, head: int) -> torch.Tensor:
        """The query direction (E,) for head (layer, head)."""
        if self.direction is not None:
            return self.direction
        return self.head_terms[layer_index(layer), head]


def shared_fraction(found: Sequence[int], paper: Sequence[int]) -> float:
    """The fraction of the paper's top-k list ``paper`` that is also in ``found`` (1.0 for two empty lists)."""
    return len(set(found) & set(paper)) / len(paper) if len(paper) else 1.0


def neighbour_table(source, heads: Sequence[tuple[int, int]], queries: Sequence[NeighbourQuery], k: int, *,
                    similarity: str = PAPER_SIMILARITY, batch_size: int = 256) -> pd.DataFrame:
    """Every (head, query)'s top ``k`` under each similarity of :data:`SIMILARITIES`, as one long table: ``layer``,
    ``head``, ``query``, ``query_kind``, ``similarity``, ``rank``, ``row``, ``score``, ``shared_with_paper``,
    the fraction of the (head, query)'s top-k that its ``dot`` list (:data:`PAPER_SIMILARITY`, the paper's) also
    holds (1.0 on the ``dot`` rows), and ``configured``, true on the rows of ``similarity`` (the configured one;
    the others are its alternative for the protocol report)."""
    _check_similarity(similarity)
    parts = []
    for layer, head in heads:
        for query in queries:
            lists = {similarity: head_neighbours(source, layer, head, query.at(layer, head), k, batch_size=batch_size,
                                                 exclude=query.exclude, similarity=similarity)
                     for similarity in SIMILARITIES}
            paper = lists[PAPER_SIMILARITY]["row"].tolist()
            for name, found in lists.items():
                found.insert(0, "similarity", name)
                found.insert(0, "query_kind", query.kind)
                found.insert(0, "query", query.name)
                found.insert(0, "head", head)
                found.insert(0, "layer", layer)
                found["shared_with_paper"] = shared_fraction(found["row"].tolist(), paper)
                found["configured"] = name == similarity
                parts.append(found)
    return pd.concat(parts, ignore_index=True)


def configured_queries(source, texts: Sequence[str], text_directions: torch.Tensor | None,
                       image_queries: Sequence[int | str], file_terms: torch.Tensor | None = None,
                       batch_size: int = 256) -> list[NeighbourQuery]:
    """The queries of ``decomposition.neighbours``: one per text (``text_directions`` (M, E), the unit text
    embeddings, named ``text: <text>``), then one per entry of ``image_queries`` in its order: a row of the set
    (named ``image: <key>``, left out of its own ranking) or an image file outside the set (named
    ``file: <path>``; ``file_terms`` (F, L, H, E) holds the files' head terms in their order,
    :func:`file_head_terms`)."""
    queries = [NeighbourQuery(f"text: {text}", "text", direction=text_directions[i]) for i, text in enumerate(texts)]
    rows = [entry for entry in image_queries if not isinstance(entry, str)]
    row_terms = dict(zip(rows, image_head_terms(source, rows, batch_size))) if rows else {}
    keys = getattr(source, "keys", None)
    files = 0
    for entry in image_queries:
        if isinstance(entry, str):
            queries.append(NeighbourQuery(f"file: {entry}", "file", head_terms=file_terms[files]))
            files += 1
            continue
        name = keys[entry] if keys is not None else f"row {entry}"
        queries.append(NeighbourQuery(f"image: {name}", "image", head_terms=row_terms[entry], exclude=entry))
    return queries
