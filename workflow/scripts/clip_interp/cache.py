"""The activation cache: per-layer activations of the text and vision towers in HDF5.

Text cache (one file per model and dataset variant), for each of the groups
``negated`` and ``non_negated``:

- ``ids`` (N, T) token ids right-padded to the longest sentence, ``length`` (N,);
- ``resid`` (N, L+1, T, D): the residual stream after the embedding and every block;
- ``pattern`` (N, L, H, T, T): every head's attention weights (LZF-compressed: padding and
  the causal mask make most entries zero);
- ``embedding`` (N, E): the text embedding.

Image cache (one file per model), for each instance's image and its single-colour
counterpart (each channel set to its mean over the preprocessed image):

- ``real/embedding``, ``single_colour/embedding`` (N, E);
- ``real/resid`` (N, L+1, P, D) and ``real/resid_mid`` (N, L, P, D);
- ``single_colour/attn_out`` and ``single_colour/mlp_out`` (N, L, P, D).

Datasets are chunked by instance; rows are in the order of the ``keys`` dataset.
Files are written atomically.
"""

from __future__ import annotations

import functools
from collections import Counter
import json
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import h5py
import numpy as np
from tqdm import tqdm

from .errors import InputError
from .io import atomic_path
from .negation.labels import NEGATION_SIDES

if TYPE_CHECKING:
    import torch

STR = h5py.string_dtype()
TEXT_SITES = ("resid", "pattern")


def _no_grad(function):
    """Run ``function`` without autograd; torch is imported on call, so readers of the cache need no torch."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        import torch

        with torch.no_grad():
            return function(*args, **kwargs)

    return wrapper


def _batches(n: int, size: int) -> Iterable[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _dataset(group, name, shape, dtype, compression=None):
    chunks = (1, *shape[1:]) if len(shape) > 1 else None
    return group.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, compression=compression)


def _write_attrs(f, model_id: str, spec: Mapping, extra: Mapping) -> None:
    f.attrs["model"] = model_id
    f.attrs["model_spec"] = json.dumps(dict(spec), sort_keys=True)
    for k, v in extra.items():
        f.attrs[k] = json.dumps(v) if isinstance(v, (dict, list)) else v


@_no_grad
def write_text_cache(model, keys: Sequence[str], sentences: Mapping[str, Sequence[Sequence[int]]], path,
                     *, model_id: str, batch_size: int = 64, dtype: str = "float32",
                     metadata: Mapping | None = None, progress: bool = True,
                     sites: Sequence[str] = TEXT_SITES) -> None:
    """Cache the embeddings and the chosen ``sites`` (residual streams, attention patterns) of each group.

    ``sites`` is a subset of :data:`TEXT_SITES`; a cache for attention analyses alone can
    leave out ``"resid"`` and so the ``resid`` datasets.
    """
    unknown = sorted(set(sites) - set(TEXT_SITES))
    if unknown:
        raise ValueError(f"text cache sites {unknown} are not among {TEXT_SITES}")
    tower = model.text
    n = len(keys)
    np_dtype = np.dtype(dtype)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        _write_attrs(f, model_id, model.spec, {"tower": "text", "logit_scale": model.logit_scale, "n_layers": tower.n_layers, "n_heads": tower.n_heads,
                                               "d_model": tower.d_model, **(metadata or {})})
        f.create_dataset("keys", data=np.asarray(list(keys), dtype=object), dtype=STR)
        for group_name, seqs in sentences.items():
            if len(seqs) != n:
                raise InputError(f"text cache: group {group_name!r} has {len(seqs)} sentences for {n} keys")
            t_max = max(len(s) for s in seqs)
            g = f.create_group(group_name)
            g.create_dataset("ids", data=model.tokenizer.pad(seqs, t_max).numpy())
            g.create_dataset("length", data=np.asarray([len(s) for s in seqs], dtype=np.int32))
            shapes = {"resid": (n, tower.n_layers + 1, t_max, tower.d_model),
                      "pattern": (n, tower.n_layers, tower.n_heads, t_max, t_max)}
            stored = {site: _dataset(g, site, shapes[site], np_dtype, "lzf" if site == "pattern" else None)
                      for site in TEXT_SITES if site in sites}
            emb = None
            for sl in tqdm(list(_batches(n, batch_size)), desc=f"text {group_name}", disable=not progress):
                ids = model.tokenizer.pad(seqs[sl], t_max)
                out = model.encode_text(ids, cache=list(stored))
                if emb is None:
                    emb = g.create_dataset("embedding", shape=(n, out.embedding.shape[-1]), dtype=np.float32)
                for site, dataset in stored.items():
                    dataset[sl] = out.cache.stack(site).cpu().numpy().astype(np_dtype)
                emb[sl] = out.embedding.cpu().numpy()


def load_images(paths: Sequence[str | Path], preprocess) -> torch.Tensor:
    """Preprocess image files into a (N, 3, H, W) tensor; a missing file is an InputError."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise InputError(
            f"{len(missing)} image file(s) are missing, e.g. {missing[:3]}; check the images folder "
            "(re-run the image extraction rule, or fix `sources.visual7w_images` in the config)"
        )
    import torch
    from PIL import Image

    tensors = []
    for p in paths:
        with Image.open(p) as image:
            tensors.append(preprocess(image.convert("RGB")))
    return torch.stack(tensors)


def single_colour(pixels: torch.Tensor) -> torch.Tensor:
    """Each channel replaced by its mean over the (preprocessed) image."""
    return pixels.mean(dim=(-2, -1), keepdim=True).expand_as(pixels).contiguous()


@_no_grad
def write_image_cache(model, keys: Sequence[str], image_paths: Sequence[str | Path], path, *, model_id: str,
                      batch_size: int = 16, dtype: str = "float32", metadata: Mapping | None = None,
                      progress: bool = True) -> None:
    """Cache the real image's residual stream and the single-colour image's block outputs."""
    tower = model.vision
    n, n_layers, d = len(keys), tower.n_layers, tower.d_model
    np_dtype = np.dtype(dtype)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        _write_attrs(f, model_id, model.spec, {"tower": "vision", "logit_scale": model.logit_scale, "n_layers": n_layers, "n_heads": tower.n_heads,
                                               "d_model": d, **(metadata or {})})
        f.create_dataset("keys", data=np.asarray(list(keys), dtype=object), dtype=STR)
        f.create_dataset("image_file", data=np.asarray([str(Path(p).name) for p in image_paths], dtype=object), dtype=STR)
        real, single = f.create_group("real"), f.create_group("single_colour")
        made = {}
        for sl in tqdm(list(_batches(n, batch_size)), desc="images", disable=not progress):
            pixels = load_images(image_paths[sl], model.preprocess).to(model.device)
            out_real = model.encode_image(pixels, cache=["resid", "resid_mid"])
            out_single = model.encode_image(single_colour(pixels), cache=["attn_out", "mlp_out"])
            arrays = {
                (real, "embedding"): out_real.embedding,
                (single, "embedding"): out_single.embedding,
                (real, "resid"): out_real.cache.stack("resid"),
                (real, "resid_mid"): out_real.cache.stack("resid_mid"),
                (single, "attn_out"): out_single.cache.stack("attn_out"),
                (single, "mlp_out"): out_single.cache.stack("mlp_out"),
            }
            for (group, name), value in arrays.items():
                if (group.name, name) not in made:
                    dt = np.float32 if name == "embedding" else np_dtype
                    made[(group.name, name)] = _dataset(group, name, (n, *value.shape[1:]), dt)
                made[(group.name, name)][sl] = value.cpu().numpy().astype(made[(group.name, name)].dtype)


def unique_key_index(keys: Sequence[str], where: str) -> dict[str, int]:
    """Row of each key of ``where`` (a cache or table); a duplicate key is an InputError."""
    index = {k: i for i, k in enumerate(keys)}
    if len(index) != len(keys):
        examples = [k for k, count in Counter(keys).items() if count > 1][:3]
        raise InputError(f"{where} lists {len(keys) - len(index)} duplicate key(s), e.g. {examples}; "
                         "delete it and re-run the rule that wrote it")
    return index


def match_rows(keys: Sequence[str], available: Sequence[str], *, what: str, where: str) -> np.ndarray:
    """Row of each of ``keys`` in ``available`` (the keys of ``where``, in row order); absent keys are an InputError.

    Caches and tables are matched by key, never by position: their row orders may differ.
    """
    index = unique_key_index(available, where)
    missing = [k for k in keys if k not in index]
    if missing:
        raise InputError(f"{len(missing)} of {len(keys)} {what} are absent from {where} ({len(available)} rows), "
                         f"e.g. {missing[:3]}; re-run the rule that writes {where} so it covers every instance")
    return np.asarray([index[k] for k in keys], dtype=np.int64)


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


def decode_keys(values) -> list[str]:
    """Keys as stored in HDF5 (bytes or str) as Python strings."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def read_keys(path) -> list[str]:
    with h5py.File(path, "r") as f:
        return decode_keys(f["keys"][:])


def read_array(path, name: str, rows=None) -> np.ndarray:
    """One dataset of a cache file, optionally only some rows (instances)."""
    with h5py.File(path, "r") as f:
        if name not in f:
            raise InputError(f"cache {path} has no dataset {name!r}; delete it and re-run its rule")
        return f[name][:] if rows is None else f[name][rows]
