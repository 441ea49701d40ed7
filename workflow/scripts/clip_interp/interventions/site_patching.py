"""Patching one block's attention or MLP output at one position, as a residual-stream patch.

Replacing the output of ``site`` (``attn_out`` or ``mlp_out``) of block ``l`` at position
``p`` of a receiver by a donor's changes the receiver's stream inside block ``l`` only at
``p``: the block's attention has already read every position, and the LayerNorm and the MLP
act on each position alone. So ``resid[l]`` changes only at ``p``, to

* ``mlp_out``: ``resid_mid[l][p] + donor mlp_out[l][p]``;
* ``attn_out``: ``m + mlp(m)`` with ``m = resid[l-1][p] + donor attn_out[l][p]``, the MLP
  being block ``l``'s (``ls_2(mlp(ln_2(m)))``).

:func:`block_output_patch_values` computes these values for every layer and position at
once; patching the receiver's ``resid[l]`` at ``p`` with them
(:func:`~clip_interp.interventions.patching.iter_resid_patches` with the values as donor)
is the site patch at ``(l, p)``, with the same batched resume. Layer 0 (no block) holds the
receiver's own ``resid[0]``, a patch that changes nothing.
"""

from __future__ import annotations

from typing import Mapping

import torch

from ..models import layer_index

PATCHABLE_BLOCK_SITES = ("attn_out", "mlp_out")


def _required(receiver: Mapping[str, torch.Tensor], names) -> None:
    missing = [n for n in names if n not in receiver]
    if missing:
        raise ValueError(f"the receiver's activations lack {missing}; cache them in its clean run")


@torch.inference_mode()
def block_output_patch_values(tower, site: str, receiver: Mapping[str, torch.Tensor],
                              donor_output: torch.Tensor) -> torch.Tensor:
    """``out[:, l, p]`` (B, L+1, T, D): the receiver's ``resid[l][p]`` with block l's ``site`` output at ``p`` taken
    from the donor.

    ``receiver`` holds the receiver's clean ``resid`` (B, L+1, T, D) and ``resid_mid`` (B, L, T, D);
    ``donor_output`` (B, L, T, D) is the donor's ``site`` output of blocks 1..L. ``out[:, 0]``
    is the receiver's ``resid[0]``.
    """
    if site not in PATCHABLE_BLOCK_SITES:
        raise ValueError(f"patchable block sites are {PATCHABLE_BLOCK_SITES}, got {site!r}")
    _required(receiver, ("resid", "resid_mid"))
    resid, resid_mid = receiver["resid"], receiver["resid_mid"]
    n_layers = tower.n_layers
    if tuple(donor_output.shape) != tuple(resid_mid.shape) or resid.shape[1] != n_layers + 1:
        raise ValueError(f"expected resid (B, {n_layers + 1}, T, D) and resid_mid and the donor's {site} "
                         f"(B, {n_layers}, T, D), got {tuple(resid.shape)}, {tuple(resid_mid.shape)} and "
                         f"{tuple(donor_output.shape)}")
    if site == "mlp_out":
        patched = resid_mid + donor_output
    else:
        layers = []
        for layer, block in enumerate(tower.blocks, start=1):
            mid = resid[:, layer - 1] + donor_output[:, layer_index(layer)]
            layers.append(mid + block.ls_2(block.mlp(block.ln_2(mid))))
        patched = torch.stack(layers, dim=1)
    return torch.cat([resid[:, :1], patched], dim=1)
