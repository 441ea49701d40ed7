"""The workflow's steps of the decomposition study, as functions of files (the rule scripts call these).

Image lists: one Parquet table per image set (``classification``, ``waterbirds``) with ``key``,
``path`` and ``label`` (Waterbirds: ``y`` as ``label`` and ``place``); unreadable images are
left out and recorded in the table's ``excluded`` metadata. Heads are ``(layer, head)`` with layers
1..L and heads 0..H-1; a configured layer may also count from the end (-1 = L).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..head_selection import HeadOutsideModel, select_heads
from ..io import atomic_path, exclusion_record
from .classifier import Ablation, imagenet_zero_shot_metadata, paper_ablations
from .data import read_imagenet_val, read_waterbirds

IMAGE_SETS = ("classification", "waterbirds")


def classification_list(images, labels_file=None, class_names_file=None) -> tuple[pd.DataFrame, list[dict]]:
    """The labelled classification set as a table, and the exclusion records of its unreadable images."""
    n_classes = len(read_lines(class_names_file, "class names")) if class_names_file else 1000
    image_set = read_imagenet_val(images, labels_file, n_classes=n_classes)
    table = pd.DataFrame({"key": image_set.keys, "path": [str(p) for p in image_set.paths],
                          "label": np.asarray(image_set.labels, dtype=np.int64)})
    return table, _skipped_records(image_set.skipped)


def waterbirds_list(folder, split: str) -> tuple[pd.DataFrame, list[dict]]:
    """The Waterbirds rows of ``split`` as a table (``label`` = y), and exclusion records of unreadable images."""
    from .data import unreadable_reason

    rows = read_waterbirds(folder, split=split)
    reasons = [unreadable_reason(Path(p)) for p in rows["image_path"]]
    skipped = [(p, r) for p, r in zip(rows["image_path"], reasons) if r is not None]
    keep = np.array([r is None for r in reasons])
    if not keep.any():
        raise InputError(f"no readable Waterbirds images in {folder} ({len(skipped)} unreadable, e.g. {skipped[:2]})")
    rows = rows[keep]
    table = pd.DataFrame({"key": rows["img_filename"].astype(str).to_numpy(), "path": rows["image_path"].to_numpy(),
                          "label": rows["y"].to_numpy(np.int64), "place": rows["place"].to_numpy(np.int64)})
    return table, _skipped_records(skipped)


def _skipped_records(skipped) -> list[dict]:
    if not skipped:
        return []
    return [exclusion_record("image list", "unreadable_image", "image files that could not be read: "
                             + "; ".join(f"{p}: {r}" for p, r in skipped[:20]), [p for p, _ in skipped])]


def read_lines(path, what: str) -> list[str]:
    """Non-empty lines of a text file (class names, templates)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file {path} does not exist; fix the path in the config's decomposition.sources")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise InputError(f"{what} file {path} is empty; give one entry per line")
    return lines


def class_names_and_templates(class_names_file=None, templates_file=None) -> tuple[list[str], list]:
    """Class names and templates from the files, each defaulting to ImageNet's (open_clip's metadata)."""
    names, templates = imagenet_zero_shot_metadata() if not (class_names_file and templates_file) else (None, None)
    if class_names_file:
        names = read_lines(class_names_file, "class names")
    if templates_file:
        templates = read_lines(templates_file, "templates")
    return names, templates


def save_tensor(tensor: torch.Tensor, path) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, tensor.detach().cpu().float().numpy())


def load_tensor(path) -> torch.Tensor:
    return torch.from_numpy(np.load(path))


def shard_count(table_path, shard_size: int) -> int:
    import pyarrow.parquet as pq

    from .store import n_shards

    return n_shards(pq.read_metadata(table_path).num_rows, shard_size)


def resolve_heads(heads: Sequence[Sequence[int]], n_layers: int, n_heads: int, key: str) -> list[tuple[int, int]]:
    """Configured ``[layer, head]`` pairs as (layer 1..L, head 0..H-1); negative layers count from the end."""
    try:
        return select_heads(heads, n_layers, n_heads)
    except HeadOutsideModel as error:
        layer, head = error.given
        raise InputError(f"`{key}` names head [{layer}, {head}], but the model has layers 1..{n_layers} "
                         f"(or -1..-{n_layers}) and heads 0..{n_heads - 1}; fix the list") from None


def ablation_set(n_layers: int, n_heads: int, paper_rows: bool) -> list[Ablation]:
    """The ablations of the zero-shot table: none; the first k attention layers (k = 1..L); with ``paper_rows``,
    the paper's rows (:func:`~clip_interp.decomposition.classifier.paper_ablations`: the MLP group, the
    class-token-to-class-token terms, both); everything (the mean embedding)."""
    ablations = [Ablation.none(n_layers, n_heads)]
    ablations += [Ablation.layers(n_layers, n_heads, attention=range(1, k + 1), name=f"attention_layers_1_{k}")
                  for k in range(1, n_layers + 1)]
    if paper_rows:
        ablations += paper_ablations(n_layers, n_heads)
    ablations.append(Ablation.everything(n_layers, n_heads))
    return ablations


def layers_ablated(name: str) -> int | None:
    """k of an ``attention_layers_1_k`` ablation, 0 for ``none``, else None."""
    if name == "none":
        return 0
    if name.startswith("attention_layers_1_"):
        return int(name.rsplit("_", 1)[1])
    return None


def encode_pool(model, texts: Sequence[str], batch_size: int) -> torch.Tensor:
    """Unit text embeddings (M, E) of a description pool."""
    from ..encoding import encode_texts

    return F.normalize(encode_texts(model, list(texts), batch_size=batch_size).float(), dim=-1)


def textspan_layers(n_layers: int, wanted: int) -> list[int]:
    """The last ``wanted`` layers (all when there are fewer)."""
    return list(range(max(1, n_layers - wanted + 1), n_layers + 1))


def auto_neighbour_heads(textspan: pd.DataFrame) -> list[tuple[int, int]]:
    """Per TEXTSPAN layer, the head of largest total variance (ties: the lower head)."""
    heads = textspan.drop_duplicates(["layer", "head"]).sort_values(["layer", "head_variance", "head"],
                                                                     ascending=[True, False, True])
    return [(int(r.layer), int(r.head)) for r in heads.drop_duplicates("layer").itertuples()]
