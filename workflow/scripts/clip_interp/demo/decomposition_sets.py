"""The offline demo's sets for the decomposition study, in the formats of the real data.

Drawn from the same world as :mod:`clip_interp.demo.negation_benchmark` (coloured shapes on a 64-pixel canvas,
objects on the toy CLIP's 8-pixel patch grid):

* **Classification set** (``classification/``): one object per image on a noisy tinted background;
  its class is the (colour, shape) pair, 15 classes named ``"red circle"`` and so on. A flat folder
  plus ``classification_labels.txt`` (``<file name> <class index>``), ``class_names.txt`` and
  ``templates.txt`` (``There is a {}.``), as ImageNet validation is read.
* **Segmentation set** (``segmentation.mat``): the same images and their true object masks, in the
  layout of ImageNet-segmentation's ``gtsegs_ijcv.mat`` (HDF5; ``/value/img`` and ``/value/gt``
  are (N, 1) object references, an image a (3, W, H) uint8 array, a ground truth a reference
  array whose [0, 0] element is the (W, H) mask). Each image is widened by a margin of its own background
  (a sixth of its height on each side, 64 x 84 pixels; the mask is empty there), so that, as with the real
  set's landscape photographs, the model's centre crop and the paper's direct mask resize disagree and the
  protocol report's ``aligned_masks`` row differs from the paper's.
* **Waterbirds-like split**: the class is the shape (0 = circle, the "landbird"; 1 = triangle, the
  "waterbird"), the place the background texture (0 = "land": brown and green horizontal bands;
  1 = "water": blue with lighter diagonal waves). The object is small (a cell of 8 or 16 pixels, one
  or four patches) and camouflaged: each of its pixels is ``(1 - camouflage) * its colour + camouflage *
  the background behind it`` (default 0.7), so that its shape is faint while the background is plain to
  see, as the birds of Waterbirds are small against their backgrounds. The training images
  (``images/wb_train_*.png``, whose pairs are added to ``train.jsonl`` so that the toy CLIP is trained
  on them) have the background matching the class with probability ``spurious_correlation``; their
  captions never name the background. The test images (``waterbirds/``, with a Waterbirds
  ``metadata.csv``, split 2) are balanced over the four (class, place) groups.

  Why the camouflage: the toy learns shapes from the negation benchmark's clearly drawn objects, and
  with the object in its own colour it reads the shape of even a one-patch object on these backgrounds
  (worst group 0.967 with 600 training images at 95 % correlation, and with 1,200 at 97 % and every
  object one patch), so the background never becomes a shortcut. With the shape faint, the background
  pays: at camouflage 0.7 and 400 training images (the demo's) the toy classifies the images whose
  background matches their class almost perfectly and the others mostly by their background, while
  it still reads some shape, which mean-ablating the background heads uncovers. The working range is
  narrow: at 0.8 no shape is read at all; at 0.6 with 600 images the ablation helps too, but the
  toy's TEXTSPAN heads then no longer separate shape from colour.
* **Description pools**: ``descriptions.txt`` (the synthetic vocabulary: colours, shapes,
  positions, sizes and backgrounds, mixed with general descriptions) and
  ``place_descriptions.txt`` (backgrounds only), one description per line; and ``words.txt``
  (:func:`word_pool`, written by its own rule), single words, the demo's second pool for the TEXTSPAN K
  sweep, as the paper's common English words are its second pool.

Every image comes from its own random stream seeded by ``(seed, set, index)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from ..errors import InputError
from ..io import atomic_path
from .negation_benchmark import (
    COLOUR_JITTER,
    COLOURS,
    NOISE_STD,
    SHAPES,
    png_bytes,
    sentence,
    shape_cell_mask,
    write_bytes_atomically,
)

if TYPE_CHECKING:
    import pandas as pd

CLASSES: list[tuple[str, str]] = [(c, s) for c in COLOURS for s in SHAPES]
WATERBIRD_SHAPES = ("circle", "triangle")
PLACES = ("land", "water")
_SET_IDS = {"classification": 10, "waterbirds_train": 11, "waterbirds_test": 12, "segmentation_margin": 13}
SEGMENTATION_MARGIN = 6  # a segmentation image's margin on each side, as a divisor of its height
DEFAULT_CAMOUFLAGE = 0.7

POSITIONS = ("top left", "top right", "bottom left", "bottom right", "centre")
SIZES = ("small", "large", "tiny", "big")
BACKGROUND_DESCRIPTIONS = (
    "A land background.", "Brown and green stripes in the background.", "A background of horizontal bands.",
    "Soil and grass behind the object.", "A water background.", "Blue waves in the background.",
    "A background of diagonal waves.", "The sea behind the object.",
)
GENERAL_DESCRIPTIONS = (
    "A photo of a dog.", "A photo of a cat.", "A busy city street at night.", "A bowl of fruit on a table.",
    "A person riding a bicycle.", "A snowy mountain peak.", "A close-up of a flower.", "An old wooden door.",
    "A crowd at a concert.", "A plate of pasta.", "A child playing in a park.", "A car parked by the road.",
    "A black and white photograph.", "A blurry photo.", "A painting of a landscape.", "A cartoon drawing.",
    "An aerial view of a town.", "A bird sitting on a branch.", "A boat on a lake.", "A bright sunny day.",
    "A dark room with one lamp.", "A pile of books.", "A cup of coffee.", "A field of wheat.",
    "A bridge over a river.", "A train at a station.", "A tall glass building.", "A forest in autumn.",
    "A beach with palm trees.", "A kitchen with white cabinets.", "A close-up of an eye.", "A text document.",
)


def _stream(seed: int, name: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _SET_IDS[name], index]))


def _tinted_background(rng: np.random.Generator, size: int) -> np.ndarray:
    tint = rng.uniform(60, 200) + rng.uniform(-15, 15, size=3)
    return np.broadcast_to(tint, (size, size, 3)).copy()


def textured_background(rng: np.random.Generator, size: int, place: int) -> np.ndarray:
    """The Waterbirds-like background: ``place`` 0 (land) brown/green horizontal bands, 1 (water) blue diagonal
    waves."""
    rows, cols = np.mgrid[0:size, 0:size]
    offset = int(rng.integers(0, 8))
    if place == 0:
        band = ((rows + offset) // 6) % 2 == 0
        first, second = np.array([120.0, 95.0, 55.0]), np.array([80.0, 135.0, 60.0])
    else:
        band = ((rows + cols + offset) // 5) % 3 == 0
        first, second = np.array([120.0, 170.0, 225.0]), np.array([40.0, 85.0, 170.0])
    canvas = np.where(band[..., None], first, second) + rng.uniform(-12, 12, size=3)
    return canvas


def _draw_object(rng: np.random.Generator, canvas: np.ndarray, colour: str, shape: str, *, grid: int = 8,
                 low: int = 16, high: int = 40) -> np.ndarray:
    """Draw one object in a cell on the patch grid; returns its mask."""
    size = canvas.shape[0]
    cell = grid * int(rng.integers(low // grid, high // grid + 1))
    x = grid * int(rng.integers(0, (size - cell) // grid + 1))
    y = grid * int(rng.integers(0, (size - cell) // grid + 1))
    shape_mask = shape_cell_mask(shape, cell)
    mask = np.zeros(canvas.shape[:2], dtype=bool)
    mask[y:y + cell, x:x + cell] = shape_mask
    colour_value = np.asarray(COLOURS[colour], dtype=float) + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, size=3)
    canvas[mask] = colour_value
    return mask


def _finish(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    canvas = canvas + rng.normal(0.0, NOISE_STD, size=canvas.shape)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def _write_lines(path: Path, lines) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in lines))


def write_gtsegs_mat(images: list[np.ndarray], masks: list[np.ndarray], path) -> None:
    """Images (H, W, 3) uint8 and masks (H, W) bool in ImageNet-segmentation's ``gtsegs_ijcv.mat`` layout."""
    ref = h5py.special_dtype(ref=h5py.Reference)
    with atomic_path(path) as tmp, h5py.File(tmp, "w", track_order=False) as f:
        refs = f.create_group("#refs#")
        img = f.create_dataset("value/img", (len(images), 1), dtype=ref, track_times=False)
        gt = f.create_dataset("value/gt", (len(images), 1), dtype=ref, track_times=False)
        for i, (image, mask) in enumerate(zip(images, masks)):
            image_set = refs.create_dataset(f"img_{i:05d}", data=np.ascontiguousarray(image.transpose(2, 1, 0)),
                                            track_times=False)
            mask_set = refs.create_dataset(f"mask_{i:05d}", data=np.ascontiguousarray(mask.T).astype(np.uint8),
                                           track_times=False)
            holder = refs.create_dataset(f"gt_{i:05d}", (1, 1), dtype=ref, track_times=False)
            holder[0, 0] = mask_set.ref
            img[i, 0] = image_set.ref
            gt[i, 0] = holder.ref


def _with_margin(rng: np.random.Generator, rgb: np.ndarray, mask: np.ndarray, tint: np.ndarray):
    """The image widened on both sides by a noisy margin of its background ``tint`` (a
    :data:`SEGMENTATION_MARGIN`-th of its height each), and its mask widened with background."""
    height = rgb.shape[0]
    margin = height // SEGMENTATION_MARGIN
    sides = [_finish(rng, np.broadcast_to(tint, (height, margin, 3)).copy()) for _ in range(2)]
    empty = np.zeros((height, margin), dtype=bool)
    return np.concatenate([sides[0], rgb, sides[1]], axis=1), np.concatenate([empty, mask, empty], axis=1)


def _classification_set(out: Path, n: int, image_size: int, seed: int) -> dict[str, Any]:
    folder = out / "classification"
    folder.mkdir(parents=True, exist_ok=True)
    labels, images, masks = [], [], []
    for index in range(n):
        rng = _stream(seed, "classification", index)
        label = index % len(CLASSES)
        colour, shape = CLASSES[label]
        canvas = _tinted_background(rng, image_size)
        tint = canvas[0, 0].copy()
        mask = _draw_object(rng, canvas, colour, shape)
        rgb = _finish(rng, canvas)
        name = f"cls_{index:05d}.png"
        write_bytes_atomically(png_bytes(rgb), folder / name)
        labels.append(f"{name} {label}")
        wide, wide_mask = _with_margin(_stream(seed, "segmentation_margin", index), rgb, mask, tint)
        images.append(wide)
        masks.append(wide_mask)
    _write_lines(out / "classification_labels.txt", labels)
    _write_lines(out / "class_names.txt", [f"{c} {s}" for c, s in CLASSES])
    _write_lines(out / "templates.txt", ["There is a {}."])
    write_gtsegs_mat(images, masks, out / "segmentation.mat")
    return {"classification_images": n, "classes": len(CLASSES)}


def _waterbird_image(rng: np.random.Generator, image_size: int, y: int, place: int,
                     camouflage: float) -> tuple[np.ndarray, str]:
    """An object of shape ``y`` and a random colour on background ``place``; the object's pixels are
    ``(1 - camouflage) * colour + camouflage * background``. Returns the image and the colour's name."""
    canvas = textured_background(rng, image_size, place)
    behind = canvas.copy()
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    mask = _draw_object(rng, canvas, colour, WATERBIRD_SHAPES[y], low=8, high=16)
    canvas[mask] = (1.0 - camouflage) * canvas[mask] + camouflage * behind[mask]
    return _finish(rng, canvas), colour


def _waterbirds_train(images_dir: Path, n: int, image_size: int, seed: int, correlation: float,
                      camouflage: float) -> list[dict]:
    """Training images whose place equals their class with probability ``correlation``, and their pairs:
    the affirmative sentence about the object and the negated one about an absent (colour, shape)."""
    records = []
    for index in range(n):
        rng = _stream(seed, "waterbirds_train", index)
        y = int(rng.integers(2))
        place = y if rng.uniform() < correlation else 1 - y
        rgb, colour = _waterbird_image(rng, image_size, y, place, camouflage)
        name = f"wb_train_{index:05d}.png"
        write_bytes_atomically(png_bytes(rgb), images_dir / name)
        shown = (colour, WATERBIRD_SHAPES[y])
        absent_pool = [c for c in CLASSES if c != shown]
        absent = absent_pool[int(rng.integers(len(absent_pool)))]
        objects = [[colour, WATERBIRD_SHAPES[y], 1]]
        for subject, negated in ((shown, False), (absent, True)):
            records.append({"image_file": name, "caption": sentence(*subject, plural=False, negated=negated),
                            "foil": sentence(*subject, plural=False, negated=not negated),
                            "subject": {"colour": subject[0], "shape": subject[1]}, "caption_negated": negated,
                            "plural": False, "objects": objects, "place": PLACES[place]})
    return records


def _waterbirds_test(out: Path, n: int, image_size: int, seed: int, camouflage: float) -> None:
    folder = out / "waterbirds"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = ["img_filename,y,split,place"]
    for index in range(n):
        rng = _stream(seed, "waterbirds_test", index)
        y, place = divmod(index % 4, 2)
        rgb, _ = _waterbird_image(rng, image_size, y, place, camouflage)
        name = f"images/wb_test_{index:05d}.png"
        write_bytes_atomically(png_bytes(rgb), folder / name)
        rows.append(f"{name},{y},2,{place}")
    _write_lines(folder / "metadata.csv", rows)


def description_pool() -> list[str]:
    """The demo's TEXTSPAN pool: colours, shapes, positions, sizes and backgrounds, then general descriptions."""
    lines = [f"There is a {colour} thing." for colour in COLOURS]
    lines += [f"Something {colour}." for colour in COLOURS]
    lines += [f"There is a {shape}." for shape in SHAPES]
    lines += [f"Some {plural}." for plural in SHAPES.values()]
    lines += [f"An object in the {where}." for where in POSITIONS]
    lines += [f"A {size} object." for size in SIZES]
    return lines + list(BACKGROUND_DESCRIPTIONS) + list(GENERAL_DESCRIPTIONS)


POSITION_WORDS = ("top", "bottom", "left", "right", "centre")
BACKGROUND_WORDS = ("land", "water", "grass", "soil", "sea", "waves", "stripes", "bands")
GENERAL_WORDS = ("dog", "cat", "city", "street", "fruit", "bicycle", "mountain", "flower", "door", "car", "book",
                 "coffee", "bridge", "train", "forest", "beach")


def word_pool() -> list[str]:
    """The demo's word pool: the colour, shape (singular and plural), position, size and background words of the
    synthetic world, then general words."""
    return [*COLOURS, *SHAPES, *SHAPES.values(), *POSITION_WORDS, *SIZES, *BACKGROUND_WORDS, *GENERAL_WORDS]


def write_word_pool(path) -> int:
    """Write :func:`word_pool` to ``path``, one word per line; returns the number of words."""
    words = word_pool()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    _write_lines(Path(path), words)
    return len(words)


def generate_decomposition_sets(out_dir, images_dir, *, n_classification: int, n_waterbirds_train: int,
                                n_waterbirds_test: int, spurious_correlation: float,
                                camouflage: float = DEFAULT_CAMOUFLAGE, image_size: int = 64,
                                seed: int = 0) -> tuple[dict[str, Any], list[dict]]:
    """Write the sets under ``out_dir`` (training images under ``images_dir``); returns a summary and the
    Waterbirds-like training pairs (in ``train.jsonl``'s format, plus ``place``). ``camouflage`` is the share of
    the background mixed into a Waterbirds-like object's colour (module docstring)."""
    if n_waterbirds_test < 4 or n_waterbirds_test % 4:
        raise InputError(f"n_waterbirds_test={n_waterbirds_test} must be a positive multiple of 4 "
                         "(the four (class, background) groups are balanced)")
    if not 0.5 <= spurious_correlation <= 1:
        raise InputError(f"spurious_correlation={spurious_correlation} must lie in [0.5, 1]")
    if not 0 <= camouflage < 1:
        raise InputError(f"camouflage={camouflage} must lie in [0, 1) (1 would hide the object entirely)")
    if n_classification < 2:
        raise InputError(f"n_classification={n_classification} must be at least 2")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = _classification_set(out, n_classification, image_size, seed)
    records = _waterbirds_train(Path(images_dir), n_waterbirds_train, image_size, seed, spurious_correlation,
                                camouflage)
    _waterbirds_test(out, n_waterbirds_test, image_size, seed, camouflage)
    _write_lines(out / "descriptions.txt", description_pool())
    _write_lines(out / "place_descriptions.txt", BACKGROUND_DESCRIPTIONS)
    matched = sum(r["place"] == PLACES[WATERBIRD_SHAPES.index(r["subject"]["shape"])]
                  for r in records if not r["caption_negated"])
    summary.update(waterbirds_train=n_waterbirds_train, waterbirds_train_background_matching_class=matched,
                   waterbirds_test=n_waterbirds_test, descriptions=len(description_pool()))
    return summary, records


def append_train_records(train_jsonl, records: list[dict]) -> None:
    """Append training pairs to ``train.jsonl`` (rewritten atomically)."""
    path = Path(train_jsonl)
    existing = path.read_text() if path.exists() else ""
    with atomic_path(path) as tmp:
        tmp.write_text(existing + "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def description_kind(text: str) -> str:
    """What a description of :func:`description_pool` names: ``colour``, ``shape``, ``position``, ``size``,
    ``background`` or ``general`` (the planted-structure check groups TEXTSPAN texts by it)."""
    if text in BACKGROUND_DESCRIPTIONS:
        return "background"
    words = text.rstrip(".").lower().split()
    if any(word in COLOURS for word in words):
        return "colour"
    if any(word in SHAPES or word in SHAPES.values() for word in words):
        return "shape"
    if text.startswith("An object in the"):
        return "position"
    if any(word in SIZES for word in words):
        return "size"
    return "general"


def head_kinds(textspan) -> "pd.DataFrame":
    """Per TEXTSPAN head (``layer, head, text, share`` rows of the demo pool's texts): the share of its variance
    explained by texts of each kind, summed into ``colour``, ``shape_or_position`` and ``other``, the kind of
    its first text, and ``kind``, the group with the largest summed share."""
    import pandas as pd

    groups = {"colour": "colour", "shape": "shape_or_position", "position": "shape_or_position"}
    rows = []
    for (layer, head), texts in textspan.sort_values("rank").groupby(["layer", "head"], sort=True):
        sums = {"colour": 0.0, "shape_or_position": 0.0, "other": 0.0}
        for text, share in zip(texts["text"], texts["share"]):
            sums[groups.get(description_kind(text), "other")] += float(share)
        rows.append({"layer": int(layer), "head": int(head), **sums,
                     "first_text_kind": description_kind(texts["text"].iloc[0]), "kind": max(sums, key=sums.get)})
    return pd.DataFrame(rows)


def planted_structure_checks(textspan, segmentation, waterbirds) -> "pd.DataFrame":
    """The planted-structure checks of the demo, one row each: ``check``, ``holds`` and the ``evidence``.

    - TEXTSPAN separates colour heads from shape/position heads: some head's texts are mostly colours and
      another's mostly shapes or positions (:func:`head_kinds`).
    - Segmentation: the decomposition's mIoU exceeds the raw last-layer attention's (the rows of the configured
      protocol, :func:`~clip_interp.decomposition.segmentation.configured_rows`).
    - Waterbirds, one row per ablation of the table (``ablation_mode``: paper, heads_only): mean-ablating the
      chosen heads raises the worst-group accuracy above the baseline's.
    """
    import pandas as pd

    from ..decomposition.segmentation import configured_rows

    kinds = head_kinds(textspan)
    colour = kinds[kinds["kind"] == "colour"]
    shape = kinds[kinds["kind"] == "shape_or_position"]
    miou = configured_rows(segmentation).set_index("method")["miou"]
    baseline = waterbirds[waterbirds["condition"] == "baseline"].iloc[0]

    def head_names(table) -> str:
        return ", ".join(f"L{r.layer}H{r.head}" for r in table.itertuples()) or "none"

    rows = [
        {"check": "TEXTSPAN separates colour heads from shape/position heads",
         "holds": bool(len(colour) and len(shape)),
         "evidence": f"colour heads: {head_names(colour)}; shape/position heads: {head_names(shape)}; "
                     f"other: {head_names(kinds[kinds['kind'] == 'other'])}"},
        {"check": "segmentation by decomposition beats the raw last-layer attention in mIoU",
         "holds": bool(miou["decomposition"] > miou["last_layer_attention"]),
         "evidence": ", ".join(f"{m}: {v:.3f}" for m, v in miou.items())},
    ]
    for row in waterbirds[waterbirds["condition"] == "ablated"].itertuples():
        rows.append({"check": f"mean-ablating the background heads ({row.ablation_mode}) raises the worst-group "
                              "accuracy",
                     "holds": bool(row.worst_group > baseline["worst_group"]),
                     "evidence": f"worst group {baseline['worst_group']:.3f} -> {row.worst_group:.3f}, average "
                                 f"{baseline['average']:.3f} -> {row.average:.3f}"})
    return pd.DataFrame(rows)


# The demo taxonomy's property (resources/heads/taxonomy_demo.yaml) of each kind of description.
PROPERTY_OF_KIND = {"colour": "colours", "shape": "shapes", "position": "positions", "size": "sizes",
                    "background": "backgrounds"}


def planted_property(texts) -> str | None:
    """The demo taxonomy's property that most of ``texts`` name (:func:`description_kind`; general texts left out;
    ties to the kind of the earlier text); None when every text is general."""
    from collections import Counter

    kinds = [PROPERTY_OF_KIND[k] for k in map(description_kind, texts) if k in PROPERTY_OF_KIND]
    if not kinds:
        return None
    counts = Counter(kinds)
    return next(k for k in kinds if counts[k] == max(counts.values()))


def planted_label_check(labels) -> "pd.DataFrame":
    """Per head of a label table of the demo (``layer, head, label, texts``): ``planted``, the property its judged
    texts name most (:func:`planted_property`), ``matches`` (label == planted) and the ``kinds`` of its texts."""
    import pandas as pd

    rows = []
    for row in labels.itertuples():
        texts = list(row.texts)
        planted = planted_property(texts)
        rows.append({"layer": int(row.layer), "head": int(row.head), "label": row.label, "planted": planted,
                     "matches": planted is not None and planted == row.label,
                     "kinds": ", ".join(description_kind(t) for t in texts)})
    return pd.DataFrame(rows)
