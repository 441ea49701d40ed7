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

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import h5py
import numpy as np
import pandas as pd

from ..errors import InputError
from ..store import (
    SelectedRows,
    decode_keys,
    match_rows,
    require_datasets,
    unique_key_index,
    write_image_activations,
    write_text_activations,
)
from .labels import NEGATION_SIDES

if TYPE_CHECKING:
    import torch

TEXT_GROUPS = ("negated", "non_negated")
IMAGE_DATASETS = ("keys", "real/resid", "real/resid_mid", "single_colour/attn_out", "single_colour/mlp_out")


def single_colour(pixels: "torch.Tensor") -> "torch.Tensor":
    """Each channel replaced by its mean over the (preprocessed) image."""
    return pixels.mean(dim=(-2, -1), keepdim=True).expand_as(pixels).contiguous()


IMAGE_VIEWS = {"real": (None, ("resid", "resid_mid")), "single_colour": (single_colour, ("attn_out", "mlp_out"))}


def write_text_cache(model, keys: Sequence[str], sentences: Mapping[str, Sequence[Sequence[int]]], path,
                     **kwargs) -> None:
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


@dataclass
class CachedInstances:
    """The instances of a text cache matched to an image cache: ``keys`` and ``negation`` sides in the text
    cache's order, ``image_rows`` (the image-cache row of each instance) and ``n_image_rows`` (the image
    cache's number of rows)."""

    keys: list[str]
    negation: np.ndarray
    image_rows: np.ndarray
    n_image_rows: int

    def counts(self) -> dict:
        """Instances in all, per negation side, and image-cache rows, for a rule's metadata."""
        return {
            "n_instances": len(self.keys),
            "n_instances_caption": int((self.negation == "caption").sum()),
            "n_instances_foil": int((self.negation == "foil").sum()),
            "n_image_cache_rows": self.n_image_rows,
        }


def effects_from_caches(image_cache, text_cache, negation_by_key: Mapping[str, str], datasets: Sequence[str],
                        effects: Callable[..., pd.DataFrame]) -> tuple[pd.DataFrame, CachedInstances]:
    """A table of effects of every instance of ``text_cache``, computed on activations of ``image_cache``.

    The instances (:func:`caption_foil_embeddings`) are matched to image-cache rows by key and
    ordered by increasing image-cache row. ``effects(activations, caption_emb, foil_emb, keys,
    negation)`` gets them in that order, ``activations`` mapping each of ``datasets`` but
    ``"keys"`` to its selected rows (:class:`~clip_interp.store.SelectedRows`, read lazily),
    and returns a table with a ``key`` column. The table comes back with its rows stably
    reordered to the text cache's order of keys. Instances of the text cache absent from the
    image cache, or a missing dataset, are an InputError.
    """
    keys, negation, caption_emb, foil_emb = caption_foil_embeddings(text_cache, negation_by_key)
    with h5py.File(image_cache, "r") as f:
        require_datasets(f, datasets, f"image cache {image_cache}")
        image_keys = decode_keys(f["keys"][:])
        rows = match_rows(keys, image_keys, what=f"instances of {text_cache}", where=f"image cache {image_cache}")
        order = np.argsort(rows, kind="stable")
        sel = rows[order]
        activations = {name: SelectedRows(f[name], sel) for name in datasets if name != "keys"}
        table = effects(activations, caption_emb[order], foil_emb[order], [keys[i] for i in order], negation[order])
    rank = pd.Series(np.arange(len(keys)), index=keys)
    table = table.iloc[np.argsort(rank.loc[table["key"]].to_numpy(), kind="stable")].reset_index(drop=True)
    return table, CachedInstances(keys, negation, rows, len(image_keys))
