"""The reference decomposition of the paper's code path, for checking and benchmarking :func:`decompose`.

For every layer it builds the full per-query, per-source, per-head tensor
``alpha_{l,h}(q -> j) v_{l,h,j} W_O[l,h]^T`` of shape (B, T_query, T_source, H, D) from the
cached attention pattern and values of a full forward, then keeps the class query. The LayerNorm
folding is the same as :func:`~clip_interp.decomposition.components.decompose`'s, so the two agree
exactly when the per-source terms do. Memory grows as B T^2 H D per layer (4 bytes each: 11.4 GB for
ViT-B/16 at batch 8): a check, not a tool.
"""

from __future__ import annotations

import torch

from .components import CONVENTIONS, Decomposition, _assemble, _Collector, check_vision_tower


def _all_query_terms(tower, layer: int, pattern: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(B, T_query, T_source, H, D): every query's per-source, per-head output of block ``layer``.

    Built in one allocation: each source's value through its head's slice of W_O, ``v_{h,j} W_O[h]^T``
    (B, T, H, D), times the attention weights broadcast over the queries.
    """
    w_heads = tower.blocks[layer - 1].w_out.view(tower.d_model, tower.n_heads, tower.d_head)
    value_out = torch.einsum("bjhk,dhk->bjhd", values, w_heads)
    return pattern.permute(0, 2, 3, 1).unsqueeze(-1) * value_out.unsqueeze(1)


@torch.no_grad()
def reference_decompose(tower, pixels: torch.Tensor, *, convention: str = "per_component") -> Decomposition:
    """The decomposition with heads summed over sources, (B, L, H, E), by the full-tensor route."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}")
    check_vision_tower(tower)
    n = tower.n_layers
    sites = ["pattern", "v", "mlp_out", ("resid", 0), ("ln_final_mean", n), ("ln_final_scale", n)]
    out = tower.run(pixels, cache=sites)
    proj = tower.proj.detach().float()
    readout = tower.ln_final.weight.detach().float().unsqueeze(1) * proj
    collector = _Collector(tower, readout, "sum")
    collector._on_embedding(out.cache[("resid", 0)], ("resid", 0))
    for layer in range(1, n + 1):
        full = _all_query_terms(tower, layer, out.cache[("pattern", layer)], out.cache[("v", layer)])
        class_query = full[:, 0].permute(0, 2, 1, 3).clone()
        del full  # the class query is a copy: one layer's full tensor exists at a time
        collector._on_heads(class_query, ("head_source_out", layer))
        del class_query
        collector._on_mlp(out.cache[("mlp_out", layer)], ("mlp_out", layer))
    collector._on_mean(out.cache[("ln_final_mean", n)], None)
    collector._on_scale(out.cache[("ln_final_scale", n)], None)
    ln_bias = tower.ln_final.bias.detach().float() @ proj
    return _assemble(tower, collector, readout.sum(0), ln_bias, out.embedding.float(), convention, "sum")
