"""The head index's vectors on disk and the top-k search over them (the explorer's neighbour searches).

Files (:data:`INDEX_FILES`, written by :func:`write_index_files` beside ``explorer.json``; the manifest records
them and :func:`open_index_files` checks them against it). Every one is a NumPy ``.npy`` file in C order,
head-major so that one head's vectors for every image lie together on disk:

``search`` (``explorer_index.f16.npy``)
    ``(L_a, H, N, E)`` float16: head h of the a-th analysed layer's contribution to image i, rounded to float16;
    scanned in chunks to find candidates.
``exact`` (``explorer_index.f32.npy``)
    the same in float32, the values of the decomposition store (read only for the candidate rows).
``norms`` (``explorer_norms.f32.npy``)
    ``(L_a, H, N)`` float32: each contribution's Euclidean norm (computed in float64 from the float32 values).
``group_search`` (``explorer_groups.f16.npy``), ``group_norms`` (``explorer_group_norms.f32.npy``)
    ``(G, N, E)`` float16 and ``(G, N)`` float32: for each of the G head groups listed in the description
    (``groups``: lists of ``[a, h]``, e.g. the heads of each property of each labeller), the sum of its heads'
    float32 contributions (in float64), rounded to float16, and that sum's norm. A search over a listed group scans
    one vector per image instead of one per head.

The search (:meth:`HeadVectors.top_k`). For a group S of heads (one head, or a property's heads) and a query
vector q (E,) float32, the *exact* score of image i is computed in float64 from the float32 values:
``x_i = sum_{h in S} c_h(i)``, ``dot: x_i . q``, ``cosine: x_i . q / (||x_i|| ||q||)`` (0 where ``x_i`` or ``q``
is 0). The top k are the k largest exact scores, ties to the lower row.

Finding them scans the float16 copy (the group's sum for a listed group, else every head of S, summed in float32)
in chunks of rows, and computes approximate scores ``s~_i`` in float32 with a rigorous per-row error bound
``e_i``. Float16 rounding is ``|c~ - c| <= 2^-11 |c| + 2^-25`` per value (the second term covers subnormals), so
with ``n_h(i) = ||c_h(i)||`` (the norms files; for a listed group its one precomputed sum, m = 1 term, else m = |S|
terms) and ``g_j = j 2^-24 / (1 - j 2^-24)`` (float32 rounding of j-term sums), ``D_i = sum_h [(2^-11 + g_m)
n_h(i) + 2^-25 sqrt(E)]`` bounds ``||x~_i - x_i||`` and ``A_i = D_i + g_E (sum_h n_h(i) + D_i)`` both the error
of the dot product ``x~_i . q`` (times ``||q||``) and that of the norm ``||x~_i||``. The bound is ``e_i = 2 A_i
||q||`` for dot and ``e_i = 2 (2 A_i / ||x~_i||)`` for cosine (the leading 2 a safety factor; infinite where
``||x~_i|| <= 2 A_i``; 0 where every ``n_h(i)`` is 0, whose exact score is 0). With t the k-th largest lower
bound ``s~_i - e_i``, every row of the exact top k (and every row tied with its last) has ``s~_i + e_i >= t``:
those rows, and at least the ``k +`` :data:`CANDIDATE_MARGIN` best approximate rows, are the candidates,
re-scored exactly from the float32 copy (only their rows are read). So the result equals the exact float64
search over every row, rank for rank (:meth:`HeadVectors.brute_force_top_k`). An index held in memory (read
from the store) is searched by the same code with its float32 values as both copies (no rounding term).

Resident memory: the files are memory-mapped read-only and the pages of each chunk are given back to the
kernel (``madvise(MADV_DONTNEED)``) once scanned, so a search holds a chunk, not the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import mmap
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch

from ..batching import row_slices
from ..errors import InputError
from ..io import atomic_path
from ..models import layer_index

# name: (file name beside explorer.json, dtype)
INDEX_FILES = {"search": ("explorer_index.f16.npy", "float16"), "exact": ("explorer_index.f32.npy", "float32"),
               "norms": ("explorer_norms.f32.npy", "float32"), "group_search": ("explorer_groups.f16.npy", "float16"),
               "group_norms": ("explorer_group_norms.f32.npy", "float32")}
VECTOR_FILES = ("search", "exact", "group_search")  # the files with an embedding axis (the others hold norms)
LAYOUT = "(analysed layer, head, image, dim), C order"
SIMILARITIES = ("cosine", "dot")
# Candidates beyond k that are always re-scored exactly (besides every row the error bound cannot rule out).
CANDIDATE_MARGIN = 16
CHUNK_ROWS = 8192
FLOAT16_RELATIVE = 2.0 ** -11
FLOAT16_ABSOLUTE = 2.0 ** -25
FLOAT32_UNIT = 2.0 ** -24
FLOAT16_MAX = 65504.0
DIGEST_BLOCKS = 64
DIGEST_BLOCK_BYTES = 4096
def rebuild_hint(path: Path) -> str:
    """How to rebuild the index files of the model whose folder holds ``path`` (``results/heads/{model}/``)."""
    return (f"rebuild them: snakemake --cores 1 --forcerun heads_explorer_index "
            f"results/heads/{Path(path).parent.name}/explorer.json")


def _gamma(m: int) -> float:
    return m * FLOAT32_UNIT / (1 - m * FLOAT32_UNIT)


# --------------------------------------------------------------------------- writing


def store_batches(store_path, layers: Sequence[int], batch_size: int = 1024
                  ) -> tuple[int, int, int, int, Iterator[tuple[slice, np.ndarray]]]:
    """``(n_images, n_layers, n_heads, width, batches)`` of a decomposition store: batches of the heads'
    contributions of ``layers`` (1..L), ``(rows, (b, len(layers), H, E) float32)``."""
    import h5py

    from ..contribution_store import DecompositionStore

    store = DecompositionStore(store_path)
    bad = [layer for layer in layers if not 1 <= layer <= store.n_layers]
    if bad:
        raise InputError(f"layers {bad} are not in the decomposition store {store_path} (layers 1..{store.n_layers})")
    columns = [layer_index(layer) for layer in layers]
    with h5py.File(store.path, "r") as f:
        width = int(f["heads"].shape[-1])

    def batches():
        with h5py.File(store.path, "r") as f:
            heads = f["heads"]
            for sl in row_slices(store.n, batch_size):
                yield sl, np.asarray(heads[sl][:, columns], dtype=np.float32)

    return store.n, store.n_layers, store.n_heads, width, batches()


def write_index_files(batches: Iterator[tuple[slice, np.ndarray]], shape: tuple[int, int, int, int],
                      paths: Mapping[str, str | os.PathLike], groups: Sequence[Sequence[tuple[int, int]]] = ()) -> dict:
    """Write the files of :data:`INDEX_FILES` (to ``paths[name]``, atomically) from ``batches`` of rows
    ``(rows, (b, L_a, H, E) float32)`` covering ``shape = (N, L_a, H, E)``, with the summed contributions of each
    head group of ``groups`` (lists of positions ``(a, h)``); their description (:func:`describe`). A value
    outside float16's range is an InputError (nothing is written)."""
    n, n_layers, n_heads, width = shape
    groups = [sorted({(int(a), int(h)) for a, h in group}) for group in groups]
    bad = [group for group in groups if not group or any(not (0 <= a < n_layers and 0 <= h < n_heads)
                                                        for a, h in group)]
    if bad:
        raise InputError(f"head groups {bad} are empty or outside the index's {n_layers} layers x {n_heads} heads")
    shapes = {"search": (n_layers, n_heads, n, width), "exact": (n_layers, n_heads, n, width),
              "norms": (n_layers, n_heads, n), "group_search": (len(groups), n, width), "group_norms": (len(groups), n)}
    with contextlib.ExitStack() as stack:
        arrays = {name: np.lib.format.open_memmap(stack.enter_context(atomic_path(paths[name])), mode="w+",
                                                  dtype=dtype, shape=shapes[name])
                  for name, (_, dtype) in INDEX_FILES.items()}
        covered = 0
        for rows, batch in batches:
            _check_range(batch, rows)
            _write_rows(arrays, rows, batch.transpose(1, 2, 0, 3), groups)
            covered += rows.stop - rows.start
        if covered != n:
            raise InputError(f"the store's batches covered {covered} rows, expected {n}")
        for array in arrays.values():
            array.flush()
        del arrays
    described = describe(paths)
    return {**described, "groups": [[list(position) for position in group] for group in groups]}


def _check_range(values: np.ndarray, rows: slice) -> None:
    peak = float(np.abs(values).max(initial=0.0))
    if not peak <= FLOAT16_MAX:
        raise InputError(f"rows {rows.start}..{rows.stop - 1} hold a contribution of magnitude {peak:g}, "
                         f"outside float16's range (<= {FLOAT16_MAX:g}): the float16 index cannot hold it")


def _write_rows(arrays: Mapping[str, np.ndarray], rows: slice, by_head: np.ndarray, groups) -> None:
    """Rows ``rows`` of every file from ``by_head`` (L_a, H, b, E) float32."""
    arrays["exact"][:, :, rows] = by_head
    arrays["search"][:, :, rows] = by_head
    arrays["norms"][:, :, rows] = np.sqrt(np.einsum("lhne,lhne->lhn", by_head, by_head, dtype=np.float64))
    for g, group in enumerate(groups):
        total = np.zeros(by_head.shape[2:])
        for position in group:
            total += by_head[position]
        _check_range(total, rows)
        arrays["group_search"][g, rows] = total
        arrays["group_norms"][g, rows] = np.sqrt(np.sum(total * total, axis=1))


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's size, its first and last 4 KiB and :data:`DIGEST_BLOCKS` evenly spaced 4 KiB blocks
    (a sample, cheap on a file of gigabytes, that tells a rewritten file from the one described)."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        for i in range(DIGEST_BLOCKS + 1):
            f.seek(max(0, min(size - DIGEST_BLOCK_BYTES, i * size // DIGEST_BLOCKS)))
            digest.update(f.read(DIGEST_BLOCK_BYTES))
    return digest.hexdigest()


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a C-order .npy file; an InputError naming the file otherwise."""
    try:
        with path.open("rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
    except (ValueError, OSError) as error:
        raise InputError(f"head index file {path} is not a readable .npy file ({error}); "
                         f"{rebuild_hint(path)}") from None
    if fortran:
        raise InputError(f"head index file {path} is in Fortran order, expected C order; {rebuild_hint(path)}")
    return tuple(int(x) for x in shape), dtype, offset


def describe(paths: Mapping[str, str | os.PathLike]) -> dict:
    """``{"layout": LAYOUT, "files": {name: {"path", "dtype", "shape", "bytes", "digest"}}}`` of written files
    (paths as given)."""
    files = {}
    for name, path in paths.items():
        shape, dtype, _ = _npy_header(Path(path))
        files[name] = {"path": str(path), "dtype": str(dtype), "shape": list(shape),
                       "bytes": Path(path).stat().st_size, "digest": file_digest(path)}
    return {"layout": LAYOUT, "files": files}


# --------------------------------------------------------------------------- reading


class MappedArray:
    """A C-order .npy file memory-mapped read-only, whose pages can be handed back to the kernel
    (:meth:`forget`) once read, so that they stop counting in the process's resident memory."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype, offset: int):
        self.path = path
        with path.open("rb") as f:
            self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.offset = offset
        self.array = np.frombuffer(self._mmap, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)

    def forget(self, first_row: int, rows: slice) -> None:
        """Hand back the pages of vectors ``first_row + rows.start .. first_row + rows.stop - 1`` (a vector: the
        last axis; e.g. ``first_row = (a * H + h) * N`` for head (a, h) of an (L_a, H, N, E) file)."""
        row_bytes = self.array.itemsize * self.array.shape[-1]
        self._forget_bytes(self.offset + (first_row + rows.start) * row_bytes,
                           self.offset + (first_row + rows.stop) * row_bytes)

    def _forget_bytes(self, start: int, stop: int) -> None:
        if not hasattr(self._mmap, "madvise"):
            return
        page = mmap.PAGESIZE
        start, stop = start // page * page, min(len(self._mmap), -(-stop // page) * page)
        if stop > start:
            self._mmap.madvise(mmap.MADV_DONTNEED, start, stop - start)

    def release(self) -> None:
        """Hand back every page (the file is unmapped when the last array viewing it goes)."""
        self._forget_bytes(0, len(self._mmap))


def open_index_files(description: Mapping, root: Path, *, n_images: int, n_layers: int, n_heads: int,
                     manifest: Path) -> "HeadVectors":
    """The files the manifest's ``index`` entry (:func:`describe`) names, relative to ``root``, checked against it
    (shape, dtype, size, sampled digest) and against the manifest's image, layer and head counts; a file that
    disagrees is an InputError naming it and how to rebuild it."""
    files = description.get("files", {}) if isinstance(description, Mapping) else {}
    missing = [name for name in INDEX_FILES if name not in files]
    if missing or not isinstance(description.get("groups"), list):
        raise InputError(f"head-index manifest {manifest} names no {missing or 'groups'} of the index; "
                         f"{rebuild_hint(manifest)}")
    groups = [tuple((int(a), int(h)) for a, h in group) for group in description["groups"]]
    leading = {"search": (n_layers, n_heads, n_images), "exact": (n_layers, n_heads, n_images),
               "norms": (n_layers, n_heads, n_images), "group_search": (len(groups), n_images),
               "group_norms": (len(groups), n_images)}
    mapped, widths = {}, set()
    for name, (_, dtype) in INDEX_FILES.items():
        path, shape, offset = _checked_file(files[name], root, dtype, manifest)
        has_width = name in VECTOR_FILES
        if shape[:len(leading[name])] != leading[name] or len(shape) != len(leading[name]) + has_width:
            raise InputError(f"head index file {path} has shape {list(shape)}, but {manifest} describes "
                             f"{n_images} images x {n_layers} analysed layers x {n_heads} heads and {len(groups)} "
                             f"head groups; {rebuild_hint(path)}")
        widths |= {shape[-1]} if has_width else set()
        mapped[name] = MappedArray(path, shape, np.dtype(dtype), offset)
    if len(widths) != 1:
        raise InputError(f"the index files of {manifest} disagree on the embedding width ({sorted(widths)}); "
                         f"{rebuild_hint(manifest)}")
    norms, group_norms = (np.array(mapped.pop(name).array) for name in ("norms", "group_norms"))
    return HeadVectors(mapped["search"].array, mapped["exact"].array, norms, mapped=mapped,
                       group_search=mapped["group_search"].array, group_norms=group_norms, groups=groups)


def _checked_file(entry: Mapping, root: Path, dtype: str, manifest: Path) -> tuple[Path, tuple[int, ...], int]:
    """(path, shape, data offset) of one index file, checked against its manifest entry."""
    path = root / entry["path"]
    if not path.is_file():
        raise InputError(f"head index file {path} (named by {manifest}) is missing; {rebuild_hint(path)}")
    shape, found_dtype, offset = _npy_header(path)
    recorded = (tuple(entry["shape"]), str(entry["dtype"]))
    if (shape, str(found_dtype)) != recorded or str(found_dtype) != dtype:
        raise InputError(f"head index file {path} holds {found_dtype} {list(shape)} but {manifest} records "
                         f"{recorded[1]} {list(recorded[0])} (expected {dtype}); {rebuild_hint(path)}")
    if path.stat().st_size != entry["bytes"] or file_digest(path) != entry["digest"]:
        raise InputError(f"head index file {path} is not the one {manifest} describes (size or content "
                         f"differ: stale or replaced); {rebuild_hint(path)}")
    return path, shape, offset


# --------------------------------------------------------------------------- searching


def exact_scores(summed: np.ndarray, query: np.ndarray, similarity: str) -> np.ndarray:
    """The exact scores (float64) of rows ``summed`` (M, E) float64 against ``query`` (E,) float64 (see the
    module docstring); each row's score depends on that row only (a row-wise pairwise sum)."""
    dots = np.sum(summed * query, axis=1)
    if similarity == "dot":
        return dots
    lengths = np.sqrt(np.sum(summed * summed, axis=1)) * math.sqrt(float(np.sum(query * query)))
    out = np.zeros(len(summed))
    np.divide(dots, lengths, out=out, where=lengths > 0)
    return out


def ranked(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best ``(rows, scores)`` by score, ties to the lower row."""
    order = np.lexsort((rows, -scores))[:k]
    return rows[order].astype(np.int64), scores[order]


def check_similarity(similarity: str) -> str:
    if similarity not in SIMILARITIES:
        raise InputError(f"similarity {similarity!r} is not one of {', '.join(SIMILARITIES)}")
    return similarity


@dataclass
class HeadVectors:
    """Every image's contribution of every head of the analysed layers, head-major (see the module docstring):
    ``search`` (L_a, H, N, E) float16 (or float32 for an index in memory), ``exact`` the same in float32,
    ``norms`` (L_a, H, N) float32; ``group_search`` (G, N, E) and ``group_norms`` (G, N) the summed contributions of
    the head groups ``groups``. Heads are addressed by their position ``(a, h)``: a-th analysed layer, head h."""

    search: np.ndarray
    exact: np.ndarray
    norms: np.ndarray
    mapped: dict = field(default_factory=dict)
    group_search: np.ndarray | None = None
    group_norms: np.ndarray | None = None
    groups: list = field(default_factory=list)

    def __post_init__(self):
        self._group_rows = {frozenset(group): g for g, group in enumerate(self.groups)}

    @classmethod
    def in_memory(cls, head_major: np.ndarray) -> "HeadVectors":
        """An index held in memory: ``head_major`` (L_a, H, N, E) float32 is both the search and the exact copy
        (no head groups)."""
        values = head_major.astype(np.float32, copy=False)
        norms = np.sqrt(np.einsum("lhne,lhne->lhn", values, values, dtype=np.float64)).astype(np.float32)
        return cls(values, values, norms)

    @property
    def n_images(self) -> int:
        return self.exact.shape[2]

    @property
    def width(self) -> int:
        return self.exact.shape[3]

    def _forget(self, which: str, position: tuple[int, int], rows: slice) -> None:
        if which in self.mapped:
            self.mapped[which].forget((position[0] * self.exact.shape[1] + position[1]) * self.n_images, rows)

    def release(self) -> None:
        """Hand back the mapped files' pages; the files are unmapped, and an index in memory freed, when the last
        reference to these vectors goes (a search still running keeps them valid until it ends)."""
        for mapped in self.mapped.values():
            mapped.release()

    def _scanned(self, positions: Sequence[tuple[int, int]]) -> tuple[list, np.ndarray, int]:
        """What a scan over ``positions`` sums: ``(name, index, first row)`` of each (N, E) block (one, the group's,
        for a listed group), the sum of their rows' norms (N,) float64 and the block count."""
        group = self._group_rows.get(frozenset(positions)) if len(positions) > 1 else None
        if group is not None:
            return [("group_search", group, group * self.n_images)], self.group_norms[group].astype(np.float64), 1
        blocks = [("search", position, (position[0] * self.exact.shape[1] + position[1]) * self.n_images)
                  for position in positions]
        return blocks, sum(self.norms[position].astype(np.float64) for position in positions), len(positions)

    def approximate(self, positions: Sequence[tuple[int, int]], query: np.ndarray, similarity: str
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate scores ``s~`` (N,) and their error bounds ``e`` (N,) over every row (module docstring)."""
        n = self.n_images
        blocks, norm_sum, count = self._scanned(positions)
        query32 = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
        dots, lengths = np.empty(n, np.float32), np.empty(n, np.float32)
        buffer = torch.empty(min(n, CHUNK_ROWS), self.width)
        for rows in row_slices(n, CHUNK_ROWS):
            total = buffer[:rows.stop - rows.start]
            for j, (name, where, first_row) in enumerate(blocks):
                with warnings.catch_warnings():  # a read-only mapped file: never written
                    warnings.simplefilter("ignore", UserWarning)
                    part = torch.from_numpy(getattr(self, name)[where][rows])
                if j == 0:
                    total.copy_(part)
                else:
                    total.add_(part)
                if name in self.mapped:
                    self.mapped[name].forget(first_row, rows)
            dots[rows] = (total @ query32).numpy()
            lengths[rows] = torch.linalg.vector_norm(total, dim=1).numpy()
        query_norm = float(np.linalg.norm(query.astype(np.float64)))
        return self._bounded(norm_sum, count, blocks[0][0], dots, lengths, query_norm, similarity)

    def _bounded(self, norm_sum, count: int, name: str, dots, lengths, query_norm: float, similarity: str):
        rounded = getattr(self, name).dtype == np.float16
        relative, absolute = (FLOAT16_RELATIVE, FLOAT16_ABSOLUTE) if rounded else (0.0, 0.0)
        norm_sum = norm_sum * (1 + 4 * FLOAT32_UNIT)
        sum_error = (relative + _gamma(count)) * norm_sum + count * absolute * math.sqrt(self.width)
        bound = sum_error + _gamma(self.width) * (norm_sum + sum_error)
        if similarity == "dot":
            return dots.astype(np.float64), 2 * bound * query_norm
        lengths = lengths.astype(np.float64)
        trusted = lengths > 2 * bound
        scores, errors = np.zeros(len(dots)), np.full(len(dots), np.inf)
        np.divide(dots, lengths * query_norm, out=scores, where=trusted)
        np.divide(4 * bound, lengths, out=errors, where=trusted)
        zero = norm_sum == 0  # every head's contribution is 0: the exact score is 0
        scores[zero], errors[zero] = 0.0, 0.0
        return scores, errors

    def candidates(self, scores: np.ndarray, errors: np.ndarray, k: int) -> np.ndarray:
        """The rows (sorted) whose interval reaches the k-th largest lower bound, and the ``k + CANDIDATE_MARGIN``
        best approximate rows."""
        n = len(scores)
        if k >= n:
            return np.arange(n)
        lower = scores - errors
        threshold = np.partition(lower, n - k)[n - k]
        within = np.flatnonzero(scores + errors >= threshold)
        best = min(n, k + CANDIDATE_MARGIN)
        return np.union1d(within, np.argpartition(-scores, best - 1)[:best])

    def summed_rows(self, positions: Sequence[tuple[int, int]], rows: np.ndarray) -> np.ndarray:
        """``sum_{h in S} c_h(i)`` (M, E) float64 of ``rows`` from the exact copy."""
        total = np.zeros((len(rows), self.width))
        for position in positions:
            total += self.exact[position][rows]
            if len(rows):
                self._forget("exact", position, slice(int(rows[0]), int(rows[-1]) + 1))
        return total

    def top_k(self, positions: Sequence[tuple[int, int]], query, k: int, similarity: str = "cosine"
              ) -> tuple[np.ndarray, np.ndarray]:
        """The k rows (int64) with the largest exact scores of the summed heads ``positions`` against ``query``
        (E,), and those scores (float64), ties to the lower row (see the module docstring); k above N gives N."""
        check_similarity(similarity)
        query = np.asarray(query, dtype=np.float32)
        if not positions:
            raise InputError("a search needs at least one head")
        if query.shape != (self.width,):
            raise InputError(f"the query vector has shape {list(query.shape)}, expected [{self.width}]")
        if not np.any(query):
            return ranked(np.arange(self.n_images), np.zeros(self.n_images), k)
        scores, errors = self.approximate(positions, query, similarity)
        rows = self.candidates(scores, errors, k)
        return ranked(rows, exact_scores(self.summed_rows(positions, rows), query.astype(np.float64), similarity), k)

    def brute_force_top_k(self, positions: Sequence[tuple[int, int]], query, k: int, similarity: str = "cosine"
                          ) -> tuple[np.ndarray, np.ndarray]:
        """The same search scoring every row exactly, chunk by chunk (the reference that :meth:`top_k` equals)."""
        query = np.asarray(query, dtype=np.float32).astype(np.float64)
        check_similarity(similarity)
        scores = np.concatenate([exact_scores(self.summed_rows(positions, np.arange(rows.start, rows.stop)), query,
                                              similarity) for rows in row_slices(self.n_images, CHUNK_ROWS)])
        return ranked(np.arange(self.n_images), scores, k)
