"""Image files as preprocessed pixel tensors, with a stated policy for unreadable files.

Every read names the file and, when given, the instance key. Two policies for a file that is
missing, truncated or not an image (:data:`UNREADABLE_POLICIES`):

* ``stop``: an :class:`~clip_interp.errors.InputError` naming the file and key ends the job
  (right where every instance matters, e.g. the negation study);
* ``skip``: the instance is left out, and the caller gets each skipped key, file and reason to
  count, log and record in its table metadata (right for large unlabelled image sets).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .errors import InputError

if TYPE_CHECKING:
    import torch
    from PIL import Image as PILImage

UNREADABLE_POLICIES = ("stop", "skip")
# What a caller records (table metadata, log) about its policy.
POLICY_DESCRIPTIONS = {
    "stop": "an unreadable image file stops the run (every instance is needed)",
    "skip": "an unreadable image file is skipped, counted and listed",
}


def _owner(key: str | None) -> str:
    return f" (instance {key!r})" if key is not None else ""


def open_image(path: str | Path, key: str | None = None) -> "PILImage.Image":
    """The image at ``path``, fully decoded, as RGB.

    A missing, truncated or non-image file is an :class:`InputError` naming the file and the
    instance ``key``.
    """
    from PIL import Image

    if not Path(path).is_file():
        raise InputError(f"image file {path}{_owner(key)} does not exist; check the images folder (re-run the "
                         "image extraction rule, or fix the images source in the config)")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"image file {path}{_owner(key)} cannot be read: {exc}; replace the file "
                         "or remove the instance") from exc


@dataclass
class ImageBatch:
    """Preprocessed images: ``pixels`` (N_kept, 3, H, W), the positions in the request that were
    kept, and one ``{"key", "file", "reason"}`` per skipped file."""

    pixels: "torch.Tensor | None"
    kept: list[int]
    skipped: list[dict[str, Any]] = field(default_factory=list)


def read_images(paths: Sequence[str | Path], preprocess, keys: Sequence[str] | None = None,
                unreadable: str = "stop") -> ImageBatch:
    """Preprocess image files with the ``unreadable`` policy (``stop`` or ``skip``; module docstring).

    ``pixels`` is None when every file was skipped.
    """
    if unreadable not in UNREADABLE_POLICIES:
        raise ValueError(f"unreadable policy {unreadable!r}; use one of {UNREADABLE_POLICIES}")
    if keys is not None and len(keys) != len(paths):
        raise ValueError(f"{len(paths)} image paths but {len(keys)} keys")
    import torch

    tensors, kept, skipped = [], [], []
    for i, path in enumerate(paths):
        key = None if keys is None else keys[i]
        try:
            tensors.append(preprocess(open_image(path, key)))
        except InputError as exc:
            if unreadable == "stop":
                raise
            skipped.append({"key": key, "file": str(path), "reason": str(exc)})
            continue
        kept.append(i)
    return ImageBatch(torch.stack(tensors) if tensors else None, kept, skipped)


def load_images(paths: Sequence[str | Path], preprocess, keys: Sequence[str] | None = None) -> "torch.Tensor":
    """Preprocess image files into a (N, 3, H, W) tensor; any unreadable file stops (policy ``stop``).

    A missing or unreadable file is an InputError naming the file (and its instance key,
    when ``keys`` are given).
    """
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise InputError(
            f"{len(missing)} image file(s) are missing, e.g. {missing[:3]}; check the images folder "
            "(re-run the image extraction rule, or fix the images source in the config)"
        )
    return read_images(paths, preprocess, keys, unreadable="stop").pixels


def centre_view(image, size: int, resample: int | None = None):
    """The model's centre crop of a PIL image, as open_clip's evaluation preprocessing takes it (torchvision's
    ``Resize(size)`` then ``CenterCrop(size)``): the shorter side resized to ``size`` and the longer one to
    ``int(size * longer / shorter)`` (truncated), then the ``size`` x ``size`` square whose left and top offsets
    are ``int(round((side - size) / 2))``. ``resample`` is the PIL filter of the resize (default the model's,
    ``Image.BICUBIC``)."""
    if resample is None:
        from PIL import Image

        resample = Image.BICUBIC
    width, height = image.size
    if width <= height:
        new_size = (size, int(size * height / width))
    else:
        new_size = (int(size * width / height), size)
    resized = image.resize(new_size, resample)
    left = int(round((resized.size[0] - size) / 2.0))
    top = int(round((resized.size[1] - size) / 2.0))
    return resized.crop((left, top, left + size, top + size))
