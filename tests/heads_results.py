"""A small results folder of the heads study, written by the tests that exercise the explorer.

``write_results(root, model)`` writes, under ``root``, an image set of coloured shapes, its decomposition store by the
given model, an image table, a TEXTSPAN table, two label tables (labellers ``taxonomy``, the default, and ``llm``), a
score table and ``results/heads/{model}/explorer.json`` (the manifest :class:`clip_interp.heads.index.HeadIndex`
reads), in the layout the workflow uses; optionally more label tables (e.g. ``published``) and the app's property
groups (the ``app`` property set).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

from clip_interp.contribution_store import write_decomposition
from clip_interp.heads.index import build_manifest, manifest_path

COLOURS = {"red": (220, 40, 40), "blue": (40, 70, 220), "green": (40, 170, 60)}
SHAPES = ("circle", "square")
BACKGROUNDS = {"white": (245, 245, 245), "black": (20, 20, 20)}
PROPERTIES = ("colours", "shapes", "backgrounds")


def picture(colour: str, shape: str, background: str, size: int = 64) -> Image.Image:
    """A ``shape`` of ``colour`` centred on a ``background`` square."""
    image = Image.new("RGB", (size, size), BACKGROUNDS[background])
    box = (size // 4, size // 4, 3 * size // 4, 3 * size // 4)
    draw = ImageDraw.Draw(image)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
    return image


def image_set() -> list[tuple[str, Image.Image]]:
    """Every (colour, shape, background) picture, keyed ``colour_shape_background`` (12 images)."""
    return [(f"{c}_{s}_{b}", picture(c, s, b)) for c in COLOURS for s in SHAPES for b in BACKGROUNDS]


def label_table(layers, n_heads: int, labeller: str = "taxonomy", shift: int = 0) -> pd.DataFrame:
    """A label table cycling through :data:`PROPERTIES` (from ``shift``) over the heads of ``layers``."""
    rows = []
    for i, (layer, head) in enumerate((layer, head) for layer in layers for head in range(n_heads)):
        label = PROPERTIES[(i + shift) % len(PROPERTIES)]
        texts = [f"a {label} text {j} of L{layer} H{head}" for j in range(3)]
        rows.append({"layer": layer, "head": head, "label": label, "confidence": 2 / 3, "texts": texts,
                     "labeller": labeller})
    return pd.DataFrame(rows)


def textspan_table(layers, n_heads: int) -> pd.DataFrame:
    """Three TEXTSPAN texts per head, in the decomposition study's table format."""
    rows = [{"layer": layer, "head": head, "rank": rank,
             "text": f"a {PROPERTIES[rank % 3]} text {rank - 1} of L{layer} H{head}",
             "text_index": rank, "variance": 1.0 / rank, "share": 0.5 / rank, "cumulative_share": 0.5}
            for layer in layers for head in range(n_heads) for rank in (1, 2, 3)]
    return pd.DataFrame(rows)


def write_results(root: Path, model, model_id: str = "toy", *, n_analysed: int = 2,
                  extra_labels: dict[str, pd.DataFrame] | None = None, app_groups: pd.DataFrame | None = None,
                  images: list[tuple[str, Image.Image]] | None = None) -> Path:
    """The results folder (``root / "results"``) of ``model`` over ``images`` (default :func:`image_set`); the last
    ``n_analysed`` layers analysed; ``extra_labels`` more label tables by labeller, ``app_groups`` the app's property
    groups (``property, layer, paper_layer, head``)."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    keys, paths = [], []
    for key, image in images or image_set():
        paths.append(root / "images" / f"{key}.png")
        image.save(paths[-1])
        keys.append(key)
    n_layers, n_heads = model.vision.n_layers, model.vision.n_heads
    layers = list(range(n_layers - n_analysed + 1, n_layers + 1))
    write_decomposition(model, paths, keys, root / "store.h5", model_id=model_id, dtype="float32", batch_size=6)
    image_table = pd.DataFrame({"key": keys, "path": [f"images/{p.name}" for p in paths], "label": 0})
    image_table.to_parquet(root / "images.parquet")
    textspan_table(layers, n_heads).to_parquet(root / "textspan.parquet")
    label_table(layers, n_heads).to_parquet(root / "labels_taxonomy.parquet")
    label_table(layers, n_heads, "llm", shift=1).to_parquet(root / "labels_llm.parquet")
    labels = {"taxonomy": "labels_taxonomy.parquet", "llm": "labels_llm.parquet"}
    for name, table in (extra_labels or {}).items():
        labels[name] = f"labels_{name}.parquet"
        table.to_parquet(root / labels[name])
    groups = {}
    if app_groups is not None:
        groups["app"] = "property_groups_app.parquet"
        app_groups.to_parquet(root / groups["app"])
    pd.DataFrame([{"model": model_id, "entanglement": 0.25, "association": 0.5}]).to_parquet(root / "scores.parquet")
    manifest = build_manifest(model=model_id, spec=model.spec, image_set="shapes", store="store.h5",
                              images="images.parquet", textspan="textspan.parquet", labels=labels,
                              scores="scores.parquet", layers=layers, n_layers=n_layers, n_heads=n_heads,
                              n_images=len(keys), convention="uniform", property_groups=groups)
    path = manifest_path(root / "results", model_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=1))
    return root / "results"
