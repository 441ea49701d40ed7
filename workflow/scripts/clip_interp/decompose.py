"""A tower's pooled embedding as a sum of residual-stream terms, with the final LayerNorm folded into each term.

Three operations on a :class:`~clip_interp.models.HookedTower` (numbering as in :mod:`clip_interp.models.hooked`),
in the manner of TransformerLens' ``stack_head_results`` and ``apply_ln_to_stack``:

- :func:`stack_head_terms`: block ``l``'s attention terms at the pooled query ``q``, per head ``h`` and source
  token ``j``, ``ls_1(alpha_{l,h}(q -> j) v_{l,h,j} W_O[l,h]^T)`` (the site ``head_source_out`` through the
  block's layer scale ``ls_1``, the identity in blocks without one), kept per source or summed over sources
  or over heads. Summed over sources they are :func:`pooled_head_terms` of the query's ``z``, and the query's
  term from itself summed over heads is :func:`self_source_term`; both cost nothing per source.
  :func:`attention_bias_term` is the block's attention term that belongs to no head,
  ``ls_1(b_O)``. Summed, the two give ``attn_out[q]``.
- :class:`FinalReadout`: the linear part of ``e = P^T LN(r)``, ``LN(r) = gamma * (r - mu(r)) / sigma(r) + beta``,
  applied to terms ``c`` (..., D): it reads ``c (gamma P)`` and ``mu(c)``. :meth:`FinalReadout.on_directions`
  projects it on K joint-space directions, so that every term is read as K numbers, never as a joint-space
  vector.
- :func:`apply_final_ln`: a term's part of ``e`` given the pooled residual's statistics ``mu(r)`` and
  ``sigma(r)``, under one of two :data:`CONVENTIONS`. ``per_component``: ``P^T (gamma * (c - mu(c)) / sigma(r))``,
  with ``P^T beta`` one term of its own (:attr:`FinalReadout.bias`). ``uniform``: with the term's share ``w``,
  ``P^T (gamma * (c - w mu(r)) / sigma(r) + w beta)``.

Centring is linear and ``sigma(r)`` is one number per sample, so when terms ``c`` sum to ``r`` their parts sum
to ``e``: in ``per_component`` with the bias term added once, in ``uniform`` when the shares sum to 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

CONVENTIONS = ("per_component", "uniform")
SOURCE_MODES = ("sum", "keep", "map")


def stack_head_terms(tower, layer: int, head_source_out: torch.Tensor, sources: str = "keep") -> torch.Tensor:
    """Block ``layer``'s attention terms at the pooled query, through its layer scale: ``ls_1(head_source_out)``.

    ``head_source_out`` (B, H, T, D) is that site's value. ``sources``: ``keep`` gives the per-head, per-source
    terms (B, H, T, D), ``sum`` the per-head terms summed over sources (B, H, D), ``map`` the per-source terms
    summed over heads (B, T, D).
    """
    terms = tower.block(layer).ls_1(head_source_out)
    if sources == "sum":
        terms = terms.sum(dim=2)
    elif sources == "map":
        terms = terms.sum(dim=1)
    return terms


def pooled_head_terms(tower, layer: int, z_pooled: torch.Tensor) -> torch.Tensor:
    """Block ``layer``'s attention terms at the pooled query summed over sources, from that query's ``z`` (B, H,
    d_head): ``ls_1(z_h W_O[:, h]^T)`` (B, H, D). Equal to ``stack_head_terms(..., "sum")`` (``z_h`` is
    ``sum_j alpha_h(q -> j) v_{h,j}``), at a cost that does not grow with the number of sources."""
    block = tower.block(layer)
    w_heads = block.w_out.view(tower.d_model, tower.n_heads, tower.d_head)
    return block.ls_1(torch.einsum("bhk,dhk->bhd", z_pooled, w_heads))


def self_source_term(tower, layer: int, pattern_self: torch.Tensor, v_self: torch.Tensor) -> torch.Tensor:
    """Block ``layer``'s attention term of the pooled query from itself, summed over heads: ``ls_1(sum_h
    alpha_h(q -> q) v_{h,q} W_O[:, h]^T)`` (B, D), from ``pattern_self`` (B, H), the attention of the query to
    itself, and its values ``v_self`` (B, H, d_head); source q of ``stack_head_terms(..., "map")``."""
    block = tower.block(layer)
    w_heads = block.w_out.view(tower.d_model, tower.n_heads, tower.d_head)
    return block.ls_1(torch.einsum("bh,bhk,dhk->bd", pattern_self, v_self, w_heads))


def attention_bias_term(tower, layer: int, device) -> torch.Tensor:
    """Block ``layer``'s attention term of no head, the layer-scaled output bias ``ls_1(b_O)`` (D,) in float32;
    zeros when the attention has no output bias."""
    block = tower.block(layer)
    if block.b_out is None:
        return torch.zeros(tower.d_model, device=device)
    return block.ls_1(block.b_out).float()


@dataclass(frozen=True)
class ReadTerms:
    """Residual-stream terms ``c`` (..., D) as a :class:`FinalReadout` sees them: ``projection = c M`` (..., X)
    with the readout's matrix ``M``, and ``mean = mu(c)`` (...), the mean over the width D."""

    projection: torch.Tensor
    mean: torch.Tensor


@dataclass
class FinalReadout:
    """The final LayerNorm's weight and the projection as one linear map of residual-stream terms.

    ``matrix = diag(gamma) P`` (D, X) and ``bias = P^T beta`` (X,), in float32, with X = E (the joint space),
    or X = K after :meth:`on_directions`; ``ones = 1^T matrix`` (X,) is the image of the all-ones vector, through
    which a mean (a multiple of it) is taken out of a term.
    """

    matrix: torch.Tensor
    bias: torch.Tensor
    ones: torch.Tensor = field(init=False)

    def __post_init__(self):
        self.ones = self.matrix.sum(dim=0)

    @classmethod
    def of(cls, tower, directions: torch.Tensor | None = None) -> "FinalReadout":
        """The readout of ``tower``'s final LayerNorm and projection, projected on ``directions`` (E, K) if given."""
        proj = tower.proj.detach().float()
        readout = cls(tower.ln_final.weight.detach().float().unsqueeze(1) * proj,
                      tower.ln_final.bias.detach().float() @ proj)
        return readout if directions is None else readout.on_directions(directions)

    def on_directions(self, directions: torch.Tensor) -> "FinalReadout":
        """The readout followed by the projection on joint-space ``directions`` (E, K): ``matrix D``, ``bias D``."""
        directions = directions.to(self.matrix.device, torch.float32)
        return FinalReadout(self.matrix @ directions, self.bias @ directions)

    def read(self, terms: torch.Tensor) -> ReadTerms:
        """``terms`` (..., D), in float32, as :class:`ReadTerms`: ``terms @ matrix`` and the mean over D."""
        terms = terms.float()
        return ReadTerms(terms @ self.matrix, terms.mean(dim=-1))


def apply_final_ln(terms: ReadTerms, readout: FinalReadout, mean: torch.Tensor, scale: torch.Tensor,
                   convention: str, share: float = 0.0) -> torch.Tensor:
    """The parts (B, ..., X) of the embedding that read ``terms`` (B, ..., X) hold, under ``convention``.

    ``mean`` and ``scale`` (B,) are the pooled residual's ``mu(r)`` and ``sigma(r)``; with ``u`` the readout's
    ``ones`` and ``b`` its ``bias``. ``per_component``: ``(c M - mu(c) u) / sigma(r)`` (``share`` unused; the
    bias ``b`` is a term of its own). ``uniform``: ``(c M - share mu(r) u) / sigma(r) + share b``.
    """
    view = (-1,) + (1,) * (terms.projection.ndim - 1)
    if convention == "per_component":
        return (terms.projection - terms.mean.unsqueeze(-1) * readout.ones) / scale.view(view)
    return (terms.projection - share * mean.view(view) * readout.ones) / scale.view(view) + share * readout.bias
