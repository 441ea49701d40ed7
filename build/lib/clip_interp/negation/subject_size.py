"""Relative size of the subject an existence instance names, from CLIPSeg or from true masks.

Sizes are defined only where the negation is in the **foil**: the foil then denies a
subject the image shows ("There are no dogs." for an image of dogs), so the subject is
present and its image area is meaningful. Per instance, with ``subject`` the text of the
negated sentence's noun chunk after "no" (:func:`clip_interp.positions.find_negator`,
"dogs" in "There are no dogs."):

* **CLIPSeg source** — ``p = sigmoid(CLIPSeg logits)`` for the image and the prompt
  ``subject`` at CLIPSeg's output resolution; ``relative_size = mean(p)`` over all pixels
  and ``binary_size`` = share of pixels with ``p > threshold``.
* **mask source** (synthetic benchmark) — the true binary mask of the subject
  (pixel value > 127 of the greyscale mask image); ``relative_size = binary_size`` = share
  of subject pixels. Where masks exist, ``true_relative_size`` holds this share in
  either source, so CLIPSeg's estimate can be checked against it.

Instances with the negation in the caption, or whose subject text is empty (or whose
negated sentence has no negator), get NaN sizes; their number is reported, never dropped.
The subject is parsed from the prepared dataset's ``negated`` sentence, so sizes do not
depend on the CLIP model under study.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from ..errors import InputError
from ..images import open_image
from .positions import find_negator

SOURCES = ("clipseg", "mask")
STATUS_SIZED = "sized"
STATUS_NEGATION_IN_CAPTION = "negation_in_caption"
STATUS_EMPTY_SUBJECT = "empty_subject"
STATUS_NO_NEGATOR = "no_negator"
MASK_LEVEL = 127
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def negated_subjects(sentences: Sequence[str], nlp) -> tuple[list[str], list[str]]:
    """The subject text of each negated sentence and a status per sentence.

    Status is ``"sized"`` when a subject was found, ``"empty_subject"`` when the noun chunk
    is "no" alone, ``"no_negator"`` when the sentence has no word "no" (subject "").
    """
    subjects, status = [], []
    for doc in nlp.pipe([str(s) for s in sentences]):
        try:
            _, subject, _ = find_negator(doc)
        except InputError:
            subjects.append("")
            status.append(STATUS_NO_NEGATOR)
            continue
        subject = subject.strip()
        subjects.append(subject)
        status.append(STATUS_SIZED if subject else STATUS_EMPTY_SUBJECT)
    return subjects, status


def mask_share(mask_path: str | Path) -> float:
    """Share of pixels of the greyscale mask image at ``mask_path`` whose value exceeds 127."""
    path = Path(mask_path)
    if not path.is_file():
        raise InputError(f"subject mask {path} does not exist; regenerate the synthetic benchmark "
                         "(rule generate_synthetic_benchmark) or use negation.subject_size.source: clipseg")
    with Image.open(path) as image:
        mask = np.asarray(image.convert("L")) > MASK_LEVEL
    return float(mask.mean())


def true_sizes(keys: Sequence[str], valse_json: str | Path, masks_dir: str | Path) -> np.ndarray:
    """The true relative size (:func:`mask_share`) of each key's subject mask.

    The mask of key ``k`` is ``masks_dir / entry["mask_file"]`` of entry ``k`` of the
    VALSE-format file ``valse_json``. Where the entry also gives ``relative_size``, the two
    must agree to 1e-6 (else the masks and the json come from different runs).
    """
    path = Path(valse_json)
    if not path.is_file():
        raise InputError(f"benchmark file {path} does not exist; it is needed for the subject masks")
    entries = json.loads(path.read_text())
    out = np.empty(len(keys))
    for i, key in enumerate(keys):
        entry = entries.get(key)
        if entry is None:
            raise InputError(f"instance {key!r} is not in {path}; the dataset and the benchmark file disagree, "
                             "re-run prepare_valse")
        if not entry.get("mask_file"):
            raise InputError(f"entry {key!r} of {path} has no 'mask_file'; only the synthetic benchmark has "
                             "subject masks, so set negation.subject_size.source: clipseg")
        out[i] = mask_share(Path(masks_dir) / entry["mask_file"])
        stated = entry.get("relative_size")
        if stated is not None and abs(float(stated) - out[i]) > 1e-6:
            raise InputError(f"entry {key!r} of {path}: relative_size {stated} differs from the share "
                             f"{out[i]:.6f} of its mask {entry['mask_file']}; regenerate the synthetic benchmark")
    return out


def is_local_path(model: str) -> bool:
    """Whether ``model`` names a local folder rather than a Hugging Face hub id ("owner/name")."""
    text = str(model)
    return (Path(text).exists() or text.startswith((".", "/", "~")) or "\\" in text or text.endswith("/")
            or not _HUB_ID.match(text))


def load_clipseg(model: str | Path, device: torch.device | str = "cpu"):
    """CLIPSeg processor and model from a local ``save_pretrained`` folder or a hub id.

    Raises InputError naming the folder when a local path is missing or lacks the files,
    and when a hub id cannot be loaded (no network, wrong id).
    """
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    text = str(model)
    if is_local_path(text):
        folder = Path(text).expanduser()
        if not folder.is_dir():
            raise InputError(f"CLIPSeg model folder {folder} does not exist; set negation.subject_size.clipseg_model "
                             "to a folder saved with save_pretrained (model and processor) or to a hub id such "
                             "as CIDAS/clipseg-rd64-refined")
        if not (folder / "config.json").is_file():
            raise InputError(f"CLIPSeg model folder {folder} has no config.json; save the model and its processor "
                             "there with save_pretrained")
        text = str(folder)
    try:
        processor = CLIPSegProcessor.from_pretrained(text)
        segmenter = CLIPSegForImageSegmentation.from_pretrained(text)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load CLIPSeg model {text!r} (negation.subject_size.clipseg_model): {exc}. "
                         "Give a hub id reachable from this machine or a local folder saved with "
                         "save_pretrained") from exc
    return processor, segmenter.to(device).eval()


@torch.no_grad()
def clipseg_sizes(processor, segmenter, image_paths: Sequence[str | Path], prompts: Sequence[str],
                  keys: Sequence[str] | None = None, *, threshold: float, batch_size: int = 16,
                  progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(relative_size, binary_size)`` per (image, prompt) pair, as defined in the module docstring.

    An unreadable image stops the run with an InputError naming the file and its instance key
    (``keys``, one per image).
    """
    if len(image_paths) != len(prompts):
        raise ValueError(f"{len(image_paths)} images but {len(prompts)} prompts")
    keys = list(keys) if keys is not None else [None] * len(image_paths)
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"negation.subject_size.threshold is {threshold}; give a probability in [0, 1]")
    device = next(segmenter.parameters()).device
    relative = np.empty(len(prompts))
    binary = np.empty(len(prompts))
    starts = range(0, len(prompts), max(1, int(batch_size)))
    for start in tqdm(starts, desc="CLIPSeg", disable=not progress):
        stop = min(start + max(1, int(batch_size)), len(prompts))
        images = [open_image(path, key) for path, key in zip(image_paths[start:stop], keys[start:stop])]
        inputs = processor(text=list(prompts[start:stop]), images=images, padding=True, return_tensors="pt")
        logits = segmenter(**{k: v.to(device) for k, v in inputs.items()}).logits
        probs = torch.sigmoid(logits.float()).reshape(stop - start, -1)
        relative[start:stop] = probs.mean(1).cpu().numpy()
        binary[start:stop] = (probs > threshold).float().mean(1).cpu().numpy()
    return relative, binary


def subject_size_table(dataset: pd.DataFrame, nlp, *, source: str, threshold: float,
                       clipseg: Callable[[list[str], list[str]], tuple[np.ndarray, np.ndarray]] | None = None,
                       images_dir: str | Path | None = None, valse_json: str | Path | None = None,
                       masks_dir: str | Path | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per dataset instance: key, negation, image_file, subject, status, relative_size,
    binary_size, true_relative_size, source; and the counts for the metadata.

    ``clipseg(image_paths, prompts, keys)`` returns the CLIPSeg sizes (source ``clipseg``);
    ``valse_json`` and ``masks_dir`` give the true masks (required for source ``mask``,
    optional otherwise). Sizes are NaN unless status is ``"sized"``.
    """
    if source not in SOURCES:
        raise InputError(f"negation.subject_size.source is {source!r}; use one of {list(SOURCES)}")
    missing = [c for c in ("key", "negation", "negated", "image_file") if c not in dataset.columns]
    if missing:
        raise InputError(f"the prepared dataset lacks columns {missing}; re-run prepare_valse")
    bad_side = sorted(set(dataset["negation"]) - {"caption", "foil"})
    if bad_side:
        raise InputError(f"column 'negation' of the prepared dataset holds {bad_side}; expected 'caption' or 'foil'")
    has_masks = valse_json is not None and masks_dir is not None
    if source == "mask" and not has_masks:
        raise InputError("negation.subject_size.source is 'mask' but no benchmark file with subject masks was given; "
                         "masks exist only for the synthetic benchmark, use source 'clipseg' otherwise")
    if source == "clipseg" and clipseg is None:
        raise ValueError("source 'clipseg' needs the clipseg callable")

    keys = dataset["key"].astype(str).tolist()
    subjects, status = negated_subjects(dataset["negated"].tolist(), nlp)
    in_caption = (dataset["negation"] == "caption").to_numpy()
    status = [STATUS_NEGATION_IN_CAPTION if c else s for c, s in zip(in_caption, status)]
    sized = np.array([s == STATUS_SIZED for s in status])
    rows = np.flatnonzero(sized)

    relative = np.full(len(keys), np.nan)
    binary = np.full(len(keys), np.nan)
    true = np.full(len(keys), np.nan)
    if has_masks and rows.size:
        true[rows] = true_sizes([keys[i] for i in rows], valse_json, masks_dir)
    if source == "mask":
        relative[rows] = true[rows]
        binary[rows] = true[rows]
    elif rows.size:
        if images_dir is None:
            raise ValueError("source 'clipseg' needs images_dir")
        paths = [str(Path(images_dir) / dataset["image_file"].iloc[i]) for i in rows]
        relative[rows], binary[rows] = clipseg(paths, [subjects[i] for i in rows], [keys[i] for i in rows])

    table = pd.DataFrame({
        "key": keys, "negation": dataset["negation"].tolist(), "image_file": dataset["image_file"].tolist(),
        "subject": subjects, "status": status, "relative_size": relative, "binary_size": binary,
        "true_relative_size": true, "source": source,
    })
    counts = {"n_instances": len(keys), "n_sized": int(sized.sum()),
              "n_negation_in_caption": int(in_caption.sum()), "n_negation_in_foil": int((~in_caption).sum())}
    for name in (STATUS_EMPTY_SUBJECT, STATUS_NO_NEGATOR):
        counts[f"n_{name}"] = int(sum(s == name for s in status))
    return table, {"counts": counts, "has_true_masks": has_masks,
                   "empty_subject_keys": [k for k, s in zip(keys, status) if s == STATUS_EMPTY_SUBJECT],
                   "no_negator_keys": [k for k, s in zip(keys, status) if s == STATUS_NO_NEGATOR]}


def size_agreement(table: pd.DataFrame) -> dict[str, Any]:
    """Pearson and Spearman correlation of ``relative_size`` and ``binary_size`` with
    ``true_relative_size`` over the rows where both are finite (``n``; None when n < 3)."""
    from scipy import stats

    out: dict[str, Any] = {}
    for column in ("relative_size", "binary_size"):
        both = table[[column, "true_relative_size"]].dropna()
        n = len(both)
        defined = n >= 3 and both[column].nunique() > 1 and both["true_relative_size"].nunique() > 1
        out[column] = {
            "n": n,
            "pearson": float(stats.pearsonr(both[column], both["true_relative_size"])[0]) if defined else None,
            "spearman": float(stats.spearmanr(both[column], both["true_relative_size"])[0]) if defined else None,
            "mean_abs_error": float((both[column] - both["true_relative_size"]).abs().mean()) if n else None,
        }
    return out


def describe_sizes(table: pd.DataFrame) -> Mapping[str, Any]:
    """Min, median, mean and max of the defined sizes (for the log and metadata)."""
    out = {}
    for column in ("relative_size", "binary_size"):
        values = table[column].dropna()
        out[column] = ({"min": float(values.min()), "median": float(values.median()), "mean": float(values.mean()),
                        "max": float(values.max())} if len(values) else None)
    return out
