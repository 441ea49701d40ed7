"""Synthetic preprocessed images for the benchmark tools (run as `python tools/<tool>.py`, so this folder is on
the import path): no image set is needed to time a model."""

import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD


def synthetic_pixels(n: int, size: int, seed: int) -> torch.Tensor:
    """Preprocessed (normalised) images: a tinted smooth background with a few coloured rectangles."""
    g = torch.Generator().manual_seed(seed)
    images = []
    for _ in range(n):
        low = torch.rand(1, 3, 7, 7, generator=g)
        img = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)[0]
        img = 0.6 * img + 0.4 * torch.rand(3, 1, 1, generator=g)
        for _ in range(int(torch.randint(1, 5, (1,), generator=g))):
            h, w = (int(v) for v in torch.randint(size // 8, size // 2, (2,), generator=g))
            y, x = (int(v) for v in torch.randint(0, size - max(h, w), (2,), generator=g))
            img[:, y:y + h, x:x + w] = torch.rand(3, 1, 1, generator=g)
        img = (img + 0.03 * torch.randn(img.shape, generator=g)).clamp(0, 1)
        images.append(img)
    pixels = torch.stack(images)
    mean, std = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std
