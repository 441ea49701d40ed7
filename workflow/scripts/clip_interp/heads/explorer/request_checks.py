"""The explorer's error type and the checks of the values a request carries (query image, texts, k, map scope)."""

from __future__ import annotations

from collections.abc import Callable

from ...errors import InputError
from .. import head_title
from ..analyses import ALL_HEADS

DEFAULT_K = 8
MAX_K = 50
# What a map sums over: the chosen head, every head of its layer, or every head of every layer of the model.
MAP_SCOPES = ("this head", "all heads of its layer", "all heads of the model")
# The default scope of the topic map (b): the chosen head; of the contrastive maps (c): the whole model, as the paper
# aggregates them.
TOPIC_SCOPE = MAP_SCOPES[0]
CONTRAST_SCOPE = MAP_SCOPES[2]


class ExplorerInputError(InputError):
    """A request the explorer cannot answer (bad upload, unknown model, head outside the model, ...)."""


def require_image(image):
    """``image``; an ExplorerInputError when there is no query image yet."""
    if image is None:
        raise ExplorerInputError("no query image: upload an image, or pick one from the image set, first")
    return image


def require_text(text: str | None, what: str) -> str:
    """``text`` stripped; an ExplorerInputError asking for ``what`` when it is empty."""
    text = (text or "").strip()
    if not text:
        raise ExplorerInputError(f"enter {what}")
    return text


def check_k(k) -> int:
    """The number of neighbours ``k`` as an int in 1..:data:`MAX_K`, else an ExplorerInputError."""
    try:
        k = int(k)
    except (TypeError, ValueError):
        raise ExplorerInputError(f"the number of neighbours must be a whole number, got {k!r}") from None
    if not 1 <= k <= MAX_K:
        raise ExplorerInputError(f"the number of neighbours must be between 1 and {MAX_K}, got {k}")
    return k


def call_analysis(analysis: Callable, *args):
    """``analysis(*args)``, its InputError re-raised as an ExplorerInputError with the same message."""
    try:
        return analysis(*args)
    except InputError as exc:
        raise ExplorerInputError(str(exc)) from exc


def map_target_name(layer: int | None, head: int | None) -> str:
    """What the map of ``(layer, head)`` sums over, in words: one head, every head of a layer (head None) or every
    head of the model (:data:`~clip_interp.heads.analyses.ALL_HEADS`)."""
    if (layer, head) == ALL_HEADS:
        return "all heads of the model"
    if head is None:
        return f"all heads of layer {layer} (paper layer {layer - 1})"
    return f"head {head_title(layer, head)}"
