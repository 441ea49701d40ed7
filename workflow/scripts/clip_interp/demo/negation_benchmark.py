"""A synthetic existence benchmark in VALSE's format, for running the pipeline offline.

Each image shows coloured shapes on a noisy, tinted background. An instance names a
*subject*, a (colour, shape) pair, in a caption and a foil that differ only by negation:

* negation in the caption ("There is no red circle." / "There are no red circles."):
  the subject is absent from the image; the foil is the affirmative sentence;
  ``provenance_of_foils`` is ``"zero_to_something"`` and the mask is empty;
* negation in the foil: the subject is present (one instance for the singular, two or
  three for the plural); the caption is the affirmative sentence; ``provenance_of_foils``
  is ``"something_to_zero"`` and the mask marks every subject pixel.

Affirmative plurals are written without "some" ("There are red circles."), as in the
raw VALSE data. Every image is built around a *main* object (one instance for a
singular sentence, two or three for a plural one, its size drawn log-uniformly over a
wide range) plus up to three smaller distractors. For negation in the foil the main
object is the subject; for negation in the caption the subject is a (colour, shape)
pair absent from the image, usually sharing its colour or its shape with the main
object, so that presence cannot be read off colour or shape alone and image statistics
(object count and size) do not reveal which sentence is true.

Objects occupy square cells whose sides and corners are multiples of ``grid`` pixels
(default 8, the toy CLIP's patch size, so every object covers whole patches), and never
overlap; each shape is drawn inside its cell with a 1-pixel margin.

``relative_size`` of an instance is the share of image pixels covered by the subject,
i.e. the mean of its binary mask (0 when the subject is absent).

Training pairs (``train.jsonl``) come from separate images drawn from the same
distribution. Each training image gets one pair per distinct (colour, shape) it shows
(affirmative caption, negated foil; plural wording for the main object of a plural
scene and for any pair shown more than once) and as many pairs about absent subjects
(negated caption, affirmative foil), so negation sits in the caption of exactly half
of the pairs. Half of the training plural affirmatives read "There are some ...", so a
model also sees the rephrased form the workflow evaluates.

Every image is drawn from its own random stream, seeded by ``(seed, split, index)``, so
the output bytes depend only on the arguments.
"""

from __future__ import annotations

import io as _io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InputError
from ..io import atomic_path, write_json

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 50),
    "blue": (35, 70, 220),
    "yellow": (240, 215, 35),
    "purple": (135, 45, 175),
}
SHAPES: dict[str, str] = {"circle": "circles", "square": "squares", "triangle": "triangles"}
COMBOS: list[tuple[str, str]] = [(c, s) for c in COLOURS for s in SHAPES]

MIN_SIZE = 6
MAX_SIZE_SINGULAR = 32
MAX_SIZE_PLURAL = 24
MAX_SIZE_DISTRACTOR = 16
MAX_DISTRACTORS = 3
COLOUR_JITTER = 18
NOISE_STD = 6.0
SOME_SHARE_IN_TRAIN = 0.5

_SPLIT_IDS = {"eval": 0, "train": 1, "plan": 2}


def sentence(colour: str, shape: str, *, plural: bool, negated: bool, some: bool = False) -> str:
    """The existence sentence about ``colour`` ``shape``.

    Singular: "There is a/an C S." / "There is no C S."; plural: "There are C Ss." /
    "There are no C Ss." ("There are some C Ss." when ``some`` and not negated).
    """
    noun = SHAPES[shape] if plural else shape
    if plural:
        quantifier = "no " if negated else ("some " if some else "")
        return f"There are {quantifier}{colour} {noun}."
    article = "no" if negated else ("an" if colour[0] in "aeiou" else "a")
    return f"There is {article} {colour} {noun}."


def shape_cell_mask(shape: str, size: int) -> np.ndarray:
    """Boolean ``size``×``size`` mask of ``shape`` drawn inside its cell with a 1-pixel margin."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    lo, hi = 1, size - 2
    if shape == "circle":
        draw.ellipse((lo, lo, hi, hi), fill=255)
    elif shape == "square":
        inset = lo + round((size - 2) * 0.06)
        draw.rectangle((inset, inset, size - 1 - inset, size - 1 - inset), fill=255)
    elif shape == "triangle":
        draw.polygon([((size - 1) / 2, lo), (hi, hi), (lo, hi)], fill=255)
    else:
        raise InputError(f"unknown shape {shape!r}; use one of {sorted(SHAPES)}")
    return np.asarray(canvas) > 0


def _cell_size(rng: np.random.Generator, high: int, image_size: int, grid: int) -> int:
    """A cell side drawn log-uniformly from [max(MIN_SIZE, grid), high], rounded to a multiple of ``grid``."""
    low = max(MIN_SIZE, grid)
    high = max(low, min(high, image_size))
    size = int(round(np.exp(rng.uniform(np.log(low), np.log(high))) / grid)) * grid
    return min(max(size, -(-low // grid) * grid), high // grid * grid)


def _place(rng: np.random.Generator, size: int, boxes: list[tuple[int, int, int]], image_size: int,
           grid: int, tries: int = 60) -> tuple[int, int] | None:
    """Top-left corner (multiples of ``grid``) of a ``size`` cell not overlapping ``boxes``; None if none found."""
    positions = (image_size - size) // grid + 1
    for _ in range(tries):
        x = grid * int(rng.integers(0, positions))
        y = grid * int(rng.integers(0, positions))
        if all(x + size <= bx or bx + bs <= x or y + size <= by or by + bs <= y for bx, by, bs in boxes):
            return x, y
    return None


def _draw_scene(rng: np.random.Generator, image_size: int, plural: bool, grid: int):
    """Draw one scene around a main object.

    Returns ``(rgb uint8 array, main (colour, shape), main_mask, main_count, objects)``
    where ``objects`` maps each (colour, shape) present to its instance count.
    """
    main = COMBOS[int(rng.integers(len(COMBOS)))]
    count = int(rng.integers(2, 4)) if plural else 1
    smallest = -(-max(MIN_SIZE, grid) // grid) * grid
    boxes: list[tuple[int, int, int]] = []
    placed: list[tuple[tuple[str, str], int, int, int]] = []
    size = _cell_size(rng, MAX_SIZE_PLURAL if plural else MAX_SIZE_SINGULAR, image_size, grid)
    while len(placed) < count:
        spot = _place(rng, size, boxes, image_size, grid)
        if spot is None:
            if size <= smallest:
                raise RuntimeError(f"cannot place {count} objects on a {image_size}-pixel image")
            size = max(smallest, size - grid * max(1, round(size * 0.15 / grid)))
            continue
        boxes.append((spot[0], spot[1], size))
        placed.append((main, spot[0], spot[1], size))
        if plural:
            size = _cell_size(rng, MAX_SIZE_PLURAL, image_size, grid) if rng.uniform() < 0.3 else size

    others = [c for c in COMBOS if c != main]
    for _ in range(int(rng.integers(0, MAX_DISTRACTORS + 1))):
        combo = others[int(rng.integers(len(others)))]
        dsize = _cell_size(rng, MAX_SIZE_DISTRACTOR, image_size, grid)
        spot = _place(rng, dsize, boxes, image_size, grid)
        if spot is not None:
            boxes.append((spot[0], spot[1], dsize))
            placed.append((combo, spot[0], spot[1], dsize))

    tint = rng.uniform(60, 200) + rng.uniform(-15, 15, size=3)
    canvas = np.broadcast_to(tint, (image_size, image_size, 3)).copy()
    main_mask = np.zeros((image_size, image_size), dtype=bool)
    objects: dict[tuple[str, str], int] = {}
    for combo, x, y, s in placed:
        shape_mask = shape_cell_mask(combo[1], s)
        colour = np.asarray(COLOURS[combo[0]], dtype=float) + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, size=3)
        region = canvas[y:y + s, x:x + s]
        region[shape_mask] = colour
        if combo == main:
            main_mask[y:y + s, x:x + s] |= shape_mask
        objects[combo] = objects.get(combo, 0) + 1
    canvas += rng.normal(0.0, NOISE_STD, size=canvas.shape)
    rgb = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return rgb, main, main_mask, count, objects


def _absent_subject(rng: np.random.Generator, main: tuple[str, str], objects) -> tuple[str, str]:
    """A (colour, shape) absent from the scene: same colour as the main object (p=0.4),
    same shape (p=0.3), or any absent pair."""
    absent = [c for c in COMBOS if c not in objects]
    draw = rng.uniform()
    if draw < 0.4:
        pool = [c for c in absent if c[0] == main[0]]
    elif draw < 0.7:
        pool = [c for c in absent if c[1] == main[1]]
    else:
        pool = absent
    pool = pool or absent
    return pool[int(rng.integers(len(pool)))]


def png_bytes(array: np.ndarray) -> bytes:
    """The PNG file (zlib level 6) of an 8-bit image array: (H, W) grey or (H, W, 3) RGB."""
    buffer = _io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def write_bytes_atomically(data: bytes, path: Path) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed when complete (``clip_interp.io.atomic_path``)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _stream(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_IDS[split], index]))


def _eval_plan(n_eval: int, seed: int) -> list[tuple[bool, bool]]:
    """(negation in caption, plural) per eval instance: exactly half negated captions,
    and within each half as many plurals as singulars (±1), in a seeded random order."""
    half = n_eval // 2
    plan = [(neg, i % 2 == 1) for neg in (True, False) for i in range(half)]
    order = _stream(seed, "plan", 0).permutation(len(plan))
    return [plan[i] for i in order]


def _count_foils(answer: int) -> list[int]:
    """VALSE-style ``classes_foil``: the first three positive counts other than ``answer``."""
    return [n for n in range(1, 5) if n != answer][:3]


def _check_arguments(n_eval, n_train, image_size, seed, grid) -> None:
    """Raise :class:`InputError` for arguments :func:`generate_existence_benchmark` cannot use."""
    for name, value, minimum in (("n_eval", n_eval, 2), ("n_train", n_train, 0),
                                 ("image_size", image_size, 32)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
            raise InputError(f"{name}={value!r} is invalid: give an integer >= {minimum}")
    if n_eval % 2:
        raise InputError(
            f"n_eval={n_eval} is odd: give an even number so that negation is in the caption for "
            "exactly half of the instances and in the foil for the other half"
        )
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"seed={seed!r} is invalid: give a non-negative integer")
    if not isinstance(grid, (int, np.integer)) or isinstance(grid, bool) or grid < 1 or image_size % grid \
            or grid > image_size // 4:
        raise InputError(
            f"grid={grid!r} is invalid for image_size={image_size}: give a positive divisor of the image "
            "size at most a quarter of it (the toy CLIP's patch size, 8, for 64-pixel images; 1 for free placement)"
        )


def _eval_instance(index: int, neg_caption: bool, plural: bool, *, seed: int, image_size: int, grid: int,
                   images_dir: Path, masks_dir: Path) -> tuple[str, dict[str, Any]]:
    """Draw eval instance ``index`` from its own stream, write its image and mask, return ``(key, entry)``.

    The stream draws the scene, then (negation in the caption) the absent subject.
    """
    rng = _stream(seed, "eval", index)
    rgb, main, main_mask, count, objects = _draw_scene(rng, image_size, plural, grid)
    if neg_caption:
        subject = _absent_subject(rng, main, objects)
        mask = np.zeros_like(main_mask)
        answer = 0
    else:
        subject, mask, answer = main, main_mask, count
    affirmative = sentence(*subject, plural=plural, negated=False)
    negative = sentence(*subject, plural=plural, negated=True)
    caption, foil = (negative, affirmative) if neg_caption else (affirmative, negative)
    stem = f"eval_{index:05d}"
    image_file, mask_file = f"{stem}.png", f"{stem}_mask.png"
    write_bytes_atomically(png_bytes(rgb), images_dir / image_file)
    write_bytes_atomically(png_bytes(np.where(mask, 255, 0).astype(np.uint8)), masks_dir / mask_file)
    return f"existence_synthetic_{index:05d}", {
        "dataset": "synthetic",
        "dataset_idx": str(index),
        "image_file": image_file,
        "mask_file": mask_file,
        "linguistic_phenomena": "existence",
        "caption": caption,
        "foil": foil,
        "answer": answer,
        "classes": answer,
        "classes_foil": _count_foils(answer),
        "split": "test",
        "original_split": "test",
        "declarative_statement": caption,
        "declarative_statement_foils": [foil],
        "provenance_of_foils": "zero_to_something" if neg_caption else "something_to_zero",
        "mturk": {"caption": 3, "foil": 0, "other": 0},
        "relative_size": float(mask.mean()),
        "subject": {"colour": subject[0], "shape": subject[1], "count": answer},
        "objects": [[c, s, n] for (c, s), n in sorted(objects.items())],
        "plural": plural,
        "negation_in": "caption" if neg_caption else "foil",
    }


def _train_statements(rng: np.random.Generator, main: tuple[str, str], plural: bool,
                      objects: dict[tuple[str, str], int]) -> list[tuple[tuple[str, str], bool, bool]]:
    """``(subject, plural, negated)`` of a training image's pairs: one per shown (colour, shape)
    (the main object first) and as many about absent subjects, drawn from ``rng`` in that order
    (each absent subject, then its number unless it is the first)."""
    statements = [(main, plural, False)]
    statements += [(combo, n > 1, False) for combo, n in sorted(objects.items()) if combo != main]
    absent_used: set[tuple[str, str]] = set()
    for number in range(len(statements)):
        absent = _absent_subject(rng, main, set(objects) | absent_used)
        absent_used.add(absent)
        statements.append((absent, plural if number == 0 else bool(rng.integers(2)), True))
    return statements


def _train_image(index: int, *, seed: int, image_size: int, grid: int, images_dir: Path) -> list[dict[str, Any]]:
    """Draw training image ``index`` from its own stream, write it and return its training pairs.

    The stream draws the number, the scene, the statements (:func:`_train_statements`), then
    per plural affirmative whether it reads "There are some ..."."""
    rng = _stream(seed, "train", index)
    plural = bool(rng.integers(2))
    rgb, main, _, count, objects = _draw_scene(rng, image_size, plural, grid)
    image_file = f"train_{index:05d}.png"
    write_bytes_atomically(png_bytes(rgb), images_dir / image_file)
    present_list = [[c, s, n] for (c, s), n in sorted(objects.items())]
    lines = []
    for subject, subject_plural, negated in _train_statements(rng, main, plural, objects):
        some = subject_plural and bool(rng.uniform() < SOME_SHARE_IN_TRAIN)
        lines.append({
            "image_file": image_file,
            "caption": sentence(*subject, plural=subject_plural, negated=negated, some=some),
            "foil": sentence(*subject, plural=subject_plural, negated=not negated, some=some),
            "subject": {"colour": subject[0], "shape": subject[1]},
            "caption_negated": negated,
            "plural": subject_plural,
            "objects": present_list,
        })
    return lines


def _benchmark_summary(out: Path, *, seed: int, image_size: int, grid: int, n_eval: int, n_train: int,
                       entries: dict[str, dict[str, Any]], n_train_pairs: int) -> dict[str, Any]:
    """The summary :func:`generate_existence_benchmark` returns."""
    values = list(entries.values())
    present_sizes = np.asarray([e["relative_size"] for e in values if e["negation_in"] == "foil"])
    return {
        "out_dir": str(out),
        "seed": int(seed),
        "image_size": int(image_size),
        "grid": int(grid),
        "n_eval": int(n_eval),
        "n_train_images": int(n_train),
        "n_train_pairs": n_train_pairs,
        "negation_in_caption": sum(e["negation_in"] == "caption" for e in values),
        "negation_in_foil": sum(e["negation_in"] == "foil" for e in values),
        "plural": sum(e["plural"] for e in values),
        "singular": sum(not e["plural"] for e in values),
        "relative_size_present": {
            "min": float(present_sizes.min()) if present_sizes.size else None,
            "median": float(np.median(present_sizes)) if present_sizes.size else None,
            "max": float(present_sizes.max()) if present_sizes.size else None,
        },
        "colours": list(COLOURS),
        "shapes": list(SHAPES),
    }


def generate_existence_benchmark(out_dir: str | os.PathLike, n_eval: int, n_train: int,
                                 image_size: int = 64, seed: int = 0, grid: int = 8) -> dict[str, Any]:
    """Write a synthetic existence benchmark under ``out_dir`` and return a summary.

    Files: ``images/eval_NNNNN.png`` and ``images/train_NNNNN.png`` (RGB),
    ``masks/eval_NNNNN_mask.png`` (mode "L", 255 on subject pixels, 0 elsewhere),
    ``existence.json`` (VALSE existence format, one entry per eval image, plus
    ``mask_file`` (relative to ``masks/``), ``relative_size``, ``subject``, ``plural``,
    ``negation_in`` and ``objects``, the [colour, shape, count] triples the image shows) and
    ``train.jsonl`` (one JSON object per line: ``image_file``, ``caption``, ``foil``, ``subject``
    {colour, shape}, ``caption_negated``, ``plural`` and ``objects``, the [colour, shape, count]
    triples the image shows).

    ``n_eval`` must be even and positive (half the instances negate the caption, half the
    foil); ``n_train`` is the number of training images.
    """
    _check_arguments(n_eval, n_train, image_size, seed, grid)
    out = Path(out_dir)
    images_dir, masks_dir = out / "images", out / "masks"
    images_dir.mkdir(parents=True, exist_ok=True)
    masks_dir.mkdir(parents=True, exist_ok=True)

    entries: dict[str, dict[str, Any]] = {}
    for index, (neg_caption, plural) in enumerate(_eval_plan(n_eval, seed)):
        key, entry = _eval_instance(index, neg_caption, plural, seed=seed, image_size=image_size, grid=grid,
                                    images_dir=images_dir, masks_dir=masks_dir)
        entries[key] = entry
    write_json(entries, out / "existence.json")

    lines = []
    for index in range(n_train):
        lines += _train_image(index, seed=seed, image_size=image_size, grid=grid, images_dir=images_dir)
    with atomic_path(out / "train.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))

    return _benchmark_summary(out, seed=seed, image_size=image_size, grid=grid, n_eval=n_eval, n_train=n_train,
                              entries=entries, n_train_pairs=len(lines))
