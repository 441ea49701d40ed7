"""The reference decomposition of the paper's code path, for checking and benchmarking
:func:`~clip_interp.contributions.decompose`.

For every layer it builds the full per-query, per-source, per-head tensor
``alpha_{l,h}(q -> j) v_{l,h,j} W_O[l,h]^T`` of shape (B, T_query, T_source, H, D) from the
cached attention pattern and values of a full forward, then keeps the class query. The terms are
read and the LayerNorm folded by the same public parts as :func:`~clip_interp.contributions.decompose`'s
(:class:`~clip_interp.contributions.ClassTokenTerms`, :func:`~clip_interp.contributions.assemble_decomposition`),
so the two agree exactly when the per-source terms do. Memory grows as B T^2 H D per layer (4 bytes
each: 11.4 GB for ViT-B/16 at batch 8): a check, not a tool.
"""

from __future__ import annotations

import torch

from ..contributions import ClassTokenTerms, Decomposition, assemble_decomposition, check_vision_tower
from ..decompose import CONVENTIONS, FinalReadout


def _all_query_terms(tower, layer: int, pattern: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(B, T_query, T_source, H, D): every query's per-source, per-head output of block ``layer``.

    Built in one allocation: each source's value through its head's slice of W_O, ``v_{h,j} W_O[h]^T``
    (B, T, H, D), times the attention weights broadcast over the queries.
    """
    w_heads = tower.block(layer).w_out.view(tower.d_model, tower.n_heads, tower.d_head)
    value_out = torch.einsum("bjhk,dhk->bjhd", values, w_heads)
    return pattern.permute(0, 2, 3, 1).unsqueeze(-1) * value_out.unsqueeze(1)


def _class_query_terms(tower, layer: int, cache) -> torch.Tensor:
    """(B, H, T_source, D): the class query's part of :func:`_all_query_terms`, as the site ``head_source_out``.

    A copy, so that the full tensor is freed on return: one layer's full tensor exists at a time.
    """
    full = _all_query_terms(tower, layer, cache[("pattern", layer)], cache[("v", layer)])
    return full[:, 0].permute(0, 2, 1, 3).clone()


@torch.no_grad()
def reference_decompose(tower, pixels: torch.Tensor, *, convention: str = "per_component") -> Decomposition:
    """The decomposition with heads summed over sources, (B, L, H, E), by the full-tensor route."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}")
    check_vision_tower(tower)
    n = tower.n_layers
    sites = ["pattern", "v", "mlp_out", ("resid", 0), ("ln_final_mean", n), ("ln_final_scale", n)]
    out = tower.run(pixels, cache=sites)
    terms = ClassTokenTerms(tower, FinalReadout.of(tower), "sum")
    terms.add_embedding(out.cache[("resid", 0)])
    for layer in range(1, n + 1):
        terms.add_heads(layer, _class_query_terms(tower, layer, out.cache))
        terms.add_mlp(layer, out.cache[("mlp_out", layer)])
    terms.add_statistics(out.cache[("ln_final_mean", n)], out.cache[("ln_final_scale", n)])
    return assemble_decomposition(tower, terms, out.embedding.float(), convention)
