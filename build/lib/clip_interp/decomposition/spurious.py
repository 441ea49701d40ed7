"""Spurious features (Waterbirds): group accuracies before and after mean-ablating heads.

Zero-shot classification into landbird (y = 0) and waterbird (y = 1); the four groups are
(bird, place) with place 0 = land, 1 = water. Reported: each group's accuracy, the average
accuracy over all images (``average``; on the test split it is weighted by the test split's group
sizes), the unweighted mean of the four group accuracies (``mean_group``) and the worst-group
accuracy (the lowest of the four). The heads to
ablate come from a list, or are chosen automatically: the heads whose TEXTSPAN texts best match a
set of place/background descriptions, scored as
``score(l, h) = sum_k share_k * max_p cos(t_k, p)`` over the head's K texts t_k (with their
explained-variance shares) and the descriptions p.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..errors import InputError
from .classifier import Ablation, ablated_embeddings, predict
from .table import component_means
from .textspan import TextSpan

BIRDS = ("landbird", "waterbird")
PLACES = ("land", "water")


def group_accuracies(predicted, y, place) -> dict[str, float]:
    """Accuracy of each (bird, place) group, ``average`` over all images, ``mean_group`` (the mean of the
    group accuracies present) and ``worst_group``; also group sizes."""
    predicted, y, place = (np.asarray(a, dtype=np.int64) for a in (predicted, y, place))
    if not (len(predicted) == len(y) == len(place)):
        raise InputError(f"{len(predicted)} predictions for {len(y)} labels and {len(place)} places")
    out: dict[str, float] = {}
    accuracies = []
    for bird in (0, 1):
        for where in (0, 1):
            members = (y == bird) & (place == where)
            name = f"{BIRDS[bird]}_on_{PLACES[where]}"
            out[f"n_{name}"] = int(members.sum())
            accuracy = float((predicted[members] == y[members]).mean()) if members.any() else float("nan")
            out[name] = accuracy
            accuracies.append(accuracy)
    out["average"] = float((predicted == y).mean()) if len(y) else float("nan")
    out["mean_group"] = float(np.nanmean(accuracies)) if np.isfinite(accuracies).any() else float("nan")
    out["worst_group"] = float(np.nanmin(accuracies)) if np.isfinite(accuracies).any() else float("nan")
    return out


def spurious_table(source, classifier: torch.Tensor, y, place, heads: Sequence[tuple[int, int]], *,
                   batch_size: int = 256) -> pd.DataFrame:
    """Group accuracies before (``condition = baseline``) and after mean-ablating ``heads`` (``ablated``)."""
    means = component_means(source, batch_size)
    conditions = [Ablation.none(source.n_layers, source.n_heads, "baseline"),
                  Ablation.of_heads(source.n_layers, source.n_heads, heads, "ablated")]
    predictions = {c.name: [] for c in conditions}
    for _, terms in source.batches(batch_size):
        for condition in conditions:
            predictions[condition.name].append(predict(ablated_embeddings(terms, means, condition), classifier).cpu())
    rows = []
    for condition in conditions:
        predicted = torch.cat(predictions[condition.name]).numpy()
        rows.append({"condition": condition.name, "n_heads_ablated": len(heads) if condition.name == "ablated" else 0,
                     **group_accuracies(predicted, y, place)})
    return pd.DataFrame(rows)


def select_heads_by_descriptions(spans: dict[tuple[int, int], TextSpan], pool_embeddings: torch.Tensor,
                                 descriptions: torch.Tensor, n_heads: int) -> pd.DataFrame:
    """The ``n_heads`` heads whose TEXTSPAN texts best match the descriptions (score in the module docstring).

    ``pool_embeddings`` (M, E) are the pool's text embeddings (the TEXTSPAN texts index them),
    ``descriptions`` (P, E) those of the place/background set. Returns ``layer, head, score`` by
    decreasing score.
    """
    rows = [{"layer": layer, "head": head, "rank": k + 1, "text_index": int(j), "share": float(span.share[k])}
            for (layer, head), span in spans.items() for k, j in enumerate(span.texts)]
    return select_heads_from_table(pd.DataFrame(rows), pool_embeddings, descriptions, n_heads)


def select_heads_from_table(textspan: pd.DataFrame, pool_embeddings: torch.Tensor, descriptions: torch.Tensor,
                            n_heads: int) -> pd.DataFrame:
    """:func:`select_heads_by_descriptions` from a TEXTSPAN table (``layer, head, text_index, share`` rows)."""
    if textspan.empty:
        raise InputError("no TEXTSPAN results to select heads from")
    groups = textspan.groupby(["layer", "head"], sort=True)
    if n_heads < 1 or n_heads > groups.ngroups:
        raise InputError(f"cannot select {n_heads} heads out of {groups.ngroups} with TEXTSPAN results")
    pool = F.normalize(pool_embeddings.float(), dim=-1)
    places = F.normalize(descriptions.float(), dim=-1)
    rows = []
    for (layer, head), group in groups:
        match = (pool[torch.tensor(group["text_index"].to_numpy(np.int64))] @ places.T).amax(dim=1).numpy()
        rows.append({"layer": int(layer), "head": int(head), "score": float((group["share"].to_numpy() * match).sum())})
    table = pd.DataFrame(rows).sort_values(["score", "layer", "head"], ascending=[False, True, True])
    return table.head(n_heads).reset_index(drop=True)
