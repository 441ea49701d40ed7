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

from ..models import layer_index

REPLACEABLE_SITES = ("attn_out", "mlp_out")


def _replaced_start(tower, layer: int, site: str, resid, resid_mid, values, pool: torch.Tensor) -> torch.Tensor:
    """The residual after replacing ``site`` of block ``layer``: ``resid[layer]`` (B, T, D), at the last layer only
    the pooled position (B, 1, D)."""
    rows = torch.arange(resid.shape[0], device=resid.device)

    def keep(x):
        return x if layer < tower.n_layers else x[rows, pool].unsqueeze(1)

    if site == "attn_out":
        mid = keep(resid[:, layer - 1] + values[:, layer_index(layer)])
        return tower.run(start_layer=layer, start_resid=mid, start_at="resid_mid", pool_index=pool,
                         stop_layer=layer).resid_final
    return keep(resid_mid[:, layer_index(layer)] + values[:, layer_index(layer)])


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
    wanted = set(int(layer) for layer in layers)
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


def _window_hook(values: torch.Tensor, active: torch.Tensor, n_groups: int, pool: torch.Tensor):
    """A hook replacing a site's value by ``values`` (B, T, D) in the row groups ``active`` (bool, n_groups)."""
    def hook(x: torch.Tensor, key) -> torch.Tensor:
        b = values.shape[0]
        new = values
        if x.shape[1] == 1 and values.shape[1] != 1:
            new = values[torch.arange(b, device=values.device), pool].unsqueeze(1)
        x = x.clone().view(n_groups, b, *x.shape[1:])
        x[active] = new.to(x.dtype)
        return x.view(n_groups * b, *x.shape[2:])

    return hook


def check_windows(windows: Sequence[tuple[int, int]], n_layers: int) -> list[tuple[int, int]]:
    """``windows`` as (first, last) block pairs, checked to lie in 1..``n_layers`` with first <= last."""
    out = [(int(a), int(b)) for a, b in windows]
    bad = [w for w in out if not 1 <= w[0] <= w[1] <= n_layers]
    if bad or not out:
        raise ValueError(f"layer windows must be (first, last) with 1 <= first <= last <= {n_layers}, got {bad or out}")
    return out


@torch.inference_mode()
def replace_block_output_windows(tower, resid: torch.Tensor, values: torch.Tensor, site: str,
                                 windows: Sequence[tuple[int, int]], pool_index: torch.Tensor | None = None
                                 ) -> torch.Tensor:
    """Embeddings (W, B, E) with ``site``'s output of every block ``first..last`` of each window replaced at once.

    ``resid`` (B, L+1, T, D) is the clean residual stream, ``values`` (B, L, T, D) the
    replacement outputs of each block, ``windows`` W (first, last) block ranges (1..L) and
    ``pool_index`` (B,) the pooled positions (default 0, the class token). A window starts
    from the cached ``resid[first-1]``; block ``m`` runs once on every window started at or
    before it, replacing the output in those windows that contain ``m``, and the last block
    only at the pooled position. A window of one block equals :func:`replace_block_outputs`.
    """
    if site not in REPLACEABLE_SITES:
        raise ValueError(f"replaceable sites are {REPLACEABLE_SITES}, got {site!r}")
    n_layers = tower.n_layers
    windows = check_windows(windows, n_layers)
    b = resid.shape[0]
    if tuple(values.shape[:2]) != (b, n_layers) or values.shape[2:] != resid.shape[2:]:
        raise ValueError(f"replacement values have shape {tuple(values.shape)}, expected ({b}, {n_layers}, "
                         f"{', '.join(str(s) for s in resid.shape[2:])})")
    pool = torch.zeros(b, dtype=torch.long, device=resid.device) if pool_index is None else pool_index.to(resid.device)
    x, groups = None, []
    for m in range(1, n_layers + 1):
        starting = [w for w, (first, _) in enumerate(windows) if first == m]
        if starting:
            new = resid[:, m - 1].repeat(len(starting), 1, 1)
            x = new if x is None else torch.cat([x, new])
            groups += starting
        if x is None:
            continue
        active = torch.tensor([windows[w][0] <= m <= windows[w][1] for w in groups], device=resid.device)
        hooks = {(site, m): _window_hook(values[:, m - 1], active, len(groups), pool)}
        last = m == n_layers
        out = tower.run(start_layer=m - 1, start_resid=x, hooks=hooks, pool_index=pool.repeat(len(groups)),
                        stop_layer=None if last else m, pooled_query_only=True)
        x = out.embedding if last else out.resid_final
    by_group = x.view(len(groups), b, -1)
    order = torch.as_tensor([groups.index(w) for w in range(len(windows))], device=x.device)
    return by_group[order]
