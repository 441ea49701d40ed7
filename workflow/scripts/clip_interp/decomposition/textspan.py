"""TEXTSPAN: a basis of text directions for one head's contributions (Gandelsman et al., 2024).

For head (l, h): ``C`` (N, D) holds its contributions (summed over sources) over N images and ``T``
(M, D) the unit text embeddings of a description pool.

1. Every row of ``T`` is projected onto the span of the top-``rank`` right singular vectors of
   ``C`` (C not centred).
2. ``X = C - mean(C)``.
3. K times: pick the text whose projection has the largest variance over the images,
   ``argmax_j var(X t_j)``; record it, the variance of X along its unit direction
   ``u = t_j / ||t_j||`` and that variance's share of the head's total variance
   ``trace(X^T X / N)``; remove ``u`` from X and from every row of T.

Because every row of T loses each chosen direction, the chosen directions are orthonormal, and
the head's reconstruction is ``mean(C) + (C - mean(C)) U^T U`` (U the K directions as rows).

:func:`textspan_direct` computes this literally (each iteration O(N M D)).
:func:`textspan_covariance` uses ``var(X t) = t^T S t`` with ``S = X^T X / N`` and deflates S
instead of X: ``S <- (I - u u^T) S (I - u u^T)``. It keeps ``G = T S``, built once, and updates it
in rank-one steps (``T P S P = (G - (T u)(S u)^T) P``), all in the coordinates of the top-``rank``
singular vectors (which hold every projected text), so an iteration costs O(M r + r^2) (within
the O(M D^2) bound), whatever N; the singular vectors come from the eigenvectors of ``C^T C``
(O(N D^2) once). Both forms work in float64. These moments (:func:`head_moments`) do not depend on the
pool or on K, and the choice is incremental (the run at K is the first K choices of any longer run:
:meth:`TextSpan.prefix`), so a sweep over pools and K (:mod:`~clip_interp.decomposition.textspan_sweep`)
computes them once per head and runs TEXTSPAN once per head and pool, at the largest K.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..models import layer_index


@dataclass
class TextSpan:
    """One head's TEXTSPAN: ``texts`` (K,) pool indices in the order chosen, ``directions`` (K, D) unit
    vectors, ``variance`` (K,) the variance each explains, ``share`` (K,) its share of ``total_variance``,
    ``cumulative`` (K,) the running sum of ``share``, and ``mean`` (D,) the head's mean contribution."""

    texts: np.ndarray
    directions: torch.Tensor
    variance: np.ndarray
    share: np.ndarray
    cumulative: np.ndarray
    mean: torch.Tensor
    total_variance: float

    def reconstruct(self, contributions: torch.Tensor) -> torch.Tensor:
        """``mean + (c - mean) U^T U`` for contributions (B, D), in their dtype."""
        u = self.directions.to(contributions.device, torch.float64)
        mean = self.mean.to(contributions.device, torch.float64)
        centred = contributions.double() - mean
        return (mean + (centred @ u.T) @ u).to(contributions.dtype)

    def prefix(self, n_texts: int) -> "TextSpan":
        """The first ``n_texts`` texts and directions: TEXTSPAN's choice is incremental (iteration k depends on
        the first k - 1 choices only), so this is exactly the run with K = ``n_texts``."""
        if not 1 <= n_texts <= len(self.texts):
            raise InputError(f"a prefix of {n_texts} texts of a TEXTSPAN run of {len(self.texts)}")
        return TextSpan(self.texts[:n_texts], self.directions[:n_texts], self.variance[:n_texts],
                        self.share[:n_texts], self.cumulative[:n_texts], self.mean, self.total_variance)


def _check_counts(n_texts: int, pool_size: int, rank: int) -> None:
    if not 1 <= n_texts <= pool_size:
        raise InputError(f"TEXTSPAN: {n_texts} texts per head asked for, but the pool has {pool_size}")
    if n_texts > rank:
        raise InputError(f"TEXTSPAN: {n_texts} texts per head exceed the rank {rank}: the texts after the "
                         f"first {rank} would be picked on rounding noise; lower the texts per head or raise the rank")


def _check(contributions: torch.Tensor, texts: torch.Tensor, n_texts: int, rank: int) -> None:
    if contributions.ndim != 2 or texts.ndim != 2 or contributions.shape[1] != texts.shape[1]:
        raise InputError(f"TEXTSPAN needs contributions (N, D) and texts (M, D) of one width, got "
                         f"{tuple(contributions.shape)} and {tuple(texts.shape)}")
    if rank < 1:
        raise InputError(f"TEXTSPAN rank must be at least 1, got {rank}")
    _check_counts(n_texts, texts.shape[0], rank)
    if contributions.shape[0] < 2:
        raise InputError("TEXTSPAN needs the contributions of at least 2 images")


def _finish(texts, directions, variance, mean, total) -> TextSpan:
    variance = np.asarray(variance, dtype=np.float64)
    share = variance / total if total > 0 else np.zeros_like(variance)
    return TextSpan(np.asarray(texts, dtype=np.int64), torch.stack(directions).float(), variance, share,
                    np.cumsum(share), mean.float(), float(total))


def _unit(t: torch.Tensor) -> torch.Tensor:
    norm = t.norm()
    return t / norm if norm > 0 else t


def textspan_direct(contributions: torch.Tensor, texts: torch.Tensor, n_texts: int, rank: int) -> TextSpan:
    """TEXTSPAN on the data matrix itself (the definition; each iteration O(N M D))."""
    _check(contributions, texts, n_texts, rank)
    c = contributions.double()
    t = F.normalize(texts.double(), dim=-1)
    v = torch.linalg.svd(c, full_matrices=False).Vh[:rank]
    t = (t @ v.T) @ v
    mean = c.mean(0)
    x = c - mean
    total = float((x * x).sum(1).mean())
    chosen, directions, variance = [], [], []
    for _ in range(n_texts):
        projections = x @ t.T
        j = int((projections * projections).mean(0).argmax())
        u = _unit(t[j])
        xu = x @ u
        chosen.append(j), directions.append(u), variance.append(float((xu * xu).mean()))
        x = x - xu.unsqueeze(1) * u
        t = t - (t @ u).unsqueeze(1) * u
    return _finish(chosen, directions, variance, mean, total)


@dataclass
class HeadMoments:
    """One head's statistics over N images, in float64, which TEXTSPAN needs whatever the pool and K: ``mean``
    (D,), ``covariance`` ``S = X^T X / N`` (D, D) with ``X = C - mean(C)``, ``rank`` and ``basis`` (D, rank), the
    top-``rank`` right singular vectors of the uncentred C (eigenvectors of ``C^T C``, by decreasing eigenvalue),
    or None when ``rank >= D`` (every direction kept)."""

    mean: torch.Tensor
    covariance: torch.Tensor
    rank: int
    basis: torch.Tensor | None

    @property
    def total_variance(self) -> float:
        """``trace(S)``: the head's total variance over the images."""
        return float(torch.trace(self.covariance))


def head_moments(contributions: torch.Tensor, rank: int) -> HeadMoments:
    """:class:`HeadMoments` of one head's contributions (N, D): one ``C^T C`` and one eigendecomposition."""
    if contributions.ndim != 2 or contributions.shape[0] < 2:
        raise InputError(f"TEXTSPAN needs the contributions (N, D) of at least 2 images, got "
                         f"{tuple(contributions.shape)}")
    if rank < 1:
        raise InputError(f"TEXTSPAN rank must be at least 1, got {rank}")
    c = contributions.double()
    n, d = c.shape
    second_moment = c.T @ c
    mean = c.mean(0)
    covariance = second_moment / n - torch.outer(mean, mean)
    basis = None
    if rank < d:
        eigenvalues, eigenvectors = torch.linalg.eigh(second_moment)
        basis = eigenvectors[:, eigenvalues.argsort(descending=True)[:rank]]
    return HeadMoments(mean, covariance, rank, basis)


def textspan_from_moments(moments: HeadMoments, texts: torch.Tensor, n_texts: int) -> TextSpan:
    """TEXTSPAN's K = ``n_texts`` iterations on a head's :class:`HeadMoments` (see :func:`textspan_covariance`)."""
    if texts.ndim != 2 or texts.shape[1] != moments.mean.shape[0]:
        raise InputError(f"TEXTSPAN needs texts (M, D) of the contributions' width {moments.mean.shape[0]}, got "
                         f"{tuple(texts.shape)}")
    _check_counts(n_texts, texts.shape[0], moments.rank)
    t = F.normalize(texts.double(), dim=-1)
    s = moments.covariance
    if moments.basis is not None:
        a, s = t @ moments.basis, moments.basis.T @ s @ moments.basis
    else:
        a = t
    g = a @ s
    chosen, directions, variance = [], [], []
    for _ in range(n_texts):
        j = int((a * g).sum(1).argmax())
        w = _unit(a[j])
        sw = s @ w
        chosen.append(j)
        directions.append(w if moments.basis is None else moments.basis @ w)
        variance.append(float(w @ sw))
        aw = a @ w
        h = g - torch.outer(aw, sw)
        g = h - torch.outer(h @ w, w)
        a = a - torch.outer(aw, w)
        s = s - torch.outer(w, sw) - torch.outer(sw, w) + (w @ sw) * torch.outer(w, w)
    return _finish(chosen, directions, variance, moments.mean, moments.total_variance)


def textspan_covariance(contributions: torch.Tensor, texts: torch.Tensor, n_texts: int, rank: int) -> TextSpan:
    """TEXTSPAN on the covariance ``S = X^T X / N``, deflated in place of X (see the module docstring).

    The projected texts, and so every chosen direction, lie in the span of the top-``rank`` right
    singular vectors V (D, r); the iterations run in those coordinates (``a = T V``, ``S_V = V^T S V``,
    ``u = V w``), which changes no number but makes an iteration O(M r + r^2). The moments
    (:func:`head_moments`) do not depend on the pool or K: a sweep computes them once per head.
    """
    _check(contributions, texts, n_texts, rank)
    return textspan_from_moments(head_moments(contributions, rank), texts, n_texts)


def textspan_table(results: dict[tuple[int, int], TextSpan], pool: list[str]) -> pd.DataFrame:
    """One row per (layer, head, rank): ``layer, head, rank, text, text_index, variance, share, cumulative_share``."""
    rows = []
    for (layer, head), span in sorted(results.items()):
        for rank, j in enumerate(span.texts):
            rows.append({"layer": layer, "head": head, "rank": rank + 1, "text": pool[j], "text_index": int(j),
                         "variance": span.variance[rank], "share": span.share[rank],
                         "cumulative_share": span.cumulative[rank]})
    return pd.DataFrame(rows)


FORMS = {"covariance": textspan_covariance, "direct": textspan_direct}


def textspan_heads(source, texts: torch.Tensor, layers, n_texts: int, rank: int, *, form: str = "covariance"
                   ) -> dict[tuple[int, int], TextSpan]:
    """TEXTSPAN for every head of ``layers`` (1..L) of a component source (``source.head(l, h)`` gives (N, E))."""
    if form not in FORMS:
        raise InputError(f"unknown TEXTSPAN form {form!r}; choose from {sorted(FORMS)}")
    return {(layer, head): FORMS[form](source.head(layer, head), texts, n_texts, rank)
            for layer in layers for head in range(source.n_heads)}


def reconstruction_accuracy(source, spans: dict[tuple[int, int], TextSpan], classifier: torch.Tensor, labels,
                            *, batch_size: int = 256) -> float:
    """The quality check (the paper's reconstruction experiment): zero-shot accuracy of
    ``e' = e + sum_{l < l0, h} (mean(c_lh) - c_lh) + sum_{l < l0} (mean(b_l) - b_l)
    + sum_{(l, h) in spans} (recon_lh(c_lh) - c_lh)``, ``l0`` the first layer with a TEXTSPAN: every head (and
    attention bias) of the earlier layers mean-ablated, every head with a TEXTSPAN replaced by its reconstruction
    (:meth:`TextSpan.reconstruct`), everything else kept as it is: the embedding term, every MLP, the LN bias and,
    under ``per_component``, the attention biases of the TEXTSPAN layers. Under ``uniform`` (the paper's code) the
    attention- and LN-bias terms are zero, the biases living in the head, MLP and embedding terms, so this is
    exactly the paper's ``mlps.sum + attns.sum`` with the early heads averaged and the last ones replaced."""
    from .classifier import Ablation, ablated_embeddings, predict
    from .table import component_means

    if not spans:
        raise InputError("no TEXTSPAN results to reconstruct")
    first = min(layer for layer, _ in spans)
    ablation = Ablation.layers(source.n_layers, source.n_heads, attention=range(1, first), name="before_textspan")
    means = component_means(source, batch_size)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    correct = 0
    for rows, terms in source.batches(batch_size):
        embedding = ablated_embeddings(terms, means, ablation)
        for (layer, head), span in spans.items():
            original = terms["heads"][:, layer_index(layer), head]
            embedding = embedding + span.reconstruct(original) - original
        correct += int((predict(embedding, classifier).cpu() == labels[rows]).sum())
    return correct / source.n
