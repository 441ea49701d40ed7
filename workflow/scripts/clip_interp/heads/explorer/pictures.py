"""What the explorer shows of an image: the model's centre crop at display size, maps drawn over it, thumbnails.

Every picture is the crop the model sees (:func:`clip_interp.images.centre_view`, bicubic), drawn at
:data:`DISPLAY_SIZE` (or :data:`THUMBNAIL_SIZE`) pixels instead of the model's input size.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image

from ...images import centre_view
from .request_checks import ExplorerInputError

LOG = logging.getLogger(__name__)

DISPLAY_SIZE = 320  # pixels of the displayed square centre crop (the view the model gets, before its resize)
THUMBNAIL_SIZE = 160
OVERLAY_ALPHA = 0.55
UNREADABLE_GREY = (128, 128, 128)


def overlay(image, heat: np.ndarray, *, alpha: float = OVERLAY_ALPHA, size: int = DISPLAY_SIZE):
    """The centre crop of ``image`` with ``heat`` ([h, w] in [0, 1]) drawn over it in the inferno colour map.

    Each pixel is ``(1 - alpha * m) * image + alpha * m * colour(m)`` with ``m`` the map bilinearly resized to the
    crop, so a zero of the map leaves the image as it is.
    """
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2 or not np.isfinite(heat).all():
        raise ExplorerInputError(f"a map must be a finite [h, w] array, got shape {heat.shape}")
    base = np.asarray(centre_view(image.convert("RGB"), size), dtype=np.float32) / 255.0
    resized = np.asarray(Image.fromarray(heat).resize((size, size), Image.BILINEAR), dtype=np.float32)
    weight = alpha * np.clip(resized, 0.0, 1.0)[..., None]
    colour = colormaps["inferno"](np.clip(resized, 0.0, 1.0))[..., :3]
    blended = (1.0 - weight) * base + weight * colour
    return Image.fromarray(np.round(blended * 255.0).astype(np.uint8))


def thumbnail(path: str | Path, size: int = THUMBNAIL_SIZE):
    """The centre crop of the image file at ``path`` at ``size`` pixels, or None (logged) when it cannot be read."""
    try:
        with Image.open(path) as image:
            return centre_view(image.convert("RGB"), size)
    except (OSError, ValueError) as exc:
        LOG.warning("image %s cannot be read for a thumbnail: %s", path, exc)
        return None


def unreadable_thumbnail(size: int = THUMBNAIL_SIZE):
    """The grey square shown in place of an image file that cannot be read."""
    return Image.new("RGB", (size, size), UNREADABLE_GREY)
