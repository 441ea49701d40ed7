"""The model's centre crop (:func:`clip_interp.images.centre_view`) against the model's own preprocessing."""

import numpy as np
import pytest
import torch
from PIL import Image

from clip_interp.images import centre_view

# Odd aspect ratios, both orientations, sides of either parity, near-square and a square.
SIZES = [(97, 61), (61, 97), (301, 100), (100, 301), (225, 224), (224, 225), (640, 427), (33, 500), (50, 50)]


def _random_image(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("width, height", SIZES)
def test_centre_view_is_the_crop_of_open_clips_preprocessing(width, height):
    open_clip_transform = pytest.importorskip("open_clip.transform")
    from torchvision.transforms import Normalize, ToTensor

    size = 32
    transform = open_clip_transform.image_transform(size, is_train=False)
    normalise = next(t for t in transform.transforms if isinstance(t, Normalize))
    image = _random_image(width, height, seed=width * 1000 + height)
    expected = transform(image)
    ours = normalise(ToTensor()(centre_view(image, size)))
    assert torch.equal(ours, expected)


@pytest.mark.parametrize("width, height", SIZES)
def test_centre_view_takes_torchvisions_crop_box(width, height):
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize

    size = 24
    # every pixel holds its own coordinates, so equal arrays mean the same source pixels: the same box
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    image = Image.fromarray(np.stack([xs % 256, ys % 256, (xs // 256) * 16 + ys // 256], -1).astype(np.uint8))
    expected = CenterCrop(size)(Resize(size, interpolation=InterpolationMode.NEAREST)(image))
    assert np.array_equal(np.asarray(centre_view(image, size, Image.NEAREST)), np.asarray(expected))
