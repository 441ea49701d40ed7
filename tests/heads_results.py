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


# A model of the six that CLIP-InterpreT published labels and property groups for, as a model entry names it.
PUBLISHED_NAME, PUBLISHED_TAG = "ViT-B-32", "openai"


def published_label_table(head_labels_tsv: Path, textspan: pd.DataFrame) -> pd.DataFrame:
    """The ``published`` labeller's table of ViT-B-32 openai, in the label-table format (``layer, head, label,
    confidence, texts, labeller``; layers 1..L): the published labels read with
    :func:`clip_interp.heads.published.read_head_labels` (which adds 1 to the published layer), no confidence
    (NaN: the paper gives none), the head's TEXTSPAN texts in rank order."""
    from clip_interp.heads.published import model_labels, read_head_labels

    labels = model_labels(read_head_labels(head_labels_tsv), PUBLISHED_NAME, PUBLISHED_TAG)
    texts = textspan.sort_values("rank").groupby(["layer", "head"])["text"].agg(list)
    return labels.assign(confidence=float("nan"), texts=[texts[(r.layer, r.head)] for r in labels.itertuples()],
                         labeller="published")


def write_published_results(root: Path, shared: Path, n_images: int = 6) -> Path:
    """The results folder of a random-init ViT-B-32 saved to a local checkpoint and declared as ViT-B-32 ``openai``
    (with ``path``, so nothing is downloaded): one of the six models, so it has the ``published`` labels and the
    app's property groups (``shared``: the folder with ``head_labels.tsv`` and ``property_heads.tsv``). The last 4
    layers (9..12, the published 8..11) are analysed over the first ``n_images`` pictures of :func:`image_set`."""
    import open_clip
    import torch

    from clip_interp.heads.published import read_property_heads
    from clip_interp.heads.steps import app_property_groups
    from clip_interp.models import load_model

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    checkpoint = root / "vit_b_32_random.pt"
    torch.manual_seed(0)
    random_model = open_clip.create_model(PUBLISHED_NAME, pretrained=None)
    torch.save({k: v.half() for k, v in random_model.state_dict().items()}, checkpoint)  # half the file
    del random_model
    spec = {"backend": "open_clip", "name": PUBLISHED_NAME, "pretrained": PUBLISHED_TAG, "path": str(checkpoint)}
    model = load_model(spec, "cpu")  # the saved weights, as the explorer will load them
    n_layers, n_heads = model.vision.n_layers, model.vision.n_heads
    layers = list(range(n_layers - 3, n_layers + 1))
    published = published_label_table(shared / "head_labels.tsv", textspan_table(layers, n_heads))
    groups = app_property_groups(read_property_heads(shared / "property_heads.tsv"), spec)
    return write_results(root, model, "ViT-B-32-openai", n_analysed=4, extra_labels={"published": published},
                         app_groups=groups, images=image_set()[:n_images])
