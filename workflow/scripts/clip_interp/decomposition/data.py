"""Readers of the study's data: ImageNet validation, image folders, ImageNet-segmentation, Waterbirds, description
pools.

Every reader fails early with an :class:`~clip_interp.errors.InputError` that names the file or
folder and the fix; images that cannot be read are counted, reported and skipped, never dropped
silently.

- ImageNet validation (local only): either the class-folder layout (one folder per class, named by
  WordNet id; the sorted order of the folder names is the class index) or a flat folder plus a
  labels file with one ``<file name> <class index>`` or ``<file name> <WordNet id>`` pair per line
  (0-based indices in the sorted WordNet-id order, as open_clip's class names are; a file by WordNet id
  names all 1000 ids), or Kaggle's ``LOC_val_solution.csv``. The devkit's
  ``ILSVRC2012_validation_ground_truth.txt`` (class numbers without file names, in another order) is
  refused with a message saying how to convert it.
- Any folder of images: an unlabelled set (TEXTSPAN, neighbours).
- ImageNet-segmentation ``gtsegs_ijcv.mat`` (MATLAB v7.3, i.e. HDF5): ``/value/img`` and
  ``/value/gt`` are (N, 1) arrays of object references; an image dereferences to a (3, W, H) uint8
  array, transposed here to (H, W, 3); a ground truth to a reference array whose [0, 0] element
  dereferences to a (W, H) mask, transposed to (H, W).
- Waterbirds ``metadata.csv``: ``img_filename``, ``y`` (0 landbird, 1 waterbird), ``split``
  (0/1/2 = train/val/test) and ``place`` (0 land, 1 water); the tarball is extracted by
  :func:`extract_waterbirds` (this module imports no torch, so the data environment runs it).
- Description pools: one description per line (``text_descriptions/*.txt``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from ..errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
WATERBIRDS_COLUMNS = ("img_filename", "y", "split", "place")
SPLITS = {"train": 0, "val": 1, "test": 2}


@dataclass
class ImageSet:
    """Readable images in a fixed order: ``paths``, ``keys`` (paths relative to the root), optional ``labels``,
    and ``skipped``: ``(path, reason)`` of every image that could not be read."""

    root: Path
    paths: list[Path]
    keys: list[str]
    labels: list[int] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def report(self) -> dict:
        return {"root": str(self.root), "images": len(self.paths), "skipped": len(self.skipped),
                "skipped_examples": [{"path": p, "reason": r} for p, r in self.skipped[:20]]}


def _require_folder(folder, what: str, fix: str) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{what} folder {folder} does not exist or is not a folder; {fix}")
    return folder


def unreadable_reason(path: Path) -> str | None:
    """None when PIL can open and verify the image, else the reason it cannot."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as exc:  # PIL raises many types for corrupt files
        return f"{type(exc).__name__}: {exc}"
    return None


def _image_files(folder: Path, recursive: bool) -> list[Path]:
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _keep_readable(root: Path, files: Sequence[Path], labels: Sequence[int] | None) -> ImageSet:
    paths, keys, kept_labels, skipped = [], [], [], []
    for i, path in enumerate(files):
        reason = unreadable_reason(path)
        if reason is not None:
            skipped.append((str(path), reason))
            continue
        paths.append(path)
        keys.append(path.relative_to(root).as_posix())
        if labels is not None:
            kept_labels.append(int(labels[i]))
    if not paths:
        raise InputError(f"no readable images in {root} ({len(skipped)} unreadable, e.g. {skipped[:2]}); "
                         "check the folder given in the config's sources")
    return ImageSet(root, paths, keys, kept_labels if labels is not None else None, skipped)


def scan_image_folder(folder, *, recursive: bool = True) -> ImageSet:
    """Every readable image under ``folder`` (sorted by path), unlabelled; unreadable ones are in ``skipped``."""
    root = _require_folder(folder, "image", "fix the image folder's path in the config's sources")
    files = _image_files(root, recursive)
    if not files:
        raise InputError(f"image folder {root} holds no files ending in {IMAGE_SUFFIXES}; "
                         "point the config at a folder of images")
    return _keep_readable(root, files, None)


def read_imagenet_val(folder, labels_file=None, *, n_classes: int = 1000) -> ImageSet:
    """ImageNet validation images with class indices (layouts in the module docstring)."""
    root = _require_folder(folder, "ImageNet validation", "give the local folder of the validation images "
                           "(ImageNet cannot be downloaded without an account)")
    if labels_file is not None:
        return _imagenet_flat(root, Path(labels_file), n_classes)
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if len(classes) != n_classes:
        raise InputError(f"ImageNet validation folder {root} has {len(classes)} class folders, not {n_classes}; "
                         "use the class-folder layout (one folder per WordNet id) "
                         "or give a labels file for a flat folder")
    files, labels = [], []
    for index, class_folder in enumerate(classes):
        for path in _image_files(class_folder, recursive=False):
            files.append(path)
            labels.append(index)
    if not files:
        raise InputError(f"the class folders of {root} hold no images")
    return _keep_readable(root, files, labels)


WORDNET_ID = re.compile(r"n\d{8}")


def _labels_file_pairs(labels_file: Path) -> list[tuple[int, str, str]]:
    """(line number, image name, class token) of each non-empty line of a labels file: ``<file name> <class>``
    lines, or Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``, whose first token is the class)."""
    lines = labels_file.read_text().splitlines()
    csv_layout = bool(lines) and lines[0].replace(" ", "").lower() == "imageid,predictionstring"
    pairs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or (csv_layout and number == 1):
            continue
        fields = line.replace(",", " ", 1).split() if csv_layout else line.split()
        if len(fields) == 1 and fields[0].isdigit():
            raise InputError(f"{labels_file} line {number}: {line!r} is a class number without a file name, as in "
                             "the devkit's ILSVRC2012_validation_ground_truth.txt, whose numbering is not the sorted "
                             "WordNet-id order; give '<file name> <class index>' or '<file name> <WordNet id>' lines "
                             "(or Kaggle's LOC_val_solution.csv)")
        if len(fields) < 2 or (not csv_layout and len(fields) != 2):
            raise InputError(f"{labels_file} line {number}: {line!r} is not '<file name> <class index or WordNet id>'")
        pairs.append((number, fields[0], fields[1]))
    return pairs


def _class_indices(pairs, labels_file: Path, n_classes: int) -> dict[str, int]:
    """Image name -> 0-based class index in the sorted WordNet-id order. A labels file by WordNet id must name
    all ``n_classes`` ids, because a WordNet id's index is its rank among all of them."""
    wordnet_ids = sorted({token for _, _, token in pairs if WORDNET_ID.fullmatch(token)})
    if wordnet_ids and len(wordnet_ids) != n_classes:
        raise InputError(f"{labels_file} names {len(wordnet_ids)} WordNet ids, not {n_classes}: a WordNet id's class "
                         "index is its rank among all of them, so give the labels of the whole validation set, or "
                         "'<file name> <class index>' lines for a subset")
    rank = {wnid: index for index, wnid in enumerate(wordnet_ids)}
    labels: dict[str, int] = {}
    for number, name, token in pairs:
        if token in rank:
            labels[name] = rank[token]
            continue
        if not token.lstrip("-").isdigit():
            raise InputError(f"{labels_file} line {number}: class {token!r} is neither a class index nor a WordNet id")
        index = int(token)
        if not 0 <= index < n_classes:
            raise InputError(f"{labels_file} line {number}: class index {index} is outside 0..{n_classes - 1}")
        labels[name] = index
    return labels


def _imagenet_flat(root: Path, labels_file: Path, n_classes: int) -> ImageSet:
    if not labels_file.is_file():
        raise InputError(f"ImageNet labels file {labels_file} does not exist; "
                         "give a file of '<file name> <class index>' lines")
    labels = _class_indices(_labels_file_pairs(labels_file), labels_file, n_classes)
    files = _image_files(root, recursive=False)
    by_stem = all(Path(name).suffix == "" for name in labels)
    names = {p: (p.stem if by_stem else p.name) for p in files}
    unlabelled = [p.name for p in files if names[p] not in labels]
    if unlabelled:
        raise InputError(f"{len(unlabelled)} images of {root} have no line in {labels_file}, e.g. {unlabelled[:3]}; "
                         "complete the labels file or remove the images")
    missing = sorted(set(labels) - set(names.values()))
    if missing:
        raise InputError(f"{len(missing)} files listed in {labels_file} are not in {root}, e.g. {missing[:3]}; "
                         "point the config at the complete folder or trim the labels file")
    return _keep_readable(root, files, [labels[names[p]] for p in files])


class ImageNetSegmentation:
    """``gtsegs_ijcv.mat`` read lazily: ``len``, ``item(i) -> (image (H, W, 3) uint8, mask (H, W) bool)``."""

    def __init__(self, path):
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"ImageNet-segmentation file {self.path} does not exist; fetch gtsegs_ijcv.mat "
                             "through the config's sources")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise InputError(f"{self.path} is not an HDF5 (MATLAB v7.3) file ({exc}); use the original "
                             "gtsegs_ijcv.mat or re-save it with save(..., '-v7.3')") from exc
        missing = [name for name in ("value/img", "value/gt") if name not in self._file]
        if missing:
            self._file.close()
            raise InputError(f"{self.path} lacks the datasets {missing}; this is not ImageNet-segmentation's "
                             "gtsegs_ijcv.mat (expected /value/img and /value/gt)")
        self._images, self._masks = self._file["value/img"], self._file["value/gt"]
        if self._images.shape != self._masks.shape or self._images.ndim != 2 or self._images.shape[1] != 1:
            shapes = (self._images.shape, self._masks.shape)
            self._file.close()
            raise InputError(f"{self.path}: /value/img and /value/gt must both be (N, 1) reference arrays, "
                             f"got {shapes}")

    def __len__(self) -> int:
        return int(self._images.shape[0])

    def item(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image = np.asarray(self._file[self._images[index, 0]])
        if image.ndim != 3 or image.shape[0] != 3:
            raise InputError(f"{self.path}: image {index} has shape {image.shape}, not (3, W, H)")
        reference = self._file[self._masks[index, 0]]
        mask = np.asarray(self._file[reference[0, 0]])
        if mask.shape != image.shape[1:]:
            raise InputError(f"{self.path}: mask {index} has shape {mask.shape}, its image (3, W, H) = {image.shape}")
        return np.ascontiguousarray(image.transpose(2, 1, 0)).astype(np.uint8), np.ascontiguousarray(mask.T) > 0

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(len(self)):
            yield self.item(i)

    def close(self) -> None:
        self._file.close()


def read_waterbirds(folder, *, split: str = "test") -> pd.DataFrame:
    """The rows of Waterbirds' ``metadata.csv`` in ``split`` with an ``image_path`` column, checked.

    Image files that are missing are an error naming them (an incomplete extraction).
    """
    root = _require_folder(folder, "Waterbirds",
                           "extract waterbird_complete95_forest2water2.tar.gz and give its folder")
    metadata = root / "metadata.csv"
    if not metadata.is_file():
        raise InputError(f"Waterbirds folder {root} has no metadata.csv; give the extracted dataset's top folder")
    if split not in SPLITS:
        raise InputError(f"unknown Waterbirds split {split!r}; choose from {sorted(SPLITS)}")
    table = pd.read_csv(metadata)
    missing = [c for c in WATERBIRDS_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{metadata} lacks the columns {missing} (has {list(table.columns)}); "
                         f"a Waterbirds metadata file has {list(WATERBIRDS_COLUMNS)}")
    for column, allowed in (("y", {0, 1}), ("place", {0, 1}), ("split", {0, 1, 2})):
        bad = sorted({v.item() if hasattr(v, "item") else v for v in table[column].unique()} - allowed, key=str)
        if bad:
            raise InputError(f"{metadata}: column {column!r} has values {bad[:5]} outside {sorted(allowed)}")
    rows = table[table["split"] == SPLITS[split]].reset_index(drop=True)
    if rows.empty:
        raise InputError(f"{metadata} has no rows in the {split} split (split == {SPLITS[split]})")
    rows["image_path"] = [str(root / name) for name in rows["img_filename"]]
    absent = [p for p in rows["image_path"] if not Path(p).is_file()]
    if absent:
        raise InputError(f"{len(absent)} Waterbirds images listed in {metadata} are missing, e.g. {absent[:3]}; "
                         "re-extract the archive")
    return rows[["img_filename", "image_path", "y", "place", "split"]]


@dataclass
class DescriptionPool:
    """Descriptions in file order; ``blank_lines`` counts the empty lines skipped, ``duplicates`` the repeats kept."""

    path: Path
    texts: list[str]
    blank_lines: int
    duplicates: int


def read_description_pool(path) -> DescriptionPool:
    """One description per line; blank lines are skipped and counted."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"description pool {path} does not exist; fix the path in the config "
                         "(e.g. text_descriptions/image_descriptions_general.txt)")
    lines = path.read_text(encoding="utf-8").splitlines()
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise InputError(f"description pool {path} has no descriptions; give a file with one description per line")
    return DescriptionPool(path, texts, len(lines) - len(texts), len(texts) - len(set(texts)))


def extract_waterbirds(archive, out_dir) -> Path:
    """Extract the Waterbirds tarball into ``out_dir`` (via a temporary folder renamed when complete) and return
    the folder that holds ``metadata.csv``. Members that would land outside ``out_dir`` are refused."""
    import os
    import shutil
    import tarfile
    import tempfile

    archive, out = Path(archive), Path(out_dir)
    if not archive.is_file():
        raise InputError(f"Waterbirds archive {archive} does not exist; fix `decomposition.sources.waterbirds`")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise InputError(f"{archive} is not a readable tar archive ({exc}); give "
                             "waterbird_complete95_forest2water2.tar.gz or its extracted folder") from exc
        found = sorted(tmp.rglob("metadata.csv"))
        if not found:
            raise InputError(f"{archive} holds no metadata.csv; it is not the Waterbirds dataset")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / found[0].parent.relative_to(tmp)


def waterbirds_root(folder) -> Path:
    """The folder holding ``metadata.csv``: ``folder`` itself or its one sub-folder that has it."""
    folder = Path(folder)
    if (folder / "metadata.csv").is_file():
        return folder
    found = sorted(folder.glob("*/metadata.csv"))
    return found[0].parent if len(found) == 1 else folder
