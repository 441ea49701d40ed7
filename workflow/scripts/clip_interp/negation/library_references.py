"""Causal tracing and image ablation computed the direct way, through the model library's own modules.

One full library forward per intervention, with module hooks on the library's
``transformer.resblocks``: slow, and independent of the intervention engine, so that the
fast tables of :mod:`.causal_tracing` and :mod:`.image_ablation` can be checked against them.
Definitions as there.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..encoding import token_id_lists
from ..interventions.reference import (
    capturing_resid,
    library_ids,
    library_logit,
    library_model,
    overwriting_resid,
    reference_block_output_replacement,
)
from .caches import single_colour
from .image_ablation import ablation_frame, check_components, instance_labels
from .labels import COMPONENTS
from .tracing_kernel import tracing_frame, tracing_inputs


def _reference_patched_logits(lib, px, non_ids, donor, s_non: float, layers, first: int, eot: int,
                              n_layers: int) -> np.ndarray:
    """S* (L+1, eot+1) of one instance: one library forward per (layer, position) patch; NaN for layers not traced."""
    patched = np.full((n_layers + 1, eot + 1), np.nan)
    for layer in layers:
        patched[layer] = s_non
        for p in range(first, eot + 1):
            with overwriting_resid(lib.text_blocks, layer, p, donor[layer][:, p]):
                patched[layer, p] = library_logit(lib.model, px, non_ids).item()
    return patched


@torch.inference_mode()
def reference_causal_tracing(model, instances: pd.DataFrame, pixels: torch.Tensor, *,
                             all_positions: bool = False, layers: Iterable[int] | None = None,
                             progress: bool = False) -> pd.DataFrame:
    """Causal tracing the direct way: one full library forward (image and text) per patch.

    Sentences are zero-padded to the context length (77) as open_clip's tokenizer pads;
    ``resid[l]`` is block l's output (block 1's input for l = 0) in the library's own
    ``transformer.resblocks``, read and overwritten with module hooks. ``pixels`` (N, 3, H, W)
    are the row-aligned images. With ``all_positions`` the positions before the negator are
    patched too instead of being set to no effect. With ``layers`` only those layers are
    patched and the other layers' rows hold NaN. Columns as :func:`causal_tracing_effects`.
    """
    lib = library_model(model)
    neg, non, negator, eot = tracing_inputs(instances)
    n_layers, dev = len(lib.text_blocks), model.device
    layers = range(n_layers + 1) if layers is None else sorted({int(layer) for layer in layers})
    n = len(neg)
    s_neg, s_non, s_patch = np.zeros(n), np.zeros(n), []
    for i in tqdm(range(n), desc="reference causal tracing", disable=not progress):
        px = pixels[i:i + 1].to(dev)
        neg_ids, non_ids = library_ids(neg[i], lib.context_length, dev), library_ids(non[i], lib.context_length, dev)
        donor: dict = {}
        with capturing_resid(lib.text_blocks, donor):
            s_neg[i] = library_logit(lib.model, px, neg_ids).item()
        s_non[i] = library_logit(lib.model, px, non_ids).item()
        first = 0 if all_positions else negator[i]
        s_patch.append(_reference_patched_logits(lib, px, non_ids, donor, s_non[i], layers, first, eot[i], n_layers))
    return tracing_frame(instances, s_neg, s_non, s_patch, n_layers)


@torch.inference_mode()
def reference_image_ablation(model, pixels: torch.Tensor, captions, foils, *, keys: Sequence | None = None,
                             negation: Sequence | None = None, components: Iterable[str] = ("mha", "mlp"),
                             layers: Iterable[int] | None = None, progress: bool = False) -> pd.DataFrame:
    """Image ablation the direct way: one full library image forward per (layer, component).

    The single-colour image's outputs of ``ls_1`` (attention) and ``ls_2`` (MLP) of every
    library resblock replace, one block and one component at a time, the real image's
    (:func:`~clip_interp.interventions.reference.reference_block_output_replacement`). Text
    embeddings come from the library's ``encode_text`` on zero-padded ids, once per instance.
    Columns as :func:`image_ablation_effects_from_activations`.
    """
    lib = library_model(model)
    components = tuple(check_components(components))
    sites = [COMPONENTS[c] for c in components]
    dev = model.device
    cap_ids, foil_ids = token_id_lists(model, captions), token_id_lists(model, foils)
    n, n_layers = len(cap_ids), len(lib.vision_blocks)
    layers = list(range(1, n_layers + 1)) if layers is None else sorted({int(layer) for layer in layers})
    keys, negation = instance_labels(keys, negation, n)
    scale = lib.model.logit_scale.exp()
    s_cap, s_foil = np.zeros(n), np.zeros(n)
    s_cap_star = np.zeros((n, len(layers), len(components)))
    s_foil_star = np.zeros_like(s_cap_star)
    for i in tqdm(range(n), desc="reference image ablation", disable=not progress):
        cap = lib.model.encode_text(library_ids(cap_ids[i], lib.context_length, dev), normalize=True)[0]
        foil = lib.model.encode_text(library_ids(foil_ids[i], lib.context_length, dev), normalize=True)[0]
        px = pixels[i:i + 1].to(dev)
        image = lib.model.encode_image(px, normalize=True)[0]
        s_cap[i], s_foil[i] = (scale * (image * cap).sum()).item(), (scale * (image * foil).sum()).item()
        ablated = reference_block_output_replacement(model, px, single_colour(px), layers, sites)
        s_cap_star[i] = (scale * (ablated * cap).sum(-1)).cpu().numpy()
        s_foil_star[i] = (scale * (ablated * foil).sum(-1)).cpu().numpy()
    return ablation_frame(keys, negation, layers, components, s_cap, s_foil, s_cap_star, s_foil_star)
