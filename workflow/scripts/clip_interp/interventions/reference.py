"""Direct interventions through the library's own modules: one full forward per intervention.

These exist to check the batched engine (:mod:`.patching`, :mod:`.ablation`) and to time it:
they read and overwrite activations with PyTorch module hooks on the library's
``transformer.resblocks`` (open_clip), so they share no code with :class:`HookedTower`.
``resid[l]`` is block l's output (block 1's input for l = 0); a block's attention and MLP
outputs are the outputs of its ``ls_1`` and ``ls_2`` modules.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from ..models import layer_index

LIBRARY_OUTPUT_MODULES = {"attn_out": "ls_1", "mlp_out": "ls_2"}


@dataclass
class LibraryModel:
    """An open_clip model's modules: the model, both towers' resblocks and the text context length."""

    model: torch.nn.Module
    text_blocks: Sequence[torch.nn.Module]
    vision_blocks: Sequence[torch.nn.Module]
    context_length: int


def library_model(model) -> LibraryModel:
    """The library modules behind a :class:`HookedCLIP` (open_clip only)."""
    if model.spec.get("backend") != "open_clip":
        raise NotImplementedError(
            f"the reference implementations drive open_clip's modules; backend {model.spec.get('backend')!r} "
            "is not supported (the batched engine is)"
        )
    src = model.source_model
    text = getattr(src, "text", src)
    context = int(getattr(text, "context_length", None) or model.tokenizer.context_length)
    return LibraryModel(src, text.transformer.resblocks, src.visual.transformer.resblocks, context)


def library_ids(ids: Sequence[int], context: int, device) -> torch.Tensor:
    """One id sequence zero-padded to the context length, as ``open_clip.tokenize`` pads."""
    out = torch.zeros(1, context, dtype=torch.long)
    out[0, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
    return out.to(device)


def library_logit(src, pixels: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``logit_scale * cos`` from one forward of the library model on an image and a text."""
    out = src(pixels, ids)
    if isinstance(out, dict):
        image, text, scale = out["image_features"], out["text_features"], out["logit_scale"]
    else:
        image, text, scale = out[0], out[1], out[2]
    return (scale * (image * text).sum(-1))[0]


@contextmanager
def _handles(handles) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def overwriting_resid(blocks, layer: int, position: int, value: torch.Tensor):
    """A context in which the library forward sets ``resid[layer][:, position] = value``."""
    def overwrite(x):
        x = x.clone()
        x[:, position] = value
        return x

    if layer == 0:
        handle = blocks[0].register_forward_pre_hook(lambda module, args: (overwrite(args[0]), *args[1:]))
    else:
        handle = blocks[layer_index(layer)].register_forward_hook(lambda module, args, output: overwrite(output))
    return _handles([handle])


def capturing_resid(blocks, store: dict):
    """A context in which the library forward stores ``resid[0..L]`` in ``store`` by layer."""
    handles = [blocks[0].register_forward_pre_hook(lambda module, args: store.__setitem__(0, args[0].detach().clone()))]
    for i, block in enumerate(blocks):
        handles.append(block.register_forward_hook(
            lambda module, args, output, layer=i + 1: store.__setitem__(layer, output.detach().clone())))
    return _handles(handles)


def capturing_block_outputs(blocks, sites: Sequence[str], store: dict):
    """A context in which the library forward stores each block's ``sites`` outputs in ``store[(site, layer)]``."""
    handles = [getattr(block, LIBRARY_OUTPUT_MODULES[site]).register_forward_hook(
        lambda module, args, output, key=(site, index + 1): store.__setitem__(key, output.detach().clone()))
        for index, block in enumerate(blocks) for site in sites]
    return _handles(handles)


def replacing_block_output(blocks, site: str, layer: int, value: torch.Tensor):
    """A context in which the library forward's ``site`` output of block ``layer`` is ``value``."""
    module = getattr(blocks[layer_index(layer)], LIBRARY_OUTPUT_MODULES[site])
    return _handles([module.register_forward_hook(lambda module, args, output: value)])


@torch.inference_mode()
def reference_block_output_replacement(model, pixels: torch.Tensor, donor_pixels: torch.Tensor,
                                       layers: Sequence[int], sites: Sequence[str]) -> torch.Tensor:
    """Unit image embeddings (len(layers), len(sites), E) of one image with one block output from a donor image.

    ``pixels`` and ``donor_pixels`` are (1, 3, H, W); entry ``[k, j]`` replaces ``sites[j]`` of
    block ``layers[k]`` by the donor's, with one full library image forward each.
    """
    lib = library_model(model)
    donor: dict = {}
    with capturing_block_outputs(lib.vision_blocks, sites, donor):
        lib.model.encode_image(donor_pixels)
    out = []
    for layer in layers:
        for site in sites:
            with replacing_block_output(lib.vision_blocks, site, layer, donor[(site, layer)]):
                out.append(lib.model.encode_image(pixels, normalize=True)[0])
    return torch.stack(out).view(len(layers), len(sites), -1)
