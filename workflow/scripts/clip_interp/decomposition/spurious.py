"""Spurious features (Waterbirds): group accuracies before and after mean-ablating heads.

Zero-shot classification into landbird (y = 0) and waterbird (y = 1); the four groups are
(bird, place) with place 0 = land, 1 = water. Reported: each group's accuracy, the average
accuracy over all images (``average``; on the test split it is weighted by the test split's group
sizes), the unweighted mean of the four group accuracies (``mean_group``) and the worst-group
accuracy (the lowest of the four).

Two ablations of the chosen heads S (:func:`waterbirds_ablation`), both reported:

- ``paper`` (the paper's code): mean-ablate S, the whole attention (every head and the attention
  bias) of every layer before the last ``kept_layers`` (4 in the paper), and every MLP-group term
  (the embedding term and every MLP), so that only the attention of the last layers, less S, keeps
  its per-image values;
- ``heads_only``: mean-ablate S alone.

The heads come from the paper's hand-chosen lists (:mod:`clip_interp.head_selection`), from a list, or are
chosen automatically: the heads whose TEXTSPAN texts best match a set of place/background descriptions, scored as
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
from ..head_selection import PublishedHead, published_head_models, published_heads_of
from .classifier import Ablation, ablated_embeddings, predict
from .table import component_means
from .textspan import TextSpan

BIRDS = ("landbird", "waterbird")
PLACES = ("land", "water")
ABLATION_MODES = ("paper", "heads_only")
PAPER_KEPT_LAYERS = 4


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


def waterbirds_ablation(n_layers: int, n_heads: int, heads: Sequence[tuple[int, int]], mode: str, *,
                        kept_layers: int = PAPER_KEPT_LAYERS) -> Ablation:
    """The components that ablation ``mode`` (module docstring) mean-ablates: the ``heads`` (layer 1..L, head);
    with ``paper`` also every head and attention bias of layers 1..L - kept_layers (none when kept_layers >= L),
    the embedding term and every MLP."""
    if mode not in ABLATION_MODES:
        raise InputError(f"unknown Waterbirds ablation {mode!r}; choose from {list(ABLATION_MODES)}")
    if kept_layers < 1:
        raise InputError(f"kept_layers={kept_layers} must be at least 1 (the last layers keep their attention)")
    chosen = Ablation.of_heads(n_layers, n_heads, heads, mode)
    if mode == "heads_only":
        return chosen
    earlier = Ablation.layers(n_layers, n_heads, attention=range(1, n_layers - min(kept_layers, n_layers) + 1))
    return Ablation(name=mode, heads=chosen.heads | earlier.heads, attn_bias=earlier.attn_bias,
                    mlps=torch.ones(n_layers, dtype=torch.bool), embedding_term=True)


def spurious_table(source, classifier: torch.Tensor, y, place, heads: Sequence[tuple[int, int]], *,
                   configured: str = "paper", kept_layers: int = PAPER_KEPT_LAYERS,
                   batch_size: int = 256) -> pd.DataFrame:
    """Group accuracies before (``condition = baseline``, ``ablation_mode = none``) and after mean-ablating
    ``heads`` (``condition = ablated``) under each of :data:`ABLATION_MODES` (``ablation_mode``); ``configured``
    marks the mode the config chose; ``components_ablated`` of ``components`` counts the ablated terms."""
    if configured not in ABLATION_MODES:
        raise InputError(f"unknown Waterbirds ablation {configured!r}; choose from {list(ABLATION_MODES)}")
    means = component_means(source, batch_size)
    conditions = [Ablation.none(source.n_layers, source.n_heads, "none")] + [
        waterbirds_ablation(source.n_layers, source.n_heads, heads, mode, kept_layers=kept_layers)
        for mode in ABLATION_MODES]
    predictions = {c.name: [] for c in conditions}
    for _, terms in source.batches(batch_size):
        for condition in conditions:
            predictions[condition.name].append(predict(ablated_embeddings(terms, means, condition), classifier).cpu())
    rows = []
    for condition in conditions:
        predicted = torch.cat(predictions[condition.name]).numpy()
        ablated, total = condition.count()
        baseline = condition.name == "none"
        rows.append({"condition": "baseline" if baseline else "ablated", "ablation_mode": condition.name,
                     "configured": condition.name == configured, "n_heads_ablated": 0 if baseline else len(heads),
                     "kept_layers": kept_layers, "components_ablated": ablated, "components": total,
                     **group_accuracies(predicted, y, place)})
    return pd.DataFrame(rows)


def ablation_label(row, n_layers: int) -> str:
    """How a row of :func:`spurious_table` is named in figures: ``baseline``, ``heads only: N heads`` or
    ``paper: N heads + attention of layers 1..k + MLPs and embedding term``, ``(configured)`` after the configured
    ablation."""
    if row.ablation_mode == "none":
        return "baseline"
    label = f"{row.ablation_mode.replace('_', ' ')}: {row.n_heads_ablated} heads"
    if row.ablation_mode == "paper":
        earlier = n_layers - min(int(row.kept_layers), n_layers)
        label += (f" + attention of layers 1..{earlier}" if earlier else "") + " + MLPs and embedding term"
    return label + (" (configured)" if row.configured else "")


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


HEADS_COLUMNS = ("layer", "head", "paper_layer", "score", "selected_by", "property")


def _heads_frame(pairs: Sequence[tuple[int, int]], selected_by: str, score=None, properties=None) -> pd.DataFrame:
    frame = pd.DataFrame({"layer": [int(layer) for layer, _ in pairs], "head": [int(head) for _, head in pairs]})
    frame["paper_layer"] = frame["layer"] - 1
    frame["score"] = np.nan if score is None else np.asarray(score, dtype=float)
    frame["selected_by"] = selected_by
    frame["property"] = "" if properties is None else list(properties)
    return frame[list(HEADS_COLUMNS)]


def listed_heads(pairs: Sequence[tuple[int, int]]) -> pd.DataFrame:
    """The heads table (:data:`HEADS_COLUMNS`; ``paper_layer = layer - 1``, the paper's 0-based numbering) of
    configured ``(layer 1..L, head)`` pairs: ``selected_by = config``."""
    return _heads_frame(pairs, "config")


def auto_heads(textspan: pd.DataFrame, pool_embeddings: torch.Tensor, descriptions: torch.Tensor,
               n_heads: int) -> pd.DataFrame:
    """The heads table of :func:`select_heads_from_table` (its score kept): ``selected_by =
    textspan_place_descriptions``."""
    chosen = select_heads_from_table(textspan, pool_embeddings, descriptions, n_heads)
    return _heads_frame(list(zip(chosen["layer"], chosen["head"])), "textspan_place_descriptions", chosen["score"])


def paper_heads(table: Sequence[PublishedHead], model: str, spec, n_layers: int, n_heads: int) -> pd.DataFrame:
    """The heads table of the paper's hand-chosen heads of model entry ``spec`` (named ``model``): the union of its
    lists, each head once with the properties it was chosen for (``property``, comma-joined), ``selected_by =
    paper``. A model without paper heads, or a head outside its tower of ``n_layers`` x ``n_heads``, is an
    InputError naming the model."""
    rows = published_heads_of(table, spec)
    if not rows:
        raise InputError(f"the Waterbirds heads of model `{model}` are 'paper', but the paper chose heads only for "
                         f"{', '.join(published_head_models(table))}; model `{model}` has none: set "
                         f"`decomposition.spurious.heads_by_model.{model}` to auto or a list of [layer, head]")
    properties: dict[tuple[int, int], list[str]] = {}
    for row in rows:
        if not (1 <= row.layer <= n_layers and 0 <= row.head < n_heads):
            raise InputError(f"the paper's head (layer {row.paper_layer} counted from 0, head {row.head}) is not in "
                             f"the image tower of model `{model}` ({n_layers} layers x {n_heads} heads)")
        properties.setdefault((row.layer, row.head), []).append(row.property)
    return _heads_frame(list(properties), "paper", properties=[", ".join(p) for p in properties.values()])
