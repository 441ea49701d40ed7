"""Batches of rows: slices of a count, batches of pixels, rows of arrays as tensors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import numpy as np

if TYPE_CHECKING:
    import torch


def row_slices(n: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` rows covering ``0..n-1``."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def pixel_batches(pixels, batch_size: int) -> Iterator["torch.Tensor"]:
    """Batches of a (N, 3, H, W) tensor, or the tensors of an iterable of batches (a loader)."""
    import torch

    if isinstance(pixels, torch.Tensor):
        for sl in row_slices(len(pixels), batch_size):
            yield pixels[sl]
        return
    for batch in pixels:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        yield torch.as_tensor(batch)


def rows_as_tensor(array, sl: slice, device) -> "torch.Tensor":
    """Rows ``sl`` of a tensor, NumPy array or h5py dataset as a float32 tensor on ``device``."""
    import torch

    if isinstance(array, torch.Tensor):
        return array[sl].to(device=device, dtype=torch.float32)
    return torch.as_tensor(np.asarray(array[sl]), dtype=torch.float32, device=device)
