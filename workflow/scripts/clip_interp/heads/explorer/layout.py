"""The explorer's Gradio page: its components (:func:`page_components`), the events that call the
:class:`~clip_interp.heads.explorer.state.Explorer`'s handlers (:class:`PageEvents`), and how they are wired
(:func:`build_app`). Gradio is imported only when a page is built.

Every event handler returns its outputs and then a status line; :func:`guarded` turns an error into that status
line (and a warning toast) with every output cleared, so the page keeps serving.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from ...errors import InputError
from ...images import centre_view
from ..analyses import SIMILARITIES
from .pictures import DISPLAY_SIZE
from .request_checks import CONTRAST_SCOPE, DEFAULT_K, MAP_SCOPES, MAX_K, TOPIC_SCOPE
from .state import Explorer

# The similarity menu of the property search: the app's dot product (the default, first) and the paper text's cosine.
SIMILARITY_TEXTS = {"dot": "dot product of the group's mean contribution (what CLIP-InterpreT's app computes)",
                    "cosine": "cosine (what the paper's text says)"}
SIMILARITY_CHOICES = [(SIMILARITY_TEXTS[name], name) for name in SIMILARITIES]

LOG = logging.getLogger(__name__)

STATUS_OK = "Ready."


def guarded(handler: Callable, n_outputs: int) -> Callable:
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


def _update(**changes):
    import gradio as gr

    return gr.update(**changes)


class PageEvents:
    """The page's event handlers over ``explorer``: each takes the components' values and returns the outputs, then
    the status line."""

    def __init__(self, explorer: Explorer):
        self.explorer = explorer

    def show(self, name, chosen_labeller=None, chosen_head=None):
        """Everything that depends on the model (and labeller): summary, menus, head card, property sets, the head's
        TEXTSPAN texts, scores, head cards."""
        o = self.explorer.overview(name, chosen_labeller)
        values = [value for _, value in o.head_choices]
        head_value = chosen_head if chosen_head in values else (values[0] if values else None)
        card_text = self.explorer.head_card(name, head_value, o.labeller) if head_value else ""
        texts = self.explorer.textspan_texts(name, head_value) if head_value else []
        cards_shown = o.head_cards.assign(texts=[" | ".join(t) for t in o.head_cards["texts"]])
        return (o.summary, _update(choices=o.labellers, value=o.labeller),
                _update(choices=o.head_choices, value=head_value), card_text,
                _update(choices=o.property_sets, value=o.property_set),
                _update(choices=o.properties, value=o.properties[0] if o.properties else None),
                _update(choices=o.image_choices, value=None), _samples(texts), o.scores, cards_shown,
                f"Model {name} loaded; labels by {o.labeller}.")

    def choose_model(self, name):
        return self.show(name)

    def choose_labeller(self, name, chosen_labeller, chosen_head):
        return self.show(name, chosen_labeller, chosen_head)

    def choose_head(self, name, chosen_labeller, choice):
        if not choice:
            return "", _samples([]), STATUS_OK
        return (self.explorer.head_card(name, choice, chosen_labeller),
                _samples(self.explorer.textspan_texts(name, choice)), f"Head {choice} chosen.")

    def choose_property_set(self, name, property_set):
        properties = self.explorer.properties(name, property_set)
        return (_update(choices=properties, value=properties[0] if properties else None),
                f"Property groups: {len(properties)} properties of {property_set}.")

    def use_textspan_text(self, sample):
        text = sample[0] if isinstance(sample, (list, tuple)) else sample
        return text, f"Text: the TEXTSPAN text '{text}'."

    def use_upload(self, path):
        image = self.explorer.upload(path)
        return (None, image, centre_view(image, DISPLAY_SIZE),
                f"Query: uploaded {Path(path).name} ({image.width}x{image.height}).")

    def use_pick(self, name, choice):
        if not choice:
            return _update(), _update(), STATUS_OK
        image = self.explorer.image_from_set(name, choice)
        return image, centre_view(image, DISPLAY_SIZE), f"Query: image {choice} of the image set."

    def run_property(self, name, property_set, similarity, image, prop, k):
        r = self.explorer.property_neighbours(name, image, prop, k, property_set, similarity)
        return r.gallery, r.table, f"(a) {r.summary}."

    def run_topic(self, name, image, text, choice, scope):
        picture, caption = self.explorer.topic_map(name, image, text, choice, scope)
        return picture, caption, f"(b) map of {caption}."

    def run_contrast(self, name, image, a, b, choice, scope):
        pair = self.explorer.contrastive_maps(name, image, a, b, choice, scope)
        return pair, f"(c) {pair[0][1]}, and the reverse."

    def run_image(self, name, image, choice, k):
        r = self.explorer.image_neighbours(name, image, choice, k)
        return r.gallery, r.table, f"(d) {r.summary}."

    def run_text(self, name, text, choice, k):
        r = self.explorer.text_neighbours(name, text, choice, k)
        return r.gallery, r.table, f"(e) {r.summary}."


def _samples(texts: list[str]):
    """The update of the TEXTSPAN-text examples to ``texts`` (one sample each)."""
    return _update(samples=[[text] for text in texts])


def _query_components(explorer: Explorer, gr) -> dict:
    """The model, labeller and status row, the summary, the query image and the head with its card."""
    with gr.Row():
        model = gr.Dropdown(explorer.models, value=explorer.models[0], label="Model", elem_id="model")
        labeller = gr.Dropdown([], label="Labeller", elem_id="labeller")
        status = gr.Textbox(STATUS_OK, label="Status", interactive=False, elem_id="status", scale=3)
    summary = gr.Markdown(elem_id="summary")
    with gr.Row():
        with gr.Column():
            upload = gr.File(label="Upload a query image", file_count="single", type="filepath", elem_id="upload")
            pick = gr.Dropdown([], label="…or pick one from the image set", filterable=True, elem_id="pick")
            query_view = gr.Image(label="Query image (its centre crop, as the model sees it)", type="pil",
                                  interactive=False, height=260, elem_id="query")
        with gr.Column():
            head = gr.Dropdown([], label="Head (with its label)", filterable=True, elem_id="head")
            card = gr.Markdown(elem_id="card")
    return dict(model=model, labeller=labeller, status=status, summary=summary, upload=upload, pick=pick,
                query_view=query_view, head=head, card=card, query=gr.State(None),
                k=gr.Slider(1, MAX_K, value=DEFAULT_K, step=1, label="Neighbours (k)", elem_id="k"))


def _neighbour_tab(gr, title: str, name: str, button: str, **leading: Callable) -> SimpleNamespace:
    """A tab of a neighbour analysis: the components ``leading`` makes (by name, e.g. the property menu), then its
    button ``run``, its ``gallery`` and its ranking ``table``."""
    with gr.Tab(title):
        parts = {key: make() for key, make in leading.items()}
        parts["run"] = gr.Button(button, elem_id=f"run-{name}")
        parts["gallery"] = gr.Gallery(label="Nearest images", columns=8, height=260, elem_id=f"gallery-{name}")
        parts["table"] = gr.Dataframe(label="Ranking", interactive=False, elem_id=f"table-{name}")
    return SimpleNamespace(**parts)


def _analysis_components(gr) -> dict:
    """The tabs of the five analyses and of the head cards and scores."""
    a = _neighbour_tab(
        gr, "(a) Property neighbours", "property", "Find images by property",
        property_set=lambda: gr.Dropdown([], label="Property groups (the app's hand-curated groups, or the heads a "
                                         "labeller gave each label)", elem_id="property-set"),
        prop=lambda: gr.Dropdown([], label="Property", elem_id="property"),
        similarity=lambda: gr.Radio(SIMILARITY_CHOICES, value=SIMILARITIES[0], label="Score (the app scores by the "
                                    "dot product; the paper's text says cosine)", elem_id="similarity"))
    with gr.Tab("(b) Topic segmentation"):
        b = SimpleNamespace(
            text=gr.Textbox(label="Text", elem_id="topic-text"),
            scope=gr.Radio(list(MAP_SCOPES), value=TOPIC_SCOPE, label="Sum over", elem_id="topic-scope"),
            run=gr.Button("Segment", elem_id="run-topic"),
            image=gr.Image(label="Map", type="pil", interactive=False, height=340, elem_id="image-topic"),
            caption=gr.Markdown(elem_id="caption-topic"))
    with gr.Tab("(c) Contrastive segmentation"):
        with gr.Row():
            c = SimpleNamespace(text_a=gr.Textbox(label="Text A", elem_id="contrast-a"),
                                text_b=gr.Textbox(label="Text B", elem_id="contrast-b"))
        c.scope = gr.Radio(list(MAP_SCOPES), value=CONTRAST_SCOPE, label="Sum over (the paper: the whole model)",
                           elem_id="contrast-scope")
        c.run = gr.Button("Contrast", elem_id="run-contrast")
        c.gallery = gr.Gallery(label="A minus B, B minus A", columns=2, height=360, elem_id="gallery-contrast")
    d = _neighbour_tab(gr, "(d) Head image neighbours", "image", "Find images by this head")
    e = _neighbour_tab(gr, "(e) Head text neighbours", "text", "Find images for this text",
                       text=lambda: gr.Textbox(label="Text", elem_id="text-text"),
                       textspan=lambda: gr.Dataset(components=["textbox"], samples=[], type="values",
                                                   label="The chosen head's top TEXTSPAN texts (click one to use it; "
                                                   "the paper's section 5.5)", elem_id="textspan-texts"))
    with gr.Tab("Head cards and scores"):
        scores = gr.Dataframe(label="Interpretability scores", interactive=False, elem_id="scores")
        cards = gr.Dataframe(label="Head cards (label and top TEXTSPAN texts)", interactive=False, wrap=True,
                             elem_id="cards")
    return dict(property_set=a.property_set, prop=a.prop, textspan=e.textspan, a=a, b=b, c=c, d=d, e=e,
                scores=scores, cards=cards)


def page_components(explorer: Explorer, gr) -> SimpleNamespace:
    """Every component of the page, created in the current Blocks context, by name."""
    gr.Markdown("# CLIP head explorer\nChoose a model, give a query image, choose a head, run an analysis.")
    return SimpleNamespace(**_query_components(explorer, gr), **_analysis_components(gr))


def connect(app, p: SimpleNamespace, events: PageEvents) -> None:
    """Wire the components ``p`` of ``app`` to ``events``, each guarded (:func:`guarded`)."""
    model_outputs = [p.summary, p.labeller, p.head, p.card, p.property_set, p.prop, p.pick, p.textspan, p.scores,
                     p.cards]
    n_model = len(model_outputs)
    p.model.input(guarded(events.choose_model, n_model), p.model, [*model_outputs, p.status])
    app.load(guarded(events.choose_model, n_model), p.model, [*model_outputs, p.status])
    p.labeller.input(guarded(events.choose_labeller, n_model), [p.model, p.labeller, p.head],
                     [*model_outputs, p.status])
    p.upload.upload(guarded(events.use_upload, 3), p.upload, [p.upload, p.query, p.query_view, p.status])
    p.pick.input(guarded(events.use_pick, 2), [p.model, p.pick], [p.query, p.query_view, p.status])
    p.head.input(guarded(events.choose_head, 2), [p.model, p.labeller, p.head], [p.card, p.textspan, p.status])
    p.property_set.input(guarded(events.choose_property_set, 1), [p.model, p.property_set], [p.prop, p.status])
    p.textspan.click(guarded(events.use_textspan_text, 1), p.textspan, [p.e.text, p.status])
    p.a.run.click(guarded(events.run_property, 2), [p.model, p.property_set, p.a.similarity, p.query, p.prop, p.k],
                  [p.a.gallery, p.a.table, p.status])
    p.b.run.click(guarded(events.run_topic, 2), [p.model, p.query, p.b.text, p.head, p.b.scope],
                  [p.b.image, p.b.caption, p.status])
    p.c.run.click(guarded(events.run_contrast, 1), [p.model, p.query, p.c.text_a, p.c.text_b, p.head, p.c.scope],
                  [p.c.gallery, p.status])
    p.d.run.click(guarded(events.run_image, 2), [p.model, p.query, p.head, p.k], [p.d.gallery, p.d.table, p.status])
    p.e.run.click(guarded(events.run_text, 2), [p.model, p.e.text, p.head, p.k], [p.e.gallery, p.e.table, p.status])


def build_app(explorer: Explorer):
    """The Gradio Blocks page of ``explorer`` (not launched)."""
    import gradio as gr

    with gr.Blocks(title="clip_interp explorer", analytics_enabled=False) as app:
        connect(app, page_components(explorer, gr), PageEvents(explorer))
    return app
