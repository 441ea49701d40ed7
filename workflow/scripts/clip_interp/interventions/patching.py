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
    """The embeddings of the receivers ``rows`` (n,) patched at ``position``: ``embeddings[l, i]`` (L, n, E) for a
    patch of ``resid[l]``."""

    position: int
    rows: torch.Tensor
    embeddings: torch.Tensor


def _patched_start(receiver_resid, donor_resid, rows, layer: int, patch: torch.Tensor, first: int,
                   end: int) -> torch.Tensor:
    """``resid[layer]`` of the receivers ``rows`` over positions ``first..end-1``, taken from the donor where
    ``patch`` (n, T) is set."""
    start = receiver_resid[rows, layer, first:end]
    return torch.where(patch[:, first:end, None], donor_resid[rows, layer, first:end], start)


def _patched_rows(tower, patch_mask: torch.Tensor, pool: torch.Tensor, position: int) -> torch.Tensor:
    """The receivers patched at ``position``: masked there, and (causal) not after their pooled position."""
    wanted = patch_mask[:, position]
    if tower.causal:
        wanted = wanted & (pool >= position)
    return torch.nonzero(wanted).flatten()


def _clean_prefix(clean_kv, rows, first: int):
    """Prefix keys and values of block ``m`` for ``groups`` row groups: the receivers' clean ones before ``first``."""
    def prefix(m: int, groups: int):
        return tuple(z[rows, :, :first].repeat(groups, 1, 1, 1) for z in clean_kv[m])

    return prefix


def _resume_all_layers(tower, receiver_resid, donor_resid, rows, patch: torch.Tensor, first: int, pool: torch.Tensor,
                       clean_kv, first_layer: int = 0, prefix_of=None, keep_until: int | None = None):
    """Embeddings ((L - first_layer) * n, E) of the patches of layers ``first_layer..L-1``, layer-major.

    ``patch`` (n, T) marks each receiver's patched positions; in a causal tower none lies
    before ``first``, so only positions ``first..pool`` are recomputed, the earlier ones
    entering as keys and values: ``prefix_of(m, groups)`` (default: the receivers' clean
    ones). With ``keep_until`` the keys and values of positions ``first..keep_until-1`` at
    every block are returned too, ``{m: (k, v)}`` of shape (groups * n, H, keep_until - first, d_head).
    """
    n_layers = tower.n_layers
    first = first if tower.causal else 0
    end = int(pool[rows].max()) + 1 if tower.causal else receiver_resid.shape[2]
    row_pool = pool[rows] - first
    if prefix_of is None and clean_kv is not None and first > 0:
        prefix_of = _clean_prefix(clean_kv, rows, first)
    kept = {}
    x = None
    for m in range(first_layer + 1, n_layers + 1):
        start = _patched_start(receiver_resid, donor_resid, rows, m - 1, patch, first, end)
        x = start if x is None else torch.cat([x, start])
        groups = m - first_layer
        prefix = {m: prefix_of(m, groups)} if prefix_of is not None and first > 0 else None
        if keep_until is not None:
            kept[m] = tower.keys_values(x[:, : keep_until - first], m)
        out = tower.run(start_layer=m - 1, start_resid=x, prefix_kv=prefix, pool_index=row_pool.repeat(groups),
                        stop_layer=m if m < n_layers else None, pooled_query_only=True)
        x = out.resid_final if m < n_layers else out.embedding
    return (x, kept) if keep_until is not None else x


def _check_streams(tower, receiver_resid, donor_resid, mask_shape, what: str) -> None:
    if receiver_resid.shape != donor_resid.shape:
        raise ValueError(f"receiver and donor residual streams differ in shape: {tuple(receiver_resid.shape)} "
                         f"vs {tuple(donor_resid.shape)}")
    b, n_resid, t, _ = receiver_resid.shape
    if n_resid != tower.n_layers + 1 or tuple(mask_shape[:1]) + tuple(mask_shape[-1:]) != (b, t):
        raise ValueError(f"expected residual streams (B, {tower.n_layers + 1}, T, D) and a {what}, got "
                         f"{tuple(receiver_resid.shape)} and {tuple(mask_shape)}")


def _clean_keys_values(tower, receiver_resid):
    if not tower.causal:
        return None
    return {m: tower.keys_values(receiver_resid[:, m - 1], m) for m in range(1, tower.n_layers + 1)}


@torch.inference_mode()
def iter_resid_patches(tower, receiver_resid: torch.Tensor, donor_resid: torch.Tensor, patch_mask: torch.Tensor,
                       pool_index: torch.Tensor, first_layer: int = 0) -> Iterator[PatchedEmbeddings]:
    """Patched embeddings position by position, for every layer ``first_layer..L-1`` (default 0).

    ``receiver_resid`` and ``donor_resid`` are clean residual streams (B, L+1, T, D);
    ``patch_mask`` (B, T) says which (receiver, position) pairs to patch; ``pool_index`` (B,)
    is each receiver's pooled position. Yields, for each position with at least one patch,
    the receivers patched there and their embeddings ``(L - first_layer, n, E)``.
    """
    _check_streams(tower, receiver_resid, donor_resid, patch_mask.shape, "(B, T) mask")
    t = receiver_resid.shape[2]
    pool = pool_index.to(receiver_resid.device)
    patch_mask = patch_mask.to(receiver_resid.device)
    clean_kv = _clean_keys_values(tower, receiver_resid)
    for position in range(t):
        rows = _patched_rows(tower, patch_mask, pool, position)
        if len(rows) == 0:
            continue
        patch = torch.zeros(len(rows), t, dtype=torch.bool, device=receiver_resid.device)
        patch[:, position] = True
        emb = _resume_all_layers(tower, receiver_resid, donor_resid, rows, patch, position, pool, clean_kv, first_layer)
        yield PatchedEmbeddings(position, rows, emb.view(tower.n_layers - first_layer, len(rows), -1))


@dataclass
class PatchedSetEmbeddings:
    """The embeddings of the receivers ``rows`` (n,) patched at the positions of set ``index``: ``embeddings[l, i]``
    (L, n, E) for ``resid[l]``."""

    index: int
    rows: torch.Tensor
    embeddings: torch.Tensor


def _set_starts(tower, patch_sets: torch.Tensor, pool: torch.Tensor, base: list[int | None]):
    """Per set: the receivers it patches and the first position it recomputes (after its base set's positions)."""
    t = patch_sets.shape[2]
    positions = torch.arange(t, device=patch_sets.device)
    first_of = torch.where(patch_sets, positions, t).min(dim=2).values
    last_of = torch.where(patch_sets, positions, -1).max(dim=2).values
    out = []
    for index in range(patch_sets.shape[1]):
        wanted = first_of[:, index] < t
        if tower.causal:
            wanted = wanted & (first_of[:, index] <= pool)
        rows = torch.nonzero(wanted).flatten()
        b = base[index]
        if b is None or len(rows) == 0:
            out.append((rows, int(first_of[rows, index].min()) if len(rows) else t))
            continue
        own, under = patch_sets[rows, index], patch_sets[rows, b]
        extra = own & ~under
        first_extra = torch.where(extra, positions, t).min(dim=1).values
        if (under & ~own).any() or (first_extra == t).any() or (last_of[rows, b] >= first_extra).any():
            raise ValueError(f"patch set {index} does not extend set {b}: on every receiver it must hold all of set "
                             f"{b}'s positions and at least one more, all after them")
        if (first_of[rows, b] == t).any() or (tower.causal and (first_extra > pool[rows]).any()):
            raise ValueError(f"patch set {index} patches receivers that its base set {b} does not, or positions "
                             "after their pooled position")
        out.append((rows, int(first_extra.min())))
    return out


def _extension_prefix(clean_kv, base_rows, base_first: int, kept, rows, first: int):
    """Prefix keys and values of an extension set before ``first``: clean before its base set's first, the base
    run's between."""
    index_in_base = torch.searchsorted(base_rows, rows)
    n_base = len(base_rows)

    def prefix(m: int, groups: int):
        picked = (torch.arange(groups, device=rows.device)[:, None] * n_base + index_in_base[None]).reshape(-1)
        parts = []
        for clean, from_base in zip(clean_kv[m], kept[m]):
            parts.append(torch.cat([clean[rows, :, :base_first].repeat(groups, 1, 1, 1),
                                    from_base[picked, :, : first - base_first]], dim=2))
        return tuple(parts)

    return prefix


@torch.inference_mode()
def iter_resid_set_patches(tower, receiver_resid: torch.Tensor, donor_resid: torch.Tensor, patch_sets: torch.Tensor,
                           pool_index: torch.Tensor, base: list[int | None] | None = None
                           ) -> Iterator[PatchedSetEmbeddings]:
    """Patched embeddings of several positions patched together, set by set, for every layer ``0..L-1``.

    ``patch_sets`` (B, S, T) marks, for each receiver, the positions of each of S sets: patch
    set ``s`` of receiver ``b`` takes ``resid[l]`` at every position ``p`` with
    ``patch_sets[b, s, p]`` from the donor at once. Other arguments as :func:`iter_resid_patches`.
    Yields, for each set that is non-empty for at least one receiver (and, in a causal
    tower, starts at or before its pooled position), those receivers and their embeddings
    ``(L, n, E)``, bases before the sets that extend them. A set's patch of ``resid[L]``
    changes the embedding only when it holds the pooled position, where it gives the
    donor's own embedding; it is not computed here.

    In a causal tower positions before a set's first are not recomputed, so a set costs what
    a single patch at its first position costs. ``base[s] = b`` says that set ``s`` extends
    set ``b``: on each of its receivers it holds all of ``b``'s positions and more, all after
    them (e.g. a pair of positions extends its first). Its positions before the first extra
    one then evolve as in ``b``'s run, whose keys and values are reused, so ``s`` costs what
    a single patch at its first extra position costs. Sets without a base (``None``) start
    from the receivers' clean keys and values.
    """
    _check_streams(tower, receiver_resid, donor_resid, patch_sets.shape, "(B, S, T) set mask")
    if patch_sets.ndim != 3:
        raise ValueError(f"patch_sets must be (B, S, T), got {tuple(patch_sets.shape)}")
    n_sets = patch_sets.shape[1]
    base = [None] * n_sets if base is None or not tower.causal else list(base)
    if len(base) != n_sets or any(b is not None and (not 0 <= b < n_sets or base[b] is not None) for b in base):
        raise ValueError(f"base must give, for each of the {n_sets} sets, None or the index of a set without a base; "
                         f"got {base}")
    pool = pool_index.to(receiver_resid.device)
    patch_sets = patch_sets.to(receiver_resid.device, torch.bool)
    clean_kv = _clean_keys_values(tower, receiver_resid)
    starts = _set_starts(tower, patch_sets, pool, base)
    for root in [s for s in range(n_sets) if base[s] is None]:
        rows, first = starts[root]
        if len(rows) == 0:
            continue
        extensions = [s for s in range(n_sets) if base[s] == root and len(starts[s][0])]
        keep_until = max((starts[s][1] for s in extensions), default=None)
        result = _resume_all_layers(tower, receiver_resid, donor_resid, rows, patch_sets[rows, root], first, pool,
                                    clean_kv, keep_until=keep_until)
        emb, kept = result if keep_until is not None else (result, None)
        yield PatchedSetEmbeddings(root, rows, emb.view(tower.n_layers, len(rows), -1))
        for s in extensions:
            ext_rows, ext_first = starts[s]
            prefix_of = _extension_prefix(clean_kv, rows, first, kept, ext_rows, ext_first)
            emb = _resume_all_layers(tower, receiver_resid, donor_resid, ext_rows, patch_sets[ext_rows, s], ext_first,
                                     pool, clean_kv, prefix_of=prefix_of)
            yield PatchedSetEmbeddings(s, ext_rows, emb.view(tower.n_layers, len(ext_rows), -1))


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
