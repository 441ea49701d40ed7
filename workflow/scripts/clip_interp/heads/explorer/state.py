"""The explorer's state and handlers over one results folder: the processed models, their indices (opened once,
on first use), and one method per request of the page (model overview, head card, query image, five analyses)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from ...errors import InputError
from .. import analyses, head_title
from ..analyses import ALL_HEADS, APP_GROUPS
from ..index import HeadIndex
from .pictures import overlay
from .request_checks import (
    CONTRAST_SCOPE,
    MAP_SCOPES,
    TOPIC_SCOPE,
    ExplorerInputError,
    call_analysis,
    check_k,
    map_target_name,
    require_image,
    require_text,
)
from .results import (
    ModelOverview,
    Neighbours,
    head_cards,
    model_scores,
    neighbours_with_gallery,
    textspan_list,
)

DEFAULT_MAX_UPLOAD_MB = 10.0
# The chosen head's top TEXTSPAN texts offered (one click each) as text-neighbour queries (the paper's section 5.5).
PREFILL_TEXTS = 5


def head_choice_text(layer: int, head: int, label: str, confidence: float) -> str:
    """A head-menu entry: the head in both numberings, its label and the labeller's confidence (left out when the
    labeller gives none, e.g. the published labels)."""
    shown = f" ({confidence:.0%})" if confidence == confidence else ""  # NaN: no confidence
    return f"{head_title(layer, head)} · {label}{shown}"


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
        raise ExplorerInputError(f"no processed model under {results_dir}: no "
                                 f"{results_dir}/heads/<model>/explorer.json; run the workflow with 'heads' in "
                                 "`studies` first (e.g. snakemake --cores 2 "
                                 "--configfile config/demo.yaml)")
    return models


class Explorer:
    """The explorer's state and handlers over one results folder.

    ``open_index(results_dir, model)`` opens a model's index (default :meth:`HeadIndex.open`); each model's index
    is opened once, when the model is first chosen, and kept; with ``release_unused`` (memory is short) choosing a
    model releases every other model's index (its files' pages and its loaded model), to be opened again when that
    model is chosen again. ``max_upload_mb`` bounds the size of an uploaded file.
    """

    def __init__(self, results_dir: str | Path, *, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
                 open_index: Callable | None = None, release_unused: bool = False):
        if not max_upload_mb > 0:
            raise ExplorerInputError(f"the upload limit must be positive, got {max_upload_mb} MB")
        self.results_dir = Path(results_dir)
        self.models = check_results_dir(self.results_dir)
        self.max_upload_mb = float(max_upload_mb)
        if open_index is None:
            open_index = HeadIndex.open
        self.open_index = open_index
        self.release_unused = bool(release_unused)
        self._indices: dict[str, object] = {}

    # -- models and heads ---------------------------------------------------------------------------------------

    def index(self, model: str):
        """The index of ``model``, opened on first use (releasing the others' with ``release_unused``)."""
        if not model:
            raise ExplorerInputError("choose a model first")
        if self.release_unused:
            self.release_indices(keep=model)
        if model not in self._indices:
            manifest = self.results_dir / "heads" / str(model) / "explorer.json"
            if model not in self.models or not manifest.is_file():
                raise ExplorerInputError(f"model {model!r} has no results: {manifest} does not exist; processed "
                                         f"models: {', '.join(self.models)}")
            try:
                self._indices[model] = self.open_index(self.results_dir, model)
            except InputError as exc:
                raise ExplorerInputError(f"the results of model {model!r} cannot be read: {exc}") from exc
        return self._indices[model]

    def open_models(self) -> list[str]:
        """The models whose index is open now."""
        return sorted(self._indices)

    def release_indices(self, keep: str | None = None) -> list[str]:
        """Release every open index but ``keep``'s (:meth:`HeadIndex.release`, then dropped); the models released."""
        released = [name for name in self._indices if name != keep]
        for name in released:
            index = self._indices.pop(name)
            release = getattr(index, "release", None)
            if release is not None:
                release()
            del index
        if released:
            gc.collect()
        return released

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
        every head of its layer, :data:`~clip_interp.heads.analyses.ALL_HEADS` for every head of the model."""
        if scope not in MAP_SCOPES:
            raise ExplorerInputError(f"map scope {scope!r} is not one of {', '.join(MAP_SCOPES)}")
        if scope == MAP_SCOPES[2]:
            self.index(model)
            return ALL_HEADS
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
        choices = [(head_choice_text(r.layer, r.head, r.label, r.confidence), f"{r.layer}:{r.head}")
                   for r in cards.itertuples()]
        labels = sorted(cards["label"].unique()) if len(cards) else []
        property_set = self.default_property_set(model, labeller)
        image_choices = [f"{i}: {key}" for i, key in enumerate(index.images["key"])]
        summary = (f"**{model}** ({index.manifest.get('image_set', 'image set')}): {index.n} images in the index; "
                   f"layers {', '.join(map(str, index.layers))} (of 1..{index.n_layers}) × "
                   f"heads 0..{index.n_heads - 1} "
                   f"analysed (layers numbered from 1 here, from 0 in the paper and its app; heads from 0 in both); "
                   f"labels by the `{labeller}` labeller, {len(labels)} properties.")
        return ModelOverview(choices, sorted(index.labels), labeller, self.properties(model, property_set),
                             image_choices, model_scores(index), cards, summary, self.property_sets(model),
                             property_set)

    def property_sets(self, model: str) -> list[tuple[str, str]]:
        """The property-set menu of ``model``: (menu text, value) for the app's hand-curated groups where the model
        has them, then each labeller's groups."""
        sets = sorted(analyses.property_sets(self.index(model)), key=lambda name: name != APP_GROUPS)  # stable
        return [(ui_property_set_name(name), name) for name in sets]

    def default_property_set(self, model: str, labeller: str | None = None) -> str:
        """The app's groups (:data:`~clip_interp.heads.analyses.APP_GROUPS`) where the model has them (the
        authors' app), else the groups of ``labeller`` (default: the model's)."""
        index = self.index(model)
        return APP_GROUPS if APP_GROUPS in index.property_groups else self.labeller(model, labeller)

    def properties(self, model: str, property_set: str | None) -> list[str]:
        """The properties of ``property_set`` with a head in the analysed layers of ``model``."""
        return call_analysis(analyses.set_properties, self.index(model), property_set or None)

    def textspan_texts(self, model: str, choice: str) -> list[str]:
        """The first :data:`PREFILL_TEXTS` TEXTSPAN texts of the chosen head, the text-neighbour queries offered
        (none when the TEXTSPAN table has no row for the head)."""
        layer, head = self.head(model, choice)
        try:
            return analyses.top_textspan_texts(self.index(model), layer, head, PREFILL_TEXTS)
        except InputError:
            return []

    def head_card(self, model: str, choice: str, labeller: str | None = None) -> str:
        """A Markdown card of one head: its label, the labeller's confidence and its top TEXTSPAN texts."""
        layer, head = self.head(model, choice)
        cards = head_cards(self.index(model), self.labeller(model, labeller))
        row = cards[(cards["layer"] == layer) & (cards["head"] == head)]
        if row.empty:
            return f"### {head_title(layer, head)}\nNo label: this head is not in the label table."
        row = row.iloc[0]
        confidence = (f"confidence {row['confidence']:.0%} (the share of its judged texts with this property)"
                      if row["confidence"] == row["confidence"] else "no confidence given")
        return (f"### {head_title(layer, head)}: {row['label']}\n"
                f"Labeller `{row['labeller']}`, {confidence}.\n\nTop TEXTSPAN texts (share of the head's variance):\n\n"
                f"{textspan_list(self.index(model), layer, head, row['texts'])}")

    # -- the query image ---------------------------------------------------------------------------------------

    def upload(self, path: str | Path | None):
        """The uploaded file at ``path`` as an RGB image; too large or not an image is an ExplorerInputError."""
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
            raise ExplorerInputError(f"{name} has too many pixels to be decoded safely; "
                                     "upload a smaller image") from None
        except (OSError, ValueError, SyntaxError):
            raise ExplorerInputError(f"{name} is not an image Pillow can read; upload a PNG, JPEG, WebP or other "
                                     "image file") from None

    def image_from_set(self, model: str, choice: str):
        """Image ``choice`` (``"row: name"`` or a row number) of the model's image set, as an RGB image."""
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

    def property_neighbours(self, model: str, image, prop: str, k: int, property_set: str | None = None,
                            similarity: str = "dot") -> Neighbours:
        """(a) The images whose mean contribution of the heads of ``prop``'s group in ``property_set`` (a labeller's
        groups or the app's, default: the model's default labeller) scores highest against the query's
        (``similarity``: ``dot``, what the app computes, or ``cosine``, the paper's text)."""
        index = self.index(model)
        query = require_image(image)
        if not prop:
            raise ExplorerInputError("choose a property first")
        if similarity not in analyses.SIMILARITIES:
            raise ExplorerInputError(f"similarity {similarity!r} is not one of {', '.join(analyses.SIMILARITIES)}")
        property_set = property_set or index.default_labeller
        table = call_analysis(analyses.property_neighbours, index, query, prop, check_k(k), property_set, similarity)
        summary = (f"{len(table)} nearest images by the {similarity} of the mean of the heads of '{prop}' "
                   f"(property set {property_set})")
        return neighbours_with_gallery(table, summary)

    def topic_map(self, model: str, image, text: str, choice: str, scope: str = TOPIC_SCOPE):
        """(b) The query image with the map on ``text`` of one head, of its layer's heads or of all heads
        (``scope``), and a caption."""
        index = self.index(model)
        query, text = require_image(image), require_text(text, "a text")
        layer, head = self.map_target(model, choice, scope)
        heat = call_analysis(analyses.head_topic_map, index, query, text, layer, head)
        return overlay(query, heat), f"'{text}' on {map_target_name(layer, head)}"

    def contrastive_maps(self, model: str, image, text_a: str, text_b: str, choice: str,
                         scope: str = CONTRAST_SCOPE) -> list[tuple[object, str]]:
        """(c) Two captioned overlays: the map of ``text_a`` minus ``text_b``, and the reverse (over ``scope``; by
        default every head of the model, as the paper aggregates contrastive maps)."""
        index = self.index(model)
        query = require_image(image)
        text_a, text_b = require_text(text_a, "text A"), require_text(text_b, "text B")
        layer, head = self.map_target(model, choice, scope)
        map_a, map_b = call_analysis(analyses.contrastive_maps, index, query, text_a, text_b, layer, head)
        name = map_target_name(layer, head)
        return [(overlay(query, map_a), f"'{text_a}' minus '{text_b}' ({name})"),
                (overlay(query, map_b), f"'{text_b}' minus '{text_a}' ({name})")]

    def image_neighbours(self, model: str, image, choice: str, k: int) -> Neighbours:
        """(d) The images whose contribution of one head is nearest (cosine) to the query's."""
        index = self.index(model)
        query = require_image(image)
        layer, head = self.head(model, choice)
        table = call_analysis(analyses.head_image_neighbours, index, query, layer, head, check_k(k))
        return neighbours_with_gallery(table, f"{len(table)} nearest images by {map_target_name(layer, head)}")

    def text_neighbours(self, model: str, text: str, choice: str, k: int) -> Neighbours:
        """(e) The images whose contribution of one head is nearest (cosine) to the text's embedding."""
        index = self.index(model)
        text = require_text(text, "a text")
        layer, head = self.head(model, choice)
        table = call_analysis(analyses.head_text_neighbours, index, text, layer, head, check_k(k))
        summary = f"{len(table)} nearest images to '{text}' by {map_target_name(layer, head)}"
        return neighbours_with_gallery(table, summary)


def ui_property_set_name(name: str) -> str:
    """How the page names a property set: the app's hand-curated groups, or the heads grouped by a labeller."""
    if name == APP_GROUPS:
        return "the CLIP-InterpreT app's hand-curated groups (app)"
    return f"heads grouped by the {name} labeller's labels ({name})"
