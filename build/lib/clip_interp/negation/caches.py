"""The negation study's activation caches: which groups and sites its store files hold.

Text cache (one file per model and dataset variant; also the CANNOT pairs), for each of the
groups ``negated`` and ``non_negated``: ``ids``, ``length``, ``resid`` (N, L+1, T, D),
``pattern`` (N, L, H, T, T, LZF-compressed) and ``embedding`` (N, E).

Image cache (one file per model), for each instance's image and its single-colour
counterpart (each channel set to its mean over the preprocessed image): ``real/embedding``,
``real/resid`` (N, L+1, P, D), ``real/resid_mid`` (N, L, P, D), ``single_colour/embedding``,
``single_colour/attn_out`` and ``single_colour/mlp_out`` (N, L, P, D).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import h5py
import numpy as np

from ..errors import InputError
from ..store import decode_keys, unique_key_index, write_image_activations, write_text_activations
from .labels import NEGATION_SIDES

if TYPE_CHECKING:
    import torch

TEXT_GROUPS = ("negated", "non_negated")
IMAGE_DATASETS = ("keys", "real/resid", "real/resid_mid", "single_colour/attn_out", "single_colour/mlp_out")


def single_colour(pixels: "torch.Tensor") -> "torch.Tensor":
    """Each channel replaced by its mean over the (preprocessed) image."""
    return pixels.mean(dim=(-2, -1), keepdim=True).expand_as(pixels).contiguous()


IMAGE_VIEWS = {"real": (None, ("resid", "resid_mid")), "single_colour": (single_colour, ("attn_out", "mlp_out"))}


def write_text_cache(model, keys: Sequence[str], sentences: Mapping[str, Sequence[Sequence[int]]], path, **kwargs) -> None:
    """The text cache of sentence pairs: ``sentences`` maps :data:`TEXT_GROUPS` (or a subset) to id sequences."""
    write_text_activations(model, keys, sentences, path, **kwargs)


def write_image_cache(model, keys: Sequence[str], image_paths: Sequence[str | Path], path, **kwargs) -> None:
    """The image cache: the real image's residual streams and the single-colour image's block outputs."""
    write_image_activations(model, keys, image_paths, path, views=IMAGE_VIEWS, **kwargs)


def caption_foil_embeddings(text_cache, negation_by_key: Mapping[str, str]):
    """Keys, negation sides and caption/foil embeddings (N, E) of the instances of a text cache.

    The caption is the negated sentence when ``negation`` is ``"caption"`` and the non-negated
    one when it is ``"foil"``; the foil is the other sentence. ``negation_by_key`` maps each key
    of the text cache to its negation side (from the token positions table).
    """
    with h5py.File(text_cache, "r") as f:
        for name in ("keys", "negated/embedding", "non_negated/embedding"):
            if name not in f:
                raise InputError(f"text cache {text_cache} has no dataset {name!r}; delete it and re-run its rule")
        keys = decode_keys(f["keys"][:])
        negated, non_negated = f["negated/embedding"][:], f["non_negated/embedding"][:]
    unique_key_index(keys, f"text cache {text_cache}")
    unique_key_index(list(getattr(negation_by_key, "index", negation_by_key)), "the positions table")
    negation_by_key = dict(negation_by_key)
    missing = [k for k in keys if k not in negation_by_key]
    if missing:
        raise InputError(f"{len(missing)} of {len(keys)} instances of text cache {text_cache} are absent from the "
                         f"positions table, e.g. {missing[:3]}; re-run the positions and text-cache rules")
    negation = np.asarray([str(negation_by_key[k]) for k in keys])
    bad = sorted(set(negation) - set(NEGATION_SIDES))
    if bad:
        raise InputError(f"positions table: negation values {bad} are not 'caption' or 'foil'")
    in_caption = (negation == "caption")[:, None]
    return keys, negation, np.where(in_caption, negated, non_negated), np.where(in_caption, non_negated, negated)
