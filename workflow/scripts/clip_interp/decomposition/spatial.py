"""Spatial maps of an image embedding projected on texts: the paper's spatial decomposition, per head, per layer
and for the whole model.

For image x with embedding ``e`` and a unit text embedding ``t``, the per-source attention terms ``c_{l,h,j}``
(layer l in 1..L, head h, source token j; :func:`clip_interp.contributions.decompose` with ``sources="keep"``,
under the given convention) are projected on ``t`` and divided by ``||e||`` (the paper's units):

- the **head map** of (l, h) at patch p (source token j = p + 1; the class token, j = 0, is left out):
  ``m_{l,h}(p) = c_{l,h,p+1} . t / ||e||``;
- the **layer map** ``m_l(p) = sum_h m_{l,h}(p)``; the **model map** ``m(p) = sum_l m_l(p)``.

With the class-token terms ``sum_{l,h} c_{l,h,0} . t / ||e||`` and the other terms (the embedding term, the
attention biases, the MLPs and the LN bias) projected the same way, they add up exactly to
``e . t / ||e||``, the image-text cosine (:meth:`SpatialMaps.total`). Patches are numbered row by row over the
tower's patch grid (``grid_size``, rows x columns), as the patch tokens are.

The projection is taken before any sum (``directions``), so the memory is (B, L, H, T, K), never
(B, L, H, T, E).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..contributions import decompose
from ..errors import InputError

SCOPES = ("head", "layer", "model", "class_token", "other_terms", "embedding")


@dataclass
class SpatialMaps:
    """The maps of B images on K texts, divided by each image's ``||e||``: ``heads`` (B, L, H, P, K) the head maps
    at the P patches; ``class_token`` (B, L, H, K) each head's term from the class token; ``other_terms`` (B, K) the
    embedding term, attention biases, MLPs and LN bias summed; ``embedding`` (B, K) ``e . t / ||e||``; ``grid``
    (rows, columns) of the patches."""

    heads: torch.Tensor
    class_token: torch.Tensor
    other_terms: torch.Tensor
    embedding: torch.Tensor
    grid: tuple[int, int]

    def layers(self) -> torch.Tensor:
        """The layer maps (B, L, P, K): the head maps summed over heads."""
        return self.heads.sum(dim=2)

    def model(self) -> torch.Tensor:
        """The model maps (B, P, K): the head maps summed over layers and heads."""
        return self.heads.sum(dim=(1, 2))

    def total(self) -> torch.Tensor:
        """Model map summed over patches + class-token terms + other terms (B, K): equals ``embedding``."""
        return self.model().sum(dim=1) + self.class_token.sum(dim=(1, 2)) + self.other_terms


@torch.no_grad()
def spatial_maps(tower, pixels: torch.Tensor, texts: torch.Tensor, *, convention: str) -> SpatialMaps:
    """The :class:`SpatialMaps` of preprocessed ``pixels`` (B, 3, H, W) on ``texts`` (K, E), unit text
    embeddings (module docstring), under the decomposition ``convention``."""
    if texts.ndim != 2 or texts.shape[0] < 1:
        raise InputError(f"spatial maps need K >= 1 text embeddings as a (K, E) tensor, got shape {tuple(texts.shape)}")
    directions = texts.float().T.to(pixels.device)
    parts = decompose(tower, pixels, convention=convention, sources="keep", directions=directions)
    norm = parts.embedding.float().norm(dim=-1).clamp_min(1e-30)

    def unit(value: torch.Tensor) -> torch.Tensor:
        return (value.float() / norm.view((-1,) + (1,) * (value.ndim - 1))).cpu()

    heads = unit(parts.heads)  # (B, L, H, T, K)
    rows, cols = tower.grid_size
    if heads.shape[3] != 1 + rows * cols:
        raise InputError(f"the tower has {heads.shape[3]} tokens, not a class token and a {rows}x{cols} patch grid")
    other = parts.embedding_term + parts.attn_bias.sum(1) + parts.mlps.sum(1) + parts.ln_bias
    return SpatialMaps(heads=heads[:, :, :, 1:], class_token=heads[:, :, :, 0], other_terms=unit(other),
                       embedding=unit(parts.embedding.float() @ directions), grid=(rows, cols))


def concatenate(parts: Sequence[SpatialMaps]) -> SpatialMaps:
    """The maps of several batches of images (on the same texts), in order."""
    return SpatialMaps(*(torch.cat([getattr(p, name) for p in parts]) for name in
                         ("heads", "class_token", "other_terms", "embedding")), parts[0].grid)


def _long(values: np.ndarray, axes: Sequence[str], scope: str, images: Sequence[str], texts: Sequence[str],
          grid_columns: int) -> pd.DataFrame:
    """One row per element of ``values``, whose axes are named by ``axes`` (from image, layer, head, patch, text)."""
    index = dict(zip(axes, np.indices(values.shape).reshape(len(axes), -1)))
    missing = pd.array([pd.NA] * values.size, dtype="Int64")
    patch = index.get("patch")
    return pd.DataFrame({
        "image": np.asarray(images, dtype=object)[index["image"]],
        "text": np.asarray(texts, dtype=object)[index["text"]],
        "scope": scope,
        "layer": pd.array(index["layer"] + 1, dtype="Int64") if "layer" in index else missing,
        "head": pd.array(index["head"], dtype="Int64") if "head" in index else missing,
        "patch_row": pd.array(patch // grid_columns, dtype="Int64") if patch is not None else missing,
        "patch_col": pd.array(patch % grid_columns, dtype="Int64") if patch is not None else missing,
        "value": values.reshape(-1).astype(np.float64),
    })


def spatial_table(maps: SpatialMaps, images: Sequence[str], texts: Sequence[str]) -> pd.DataFrame:
    """The maps as one long table: ``image``, ``text``, ``scope`` (:data:`SCOPES`), ``layer`` (1..L), ``head``,
    ``patch_row``, ``patch_col``, ``value``; a column that a scope has no axis for is null.

    Scopes: ``head`` (per layer, head and patch), ``layer`` (per layer and patch), ``model`` (per patch); and the
    rest of the exact sum, without patches: ``class_token`` (per layer and head), ``other_terms`` and
    ``embedding`` (``e . t / ||e||``, one row each). So per (image, text) the ``model`` values plus the
    ``class_token`` values plus ``other_terms`` equal ``embedding``.
    """
    if len(images) != maps.heads.shape[0] or len(texts) != maps.heads.shape[-1]:
        raise InputError(f"{len(images)} image names and {len(texts)} texts for maps of "
                         f"{maps.heads.shape[0]} images on {maps.heads.shape[-1]} texts")
    cols = maps.grid[1]
    frames = [
        _long(maps.heads.numpy(), ("image", "layer", "head", "patch", "text"), "head", images, texts, cols),
        _long(maps.layers().numpy(), ("image", "layer", "patch", "text"), "layer", images, texts, cols),
        _long(maps.model().numpy(), ("image", "patch", "text"), "model", images, texts, cols),
        _long(maps.class_token.numpy(), ("image", "layer", "head", "text"), "class_token", images, texts, cols),
        _long(maps.other_terms.numpy(), ("image", "text"), "other_terms", images, texts, cols),
        _long(maps.embedding.numpy(), ("image", "text"), "embedding", images, texts, cols),
    ]
    return pd.concat(frames, ignore_index=True)


def heads_to_draw(table: pd.DataFrame, image: str, text: str, heads, n_layers: int, last_layers: int,
                  n_heads: int) -> list[tuple[int, int]]:
    """The heads (layer, head) drawn for (``image``, ``text``): the given list, or for ``heads == "auto"`` the
    ``n_heads`` heads of the last ``last_layers`` of the ``n_layers`` layers whose head maps have the largest sum
    over patches (they add most to the text's score), in that order (ties: lower layer, then head)."""
    if heads != "auto":
        return [(int(layer), int(head)) for layer, head in heads]
    first = max(1, n_layers - last_layers + 1)
    rows = table[(table["image"] == image) & (table["text"] == text) & (table["scope"] == "head")
                 & (table["layer"] >= first)]
    sums = rows.groupby(["layer", "head"])["value"].sum().reset_index()
    sums = sums.sort_values(["value", "layer", "head"], ascending=[False, True, True]).head(n_heads)
    return [(int(r.layer), int(r.head)) for r in sums.itertuples()]


def file_spatial_maps(model, paths: Sequence[str], texts: torch.Tensor, *, convention: str,
                      batch_size: int = 8) -> SpatialMaps:
    """The :class:`SpatialMaps` of image files on ``texts`` (K, E), ``batch_size`` images per forward; a missing or
    unreadable file is an InputError naming it."""
    from ..batching import row_slices
    from ..images import load_images

    parts = []
    for sl in row_slices(len(paths), batch_size):
        pixels = load_images(list(paths[sl]), model.preprocess, keys=[str(p) for p in paths[sl]]).to(model.device)
        parts.append(spatial_maps(model.vision, pixels, texts, convention=convention))
    return concatenate(parts)
