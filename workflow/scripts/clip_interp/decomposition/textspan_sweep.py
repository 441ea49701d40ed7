"""Reconstruction accuracy against the texts per head K (the TEXTSPAN paper's figure), with two baselines.

For every head (l, h) of the last layers, every K of a list and every text pool, three sets of K orthonormal
directions U_K (K, D), each replacing the head's contributions c by ``mean(c) + (c - mean(c)) U_K^T U_K``:

- ``textspan``: TEXTSPAN's first K texts of the pool (:mod:`~clip_interp.decomposition.textspan`). Its choice
  is incremental (iteration k depends on the first k - 1 choices only), so one run at the largest K gives
  every smaller K as its first K directions (:meth:`TextSpan.prefix`).
- ``principal_components``: the top-K eigenvectors of the head's covariance ``S``. No K directions explain more
  of the head's variance (Ky Fan), so they bound what any K directions can do; they do not depend on the pool,
  and their rows have no pool (null) and no texts (text index -1).
- ``random_texts``: K texts of the pool drawn at random without replacement: a permutation of the pool from
  ``numpy.random.default_rng([seed, layer, head])``, its first K texts. Each is normalised and projected on the
  head's top-``rank`` basis, as TEXTSPAN's step 1 does, then orthonormalised in the drawn order (Gram-Schmidt,
  by a QR decomposition), which is what TEXTSPAN's deflation does to the texts it picks: only the choice of the
  texts differs from TEXTSPAN. The prefix of the permutation gives every smaller K.

Accuracy is that of :func:`~clip_interp.decomposition.textspan.reconstruction_accuracy` (the paper's
experiment): every attention layer before the first replaced one mean-ablated, the replaced heads
reconstructed, the rest (MLPs included) kept. ``variance_share`` is the share of the replaced heads' summed
variance that their K directions explain (summed over heads).

Cost: each head's contributions are read once for one ``C^T C``, one eigendecomposition for TEXTSPAN's basis
(shared by every pool) and one of ``S`` for the principal components; per pool, one TEXTSPAN run at the
largest K and one QR; then one pass over the images: per batch and direction set, the coefficients
``(c - mean) U^T`` (B, heads, K_max) and the class scores accumulated over the segments between consecutive K.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..models import layer_index
from .classifier import Ablation, ablated_embeddings
from .table import component_means
from .textspan import HeadMoments, TextSpan, head_moments, textspan_from_moments

METHODS = ("textspan", "principal_components", "random_texts")
Key = tuple[str, str | None]  # (method, pool); the pool is None for principal components


def _span(texts, directions: torch.Tensor, variance: torch.Tensor, moments: HeadMoments) -> TextSpan:
    variance = variance.numpy().astype(np.float64)
    total = moments.total_variance
    share = variance / total if total > 0 else np.zeros_like(variance)
    return TextSpan(np.asarray(texts, dtype=np.int64), directions.float(), variance, share, np.cumsum(share),
                    moments.mean.float(), total)


def principal_directions(moments: HeadMoments, n_directions: int) -> TextSpan:
    """The top-``n_directions`` eigenvectors of the head's covariance, by decreasing eigenvalue (text index -1)."""
    d = moments.covariance.shape[0]
    if not 1 <= n_directions <= d:
        raise InputError(f"{n_directions} principal components asked for, but the contributions have {d} dimensions")
    eigenvalues, eigenvectors = torch.linalg.eigh(moments.covariance)
    order = eigenvalues.argsort(descending=True)[:n_directions]
    return _span(np.full(n_directions, -1), eigenvectors[:, order].T, eigenvalues[order].clamp_min(0), moments)


def random_text_directions(moments: HeadMoments, texts: torch.Tensor, n_texts: int,
                           rng: np.random.Generator) -> TextSpan:
    """``n_texts`` pool texts drawn by ``rng`` (a permutation's first ones), projected on the head's basis as in
    TEXTSPAN's step 1 and orthonormalised in the drawn order (QR: Gram-Schmidt)."""
    if not 1 <= n_texts <= min(texts.shape[0], moments.rank):
        raise InputError(f"{n_texts} random texts per head asked for, but the pool has {texts.shape[0]} texts and "
                         f"the rank is {moments.rank}; at most {min(texts.shape[0], moments.rank)}")
    drawn = rng.permutation(texts.shape[0])[:n_texts]
    chosen = F.normalize(texts[torch.as_tensor(drawn)].double(), dim=-1)
    coordinates = chosen if moments.basis is None else chosen @ moments.basis
    q, r = torch.linalg.qr(coordinates.T)
    q = q * torch.where(r.diagonal() < 0, -1.0, 1.0).to(q.dtype)  # each direction along its own text
    directions = q.T if moments.basis is None else (moments.basis @ q).T
    variance = ((directions @ moments.covariance) * directions).sum(1)
    return _span(drawn, directions, variance, moments)


def sweep_directions(source, pools: Mapping[str, torch.Tensor], layers: Sequence[int], max_texts: int, rank: int,
                     seed: int = 0) -> dict[Key, dict[tuple[int, int], TextSpan]]:
    """Per (method, pool) and head of ``layers``, the ``max_texts`` directions of each method (module docstring):
    each head's moments are computed once and shared by every pool and method."""
    if not pools:
        raise InputError("the TEXTSPAN sweep needs at least one text pool")
    directions: dict[Key, dict[tuple[int, int], TextSpan]] = {("principal_components", None): {}}
    for pool in pools:
        directions[("textspan", pool)], directions[("random_texts", pool)] = {}, {}
    for layer in layers:
        for head in range(source.n_heads):
            moments = head_moments(source.head(layer, head), rank)
            directions[("principal_components", None)][(layer, head)] = principal_directions(moments, max_texts)
            for pool, texts in pools.items():
                directions[("textspan", pool)][(layer, head)] = textspan_from_moments(moments, texts, max_texts)
                rng = np.random.default_rng([seed, layer, head])
                directions[("random_texts", pool)][(layer, head)] = random_text_directions(moments, texts,
                                                                                          max_texts, rng)
    return directions


def sweep_accuracies(source, directions: Mapping[Key, Mapping[tuple[int, int], TextSpan]], classifier: torch.Tensor,
                     labels, texts_per_head: Sequence[int], *, batch_size: int = 256) -> pd.DataFrame:
    """One row per (method, pool, K): ``method, pool, texts_per_head, accuracy, variance_share, n_images``, and
    in every row the two references ``accuracy_no_ablation`` and ``accuracy_heads_exact`` (the earlier layers
    mean-ablated, the replaced heads kept exactly: the limit of a full basis). Accuracy as
    :func:`~clip_interp.decomposition.textspan.reconstruction_accuracy` with each head's first K directions;
    class scores ``e' W^T`` (their argmax is the cosine's), accumulated in float64, one pass over the images."""
    ks = sorted(set(int(k) for k in texts_per_head))
    heads = sorted(next(iter(directions.values())))
    if not ks or ks[0] < 1 or any(ks[-1] > len(s.texts) for d in directions.values() for s in d.values()):
        raise InputError(f"texts per head {ks} do not fit the sweep's directions")
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if len(labels_t) != source.n:
        raise InputError(f"{len(labels_t)} labels for {source.n} images in the component store")
    first = min(layer for layer, _ in heads)
    ablation = Ablation.layers(source.n_layers, source.n_heads, attention=range(1, first), name="before_textspan")
    means = component_means(source, batch_size)
    w = classifier.double()
    reference = next(iter(directions.values()))
    head_means = torch.stack([reference[h].mean for h in heads]).double()  # (H', E), every method's means alike
    stacked = {key: torch.stack([spans[h].directions[:ks[-1]] for h in heads]).double()
               for key, spans in directions.items()}  # (H', K_max, E)
    scores_of = {key: u @ w.T for key, u in stacked.items()}  # (H', K_max, C)
    index = (torch.tensor([layer_index(layer) for layer, _ in heads]), torch.tensor([head for _, head in heads]))
    correct = {key: np.zeros(len(ks), dtype=np.int64) for key in directions}
    references = np.zeros(2, dtype=np.int64)
    for rows, terms in source.batches(batch_size):
        contributions = terms["heads"][:, index[0], index[1]].double()  # (B, H', E)
        ablated = ablated_embeddings(terms, means, ablation).double()
        truth = labels_t[rows]
        references += [int(((e @ w.T).argmax(1).cpu() == truth).sum()) for e in (terms["embedding"].double(), ablated)]
        base = (ablated - contributions.sum(1) + head_means.sum(0)) @ w.T
        centred = contributions - head_means
        for key in directions:
            coefficients = torch.einsum("bhe,hke->bhk", centred, stacked[key])
            scores, done = base.clone(), 0
            for i, k in enumerate(ks):
                scores += torch.einsum("bhk,hkc->bc", coefficients[:, :, done:k], scores_of[key][:, done:k])
                done = k
                correct[key][i] += int((scores.argmax(1).cpu() == truth).sum())
    table = pd.DataFrame([
        {"method": method, "pool": pool, "texts_per_head": k, "accuracy": correct[(method, pool)][i] / source.n,
         "variance_share": _variance_share(directions[(method, pool)].values(), k), "n_images": source.n}
        for (method, pool) in directions for i, k in enumerate(ks)])
    table["accuracy_no_ablation"], table["accuracy_heads_exact"] = references / source.n
    return table


def _variance_share(spans, k: int) -> float:
    spans = list(spans)
    total = sum(s.total_variance for s in spans)
    return float(sum(s.variance[:k].sum() for s in spans) / total) if total > 0 else 0.0


def textspan_sweep(source, pools: Mapping[str, torch.Tensor], classifier: torch.Tensor, labels,
                   layers: Sequence[int], texts_per_head: Sequence[int], rank: int, *, seed: int = 0,
                   batch_size: int = 256) -> pd.DataFrame:
    """The sweep's table: :func:`sweep_accuracies` of :func:`sweep_directions` at the largest K, with the
    settings in every row (``n_heads`` replaced, ``layers``, ``rank``, ``seed``)."""
    directions = sweep_directions(source, pools, layers, max(texts_per_head), rank, seed)
    table = sweep_accuracies(source, directions, classifier, labels, texts_per_head, batch_size=batch_size)
    table["n_heads"], table["rank"], table["seed"] = len(next(iter(directions.values()))), rank, seed
    table["layers"] = f"{min(layers)}..{max(layers)}"
    return table


def check_sweep_sizes(texts_per_head: Sequence[int], rank: int, pool_sizes: Mapping[str, int]) -> None:
    """Raise :class:`InputError` naming the config keys when a K of the sweep exceeds the rank or a pool's size
    (the start checks see local pools only; a downloaded pool is checked here)."""
    largest = max(texts_per_head)
    if largest > rank:
        raise InputError(f"`decomposition.textspan.sweep.texts_per_head` (largest {largest}) exceeds "
                         f"`decomposition.textspan.rank` ({rank}); lower it or raise the rank")
    for pool, size in pool_sizes.items():
        if largest > size:
            raise InputError(f"the pool `decomposition.sources.{pool}` has {size} texts, fewer than "
                             f"`decomposition.textspan.sweep.texts_per_head` (largest {largest}); give a larger pool "
                             f"or set every K to at most {size}")
