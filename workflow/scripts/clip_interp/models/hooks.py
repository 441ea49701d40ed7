"""Hooks for the common interventions: replace a site, all of it or chosen heads and positions.

Each returns a hook ``f(value, key)`` for :meth:`HookedTower.run`. The head and position
axes of a site are those of :data:`SITE_AXES`; ``heads`` and ``positions`` select along
them (None: all), and the replacement broadcasts over the selection, so a per-position
mean over a dataset (the value without its batch axis) mean-ablates, ``0`` zero-ablates and a
tensor of the site's full shape patches.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .hooked import Hook, HookKey

SITE_AXES = {
    "resid": {"position": 1}, "resid_mid": {"position": 1}, "attn_out": {"position": 1}, "mlp_out": {"position": 1},
    "v": {"position": 1, "head": 2}, "z": {"position": 1, "head": 2}, "head_out": {"position": 1, "head": 2},
    "pattern": {"head": 1, "position": 2}, "head_source_out": {"head": 1, "position": 2},
}


def _selection(site: str, ndim: int, heads, positions) -> tuple:
    axes = SITE_AXES.get(site)
    if axes is None:
        raise ValueError(f"site {site!r} cannot be replaced by these hooks; choose from {sorted(SITE_AXES)}")
    index: list = [slice(None)] * ndim
    for name, chosen in (("head", heads), ("position", positions)):
        if chosen is None:
            continue
        if name not in axes:
            raise ValueError(f"site {site!r} has no {name} axis")
        index[axes[name]] = torch.as_tensor(list(chosen), dtype=torch.long)
    if heads is not None and positions is not None:
        h, p = index[axes["head"]], index[axes["position"]]
        index[axes["head"]], index[axes["position"]] = ((h[:, None], p[None, :]) if axes["head"] < axes["position"]
                                                        else (h[None, :], p[:, None]))
    return tuple(index)


def replace_hook(value: torch.Tensor | float, *, heads: Sequence[int] | None = None,
                 positions: Sequence[int] | None = None) -> Hook:
    """Replace the chosen heads and positions of a site by ``value``, broadcast over the selection.

    ``value`` has the shape of the selected part (or broadcasts to it, e.g. without the
    batch axis); everything else is left as it was.
    """
    def hook(x: torch.Tensor, key: HookKey) -> torch.Tensor:
        index = _selection(key[0], x.ndim, heads, positions)
        index = tuple(i.to(x.device) if isinstance(i, torch.Tensor) else i for i in index)
        x = x.clone()
        replacement = torch.as_tensor(value, dtype=x.dtype, device=x.device)
        x[index] = replacement.expand_as(x[index])
        return x

    return hook


def mean_ablation_hook(mean: torch.Tensor, *, heads: Sequence[int] | None = None,
                       positions: Sequence[int] | None = None) -> Hook:
    """Replace the chosen heads and positions by their mean over a dataset.

    ``mean`` is the site's value averaged over the dataset's batch axis (the site's shape
    without it, e.g. ``cache[("head_out", l)].mean(0)`` of shape (T, H, D)); it is indexed
    like the site, so only the selected heads and positions are taken from it.
    """
    mean = mean.unsqueeze(0)

    def hook(x: torch.Tensor, key: HookKey) -> torch.Tensor:
        index = _selection(key[0], x.ndim, heads, positions)
        index = tuple(i.to(x.device) if isinstance(i, torch.Tensor) else i for i in index)
        batch_free = (slice(None),) + index[1:]
        x = x.clone()
        x[index] = mean.to(x.device, x.dtype)[batch_free].expand_as(x[index])
        return x

    return hook


def zero_ablation_hook(*, heads: Sequence[int] | None = None, positions: Sequence[int] | None = None) -> Hook:
    """Set the chosen heads and positions of a site to zero."""
    return replace_hook(0.0, heads=heads, positions=positions)
