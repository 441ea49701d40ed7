"""Activation patching of the residual stream: patch ``resid[l]`` at one position and resume.

A *receiver* sequence is run with its residual stream ``resid[l]`` at position ``p``
replaced by a *donor*'s ``resid[l][p]`` (the two sequences have the same length); the
patched run's embedding is read at the receiver's pooled position. Both residual streams
come from clean runs (``cache=["resid"]``), so a patch resumes at block ``l + 1`` instead of
starting from the input.

Savings that leave the result exact:

- the patches of all layers ``l = 0..L-1`` at one position share their forwards: block
  ``m`` runs once on every patch made below it;
- in a causal tower positions before ``p`` cannot change, so a patch recomputes only
  positions ``p..pool`` and the earlier ones enter through the receiver's clean keys and
  values (``prefix_kv``); a patch after the pooled position has no effect and is skipped;
- the last block is computed for the pooled query only (``pooled_query_only``).

A patch of ``resid[L]`` changes the output only at the pooled position, where the patched
embedding is the donor's own; :func:`resid_patch_sweep` fills that row from the clean
embeddings it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch


@dataclass
class PatchedEmbeddings:
    """The embeddings of the receivers ``rows`` (n,) patched at ``position``: ``embeddings[l, i]`` (L, n, E) for a patch of ``resid[l]``."""

    position: int
    rows: torch.Tensor
    embeddings: torch.Tensor


def _patched_start(receiver_resid, donor_resid, rows, layer: int, position: int, first: int, end: int) -> torch.Tensor:
    """``resid[layer]`` of the receivers ``rows`` over positions ``first..end-1``, with ``position`` taken from the donor."""
    start = receiver_resid[rows, layer, first:end]
    start[:, position - first] = donor_resid[rows, layer, position]
    return start


def _patched_rows(tower, patch_mask: torch.Tensor, pool: torch.Tensor, position: int) -> torch.Tensor:
    """The receivers patched at ``position``: masked there, and (causal) not after their pooled position."""
    wanted = patch_mask[:, position]
    if tower.causal:
        wanted = wanted & (pool >= position)
    return torch.nonzero(wanted).flatten()


def _resume_all_layers(tower, receiver_resid, donor_resid, rows, position: int, pool: torch.Tensor, clean_kv) -> torch.Tensor:
    """Embeddings (L * n, E) of the patches of layers 0..L-1 at ``position``, layer-major."""
    n_layers = tower.n_layers
    first = position if tower.causal else 0
    end = int(pool[rows].max()) + 1 if tower.causal else receiver_resid.shape[2]
    row_pool = pool[rows] - first
    x = None
    for m in range(1, n_layers + 1):
        start = _patched_start(receiver_resid, donor_resid, rows, m - 1, position, first, end)
        x = start if x is None else torch.cat([x, start])
        prefix = None
        if clean_kv is not None and first > 0:
            prefix = {m: tuple(z[rows, :, :first].repeat(m, 1, 1, 1) for z in clean_kv[m])}
        out = tower.run(start_layer=m - 1, start_resid=x, prefix_kv=prefix, pool_index=row_pool.repeat(m),
                        stop_layer=m if m < n_layers else None, pooled_query_only=True)
        x = out.resid_final if m < n_layers else out.embedding
    return x


@torch.inference_mode()
def iter_resid_patches(tower, receiver_resid: torch.Tensor, donor_resid: torch.Tensor, patch_mask: torch.Tensor,
                       pool_index: torch.Tensor) -> Iterator[PatchedEmbeddings]:
    """Patched embeddings position by position, for every layer ``0..L-1``.

    ``receiver_resid`` and ``donor_resid`` are clean residual streams (B, L+1, T, D);
    ``patch_mask`` (B, T) says which (receiver, position) pairs to patch; ``pool_index`` (B,)
    is each receiver's pooled position. Yields, for each position with at least one patch,
    the receivers patched there and their embeddings ``(L, n, E)``.
    """
    if receiver_resid.shape != donor_resid.shape:
        raise ValueError(f"receiver and donor residual streams differ in shape: {tuple(receiver_resid.shape)} "
                         f"vs {tuple(donor_resid.shape)}")
    b, n_resid, t, _ = receiver_resid.shape
    if n_resid != tower.n_layers + 1 or tuple(patch_mask.shape) != (b, t):
        raise ValueError(f"expected residual streams (B, {tower.n_layers + 1}, T, D) and a (B, T) mask, got "
                         f"{tuple(receiver_resid.shape)} and {tuple(patch_mask.shape)}")
    pool = pool_index.to(receiver_resid.device)
    patch_mask = patch_mask.to(receiver_resid.device)
    clean_kv = None
    if tower.causal:
        clean_kv = {m: tower.keys_values(receiver_resid[:, m - 1], m) for m in range(1, tower.n_layers + 1)}
    for position in range(t):
        rows = _patched_rows(tower, patch_mask, pool, position)
        if len(rows) == 0:
            continue
        emb = _resume_all_layers(tower, receiver_resid, donor_resid, rows, position, pool, clean_kv)
        yield PatchedEmbeddings(position, rows, emb.view(tower.n_layers, len(rows), -1))


@torch.inference_mode()
def resid_patch_sweep(tower, receiver_resid: torch.Tensor, donor_resid: torch.Tensor, patch_mask: torch.Tensor,
                      pool_index: torch.Tensor, receiver_embedding: torch.Tensor,
                      donor_embedding: torch.Tensor) -> torch.Tensor:
    """``out[b, l, p]`` (B, L+1, T, E): receiver b's embedding with ``resid[l][p]`` taken from its donor.

    Where ``patch_mask[b, p]`` is false, and where a patch cannot reach the pooled position
    (a causal tower's positions after it; ``resid[L]`` anywhere but at it), the entry is the
    receiver's clean embedding ``receiver_embedding[b]``; a patch of ``resid[L]`` at the pooled
    position is the donor's clean embedding ``donor_embedding[b]``. Arguments as
    :func:`iter_resid_patches`.
    """
    b, n_resid, t, _ = receiver_resid.shape
    out = receiver_embedding[:, None, None, :].expand(b, n_resid, t, -1).clone()
    rows = torch.arange(b, device=out.device)
    pool = pool_index.to(out.device)
    final = patch_mask.to(out.device)[rows, pool]
    out[rows[final], tower.n_layers, pool[final]] = donor_embedding[final]
    for patched in iter_resid_patches(tower, receiver_resid, donor_resid, patch_mask, pool_index):
        out[patched.rows, : tower.n_layers, patched.position] = patched.embeddings.transpose(0, 1)
    return out
