"""Image files as preprocessed pixel tensors."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .errors import InputError

if TYPE_CHECKING:
    import torch


def load_images(paths: Sequence[str | Path], preprocess, keys: Sequence[str] | None = None) -> "torch.Tensor":
    """Preprocess image files into a (N, 3, H, W) tensor.

    A missing or unreadable file is an InputError naming the file (and its instance key,
    when ``keys`` are given).
    """
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise InputError(
            f"{len(missing)} image file(s) are missing, e.g. {missing[:3]}; check the images folder "
            "(re-run the image extraction rule, or fix the images source in the config)"
        )
    import torch
    from PIL import Image

    tensors = []
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as image:
                tensors.append(preprocess(image.convert("RGB")))
        except (OSError, ValueError, SyntaxError) as exc:
            owner = f" (instance {keys[i]!r})" if keys is not None else ""
            raise InputError(f"image file {p}{owner} cannot be read: {exc}; replace the file or remove the instance") from exc
    return torch.stack(tensors)
