"""Per-head nearest neighbours: images ranked by one head's contribution projected on a query direction.

For head (l, h) (layers 1..L, heads 0..H-1) and a query direction q in the joint space (a text
embedding, or another image's contribution of that head), the score of image i is
``c_{l,h}(i) . q / ||q||``, with ``c_{l,h}(i)`` the head's contribution summed over sources; the
top-k images by score are its neighbours.
"""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..models import layer_index


def _check_head(source, layer: int, head: int) -> None:
    if not 1 <= layer <= source.n_layers or not 0 <= head < source.n_heads:
        raise InputError(f"head ({layer}, {head}) does not exist; layers are 1..{source.n_layers}, "
                         f"heads 0..{source.n_heads - 1}")


def image_query(source, layer: int, head: int, row: int, batch_size: int = 256) -> torch.Tensor:
    """The contribution (E,) of head (layer, head) to image ``row``: a query direction."""
    _check_head(source, layer, head)
    if not 0 <= row < source.n:
        raise InputError(f"image row {row} is outside 0..{source.n - 1}")
    for rows, terms in source.batches(batch_size):
        if rows.start <= row < rows.stop:
            return terms["heads"][row - rows.start, layer_index(layer), head].clone()
    raise AssertionError("unreachable: row inside the source")


def head_neighbours(source, layer: int, head: int, query: torch.Tensor, k: int, *, batch_size: int = 256,
                    exclude: int | None = None) -> pd.DataFrame:
    """The ``k`` images of largest projected contribution: ``rank`` (1..k), ``row``, ``score``.

    ``exclude`` leaves out one row (the query image itself). Ties are broken by the lower row.
    """
    _check_head(source, layer, head)
    if k < 1:
        raise InputError(f"the number of neighbours must be at least 1, got {k}")
    direction = F.normalize(query.float().flatten(), dim=0)
    scores = torch.cat([terms["heads"][:, layer_index(layer), head] @ direction.to(terms["heads"].device)
                        for _, terms in source.batches(batch_size)]).cpu().double()
    if exclude is not None:
        scores[exclude] = float("-inf")
    order = torch.sort(-scores, stable=True).indices
    order = order[torch.isfinite(scores[order])][:k]
    return pd.DataFrame({"rank": range(1, len(order) + 1), "row": order.numpy(), "score": scores[order].numpy()})
