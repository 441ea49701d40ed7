"""The explorer: a Gradio app over the head-properties study's results, serving every processed model.

A model is *processed* when ``{results}/heads/{model}/explorer.json`` exists (the manifest the workflow writes).
The app reads each model's :class:`~clip_interp.heads.index.HeadIndex` (per-head contributions of the image set,
its image list, TEXTSPAN texts, labels and scores) and runs the five analyses of
:mod:`clip_interp.heads.analyses` on a query: one forward of the query image (or of the query text) only, never a
forward over the image set.

The handlers are the methods of :class:`Explorer`: plain functions of plain values that return the outputs or
raise :class:`ExplorerInputError` (an :class:`~clip_interp.errors.InputError`) with a one-line message. The Gradio
layer (:func:`build_app`) shows that message in the status box and as a warning toast, clears the outputs, and
keeps serving; an unexpected exception is logged with its traceback on the server and shown as a one-line
message, never as a traceback in the page.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..errors import InputError

LOG = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_MB = 10.0
DEFAULT_K = 8
MAX_K = 50
DISPLAY_SIZE = 320  # pixels of the displayed square centre crop (the view the model gets, before its resize)
THUMBNAIL_SIZE = 160
OVERLAY_ALPHA = 0.55
# What a map sums over: the chosen head, every head of its layer, or every head of every layer of the model.
MAP_SCOPES = ("this head", "all heads of its layer", "all heads of the model")
STATUS_OK = "Ready."


class ExplorerInputError(InputError):
    """A request the explorer cannot answer (bad upload, unknown model, head outside the model, ...)."""


def processed_models(results_dir: str | Path) -> list[str]:
    """The models with ``heads/{model}/explorer.json`` under ``results_dir``, sorted by name."""
    heads = Path(results_dir) / "heads"
    if not heads.is_dir():
        return []
    return sorted(p.parent.name for p in heads.glob("*/explorer.json"))


def check_results_dir(results_dir: str | Path) -> list[str]:
    """The processed models of ``results_dir``; an :class:`ExplorerInputError` when it is missing or has none."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ExplorerInputError(f"results folder {results_dir} does not exist; give the folder the workflow wrote "
                                 "(the one holding heads/), e.g. --results results/")
    models = processed_models(results_dir)
    if not models:
        raise ExplorerInputError(f"no processed model under {results_dir}: no {results_dir}/heads/<model>/explorer.json; "
                                 "run the workflow with 'heads' in `studies` first (e.g. snakemake --cores 2 "
                                 "--configfile config/demo.yaml)")
    return models


# ---------------------------------------------------------------------------------------------------------------
# Pictures: centre crops, overlays and thumbnails


def centre_crop(image, size: int = DISPLAY_SIZE):
    """``image`` as RGB with its shorter side resized to ``size`` and centre-cropped to ``size`` x ``size``."""
    from PIL import Image

    image = image.convert("RGB")
    width, height = image.size
    scale = size / min(width, height)
    resized = image.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BICUBIC)
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))


def overlay(image, heat: np.ndarray, *, alpha: float = OVERLAY_ALPHA, size: int = DISPLAY_SIZE):
    """The centre crop of ``image`` with ``heat`` ([h, w] in [0, 1]) drawn over it in the inferno colour map.

    Each pixel is ``(1 - alpha * m) * image + alpha * m * colour(m)`` with ``m`` the map bilinearly resized to the
    crop, so a zero of the map leaves the image as it is.
    """
    from matplotlib import colormaps
    from PIL import Image

    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2 or not np.isfinite(heat).all():
        raise ExplorerInputError(f"a map must be a finite [h, w] array, got shape {heat.shape}")
    base = np.asarray(centre_crop(image, size), dtype=np.float32) / 255.0
    resized = np.asarray(Image.fromarray(heat).resize((size, size), Image.BILINEAR), dtype=np.float32)
    weight = alpha * np.clip(resized, 0.0, 1.0)[..., None]
    colour = colormaps["inferno"](np.clip(resized, 0.0, 1.0))[..., :3]
    blended = (1.0 - weight) * base + weight * colour
    return Image.fromarray(np.round(blended * 255.0).astype(np.uint8))


def thumbnail(path: str | Path, size: int = THUMBNAIL_SIZE):
    """The centre crop of the image file at ``path`` at ``size`` pixels, or None (logged) when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return centre_crop(image, size)
    except (OSError, ValueError) as exc:
        LOG.warning("image %s cannot be read for a thumbnail: %s", path, exc)
        return None


# ---------------------------------------------------------------------------------------------------------------
# Result containers


@dataclass(frozen=True)
class Neighbours:
    """A ranking of the image set: ``table`` (rank, image key, score, row of the image set), a gallery of
    ``(thumbnail, caption)`` pairs in rank order, and a one-line summary."""

    table: pd.DataFrame
    gallery: list[tuple[object, str]]
    summary: str


@dataclass(frozen=True)
class ModelOverview:
    """What the page shows when a model is chosen."""

    head_choices: list[tuple[str, str]]  # (menu text with the head's label, value "layer:head")
    labellers: list[str]
    labeller: str
    properties: list[str]
    image_choices: list[str]
    scores: pd.DataFrame
    head_cards: pd.DataFrame
    summary: str


# ---------------------------------------------------------------------------------------------------------------
# The handlers


class Explorer:
    """The explorer's state and handlers over one results folder.

    ``open_index(results_dir, model)`` opens a model's index (default :meth:`HeadIndex.open`); each model's index
    is opened once, on first use, and kept. ``max_upload_mb`` bounds the size of an uploaded file.
    """

    def __init__(self, results_dir: str | Path, *, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
                 open_index: Callable | None = None):
        if not max_upload_mb > 0:
            raise ExplorerInputError(f"the upload limit must be positive, got {max_upload_mb} MB")
        self.results_dir = Path(results_dir)
        self.models = check_results_dir(self.results_dir)
        self.max_upload_mb = float(max_upload_mb)
        if open_index is None:
            from .index import HeadIndex

            open_index = HeadIndex.open
        self._open_index = open_index
        self._indices: dict[str, object] = {}

    # -- models and heads ---------------------------------------------------------------------------------------

    def index(self, model: str):
        """The index of ``model``, opened on first use."""
        if not model:
            raise ExplorerInputError("choose a model first")
        if model not in self._indices:
            manifest = self.results_dir / "heads" / str(model) / "explorer.json"
            if model not in self.models or not manifest.is_file():
                raise ExplorerInputError(f"model {model!r} has no results: {manifest} does not exist; processed "
                                         f"models: {', '.join(self.models)}")
            try:
                self._indices[model] = self._open_index(self.results_dir, model)
            except InputError as exc:
                raise ExplorerInputError(f"the results of model {model!r} cannot be read: {exc}") from exc
        return self._indices[model]

    def head(self, model: str, choice: str) -> tuple[int, int]:
        """``(layer, head)`` of a head-menu value ``"layer:head"``, checked against the model's analysed layers
        and its heads."""
        index = self.index(model)
        layers, n_heads = list(index.layers), int(index.n_heads)
        text = str(choice or "").strip()
        if not text:
            raise ExplorerInputError("choose a head first")
        layer_text, _, head_text = text.partition(":")
        try:
            layer, head = int(layer_text), int(head_text)
        except ValueError:
            raise ExplorerInputError(f"head {text!r} is not of the form 'layer:head' (e.g. '{layers[-1]}:0')") from None
        if layer not in layers or not 0 <= head < n_heads:
            raise ExplorerInputError(f"head {text!r} is outside model {model!r}: its analysed layers are "
                                     f"{', '.join(map(str, layers))} and its heads 0..{n_heads - 1}")
        return layer, head

    def map_target(self, model: str, choice: str, scope: str) -> tuple[int | None, int | None]:
        """``(layer, head)`` for a map over ``scope`` (:data:`MAP_SCOPES`): the chosen head, ``(layer, None)`` for
        every head of its layer, ``(None, None)`` for every head of the model."""
        if scope not in MAP_SCOPES:
            raise ExplorerInputError(f"map scope {scope!r} is not one of {', '.join(MAP_SCOPES)}")
        if scope == MAP_SCOPES[2]:
            self.index(model)
            return None, None
        layer, head = self.head(model, choice)
        return (layer, head) if scope == MAP_SCOPES[0] else (layer, None)

    def labeller(self, model: str, labeller: str | None) -> str:
        """``labeller``, or the model's default labeller when None; one without a label table is an error."""
        index = self.index(model)
        if not labeller:
            return index.default_labeller
        if labeller not in index.labels:
            raise ExplorerInputError(f"labeller {labeller!r} has no labels for model {model!r}; its labellers: "
                                     f"{', '.join(sorted(index.labels))}")
        return labeller

    def overview(self, model: str, labeller: str | None = None) -> ModelOverview:
        """The head menu (each head with its label by ``labeller``, default the model's), properties, image set,
        scores and head cards of ``model``."""
        index = self.index(model)
        labeller = self.labeller(model, labeller)
        cards = head_cards(index, labeller)
        choices = [(f"L{r.layer} H{r.head} · {r.label} ({r.confidence:.0%})", f"{r.layer}:{r.head}")
                   for r in cards.itertuples()]
        properties = sorted(cards["label"].unique()) if len(cards) else []
        image_choices = [f"{i}: {key}" for i, key in enumerate(index.images["key"])]
        summary = (f"**{model}** ({index.manifest.get('image_set', 'image set')}): {index.n} images in the index; "
                   f"layers {', '.join(map(str, index.layers))} (of 1..{index.n_layers}) × heads 0..{index.n_heads - 1} "
                   f"analysed; labels by the `{labeller}` labeller, {len(properties)} properties.")
        return ModelOverview(choices, sorted(index.labels), labeller, properties, image_choices, model_scores(index),
                             cards, summary)

    def head_card(self, model: str, choice: str, labeller: str | None = None) -> str:
        """A Markdown card of one head: its label, the labeller's confidence and its top TEXTSPAN texts."""
        layer, head = self.head(model, choice)
        cards = head_cards(self.index(model), self.labeller(model, labeller))
        row = cards[(cards["layer"] == layer) & (cards["head"] == head)]
        if row.empty:
            return f"### L{layer} H{head}\nNo label: this head is not in the label table."
        row = row.iloc[0]
        return (f"### L{layer} H{head}: {row['label']}\n"
                f"Labeller `{row['labeller']}`, confidence {row['confidence']:.0%} (the share of its judged texts "
                f"with this property).\n\nTop TEXTSPAN texts (share of the head's variance):\n\n"
                f"{_textspan_list(self.index(model), layer, head, row['texts'])}")

    # -- the query image ---------------------------------------------------------------------------------------

    def upload(self, path: str | Path | None):
        """The uploaded file at ``path`` as an RGB image; too large or not an image is an ExplorerInputError."""
        from PIL import Image

        if not path:
            raise ExplorerInputError("upload an image, or pick one from the image set")
        path = Path(path)
        name = path.name
        if not path.is_file():
            raise ExplorerInputError(f"the upload {name} did not arrive; upload it again")
        size_mb = path.stat().st_size / 2**20
        if size_mb > self.max_upload_mb:
            raise ExplorerInputError(f"{name} is {size_mb:.1f} MB, above the upload limit of {self.max_upload_mb:g} "
                                     "MB; upload a smaller image (or start the explorer with a larger --max-upload-mb)")
        try:
            with Image.open(path) as image:
                image.load()
                return image.convert("RGB")
        except Image.DecompressionBombError:
            raise ExplorerInputError(f"{name} has too many pixels to be decoded safely; upload a smaller image") from None
        except (OSError, ValueError, SyntaxError):
            raise ExplorerInputError(f"{name} is not an image Pillow can read; upload a PNG, JPEG, WebP or other "
                                     "image file") from None

    def image_from_set(self, model: str, choice: str):
        """Image ``choice`` (``"row: name"`` or a row number) of the model's image set, as an RGB image."""
        from PIL import Image

        index = self.index(model)
        text = str(choice or "").strip()
        try:
            row = int(text.split(":", 1)[0])
        except ValueError:
            raise ExplorerInputError(f"image {text!r} is not of the form 'row: name'; pick one from the list") from None
        if not 0 <= row < index.n:
            raise ExplorerInputError(f"image row {row} is outside the image set of {model!r} (rows 0..{index.n - 1})")
        path = index.images["path"].iloc[row]
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except (OSError, ValueError) as exc:
            raise ExplorerInputError(f"image {path} of the image set cannot be read: {exc}") from None

    # -- the five analyses -------------------------------------------------------------------------------------

    def property_neighbours(self, model: str, image, prop: str, k: int, labeller: str | None = None) -> Neighbours:
        """(a) The images whose summed contribution of every head labelled ``prop`` (by ``labeller``) is nearest
        (cosine) to the query's."""
        from . import analyses

        index = self.index(model)
        query = _require_image(image)
        labeller = self.labeller(model, labeller)
        if not prop:
            raise ExplorerInputError("choose a property first")
        table = _call(analyses.property_neighbours, index, query, prop, _check_k(k), labeller)
        return _image_neighbours(table, f"{len(table)} nearest images by the heads labelled '{prop}'")

    def topic_map(self, model: str, image, text: str, choice: str, scope: str = MAP_SCOPES[0]):
        """(b) The query image with the map on ``text`` of one head, of its layer's heads or of all heads
        (``scope``), and a caption."""
        from . import analyses

        index = self.index(model)
        query, text = _require_image(image), _require_text(text, "a text")
        layer, head = self.map_target(model, choice, scope)
        heat = _call(analyses.head_topic_map, index, query, text, layer, head)
        return overlay(query, heat), f"'{text}' on {_head_name(layer, head)}"

    def contrastive_maps(self, model: str, image, text_a: str, text_b: str, choice: str,
                         scope: str = MAP_SCOPES[0]) -> list[tuple[object, str]]:
        """(c) Two captioned overlays: the map of ``text_a`` minus ``text_b``, and the reverse (over ``scope``)."""
        from . import analyses

        index = self.index(model)
        query = _require_image(image)
        text_a, text_b = _require_text(text_a, "text A"), _require_text(text_b, "text B")
        layer, head = self.map_target(model, choice, scope)
        map_a, map_b = _call(analyses.contrastive_maps, index, query, text_a, text_b, layer, head)
        name = _head_name(layer, head)
        return [(overlay(query, map_a), f"'{text_a}' minus '{text_b}' ({name})"),
                (overlay(query, map_b), f"'{text_b}' minus '{text_a}' ({name})")]

    def image_neighbours(self, model: str, image, choice: str, k: int) -> Neighbours:
        """(d) The images whose contribution of one head is nearest (cosine) to the query's."""
        from . import analyses

        index = self.index(model)
        query = _require_image(image)
        layer, head = self.head(model, choice)
        table = _call(analyses.head_image_neighbours, index, query, layer, head, _check_k(k))
        return _image_neighbours(table, f"{len(table)} nearest images by {_head_name(layer, head)}")

    def text_neighbours(self, model: str, text: str, choice: str, k: int) -> Neighbours:
        """(e) The images whose contribution of one head is nearest (cosine) to the text's embedding."""
        from . import analyses

        index = self.index(model)
        text = _require_text(text, "a text")
        layer, head = self.head(model, choice)
        table = _call(analyses.head_text_neighbours, index, text, layer, head, _check_k(k))
        return _image_neighbours(table, f"{len(table)} nearest images to '{text}' by {_head_name(layer, head)}")


def head_cards(index, labeller: str | None = None) -> pd.DataFrame:
    """A labeller's label table (``layer, head, label, confidence, texts, labeller``; default: the index's default
    labeller) by layer and head."""
    return index.label_table(labeller).sort_values(["layer", "head"], kind="stable").reset_index(drop=True)


def model_scores(index) -> pd.DataFrame:
    """The model's score table (empty when the workflow wrote none)."""
    return index.scores if index.scores is not None else pd.DataFrame()


def _textspan_list(index, layer: int, head: int, judged) -> str:
    """The head's TEXTSPAN texts as a numbered Markdown list with their variance shares (the label table's judged
    texts when the TEXTSPAN table has no row for the head)."""
    table = index.textspan
    rows = table[(table["layer"] == layer) & (table["head"] == head)].sort_values("rank")
    if rows.empty:
        return "\n".join(f"{i}. {t}" for i, t in enumerate(judged, start=1))
    return "\n".join(f"{int(r.rank)}. {r.text} ({r.share:.1%})" for r in rows.itertuples())


def _head_name(layer: int | None, head: int | None) -> str:
    if layer is None:
        return "all heads of the model"
    return f"all heads of layer {layer}" if head is None else f"head L{layer} H{head}"


def _require_image(image):
    if image is None:
        raise ExplorerInputError("no query image: upload an image, or pick one from the image set, first")
    return image


def _require_text(text: str | None, what: str) -> str:
    text = (text or "").strip()
    if not text:
        raise ExplorerInputError(f"enter {what}")
    return text


def _check_k(k) -> int:
    try:
        k = int(k)
    except (TypeError, ValueError):
        raise ExplorerInputError(f"the number of neighbours must be a whole number, got {k!r}") from None
    if not 1 <= k <= MAX_K:
        raise ExplorerInputError(f"the number of neighbours must be between 1 and {MAX_K}, got {k}")
    return k


def _call(analysis: Callable, *args):
    """``analysis(*args)``, its InputError re-raised as an ExplorerInputError with the same message."""
    try:
        return analysis(*args)
    except InputError as exc:
        raise ExplorerInputError(str(exc)) from exc


def _image_neighbours(table: pd.DataFrame, summary: str) -> Neighbours:
    """A neighbour table with its gallery: the thumbnail of each row's image, captioned with rank and score.

    The ranking reads the index, so an image file that cannot be read any more keeps its place: a grey square
    captioned "file unreadable", counted in the summary."""
    from PIL import Image

    gallery, unreadable = [], 0
    for row in table.itertuples():
        caption = f"#{row.rank} · {row.score:.3f} · {row.image}"
        picture = thumbnail(row.path)
        if picture is None:
            picture, caption = Image.new("RGB", (THUMBNAIL_SIZE,) * 2, (128, 128, 128)), caption + " (file unreadable)"
            unreadable += 1
        gallery.append((picture, caption))
    if unreadable:
        summary += f" ({unreadable} of their files cannot be read; see the server log)"
    shown = table[["rank", "image", "score", "row"]].round({"score": 4}).reset_index(drop=True)
    return Neighbours(shown, gallery, summary)


# ---------------------------------------------------------------------------------------------------------------
# The Gradio page


def _guarded(handler: Callable, n_outputs: int) -> Callable:
    """``handler``, which returns its ``n_outputs`` outputs and then a status line, made safe for the page: on an
    error every output is cleared and the status line (and a warning toast) says what went wrong."""
    import gradio as gr

    @functools.wraps(handler)
    def run(*args):
        try:
            outputs = handler(*args)
        except InputError as exc:
            message = str(exc)
        except Exception as exc:  # the page gets one line; the server log keeps the traceback
            LOG.exception("explorer handler %s failed", handler.__name__)
            message = f"internal error ({type(exc).__name__}: {exc}); see the server log"
        else:
            return outputs
        gr.Warning(message)
        return (*([None] * n_outputs), f"⚠ {message}")

    return run


def build_app(explorer: Explorer):
    """The Gradio Blocks page of ``explorer`` (not launched)."""
    import gradio as gr

    first = explorer.models[0]
    with gr.Blocks(title="clip_interp explorer", analytics_enabled=False) as app:
        gr.Markdown("# CLIP head explorer\nChoose a model, give a query image, choose a head, run an analysis.")
        with gr.Row():
            model = gr.Dropdown(explorer.models, value=first, label="Model", elem_id="model")
            labeller = gr.Dropdown([], label="Labeller", elem_id="labeller")
            status = gr.Textbox(STATUS_OK, label="Status", interactive=False, elem_id="status", scale=3)
        summary = gr.Markdown(elem_id="summary")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Upload a query image", file_count="single", type="filepath",
                                 elem_id="upload")
                pick = gr.Dropdown([], label="…or pick one from the image set", filterable=True, elem_id="pick")
                query_view = gr.Image(label="Query image (its centre crop, as the model sees it)", type="pil",
                                      interactive=False, height=260,
                                      elem_id="query")
            with gr.Column():
                head = gr.Dropdown([], label="Head (with its label)", filterable=True, elem_id="head")
                card = gr.Markdown(elem_id="card")
        query = gr.State(None)
        k = gr.Slider(1, MAX_K, value=DEFAULT_K, step=1, label="Neighbours (k)", elem_id="k")

        with gr.Tab("(a) Property neighbours"):
            prop = gr.Dropdown([], label="Property", elem_id="property")
            run_a = gr.Button("Find images by property", elem_id="run-property")
            gallery_a = gr.Gallery(label="Nearest images", columns=8, height=260, elem_id="gallery-property")
            table_a = gr.Dataframe(label="Ranking", interactive=False, elem_id="table-property")
        with gr.Tab("(b) Topic segmentation"):
            text_b = gr.Textbox(label="Text", elem_id="topic-text")
            scope_b = gr.Radio(list(MAP_SCOPES), value=MAP_SCOPES[0], label="Sum over", elem_id="topic-scope")
            run_b = gr.Button("Segment", elem_id="run-topic")
            image_b = gr.Image(label="Map", type="pil", interactive=False, height=340, elem_id="image-topic")
            caption_b = gr.Markdown(elem_id="caption-topic")
        with gr.Tab("(c) Contrastive segmentation"):
            with gr.Row():
                text_ca = gr.Textbox(label="Text A", elem_id="contrast-a")
                text_cb = gr.Textbox(label="Text B", elem_id="contrast-b")
            scope_c = gr.Radio(list(MAP_SCOPES), value=MAP_SCOPES[0], label="Sum over", elem_id="contrast-scope")
            run_c = gr.Button("Contrast", elem_id="run-contrast")
            gallery_c = gr.Gallery(label="A minus B, B minus A", columns=2, height=360, elem_id="gallery-contrast")
        with gr.Tab("(d) Head image neighbours"):
            run_d = gr.Button("Find images by this head", elem_id="run-image")
            gallery_d = gr.Gallery(label="Nearest images", columns=8, height=260, elem_id="gallery-image")
            table_d = gr.Dataframe(label="Ranking", interactive=False, elem_id="table-image")
        with gr.Tab("(e) Head text neighbours"):
            text_e = gr.Textbox(label="Text", elem_id="text-text")
            run_e = gr.Button("Find images for this text", elem_id="run-text")
            gallery_e = gr.Gallery(label="Nearest images", columns=8, height=260, elem_id="gallery-text")
            table_e = gr.Dataframe(label="Ranking", interactive=False, elem_id="table-text")
        with gr.Tab("Head cards and scores"):
            scores = gr.Dataframe(label="Interpretability scores", interactive=False, elem_id="scores")
            cards = gr.Dataframe(label="Head cards (label and top TEXTSPAN texts)", interactive=False, wrap=True,
                                 elem_id="cards")

        def show(name, chosen_labeller=None, chosen_head=None):
            o = explorer.overview(name, chosen_labeller)
            values = [value for _, value in o.head_choices]
            head_value = chosen_head if chosen_head in values else (values[0] if values else None)
            card_text = explorer.head_card(name, head_value, o.labeller) if head_value else ""
            cards_shown = o.head_cards.assign(texts=[" | ".join(t) for t in o.head_cards["texts"]])
            return (o.summary, gr.update(choices=o.labellers, value=o.labeller),
                    gr.update(choices=o.head_choices, value=head_value), card_text,
                    gr.update(choices=o.properties, value=o.properties[0] if o.properties else None),
                    gr.update(choices=o.image_choices, value=None), o.scores, cards_shown,
                    f"Model {name} loaded; labels by {o.labeller}.")

        def choose_model(name):
            return show(name)

        def choose_labeller(name, chosen_labeller, chosen_head):
            return show(name, chosen_labeller, chosen_head)

        def choose_head(name, chosen_labeller, choice):
            if not choice:
                return "", STATUS_OK
            return explorer.head_card(name, choice, chosen_labeller), f"Head {choice} chosen."

        def use_upload(path):
            image = explorer.upload(path)
            return None, image, centre_crop(image), f"Query: uploaded {Path(path).name} ({image.width}x{image.height})."

        def use_pick(name, choice):
            if not choice:
                return gr.update(), gr.update(), STATUS_OK
            image = explorer.image_from_set(name, choice)
            return image, centre_crop(image), f"Query: image {choice} of the image set."

        def run_property(name, chosen_labeller, image, p, n):
            r = explorer.property_neighbours(name, image, p, n, chosen_labeller)
            return r.gallery, r.table, f"(a) {r.summary}."

        def run_topic(name, image, text, choice, scope):
            picture, caption = explorer.topic_map(name, image, text, choice, scope)
            return picture, caption, f"(b) map of {caption}."

        def run_contrast(name, image, a, b, choice, scope):
            pair = explorer.contrastive_maps(name, image, a, b, choice, scope)
            return pair, f"(c) {pair[0][1]}, and the reverse."

        def run_image(name, image, choice, n):
            r = explorer.image_neighbours(name, image, choice, n)
            return r.gallery, r.table, f"(d) {r.summary}."

        def run_text(name, text, choice, n):
            r = explorer.text_neighbours(name, text, choice, n)
            return r.gallery, r.table, f"(e) {r.summary}."

        model_outputs = [summary, labeller, head, card, prop, pick, scores, cards]
        model.input(_guarded(choose_model, 8), model, [*model_outputs, status])
        app.load(_guarded(choose_model, 8), model, [*model_outputs, status])
        labeller.input(_guarded(choose_labeller, 8), [model, labeller, head], [*model_outputs, status])
        upload.upload(_guarded(use_upload, 3), upload, [upload, query, query_view, status])
        pick.input(_guarded(use_pick, 2), [model, pick], [query, query_view, status])
        head.input(_guarded(choose_head, 1), [model, labeller, head], [card, status])
        run_a.click(_guarded(run_property, 2), [model, labeller, query, prop, k], [gallery_a, table_a, status])
        run_b.click(_guarded(run_topic, 2), [model, query, text_b, head, scope_b], [image_b, caption_b, status])
        run_c.click(_guarded(run_contrast, 1), [model, query, text_ca, text_cb, head, scope_c], [gallery_c, status])
        run_d.click(_guarded(run_image, 2), [model, query, head, k], [gallery_d, table_d, status])
        run_e.click(_guarded(run_text, 2), [model, text_e, head, k], [gallery_e, table_e, status])
    return app



LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def check_host(host: str, allow_network: bool) -> None:
    """An ExplorerInputError for a non-loopback ``host`` unless ``allow_network``."""
    if not allow_network and host not in LOOPBACK_HOSTS:
        raise ExplorerInputError(f"host {host!r} would expose the explorer on the network; pass --allow-network to do "
                                 "that on purpose (anyone who can reach it can upload files and see the images)")


def serve(results_dir: str | Path, *, host: str = "127.0.0.1", port: int | None = None,
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, allow_network: bool = False, block: bool = True):
    """Start the explorer on ``host:port`` (Gradio picks a free port from 7860 when ``port`` is None).

    A host other than a loopback address needs ``allow_network``: anyone who can reach it can run analyses, upload
    files and read the image set's images.
    """
    check_host(host, allow_network)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    explorer = Explorer(results_dir, max_upload_mb=max_upload_mb)
    app = build_app(explorer)
    app.queue(default_concurrency_limit=1)
    app.launch(server_name=host, server_port=port, max_file_size=int(max_upload_mb * 2**20), share=False,
               ssr_mode=False, prevent_thread_lock=not block, show_error=False, quiet=False, footer_links=[])
    return app
