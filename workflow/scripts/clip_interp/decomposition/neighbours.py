"""Per-head nearest neighbours: the images of a set ranked by one head's contribution against a query direction.

For head (l, h) (layers 1..L, heads 0..H-1; the paper numbers layers from 0, so its layer l-1), image i's
contribution ``c_i = c_{l,h}(i)`` (E,) is the head's term summed over sources, as the component source holds it
(the decomposition store: divided by the norm ``||e_i||`` of the image's embedding, as the paper's code does). A
query ``q`` (E,) is a direction in the joint space: a unit text embedding, or the contribution of the same head to
a query image: an image of the set (its ``c_{l,h}``, as the source holds it) or an image file outside the set,
decomposed with the model and divided by its own ``||e||`` (:func:`file_head_terms`). The score of image i is, by
``similarity`` (:data:`SIMILARITIES`):

- ``dot`` (the paper's search, the default): ``c_i . q``, the query not rescaled. Its ranking is the ranking by
  the projection ``c_i . q / ||q||`` on the unit query (``||q||`` is one positive number per query); for a text
  query (``||q|| = 1``) the scores are that projection.
- ``cosine``: ``cos(c_i, q) = c_i . q / (||c_i|| ||q||)`` (0 where ``c_i`` is 0). It ignores how large the head's
  contribution is, so it ranks differently from ``dot`` whenever the ``||c_i||`` differ.

The top-k images by score are the neighbours; ties are broken by the lower row. :func:`neighbour_table` reads
each head's contributions (N, E) once and ranks every query under both similarities.
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


def head_contributions(source, layer: int, head: int, batch_size: int = 1024) -> torch.Tensor:
    """The contributions (N, E) float32 of head (layer, head) to every image of the source: through the source's
    own ``head`` reader where it has one (a store then reads that head's slice only), else from its batches."""
    _check_head(source, layer, head)
    if hasattr(source, "head"):
        return source.head(layer, head).float()
    return torch.cat([terms["heads"][:, layer_index(layer), head].float() for _, terms in source.batches(batch_size)])


def _check_row(source, row: int) -> None:
    if not 0 <= row < source.n:
        raise InputError(f"image row {row} is outside 0..{source.n - 1}")


def image_query(source, layer: int, head: int, row: int, batch_size: int = 1024) -> torch.Tensor:
    """The contribution (E,) of head (layer, head) to image ``row`` of the source: a query direction."""
    _check_row(source, row)
    return head_contributions(source, layer, head, batch_size)[row].clone()


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


def similarity_scores(contributions: torch.Tensor, query: torch.Tensor,
                      similarity: str = PAPER_SIMILARITY) -> torch.Tensor:
    """The score (N,) float64 of each row of ``contributions`` (N, E) against ``query`` (E,) (module docstring):
    ``dot`` ``c_i . q``, or ``cosine`` ``cos(c_i, q)`` (0 where ``c_i`` or ``q`` is 0)."""
    _check_similarity(similarity)
    c = contributions.double()
    q = query.double().flatten().to(c.device)
    score = c @ q
    if similarity == "cosine":
        lengths = c.norm(dim=-1) * q.norm()
        score = torch.where(lengths > 0, score / lengths.clamp_min(1e-300), torch.zeros_like(score))
    return score.cpu()


def head_scores(source, layer: int, head: int, query: torch.Tensor, *, similarity: str = PAPER_SIMILARITY,
                batch_size: int = 1024) -> torch.Tensor:
    """The score (N,) float64 of every image of the source against ``query`` (E,) for head (layer, head)."""
    _check_similarity(similarity)
    return similarity_scores(head_contributions(source, layer, head, batch_size), query, similarity)


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


def head_neighbours(source, layer: int, head: int, query: torch.Tensor, k: int, *, batch_size: int = 1024,
                    exclude: int | None = None, similarity: str = PAPER_SIMILARITY) -> pd.DataFrame:
    """The ``k`` images of largest score (:func:`head_scores` with ``similarity``): ``rank`` (1..k), ``row``,
    ``score``. ``exclude`` leaves out one row (a query image of the set). Ties are broken by the lower row."""
    return top_k(head_scores(source, layer, head, query, similarity=similarity, batch_size=batch_size), k, exclude)


@dataclass
class NeighbourQuery:
    """A query of the neighbour search: ``name`` (as the table shows it), ``kind`` (``text``; ``image``, a row of
    the set; or ``file``, an image file outside it), and its direction: one ``direction`` (E,) for every head
    (a text), per-head ``head_terms`` (L, H, E) (a file), or the image ``row`` of the set, whose own contribution
    is the direction and which is left out of its own ranking."""

    name: str
    kind: str
    direction: torch.Tensor | None = None
    head_terms: torch.Tensor | None = None
    row: int | None = None

    def at(self, layer: int, head: int, contributions: torch.Tensor) -> torch.Tensor:
        """The query direction (E,) for head (layer, head), whose contributions to the set are ``contributions``
        (N, E)."""
        if self.direction is not None:
            return self.direction
        if self.head_terms is not None:
            return self.head_terms[layer_index(layer), head]
        return contributions[self.row]


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
        contributions = head_contributions(source, layer, head, batch_size)
        for query in queries:
            direction = query.at(layer, head, contributions)
            lists = {name: top_k(similarity_scores(contributions, direction, name), k, query.row)
                     for name in SIMILARITIES}
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
                       image_queries: Sequence[int | str], file_terms: torch.Tensor | None = None
                       ) -> list[NeighbourQuery]:
    """The queries of ``decomposition.neighbours``: one per text (``text_directions`` (M, E), the unit text
    embeddings, named ``text: <text>``), then one per entry of ``image_queries`` in its order: a row of the set
    (named ``image: <key>``, left out of its own ranking) or an image file outside the set (named
    ``file: <path>``; ``file_terms`` (F, L, H, E) holds the files' head terms in their order,
    :func:`file_head_terms`)."""
    queries = [NeighbourQuery(f"text: {text}", "text", direction=text_directions[i]) for i, text in enumerate(texts)]
    keys = getattr(source, "keys", None)
    files = 0
    for entry in image_queries:
        if isinstance(entry, str):
            queries.append(NeighbourQuery(f"file: {entry}", "file", head_terms=file_terms[files]))
            files += 1
            continue
        _check_row(source, entry)
        name = keys[entry] if keys is not None else f"row {entry}"
        queries.append(NeighbourQuery(f"image: {name}", "image", row=entry))
    return queries
