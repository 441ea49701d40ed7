"""The head index: what the explorer and the analyses read, described by a manifest the workflow writes.

The manifest ``results/heads/{model}/explorer.json`` (:data:`MANIFEST_FORMAT`) is a JSON object:

``format``
    ``"clip_interp.heads.explorer/1"``.
``model``
    the model id (the config's key under ``models``); ``spec`` its config entry (for
    :func:`clip_interp.models.load_model`).
``root``
    the workflow's working directory, relative to the manifest's folder (``"../../.."``); every path
    below, the image paths of the image table and the relative paths of ``spec`` are relative to it,
    so a results folder can move with its workflow folder and the same run writes the same bytes.
``image_set``
    the decomposition image set indexed (``classification``); ``store`` its decomposition store (HDF5,
    :class:`~clip_interp.contribution_store.DecompositionStore`), ``images`` its image table (``key, path,
    label``; rows in store order).
``textspan``
    the decomposition study's TEXTSPAN table; ``labels`` ``{labeller: label table}``;
    ``default_labeller``; ``scores`` the model's score table.
``layers``
    the analysed layers (1..L, as everywhere in the package); ``n_layers``, ``n_heads``, ``n_images``.
``convention``
    the store's decomposition convention, which the query image's decomposition follows.
``property_groups`` (optional)
    ``{name: table}`` of hand-curated property groups (``property, layer, paper_layer, head``; layers 1..L), e.g.
    ``app``: the CLIP-InterpreT app's groups (``property_heads.tsv``) of a model it covers.
``index`` (written by the workflow; optional)
    the index files beside the manifest (:mod:`clip_interp.heads.vectors`): ``layout``, ``layers``, ``groups``
    (the head groups whose sums are held) and, per file (``search`` float16, ``exact`` float32, ``norms``,
    ``group_search``, ``group_norms``), its ``path``, ``dtype``, ``shape``, ``bytes`` and a sampled ``digest``,
    checked when the index is opened.

:class:`HeadIndex` holds, for every image of the set, the contributions of every head of the analysed
layers in the joint space (:class:`~clip_interp.heads.vectors.HeadVectors`: memory-mapped from the index files
when the manifest names them, otherwise read from the store into memory in float32) and their norms, the label
tables, the TEXTSPAN table and the image table. The model is loaded the first time :meth:`HeadIndex.model` is
called, once. Searches go through :meth:`HeadIndex.top_k`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch

from ..errors import InputError
from .vectors import HeadVectors, open_index_files, store_batches

MANIFEST_FORMAT = "clip_interp.heads.explorer/1"
MANIFEST_KEYS = ("format", "model", "spec", "root", "image_set", "store", "images", "textspan", "labels",
                 "default_labeller", "scores", "layers", "n_layers", "n_heads", "n_images",
                 "convention")
SPEC_PATH_KEYS = ("config", "path")


def manifest_path(results_dir, model: str) -> Path:
    return Path(results_dir) / "heads" / model / "explorer.json"


def build_manifest(*, model: str, spec: Mapping, image_set: str, store, images, textspan, labels: Mapping[str, str],
                   scores, layers, n_layers: int, n_heads: int, n_images: int, convention: str,
                   default_labeller: str = "taxonomy", root: str = "../../..",
                   property_groups: Mapping[str, str] | None = None, index: Mapping | None = None) -> dict:
    """The manifest as a dict (paths as given: relative to the workflow's working directory); ``index`` the index
    files' description (:func:`clip_interp.heads.vectors.describe`), if written."""
    if default_labeller not in labels:
        raise InputError(f"default labeller {default_labeller!r} has no label table (tables: {sorted(labels)})")
    extra = {} if index is None else {"index": dict(index)}
    return {"format": MANIFEST_FORMAT, "model": model, "spec": dict(spec), "root": root, "image_set": image_set,
            "store": str(store), "images": str(images), "textspan": str(textspan),
            "labels": {name: str(path) for name, path in sorted(labels.items())},
            "default_labeller": default_labeller, "scores": str(scores), "layers": [int(x) for x in layers],
            "n_layers": int(n_layers), "n_heads": int(n_heads), "n_images": int(n_images),
            "convention": convention,
            "property_groups": {name: str(path) for name, path in sorted((property_groups or {}).items())},
            **extra}


def read_manifest(path) -> dict:
    """The manifest at ``path``, checked: format and keys; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no head index at {path}: run the heads study for this model first "
                         "(snakemake ... with `heads` in `studies`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise InputError(f"head-index manifest {path} is not valid JSON ({error}); re-run its rule") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise InputError(f"head-index manifest {path} has format {found!r}, expected {MANIFEST_FORMAT!r}; "
                         "re-run its rule")
    missing = [key for key in MANIFEST_KEYS if key not in manifest]
    if missing:
        raise InputError(f"head-index manifest {path} lacks {missing}; re-run its rule")
    return manifest


def read_head_vectors(store_path, layers, *, batch_size: int = 1024) -> tuple[HeadVectors, int, int]:
    """The heads' contributions of ``layers`` (1..L) to every image of a decomposition store, held in memory in
    float32 (:meth:`HeadVectors.in_memory`), with the store's layer and head counts."""
    n, n_layers, n_heads, width, batches = store_batches(store_path, layers, batch_size)
    values = np.empty((len(layers), n_heads, n, width), dtype=np.float32)
    for rows, batch in batches:
        values[:, :, rows] = batch.transpose(1, 2, 0, 3)
    return HeadVectors.in_memory(values), n_layers, n_heads


@dataclass
class HeadIndex:
    """The index of one model (see the module docstring); build it with :meth:`open`."""

    model_id: str
    spec: dict
    root: Path
    layers: list[int]
    n_layers: int
    n_heads: int
    vectors: HeadVectors
    images: pd.DataFrame
    textspan: pd.DataFrame
    labels: dict[str, pd.DataFrame]
    default_labeller: str
    scores: pd.DataFrame | None
    manifest: dict = field(default_factory=dict)
    property_groups: dict[str, pd.DataFrame] = field(default_factory=dict)
    device: str = "cpu"
    _model: object = None
    _cache: dict = field(default_factory=dict)

    @classmethod
    def open(cls, results_dir, model: str, *, device: str = "cpu", loaded_model=None) -> "HeadIndex":
        """Open ``results_dir/heads/{model}/explorer.json`` and everything it names: the index files memory-mapped
        when the manifest names them (else the store's contributions read into memory), the tables read.

        ``loaded_model``: a model already loaded (tests); otherwise :meth:`model` loads the manifest's spec.
        """
        return cls.from_manifest(manifest_path(results_dir, model), device=device, loaded_model=loaded_model)

    @classmethod
    def from_manifest(cls, path, *, device: str = "cpu", loaded_model=None) -> "HeadIndex":
        """The index that the manifest at ``path`` describes (see :meth:`open`)."""
        path = Path(path)
        manifest = read_manifest(path)
        root = (path.parent / manifest["root"]).resolve()
        if "index" in manifest:
            n_layers, n_heads = int(manifest["n_layers"]), int(manifest["n_heads"])
            vectors = open_index_files(manifest["index"], root, n_images=int(manifest["n_images"]),
                                       n_layers=len(manifest["layers"]), n_heads=n_heads, manifest=path)
        else:
            vectors, n_layers, n_heads = read_head_vectors(root / manifest["store"], manifest["layers"])
        images = _read_table(root / manifest["images"], "image table")
        if len(images) != vectors.n_images:
            raise InputError(f"image table {root / manifest['images']} has {len(images)} rows but the index "
                             f"{vectors.n_images}; re-run the heads rules")
        images = images.assign(path=[str(root / p) for p in images["path"]])
        labels = {name: _read_table(root / p, f"{name} label table") for name, p in manifest["labels"].items()}
        scores_path = root / manifest["scores"]
        scores = _read_table(scores_path, "score table") if scores_path.is_file() else None
        index = cls(model_id=manifest["model"], spec=_resolve_spec(manifest["spec"], root), root=root,
                    layers=[int(x) for x in manifest["layers"]], n_layers=n_layers, n_heads=n_heads, vectors=vectors,
                    images=images.reset_index(drop=True),
                    textspan=_read_table(root / manifest["textspan"], "TEXTSPAN table"), labels=labels,
                    default_labeller=manifest["default_labeller"], scores=scores, manifest=manifest, device=device)
        index.property_groups = {name: _read_table(root / p, f"{name} property-group table")
                                 for name, p in manifest.get("property_groups", {}).items()}
        index._model = loaded_model
        return index

    @property
    def n(self) -> int:
        return self.vectors.n_images

    @property
    def contributions(self) -> np.ndarray:
        """Every indexed image's contributions (N, L_a, H, E) float32 (a view of the exact copy; no read)."""
        return self.vectors.exact.transpose(2, 0, 1, 3)

    @property
    def norms(self) -> np.ndarray:
        """Their Euclidean norms (N, L_a, H) float32."""
        return self.vectors.norms.transpose(2, 0, 1)

    def release(self) -> None:
        """Give the index's memory back: its files' pages and its caches now, the rest (mapping, loaded model) when
        the last reference to the index goes."""
        self.vectors.release()
        self._cache.clear()

    def model(self):
        """The hooked model of the manifest's spec, loaded on the first call only."""
        if self._model is None:
            from ..models import load_model

            self._model = load_model(self.spec, self.device)
        return self._model

    def label_table(self, labeller: str | None = None) -> pd.DataFrame:
        name = labeller or self.default_labeller
        if name not in self.labels:
            raise InputError(f"labeller {name!r} has no labels for model {self.model_id}; "
                             f"choose from {sorted(self.labels)}")
        return self.labels[name]

    def properties(self, labeller: str | None = None) -> list[str]:
        """The properties that label at least one head, sorted."""
        return sorted(set(self.label_table(labeller)["label"]))

    def head_label(self, layer: int, head: int, labeller: str | None = None) -> str | None:
        table = self.label_table(labeller)
        match = table[(table["layer"] == layer) & (table["head"] == head)]
        return None if match.empty else str(match["label"].iloc[0])

    def layer_column(self, layer: int) -> int:
        """The position of ``layer`` (1..L) among the analysed layers; an InputError naming it otherwise."""
        if layer not in self.layers:
            raise InputError(f"layer {layer} is not indexed for model {self.model_id}; "
                             f"the analysed layers are {self.layers} (numbered 1..{self.n_layers})")
        return self.layers.index(layer)

    def check_head(self, layer: int, head: int, *, indexed: bool = True) -> None:
        """An InputError unless (layer, head) exists (and, with ``indexed``, lies in an analysed layer)."""
        if not isinstance(layer, (int, np.integer)) or not 1 <= layer <= self.n_layers:
            raise InputError(f"layer {layer!r} is outside model {self.model_id}: layers are 1..{self.n_layers}")
        if not isinstance(head, (int, np.integer)) or not 0 <= head < self.n_heads:
            raise InputError(f"head {head!r} is outside model {self.model_id}: heads are 0..{self.n_heads - 1}")
        if indexed:
            self.layer_column(layer)

    def head_matrix(self, layer: int, head: int) -> torch.Tensor:
        """The contributions (N, E) of head (layer, head) to every indexed image, float32 (a copy)."""
        self.check_head(layer, head)
        return torch.from_numpy(np.array(self.vectors.exact[self.layer_column(layer), head], dtype=np.float32))

    def head_norms(self, layer: int, head: int) -> torch.Tensor:
        return torch.from_numpy(self.vectors.norms[self.layer_column(layer), head].copy())

    def top_k(self, heads, query, k: int, similarity: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
        """The k rows of the image set whose contributions summed over ``heads`` ((layer, head) pairs, layers
        1..L) score highest against ``query`` (E,), by ``similarity`` (``cosine`` or ``dot``), and their scores,
        ties to the lower row: :meth:`clip_interp.heads.vectors.HeadVectors.top_k` (exact scores, float64 from the
        float32 values). ``dot`` against the group's mean contribution (the app's score) is the ``dot`` score over
        ``len(heads)``: the same ranking."""
        for layer, head in heads:
            self.check_head(layer, head)
        positions = [(self.layer_column(layer), head) for layer, head in heads]
        query = query.numpy() if isinstance(query, torch.Tensor) else np.asarray(query)
        return self.vectors.top_k(positions, query, k, similarity)

    def cached(self, key: tuple, compute, keep: int | None = None):
        """``compute()`` once per ``key`` (text embeddings and the like); with ``keep``, only the ``keep`` latest
        entries of the kind ``key[0]`` are kept."""
        if key not in self._cache:
            self._cache[key] = compute()
            if keep is not None:
                kind = [other for other in self._cache if other[0] == key[0]]
                for other in kind[:max(0, len(kind) - keep)]:
                    del self._cache[other]
        return self._cache[key]


def _read_table(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"{what} {path} is missing; re-run the heads rules for this model")
    return pd.read_parquet(path)


def _resolve_spec(spec: Mapping, root: Path) -> dict:
    """The model entry with its relative local files resolved against the workflow's working directory."""
    resolved = dict(spec)
    for key in SPEC_PATH_KEYS:
        value = resolved.get(key)
        if value and not Path(value).is_absolute() and (root / value).exists():
            resolved[key] = str(root / value)
    return resolved
