"""The decomposition store: per-image terms in the joint space, written in fixed-size HDF5 shards.

Shard k of an image list covers rows ``k * shard_size .. (k + 1) * shard_size - 1``. A shard file
holds ``keys`` and, one row per image, in the paper's units (every term divided by the norm ``||e||`` of the
image's embedding, :meth:`~clip_interp.contributions.Decomposition.unit`): ``embedding`` (E,) float32, the unit
embedding ``e/||e||``; ``embedding_norm`` () float32, ``||e||``; the terms ``embedding_term`` (E,), ``heads``
(L, H, E) summed over sources, ``attn_bias`` (L, E), ``mlps`` (L, E) and ``ln_bias`` (E,), which sum to
``embedding``, and ``class_attention`` (L, E), the class-token-to-class-token part of ``heads`` summed over heads,
in the store's dtype (float16 or float32); plus ``label`` when labels are given. A term in the units of ``e`` is
the stored term times ``embedding_norm``. Attributes name the model, the convention, the units
(:data:`UNITS`) and the shard. Images are decomposed
``batch_size`` at a time and written at once, so memory is bounded by the batch size. Files are
written atomically: an interrupted shard leaves nothing and re-runs alone. The last thing a shard's writer
does is record its completion (attribute :data:`COMPLETION_ATTRIBUTE`: its row count and a digest of its
image keys), so that :func:`shard_problems` can tell a finished shard from one a workflow run lost track of.

:func:`gather_shards` verifies the parts against their completion records and the image list
(:func:`shard_problems`), then joins them as an HDF5 file of virtual datasets (no copy; the parts are
recorded by their paths relative to the gathered file's folder, which HDF5 resolves from that folder,
so the gathered file and its parts may move together, and the same run in another folder writes the
same bytes);
:class:`DecompositionStore` reads a shard or a gathered file in batches.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import h5py
import numpy as np
import torch

from .batching import row_slices
from .contributions import FIELDS, PARTS, decompose
from .errors import InputError
from .images import load_images
from .io import atomic_path
from .models import layer_index
from .store import RowWriter, decode_keys, require_datasets, write_header

DTYPES = ("float16", "float32")
# Every per-image dataset of a store, and the units its terms are in (the `units` attribute).
STORE_FIELDS = (*FIELDS, *PARTS)
UNITS = "unit_embedding"
# The shard attribute that records a finished shard: JSON {"rows": n, "keys_sha256": keys_digest(keys)}.
COMPLETION_ATTRIBUTE = "completed"


def shard_rows(n_images: int, shard_size: int, shard: int) -> slice:
    """The rows of shard ``shard`` (0-based) of ``n_images`` in shards of ``shard_size``."""
    if shard_size < 1:
        raise InputError(f"shard_size must be at least 1, got {shard_size}")
    n_shards = max(1, -(-n_images // shard_size))
    if not 0 <= shard < n_shards:
        raise InputError(f"shard {shard} does not exist: {n_images} images in shards of {shard_size} "
                         f"make shards 0..{n_shards - 1}")
    return slice(shard * shard_size, min((shard + 1) * shard_size, n_images))


def n_shards(n_images: int, shard_size: int) -> int:
    if shard_size < 1:
        raise InputError(f"shard_size must be at least 1, got {shard_size}")
    return max(1, -(-n_images // shard_size))


@torch.no_grad()
def write_decomposition(model, image_paths: Sequence[str | Path], keys: Sequence[str], path, *, model_id: str,
                        convention: str = "uniform", dtype: str = "float32", batch_size: int = 16,
                        labels: Sequence[int] | None = None, metadata: dict | None = None,
                        pixels_fn=None) -> None:
    """Decompose the images and write one store file (a shard).

    ``pixels_fn(paths, keys)`` returns preprocessed pixels (default: load the files with the
    model's preprocessing).
    """
    if dtype not in DTYPES:
        raise InputError(f"decomposition store dtype {dtype!r} is not one of {DTYPES}")
    if len(image_paths) != len(keys) or (labels is not None and len(labels) != len(keys)):
        raise InputError(f"{len(image_paths)} images, {len(keys)} keys and "
                         f"{'no' if labels is None else len(labels)} labels do not match")
    load = pixels_fn or (lambda paths, names: load_images(paths, model.preprocess, keys=names))
    n = len(keys)
    meta = {"convention": convention, "units": UNITS, "study": "decomposition", **(metadata or {})}
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        write_header(f, keys, model_id=model_id, model=model, tower=model.vision, metadata=meta)
        if labels is not None:
            f.create_dataset("label", data=np.asarray(labels, dtype=np.int64), track_times=False)
        writer = RowWriter(f, n, dtype)
        for sl in row_slices(n, batch_size):
            pixels = load(list(image_paths[sl]), list(keys[sl])).to(model.device)
            parts = decompose(model.vision, pixels, convention=convention).unit()
            for name in ("embedding", "embedding_norm"):
                writer.write(name, sl, getattr(parts, name), full_precision=True)
            for name in (*FIELDS[1:], "class_attention"):
                writer.write(name, sl, getattr(parts, name))
        f.attrs[COMPLETION_ATTRIBUTE] = completion_record(keys)


def keys_digest(keys: Sequence[str]) -> str:
    """SHA-256 (hex) of the image keys in order, as the UTF-8 bytes of their JSON list."""
    return hashlib.sha256(json.dumps([str(key) for key in keys]).encode("utf-8")).hexdigest()


def completion_record(keys: Sequence[str]) -> str:
    """The value of a finished shard's :data:`COMPLETION_ATTRIBUTE`: its row count and :func:`keys_digest`."""
    return json.dumps({"rows": len(keys), "keys_sha256": keys_digest(keys)}, sort_keys=True)


def shard_problems(part: str | Path, expected_keys: Sequence[str] | None = None) -> str | None:
    """Why ``part`` is not a finished shard (holding ``expected_keys`` in order, when given), or None.

    A finished shard has its completion record (written last), every dataset has the recorded row count, its
    ``keys`` match the recorded digest, and the record matches the expected keys.
    """
    if not Path(part).is_file():
        return "is missing"
    with h5py.File(part, "r") as f:
        record = f.attrs.get(COMPLETION_ATTRIBUTE)
        if record is None:
            return ("has no completion record: its job did not finish writing it (or it was written before shards "
                    "recorded their completion)")
        if f.attrs.get("units") != UNITS:
            return ("holds terms in the units of the image embedding (written before stores held them divided by "
                    "||e||)")
        record = json.loads(record)
        keys = decode_keys(f["keys"][:]) if "keys" in f else []
        lengths = {name: len(f[name]) for name in ("keys", *STORE_FIELDS) if name in f}
    short = {name: n for name, n in lengths.items() if n != record["rows"]}
    if len(lengths) < len(STORE_FIELDS) + 1 or short:
        return f"records {record['rows']} rows but holds {short or 'not every dataset'}"
    if keys_digest(keys) != record["keys_sha256"]:
        return "holds image keys other than those it recorded"
    if expected_keys is not None and (len(expected_keys) != record["rows"]
                                      or keys_digest(expected_keys) != record["keys_sha256"]):
        return (f"holds {record['rows']} images ({_show_keys(keys)}), but its rows of the image list are "
                f"{len(expected_keys)} images ({_show_keys(expected_keys)})")
    return None


def _show_keys(keys: Sequence[str]) -> str:
    return "none" if not len(keys) else f"{keys[0]!r}..{keys[-1]!r}" if len(keys) > 1 else repr(keys[0])


def verify_shards(parts: Sequence[str | Path], image_keys: Sequence[str] | None = None,
                  shard_size: int | None = None) -> list[str]:
    """One line per shard of ``parts`` (shard k is ``parts[k]``) that :func:`shard_problems` finds at fault.

    With ``image_keys`` (the image list's keys in row order) and ``shard_size``, shard k must hold the keys of
    rows :func:`shard_rows` (n, shard_size, k), and ``parts`` must be every shard of the list.
    """
    return [line for _, line in _shard_faults(parts, image_keys, shard_size)]


def _shard_faults(parts: Sequence[str | Path], image_keys: Sequence[str] | None,
                  shard_size: int | None) -> list[tuple[str | None, str]]:
    """(shard file or None for the whole set, problem) for :func:`verify_shards`."""
    faults: list[tuple[str | None, str]] = []
    against_list = image_keys is not None and shard_size is not None
    if against_list and len(parts) != n_shards(len(image_keys), shard_size):
        count = (f"{len(parts)} shard files for an image list of {len(image_keys)} images, which makes "
                 f"{n_shards(len(image_keys), shard_size)} shards of {shard_size}")
        faults.append((None, count))
        against_list = False
    for k, part in enumerate(parts):
        expected = list(image_keys[shard_rows(len(image_keys), shard_size, k)]) if against_list else None
        problem = shard_problems(part, expected)
        if problem:
            faults.append((str(part), f"shard {part} {problem}"))
    return faults


def gather_shards(parts: Sequence[str | Path], path, image_keys: Sequence[str] | None = None,
                  shard_size: int | None = None) -> None:
    """Join shard files (in order) into one file of virtual datasets; ``keys`` and ``label`` are copied.

    Every shard is verified first (:func:`verify_shards`, against the image list when ``image_keys`` and
    ``shard_size`` are given); an unfinished or mismatched shard stops the gather, naming each such shard.
    """
    if not parts:
        raise InputError("no decomposition shards to gather")
    for part in parts:
        if not Path(part).is_file():
            raise InputError(f"decomposition shard {part} is missing; re-run its rule (snakemake --rerun-incomplete)")
    faults = _shard_faults(parts, image_keys, shard_size)
    if faults:
        named = " ".join(part for part, _ in faults if part)
        raise InputError("decomposition shards that are not finished or do not match the image list:\n"
                         + "\n".join(f"  - {line}" for _, line in faults)
                         + f"\ndelete {'these shard files' if named else 'the shard folder'} and run the workflow "
                           f"again with your usual options: `rm {named or Path(parts[0]).parent} && snakemake "
                           "--rerun-incomplete ...` (README, \"Errors and re-runs\")")
    shapes, keys, labels, attrs = {}, [], [], None
    for part in parts:
        with h5py.File(part, "r") as f:
            require_datasets(f, ["keys", *STORE_FIELDS], part)
            current = {k: f.attrs.get(k) for k in ("model", "convention", "units", "n_layers", "n_heads")}
            if attrs is not None and current != attrs:
                raise InputError(f"shard {part} was written by {current}, the first shard by {attrs}; "
                                 "re-run every shard with one configuration")
            attrs = current
            keys.extend(decode_keys(f["keys"][:]))
            if "label" in f:
                labels.append(f["label"][:])
            for name in STORE_FIELDS:
                shapes.setdefault(name, []).append((f[name].shape, f[name].dtype))
    if labels and len(labels) != len(parts):
        raise InputError("some decomposition shards have labels and others do not; re-run them with one image set")
    folder = Path(path).resolve().parent
    relative = [os.path.relpath(Path(part).resolve(), folder) for part in parts]
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as out:
        with h5py.File(parts[0], "r") as first:
            for k, v in first.attrs.items():
                if k != COMPLETION_ATTRIBUTE:
                    out.attrs[k] = v
        out.attrs["shards"] = json.dumps(relative)
        out.create_dataset("keys", data=np.asarray(keys, dtype=object), dtype=h5py.string_dtype(),
                           track_times=False)
        if labels:
            out.create_dataset("label", data=np.concatenate(labels), track_times=False)
        for name in STORE_FIELDS:
            _virtual_dataset(out, name, relative, [shape for shape, _ in shapes[name]], shapes[name][0][1])


def _virtual_dataset(out: h5py.File, name: str, parts: Sequence[str], part_shapes: Sequence[tuple], dtype) -> None:
    """Dataset ``name`` of ``out`` as the row-wise concatenation of dataset ``name`` of each part file,
    created without a timestamp (the same parts give the same bytes)."""
    from h5py import h5d, h5p, h5s, h5t

    row_shape = tuple(part_shapes[0][1:])
    n = sum(shape[0] for shape in part_shapes)
    dcpl = h5p.create(h5p.DATASET_CREATE)
    dcpl.set_obj_track_times(False)
    space = h5s.create_simple((n, *row_shape))
    start = 0
    for part, shape in zip(parts, part_shapes):
        selection = h5s.create_simple((n, *row_shape))
        selection.select_hyperslab((start,) + (0,) * len(row_shape), (shape[0], *row_shape))
        dcpl.set_virtual(selection, part.encode(), name.encode(), h5s.create_simple(tuple(shape)))
        start += shape[0]
    h5d.create(out.id, name.encode(), h5t.py_create(np.dtype(dtype), logical=1), space, dcpl=dcpl)


class DecompositionStore:
    """A shard or gathered decomposition file, read ``batch_size`` rows at a time (a component source)."""

    def __init__(self, path, device: str | torch.device = "cpu"):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"decomposition store {self.path} is missing; run the decomposition rule first")
        self.device = torch.device(device)
        with h5py.File(self.path, "r") as f:
            if f.attrs.get("units") != UNITS:
                raise InputError(f"decomposition store {self.path} holds terms in the units of the image embedding "
                                 "(written before stores held them divided by ||e||, as the paper does); delete "
                                 f"{self.path.parent} and run the workflow again")
            require_datasets(f, ["keys", *STORE_FIELDS], self.path)
            self.keys = decode_keys(f["keys"][:])
            self.labels = f["label"][:] if "label" in f else None
            self.attrs = {k: f.attrs[k] for k in f.attrs}
            self.n_layers, self.n_heads = f["heads"].shape[1:3]
        self.n = len(self.keys)

    @property
    def convention(self) -> str:
        return str(self.attrs.get("convention"))

    def batches(self, batch_size: int = 256) -> Iterator[tuple[slice, dict[str, torch.Tensor]]]:
        """``(rows, values)`` over the store: every dataset of :data:`STORE_FIELDS` as float32 tensors."""
        with h5py.File(self.path, "r") as f:
            for sl in row_slices(self.n, batch_size):
                yield sl, {name: torch.as_tensor(f[name][sl], dtype=torch.float32, device=self.device)
                           for name in STORE_FIELDS}

    def head(self, layer: int, head: int, batch_size: int = 1024) -> torch.Tensor:
        """The contributions (N, E) of head (layer 1..L, head 0..H-1) to every image, float32."""
        with h5py.File(self.path, "r") as f:
            return torch.cat([torch.as_tensor(f["heads"][sl, layer_index(layer), head], dtype=torch.float32)
                              for sl in row_slices(self.n, batch_size)])
