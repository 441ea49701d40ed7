"""The activation store: per-layer activations of a tower, in HDF5, by instance key.

A store file holds a ``keys`` dataset (one instance key per row, in row order) and groups
of datasets, each with one row per key: ``embedding`` (N, E) and any stacked site, e.g.
``resid`` (N, L+1, T, D) or ``pattern`` (N, L, H, T, T). Datasets are chunked by row, so a
reader fetches only the rows it needs (:class:`SelectedRows`). File attributes record the
model id and spec, the tower's shape and any metadata the caller passes. A study declares
its own layout (which groups, which sites, what each group's input is) on top of the
writers here; this module knows no study. Files are written atomically and are byte-stable: the
same inputs give the same bytes (no dataset timestamps, ``track_times=False``; attributes and
datasets are written in a fixed order).
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import h5py
import numpy as np
from tqdm import tqdm

from .batching import row_slices
from .errors import InputError
from .images import load_images
from .io import atomic_path

if TYPE_CHECKING:
    import torch

STR = h5py.string_dtype()
TEXT_SITES = ("resid", "pattern")
COMPRESSED_SITES = ("pattern",)


def _no_grad(function):
    """Run ``function`` without autograd; torch is imported on call, so readers of a store need no torch."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        import torch

        with torch.no_grad():
            return function(*args, **kwargs)

    return wrapper


def row_dataset(group, name: str, shape: tuple[int, ...], dtype, compression: str | None = None):
    """A dataset with one chunk per row (instance)."""
    chunks = (1, *shape[1:]) if len(shape) > 1 else None
    return group.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, compression=compression,
                                track_times=False)


def write_header(f: h5py.File, keys: Sequence[str], *, model_id: str, model, tower, metadata: Mapping | None) -> None:
    """The ``keys`` dataset and the attributes that say which model and tower wrote the file."""
    attrs = {"tower": tower.kind, "logit_scale": model.logit_scale, "n_layers": tower.n_layers,
             "n_heads": tower.n_heads, "d_model": tower.d_model, **(metadata or {})}
    f.attrs["model"] = model_id
    f.attrs["model_spec"] = json.dumps(dict(model.spec), sort_keys=True)
    for k, v in attrs.items():
        f.attrs[k] = json.dumps(v) if isinstance(v, (dict, list)) else v
    f.create_dataset("keys", data=np.asarray(list(keys), dtype=object), dtype=STR, track_times=False)


class RowWriter:
    """Writes batches of rows into the datasets of one group, creating each on first use."""

    def __init__(self, group, n: int, dtype: str):
        self.group, self.n, self.dtype = group, n, np.dtype(dtype)
        self.datasets: dict[str, h5py.Dataset] = {}

    def write(self, name: str, sl: slice, value: "torch.Tensor", *, full_precision: bool = False) -> None:
        """Rows ``sl`` of dataset ``name``; ``full_precision`` stores float32 whatever the store's dtype."""
        if name not in self.datasets:
            dtype = np.float32 if full_precision else self.dtype
            compression = "lzf" if name in COMPRESSED_SITES else None
            self.datasets[name] = row_dataset(self.group, name, (self.n, *value.shape[1:]), dtype, compression)
        dataset = self.datasets[name]
        dataset[sl] = value.cpu().numpy().astype(dataset.dtype)


@_no_grad
def write_text_activations(model, keys: Sequence[str], sentences: Mapping[str, Sequence[Sequence[int]]], path,
                           *, model_id: str, batch_size: int = 64, dtype: str = "float32",
                           metadata: Mapping | None = None, progress: bool = True,
                           sites: Sequence[str] = TEXT_SITES) -> None:
    """Store the embeddings and the ``sites`` of the text tower for each group of token-id sequences.

    ``sentences`` maps a group name to one id sequence (SOT ... EOT) per key; a sequence shorter
    than SOT and EOT is an InputError. Each group also gets ``ids`` (N, T) right-padded to its
    longest sequence and ``length`` (N,).
    """
    unknown = sorted(set(sites) - set(TEXT_SITES))
    if unknown:
        raise ValueError(f"text store sites {unknown} are not among {TEXT_SITES}")
    n = len(keys)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        write_header(f, keys, model_id=model_id, model=model, tower=model.text, metadata=metadata)
        for group_name, seqs in sentences.items():
            if len(seqs) != n:
                raise InputError(f"text store: group {group_name!r} has {len(seqs)} sentences for {n} keys")
            empty = [keys[i] for i, seq in enumerate(seqs) if len(seq) < 2]
            if empty:
                raise InputError(f"text store: group {group_name!r} has {len(empty)} sequence(s) without SOT and EOT "
                                 f"(keys {empty[:3]}); an empty sentence cannot be scored; re-run the rule that "
                                 "writes the token ids, which leaves out sentences it cannot encode")
            t_max = max(len(s) for s in seqs)
            g = f.create_group(group_name)
            g.create_dataset("ids", data=model.tokenizer.pad(seqs, t_max).numpy(), track_times=False)
            g.create_dataset("length", data=np.asarray([len(s) for s in seqs], dtype=np.int32), track_times=False)
            writer = RowWriter(g, n, dtype)
            wanted = [site for site in TEXT_SITES if site in sites]
            for sl in tqdm(row_slices(n, batch_size), desc=f"text {group_name}", disable=not progress):
                out = model.encode_text(model.tokenizer.pad(seqs[sl], t_max), cache=wanted)
                writer.write("embedding", sl, out.embedding, full_precision=True)
                for site in wanted:
                    writer.write(site, sl, out.cache.stack(site))


@_no_grad
def write_image_activations(model, keys: Sequence[str], image_paths: Sequence[str | Path], path, *,
                            views: Mapping[str, tuple[Callable | None, Sequence[str]]], model_id: str,
                            batch_size: int = 16, dtype: str = "float32", metadata: Mapping | None = None,
                            progress: bool = True) -> None:
    """Store the vision tower's embedding and chosen sites for each *view* of every image.

    ``views`` maps a group name to ``(transform, sites)``: the group holds the embedding and
    the stacked ``sites`` of ``transform(pixels)`` (None: the preprocessed image itself).
    A dataset ``image_file`` records each row's file name.
    """
    n = len(keys)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        write_header(f, keys, model_id=model_id, model=model, tower=model.vision, metadata=metadata)
        f.create_dataset("image_file", data=np.asarray([str(Path(p).name) for p in image_paths], dtype=object),
                         dtype=STR, track_times=False)
        writers = {name: RowWriter(f.create_group(name), n, dtype) for name in views}
        for sl in tqdm(row_slices(n, batch_size), desc="images", disable=not progress):
            pixels = load_images(image_paths[sl], model.preprocess, keys=keys[sl]).to(model.device)
            for name, (transform, sites) in views.items():
                out = model.encode_image(pixels if transform is None else transform(pixels), cache=list(sites))
                writers[name].write("embedding", sl, out.embedding, full_precision=True)
                for site in sites:
                    writers[name].write(site, sl, out.cache.stack(site))


# --------------------------------------------------------------------------- readers


def decode_keys(values) -> list[str]:
    """Keys as stored in HDF5 (bytes or str) as Python strings."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def read_keys(path) -> list[str]:
    with h5py.File(path, "r") as f:
        return decode_keys(f["keys"][:])


def read_array(path, name: str, rows=None) -> np.ndarray:
    """One dataset of a store file, optionally only some rows (instances)."""
    with h5py.File(path, "r") as f:
        if name not in f:
            raise InputError(f"cache {path} has no dataset {name!r}; delete it and re-run its rule")
        return f[name][:] if rows is None else f[name][rows]


def require_datasets(f: h5py.File, names: Sequence[str], path) -> None:
    """An InputError naming the file when any of ``names`` is absent from an open store."""
    absent = [name for name in names if name not in f]
    if absent:
        raise InputError(f"{path} lacks {absent}; delete it and re-run its rule")


def unique_key_index(keys: Sequence[str], where: str) -> dict[str, int]:
    """Row of each key of ``where`` (a store or table); a duplicate key is an InputError."""
    index = {k: i for i, k in enumerate(keys)}
    if len(index) != len(keys):
        examples = [k for k, count in Counter(keys).items() if count > 1][:3]
        raise InputError(f"{where} lists {len(keys) - len(index)} duplicate key(s), e.g. {examples}; "
                         "delete it and re-run the rule that wrote it")
    return index


def match_rows(keys: Sequence[str], available: Sequence[str], *, what: str, where: str) -> np.ndarray:
    """Row of each of ``keys`` in ``available`` (the keys of ``where``, in row order); absent keys are an InputError.

    Stores and tables are matched by key, never by position: their row orders may differ.
    """
    index = unique_key_index(available, where)
    missing = [k for k in keys if k not in index]
    if missing:
        raise InputError(f"{len(missing)} of {len(keys)} {what} are absent from {where} ({len(available)} rows), "
                         f"e.g. {missing[:3]}; re-run the rule that writes {where} so it covers every instance")
    return np.asarray([index[k] for k in keys], dtype=np.int64)


class SelectedRows:
    """Rows ``rows`` of an h5py dataset (or array), read lazily: ``view[a:b]`` reads ``dataset[rows[a:b]]``.

    Each read fetches the requested rows in increasing order (one contiguous slice when they
    are consecutive) and returns them in the requested order, so only one batch of rows of
    the dataset is ever in memory.
    """

    def __init__(self, dataset, rows: np.ndarray):
        self.dataset = dataset
        self.rows = np.asarray(rows, dtype=np.int64)
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= dataset.shape[0]):
            raise InputError(f"row selection outside 0..{dataset.shape[0] - 1} of {getattr(dataset, 'name', 'array')}")

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.dataset.shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, sl: slice) -> np.ndarray:
        wanted = self.rows[sl]
        if len(wanted) == 0:
            return np.zeros((0, *self.dataset.shape[1:]), dtype=self.dataset.dtype)
        unique, inverse = np.unique(wanted, return_inverse=True)
        if unique[-1] - unique[0] + 1 == len(unique):
            block = np.asarray(self.dataset[int(unique[0]):int(unique[-1]) + 1])
        else:
            block = np.asarray(self.dataset[unique.tolist()])
        return block[inverse.reshape(-1)]
