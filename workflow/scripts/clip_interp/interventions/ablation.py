"""Replacing block outputs (``attn_out`` or ``mlp_out``) and resuming from cached residual streams.

Replacing block ``l``'s attention output by a value ``a`` gives ``resid_mid[l] = resid[l-1] + a``,
from which block ``l``'s MLP and blocks ``l+1..L`` run; replacing its MLP output by ``m``
gives ``resid[l] = resid_mid[l] + m``, from which blocks ``l+1..L`` run. The clean
``resid``/``resid_mid`` come from a cache, so no replacement reruns the blocks before it.
Within a batch, block ``k`` runs once on every replacement made at a layer below ``k``, and
the last block only at the pooled position. The replacement values are anything of the
block outputs' shape: another input's outputs, a dataset mean, zeros.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

REPLACEABLE_SITES = ("attn_out", "mlp_out")


def _replaced_start(tower, layer: int, site: str, resid, resid_mid, values, pool: torch.Tensor) -> torch.Tensor:
    """The residual after replacing ``site`` of block ``layer``: ``resid[layer]`` (B, T, D), at the last layer only the pooled position (B, 1, D)."""
    rows = torch.arange(resid.shape[0], device=resid.device)

    def keep(x):
        return x if layer < tower.n_layers else x[rows, pool].unsqueeze(1)

    if site == "attn_out":
        mid = keep(resid[:, layer - 1] + values[:, layer - 1])
        return tower.run(start_layer=layer, start_resid=mid, start_at="resid_mid", pool_index=pool,
                         stop_layer=layer).resid_final
    return keep(resid_mid[:, layer - 1] + values[:, layer - 1])


def _check_sites(sites: Sequence[str], values: Mapping[str, torch.Tensor]) -> tuple[str, ...]:
    sites = tuple(sites)
    unknown = [s for s in sites if s not in REPLACEABLE_SITES]
    if unknown or not sites:
        raise ValueError(f"replaceable sites are {REPLACEABLE_SITES}, got {list(sites)}")
    missing = [s for s in sites if s not in values]
    if missing:
        raise ValueError(f"no replacement values for site(s) {missing}")
    return sites


@torch.inference_mode()
def replace_block_outputs(tower, resid: torch.Tensor, resid_mid: torch.Tensor, values: Mapping[str, torch.Tensor],
                          layers: Sequence[int], sites: Sequence[str], pool_index: torch.Tensor | None = None):
    """Embeddings of every (layer, site) replacement of a batch, and the layer of each row group.

    ``resid`` (B, L+1, T, D) and ``resid_mid`` (B, L, T, D) are the clean residual streams;
    ``values[site]`` (B, L, T, D) the replacement outputs of each block; ``layers`` (1..L) and
    ``sites`` (of :data:`REPLACEABLE_SITES`) the replacements to make; ``pool_index`` (B,)
    the pooled positions (default 0, the class token). Returns ``(embeddings, order)``:
    embeddings ``(len(order) * len(sites) * B, E)``, grouped by layer in ``order``, then by
    site, then by row.
    """
    sites = _check_sites(sites, values)
    n_layers = tower.n_layers
    wanted = set(int(l) for l in layers)
    b = resid.shape[0]
    pool = torch.zeros(b, dtype=torch.long, device=resid.device) if pool_index is None else pool_index.to(resid.device)
    x, order = None, []
    for m in range(2, n_layers + 1):
        if m - 1 in wanted:
            new = torch.cat([_replaced_start(tower, m - 1, s, resid, resid_mid, values[s], pool) for s in sites])
            x = new if x is None else torch.cat([x, new])
            order.append(m - 1)
        if x is None:
            continue
        x = tower.run(start_layer=m - 1, start_resid=x, pool_index=pool.repeat(x.shape[0] // b), stop_layer=m,
                      pooled_query_only=True).resid_final
    parts = [] if x is None else [x[:, 0]]
    if n_layers in wanted:
        parts.append(torch.cat([_replaced_start(tower, n_layers, s, resid, resid_mid, values[s], pool)[:, 0]
                                for s in sites]))
        order.append(n_layers)
    if not parts:
        raise ValueError(f"no layer of 1..{n_layers} among {sorted(wanted)}")
    return tower.to_joint_space(torch.cat(parts)), order
