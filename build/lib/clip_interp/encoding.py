"""Batched text and image embeddings of a :class:`~clip_interp.models.HookedCLIP`."""

from __future__ import annotations

from typing import Sequence

import torch

from .batching import pixel_batches, row_slices


def token_id_lists(model, texts) -> list[list[int]]:
    """Sentences (strings) or id sequences (with SOT and EOT) as lists of ints."""
    return [model.tokenizer.encode(t) if isinstance(t, str) else [int(i) for i in t] for t in texts]


def is_embedding(x) -> bool:
    """Whether ``x`` is already a (N, E) float tensor of embeddings rather than texts."""
    return isinstance(x, torch.Tensor) and x.ndim == 2 and x.is_floating_point()


@torch.inference_mode()
def encode_images(model, pixels, *, batch_size: int = 32) -> torch.Tensor:
    """Image embeddings (N, E) on ``model.device`` of preprocessed pixels (N, 3, H, W) or of a loader."""
    return torch.cat([model.vision.run(b.to(model.device)).embedding for b in pixel_batches(pixels, batch_size)])


@torch.inference_mode()
def encode_texts(model, texts: Sequence, *, batch_size: int = 256) -> torch.Tensor:
    """Text embeddings (N, E) on ``model.device`` of sentences or id sequences (SOT ... EOT, unpadded)."""
    seqs = token_id_lists(model, texts)
    out = []
    for sl in row_slices(len(seqs), batch_size):
        part = seqs[sl]
        ids = model.tokenizer.pad(part).to(model.device)
        eot = torch.as_tensor([len(s) - 1 for s in part], device=model.device)
        out.append(model.text.run(ids, pool_index=eot).embedding)
    return torch.cat(out)
