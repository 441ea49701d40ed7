"""The five analyses of the explorer (CLIP-InterpreT, Madasu et al.) over a :class:`~clip_interp.heads.index.HeadIndex`.

Notation: ``c_{l,h}(x)`` (E,) is head h of layer l's contribution to image x's embedding in the joint space,
summed over source tokens, and ``c_{l,h,j}(x)`` its part from source token j (patch j; the class token is
left out of maps); ``t`` is a text's embedding, ``t^ = t / ||t||``; ``cos(a, b) = a.b / (||a|| ||b||)``.
Layers are 1..L and heads 0..H-1 (:mod:`clip_interp.models.hooked`). The query image goes through the
model once (:func:`clip_interp.contributions.decompose`); the indexed images are never run.

(a) :func:`property_neighbours`: with S the heads of the analysed layers in property p's group of a property set
    (:func:`property_set_table`: the heads a labeller labelled p, or the CLIP-InterpreT app's hand-curated group
    p, :data:`APP_GROUPS`) and ``m(x) = (1/|S|) sum_{(l,h) in S} c_{l,h}(x)`` the group's mean contribution,
    ``score(i) = m(i) . m(query)`` (``similarity="dot"``, what the app computes, the default) or
    ``cos(m(i), m(query))`` (``"cosine"``, what the paper's text says; the sum or the mean give the same cosine).
(b) :func:`head_topic_map`: patch scores ``s_j = c_{l,h,j}(query) . t^`` (summed over the heads of layer l
    when ``head`` is None, over every head of every layer when ``layer`` is None too), upsampled to the
    model's input size and scaled to [0, 1] (:func:`clip_interp.contributions.scores_to_maps`).
(c) :func:`contrastive_maps`: the patch scores of text a minus those of text b, and the reverse, as maps.
(d) :func:`head_image_neighbours`: ``score(i) = cos(c_{l,h}(i), c_{l,h}(query))``.
(e) :func:`head_text_neighbours`: ``score(i) = cos(c_{l,h}(i), t)``.
Neighbour tables: ``rank`` (1..k), ``row`` (of the image set), ``image`` (its key), ``path``, ``score``;
ties go to the lower row; k larger than the set gives every image. Scores are computed in float64 from the index's
float32 values; the searches scan its float16 copy and re-score the candidates exactly
(:meth:`~clip_interp.heads.index.HeadIndex.top_k`, :mod:`clip_interp.heads.vectors`), so their top k equal those of
scoring every image exactly.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..contributions import decompose, scores_to_maps
from ..errors import InputError
from ..models import layer_index
from .index import HeadIndex

# The (layer, head) of the maps (b) and (c) over every head of every layer; ``(layer, None)`` is every head of one
# layer, ``(layer, head)`` one head.
ALL_HEADS: tuple[None, None] = (None, None)

# The property set of the CLIP-InterpreT app's hand-curated head groups (``property_heads.tsv``), beside the sets of
# the labellers (heads grouped by their label).
APP_GROUPS = "app"
# How a property search scores: the dot product of the group's mean contributions (the app's code, the default)
# or their cosine (the paper's text).
SIMILARITIES = ("dot", "cosine")


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"the number of neighbours k must be an integer of at least 1, got {k!r}")
    return int(k)


def _check_text(text) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"the query text must be a non-empty string, got {text!r}")
    return text.strip()


def query_pixels(index: HeadIndex, image) -> torch.Tensor:
    """The query image (a PIL image) preprocessed for the index's model, (1, 3, S, S)."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise InputError(f"the query image must be a PIL image, got {type(image).__name__}")
    model = index.model()
    return model.preprocess(image.convert("RGB")).unsqueeze(0).to(model.device)


def text_embedding(index: HeadIndex, text: str) -> torch.Tensor:
    """The unit text embedding (E,) of ``text`` by the index's model (cached per text)."""
    from ..encoding import encode_texts

    text = _check_text(text)
    return index.cached(("text", text),
                        lambda: F.normalize(encode_texts(index.model(), [text])[0].float().cpu(), dim=0))


# The query images whose head contributions are kept (the latest ones): the analyses of one image run it once.
QUERY_CACHE_SIZE = 8


@torch.no_grad()
def query_head_contributions(index: HeadIndex, image) -> torch.Tensor:
    """The query's per-head contributions of the analysed layers, (L_a, H, E) float32, in the store's units
    (divided by ``||e||``): one forward per distinct preprocessed image (the last :data:`QUERY_CACHE_SIZE` kept)."""
    pixels = query_pixels(index, image)
    key = ("query", hashlib.sha256(pixels.cpu().numpy().tobytes()).hexdigest())

    def compute():
        parts = decompose(index.model().vision, pixels, convention=_convention(index)).unit()
        columns = torch.as_tensor([layer_index(layer) for layer in index.layers])
        return parts.heads[0, columns].float().cpu()

    return index.cached(key, compute, keep=QUERY_CACHE_SIZE)


def _convention(index: HeadIndex) -> str:
    return str(index.manifest.get("convention", "per_component"))


def _ranked(index: HeadIndex, found: tuple[np.ndarray, np.ndarray]) -> pd.DataFrame:
    """The neighbour table of ``(rows, scores)`` from :meth:`HeadIndex.top_k`."""
    order, scores = found
    return pd.DataFrame({"rank": np.arange(1, len(order) + 1), "row": order,
                         "image": index.images["key"].to_numpy()[order], "path": index.images["path"].to_numpy()[order],
                         "score": scores})


def property_sets(index: HeadIndex) -> list[str]:
    """The property sets of ``index``: each labeller's (heads grouped by their label), then the hand-curated groups
    the index has (:data:`APP_GROUPS` for a model the CLIP-InterpreT app covers)."""
    return [*sorted(index.labels), *sorted(index.property_groups)]


def property_set_table(index: HeadIndex, property_set: str | None = None) -> pd.DataFrame:
    """``property, layer, head``: the heads of each property of ``property_set`` (a labeller: the heads it labelled
    with the property; a hand-curated set such as :data:`APP_GROUPS`: its groups, where a head may be in several).
    None is the index's default labeller."""
    name = property_set or index.default_labeller
    if name in index.property_groups:
        return index.property_groups[name][["property", "layer", "head"]]
    if name not in index.labels:
        raise InputError(f"property set {name!r} does not exist for model {index.model_id}; its property sets: "
                         f"{', '.join(property_sets(index))}")
    return index.labels[name].rename(columns={"label": "property"})[["property", "layer", "head"]]


def set_properties(index: HeadIndex, property_set: str | None = None) -> list[str]:
    """The properties of ``property_set`` with at least one head in the analysed layers, sorted."""
    table = property_set_table(index, property_set)
    return sorted(set(table.loc[table["layer"].isin(index.layers), "property"]))


def property_heads(index: HeadIndex, prop: str, property_set: str | None = None) -> list[tuple[int, int]]:
    """The heads (layer, head) of the analysed layers in property ``prop``'s group of ``property_set``
    (:func:`property_set_table`)."""
    available = set_properties(index, property_set)
    if prop not in available:
        raise InputError(f"no head of the analysed layers of model {index.model_id} has property {prop!r} in "
                         f"property set {property_set or index.default_labeller!r}; its properties: "
                         f"{', '.join(available)}")
    table = property_set_table(index, property_set)
    rows = table[(table["property"] == prop) & table["layer"].isin(index.layers)]
    return [(int(r.layer), int(r.head)) for r in rows.sort_values(["layer", "head"]).itertuples()]


def property_neighbours(index: HeadIndex, image, prop: str, k: int, property_set: str | None = None,
                        similarity: str = "dot") -> pd.DataFrame:
    """(a) The k images whose mean contribution m(x) of the heads of ``prop``'s group in ``property_set`` scores
    highest against the query's: ``m(i) . m(query)`` (``similarity="dot"``, the app's) or ``cos(m(i), m(query))``
    (``"cosine"``, the paper's text)."""
    k = _check_k(k)
    if similarity not in SIMILARITIES:
        raise InputError(f"similarity {similarity!r} is not one of {', '.join(SIMILARITIES)}")
    heads = property_heads(index, prop, property_set)
    query = query_head_contributions(index, image)
    columns = [index.layer_column(layer) for layer, _ in heads]
    query_mean = query[columns, [head for _, head in heads]].mean(0)
    rows, scores = index.top_k(heads, query_mean, k, similarity)
    if similarity == "dot":
        scores = scores / len(heads)  # top_k scores the group's sum; the mean is the sum over the group's size
    return _ranked(index, (rows, scores))


def top_textspan_texts(index: HeadIndex, layer: int, head: int, n: int) -> list[str]:
    """The first ``n`` TEXTSPAN texts of head (layer, head) in rank order (fewer when TEXTSPAN chose fewer); an
    InputError when the TEXTSPAN table has none for the head."""
    table = index.textspan
    rows = table[(table["layer"] == layer) & (table["head"] == head)].sort_values("rank")
    if rows.empty:
        raise InputError(f"the TEXTSPAN table of model {index.model_id} has no texts for head L{layer} H{head}")
    return [str(text) for text in rows["text"].iloc[:n]]


@torch.no_grad()
def topic_scores(index: HeadIndex, image, texts: list[str], layer: int | None, head: int | None) -> torch.Tensor:
    """Patch scores (K, P) of the query image on each text's unit embedding: the per-source terms of head
    (layer, head), of every head of ``layer`` (head None) or of every head of every layer (both None)."""
    if layer is None and head is not None:
        raise InputError(f"head {head} needs a layer; give a layer, or no head for all heads of the model")
    if layer is not None:
        index.check_head(layer, 0 if head is None else head, indexed=False)
    directions = torch.stack([text_embedding(index, text) for text in texts], dim=1)
    model = index.model()
    parts = decompose(model.vision, query_pixels(index, image), convention=_convention(index), sources="keep",
                      directions=directions)
    terms = parts.heads[0]                      # (L, H, T, K)
    if layer is not None:
        terms = terms[layer_index(layer)]
        terms = terms.sum(0) if head is None else terms[head]
    else:
        terms = terms.sum(dim=(0, 1))
    return terms[1:].T.float().cpu()            # the patches, class token left out


def _maps(index: HeadIndex, scores: torch.Tensor) -> np.ndarray:
    vision = index.model().vision
    size = index.model().image_size
    return scores_to_maps(scores, vision.grid_size, (size, size)).numpy()


def head_topic_map(index: HeadIndex, image, text: str, layer: int | None, head: int | None) -> np.ndarray:
    """(b) The query's map (S, S) in [0, 1] on ``text`` of head (layer, head), of a layer's heads (head None)
    or of all heads (layer and head None)."""
    return _maps(index, topic_scores(index, image, [text], layer, head))[0]


def contrastive_scores(index: HeadIndex, image, text_a: str, text_b: str, layer: int | None, head: int | None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch scores (P,) of text a minus text b and of text b minus text a (one forward)."""
    scores = topic_scores(index, image, [text_a, text_b], layer, head)
    return scores[0] - scores[1], scores[1] - scores[0]


def contrastive_maps(index: HeadIndex, image, text_a: str, text_b: str, layer: int | None, head: int | None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(c) The maps (S, S) in [0, 1] of text a minus text b and of text b minus text a."""
    a_minus_b, b_minus_a = contrastive_scores(index, image, text_a, text_b, layer, head)
    maps = _maps(index, torch.stack([a_minus_b, b_minus_a]))
    return maps[0], maps[1]


def head_image_neighbours(index: HeadIndex, image, layer: int, head: int, k: int) -> pd.DataFrame:
    """(d) The k images whose contribution of head (layer, head) is closest (cosine) to the query's."""
    k = _check_k(k)
    index.check_head(layer, head)
    query = query_head_contributions(index, image)[index.layer_column(layer), head]
    return _ranked(index, index.top_k([(layer, head)], query, k, "cosine"))


def head_text_neighbours(index: HeadIndex, text: str, layer: int, head: int, k: int) -> pd.DataFrame:
    """(e) The k images whose contribution of head (layer, head) is closest (cosine) to the text's embedding."""
    k = _check_k(k)
    index.check_head(layer, head)
    direction = text_embedding(index, text)
    return _ranked(index, index.top_k([(layer, head)], direction, k, "cosine"))
