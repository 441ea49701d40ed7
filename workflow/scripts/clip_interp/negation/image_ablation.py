"""Single-colour ablation of the attention and MLP blocks of CLIP's image tower.

Per instance there is a caption ``c``, a foil ``f`` and an image ``i``; ``S(t, i)`` is CLIP's
logit ``logit_scale * cos(image embedding, text embedding)`` and ``d = S(c, i) - S(f, i)``.
The single-colour image sets every channel of the preprocessed image to its mean over the
image. At block ``l`` (1..L) the attention output (component ``"mha"``, site ``attn_out``) or
the MLP output (``"mlp"``, site ``mlp_out``) of the real image's forward is replaced at every
position by the single-colour image's output of the same block; ``S*`` uses the resulting
image embedding, ``d* = S*(c, i) - S*(f, i)`` and the image ablation effect is
``IAE(l) = d - d*``.

Image ablation is a block-output replacement of the generic intervention engine
(:func:`clip_interp.interventions.replace_block_outputs`) with the single-colour image's
outputs. :func:`image_ablation_from_caches` computes the table from the activation caches;
:func:`.library_references.reference_image_ablation` computes it one library forward per
ablation.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..batching import pixel_batches, row_slices, rows_as_tensor
from ..encoding import encode_texts, is_embedding
from ..errors import InputError
from ..interventions import replace_block_outputs
from .caches import IMAGE_DATASETS, effects_from_caches, single_colour
from .labels import COMPONENTS

IMAGE_ABLATION_COLUMNS = [
    "key", "negation", "layer", "component", "S_caption", "S_foil", "d",
    "S_caption_patched", "S_foil_patched", "d_star", "iae",
]


def check_components(components: Iterable[str]) -> list[str]:
    """The ablation components asked for, validated against :data:`labels.COMPONENTS`."""
    components = list(components)
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown or not components:
        raise InputError(f"negation.image_ablation.components: unknown or no component(s) {unknown or components}; "
                         f"choose one or more of {sorted(COMPONENTS)}")
    if len(set(components)) != len(components):
        raise InputError(f"negation.image_ablation.components lists a component twice: {components}")
    return components


def score_columns(keys, negation, s_cap, s_foil, s_cap_star, s_foil_star) -> dict:
    """The columns every ablation table shares, one row per (instance, intervention): the instance's key and
    negation side, its clean scores S_caption, S_foil and d = S_caption - S_foil, the patched scores, d_star
    and the indirect ablation effect iae = d - d_star. Starred arrays are (N, ...) in row-major order."""
    per = s_cap_star[0].size
    s_c, s_f = np.repeat(s_cap, per), np.repeat(s_foil, per)
    d = s_c - s_f
    d_star = (s_cap_star - s_foil_star).reshape(-1)
    return {
        "key": np.repeat(np.asarray(keys, dtype=object), per),
        "negation": np.repeat(np.asarray(negation, dtype=object), per),
        "S_caption": s_c, "S_foil": s_f, "d": d,
        "S_caption_patched": s_cap_star.reshape(-1), "S_foil_patched": s_foil_star.reshape(-1),
        "d_star": d_star, "iae": d - d_star,
    }


def ablation_frame(keys, negation, layers, components, s_cap, s_foil, s_cap_star, s_foil_star) -> pd.DataFrame:
    """The long image ablation table (:data:`IMAGE_ABLATION_COLUMNS`), one row per instance x layer x component.

    ``s_cap`` and ``s_foil`` (N,) are the clean similarities, the starred arrays
    (N, len(layers), len(components)) the ablated ones."""
    n, n_l, n_c = s_cap_star.shape
    return pd.DataFrame({
        **score_columns(keys, negation, s_cap, s_foil, s_cap_star, s_foil_star),
        "layer": np.tile(np.repeat(np.asarray(layers), n_c), n).astype(np.int16),
        "component": np.tile(np.asarray(components, dtype=object), n * n_l),
    }, columns=IMAGE_ABLATION_COLUMNS)


def instance_labels(keys, negation, n: int) -> tuple[list, list]:
    """The ``keys`` and ``negation`` labels of ``n`` images as lists, checked to be ``n`` each.

    Missing keys default to 0..n-1, missing negation labels to None."""
    keys = list(range(n)) if keys is None else list(keys)
    negation = [None] * n if negation is None else list(negation)
    if len(keys) != n or len(negation) != n:
        raise InputError(f"{len(keys)} keys and {len(negation)} negation labels for {n} images")
    return keys, negation


def _ablation_layers(layers, n_layers: int) -> list[int]:
    layers = list(range(1, n_layers + 1)) if layers is None else sorted({int(layer) for layer in layers})
    if any(not 1 <= layer <= n_layers for layer in layers):
        raise InputError(f"ablation layers must lie in 1..{n_layers}, got {layers}")
    return layers


def _check_activation_shapes(arrays: dict, n: int, n_layers: int) -> None:
    for name, (arr, depth) in arrays.items():
        if tuple(arr.shape[:2]) != (n, depth) or len(arr.shape) != 4:
            raise InputError(f"{name} has shape {tuple(arr.shape)}, expected ({n}, {depth}, P, D)")


@torch.inference_mode()
def image_ablation_effects_from_activations(
    model, real_resid, real_resid_mid, single_attn_out, single_mlp_out, caption_emb, foil_emb, *,
    keys: Sequence | None = None, negation: Sequence | None = None, components: Iterable[str] = ("mha", "mlp"),
    layers: Iterable[int] | None = None, batch_size: int = 16, progress: bool = True,
) -> pd.DataFrame:
    """Image ablation effects from stored activations of the vision tower.

    ``real_resid`` (N, L+1, P, D) and ``real_resid_mid`` (N, L, P, D) are the real image's
    ``resid`` and ``resid_mid``; ``single_attn_out`` and ``single_mlp_out`` (N, L, P, D) the
    single-colour image's ``attn_out`` and ``mlp_out`` (tensors, NumPy arrays or h5py
    datasets, read ``batch_size`` rows at a time); ``caption_emb`` and ``foil_emb`` (N, E) the
    text embeddings. Returns one row per image x layer (``layers``, default 1..L) x component
    with columns :data:`IMAGE_ABLATION_COLUMNS`.

    Component ``"mha"`` replaces block l's ``attn_out`` by the single-colour image's, ``"mlp"``
    its ``mlp_out`` (:func:`~clip_interp.interventions.replace_block_outputs`).
    """
    tower = model.vision
    n_layers, dev = tower.n_layers, model.device
    components = tuple(check_components(components))
    sites = [COMPONENTS[c] for c in components]
    layers = _ablation_layers(layers, n_layers)
    n = len(caption_emb)
    keys, negation = instance_labels(keys, negation, n)
    _check_activation_shapes({"real_resid": (real_resid, n_layers + 1), "real_resid_mid": (real_resid_mid, n_layers),
                              "single_attn_out": (single_attn_out, n_layers),
                              "single_mlp_out": (single_mlp_out, n_layers)}, n, n_layers)
    if len(foil_emb) != n:
        raise InputError(f"{len(foil_emb)} foil embeddings for {n} caption embeddings")
    s_cap, s_foil = np.zeros(n), np.zeros(n)
    s_cap_star = np.zeros((n, len(layers), len(components)))
    s_foil_star = np.zeros_like(s_cap_star)
    n_c = len(components)
    for sl in tqdm(row_slices(n, batch_size), desc="image ablation", disable=not progress):
        rr, rm = rows_as_tensor(real_resid, sl, dev), rows_as_tensor(real_resid_mid, sl, dev)
        values = {"attn_out": rows_as_tensor(single_attn_out, sl, dev),
                  "mlp_out": rows_as_tensor(single_mlp_out, sl, dev)}
        cap, foil = rows_as_tensor(caption_emb, sl, dev), rows_as_tensor(foil_emb, sl, dev)
        b = rr.shape[0]
        clean = tower.to_joint_space(rr[:, n_layers, 0])
        s_cap[sl] = model.similarity(clean, cap).double().cpu().numpy()
        s_foil[sl] = model.similarity(clean, foil).double().cpu().numpy()
        emb, order = replace_block_outputs(tower, rr, rm, values, layers, sites)
        groups = len(order)
        s_c = model.similarity(emb, cap.repeat(groups * n_c, 1)).view(groups, n_c, b)
        s_f = model.similarity(emb, foil.repeat(groups * n_c, 1)).view(groups, n_c, b)
        col = [layers.index(layer) for layer in order]
        s_cap_star[sl, col] = s_c.permute(2, 0, 1).double().cpu().numpy()
        s_foil_star[sl, col] = s_f.permute(2, 0, 1).double().cpu().numpy()
    return ablation_frame(keys, negation, layers, components, s_cap, s_foil, s_cap_star, s_foil_star)


@torch.inference_mode()
def image_ablation_activations(model, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The vision activations the ablation needs, for preprocessed ``pixels`` (N, 3, H, W).

    Keys ``real_resid`` (N, L+1, P, D), ``real_resid_mid``, ``single_attn_out`` and
    ``single_mlp_out`` (N, L, P, D), as :func:`image_ablation_effects_from_activations` takes them.
    """
    pixels = pixels.to(model.device)
    real = model.vision.run(pixels, cache=["resid", "resid_mid"])
    single = model.vision.run(single_colour(pixels), cache=["attn_out", "mlp_out"])
    return {
        "real_resid": real.cache.stack("resid"), "real_resid_mid": real.cache.stack("resid_mid"),
        "single_attn_out": single.cache.stack("attn_out"), "single_mlp_out": single.cache.stack("mlp_out"),
    }


@torch.inference_mode()
def image_ablation_effects(model, pixels, captions, foils, *, keys: Sequence | None = None,
                           negation: Sequence | None = None, components: Iterable[str] = ("mha", "mlp"),
                           layers: Iterable[int] | None = None, batch_size: int = 16,
                           progress: bool = True) -> pd.DataFrame:
    """Image ablation effects computed from the images themselves.

    ``pixels`` is a preprocessed (N, 3, H, W) tensor or an iterable of such batches (a
    loader); ``captions`` and ``foils`` are N sentences, N id sequences (SOT ... EOT) or
    (N, E) text embeddings. Each batch's activations (:func:`image_ablation_activations`)
    go to :func:`image_ablation_effects_from_activations`; the text embeddings are computed once.
    """
    components = tuple(check_components(components))
    cap_emb = captions.to(model.device) if is_embedding(captions) else encode_texts(model, captions)
    foil_emb = foils.to(model.device) if is_embedding(foils) else encode_texts(model, foils)
    n = len(cap_emb)
    keys, negation = instance_labels(keys, negation, n)
    frames, offset = [], 0
    total = -(-len(pixels) // batch_size) if isinstance(pixels, torch.Tensor) else None
    for batch in tqdm(pixel_batches(pixels, batch_size), total=total, desc="image ablation", disable=not progress):
        sl = slice(offset, offset + len(batch))
        if sl.stop > n:
            raise InputError(f"more images than the {n} captions")
        acts = image_ablation_activations(model, batch)
        frames.append(image_ablation_effects_from_activations(
            model, **acts, caption_emb=cap_emb[sl], foil_emb=foil_emb[sl], keys=keys[sl], negation=negation[sl],
            components=components, layers=layers, batch_size=len(batch), progress=False,
        ))
        offset = sl.stop
    if offset != n:
        raise InputError(f"{offset} images for {n} captions")
    return pd.concat(frames, ignore_index=True)


def image_ablation_from_caches(model, image_cache, text_cache, negation_by_key, *,
                               components: Iterable[str] = ("mha", "mlp"), batch_size: int = 16,
                               progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """The image ablation table of every instance of ``text_cache``, with activations from ``image_cache``.

    Returns the table (columns :data:`IMAGE_ABLATION_COLUMNS`, instances in the text
    cache's order, per instance layers 1..L x ``components``) and counts for the metadata.
    Image-cache rows are matched to text-cache rows by key; the instances are processed in
    increasing image-cache row order, ``batch_size`` at a time, reading only those rows of the
    cached activations (:func:`.caches.effects_from_caches`). Instances of the text cache absent
    from the image cache are an InputError.
    """
    components = check_components(components)

    def effects(activations, caption_emb, foil_emb, keys, negation):
        return image_ablation_effects_from_activations(
            model,
            activations["real/resid"], activations["real/resid_mid"],
            activations["single_colour/attn_out"], activations["single_colour/mlp_out"],
            caption_emb, foil_emb,
            keys=keys, negation=negation, components=components,
            batch_size=batch_size, progress=progress,
        )

    table, instances = effects_from_caches(image_cache, text_cache, negation_by_key, IMAGE_DATASETS, effects)
    counts = {
        **instances.counts(),
        "n_image_cache_rows_unused": instances.n_image_rows - len(instances.keys),
        "image_rows_in_text_order": bool(np.array_equal(instances.image_rows, np.arange(len(instances.keys)))),
    }
    return table, counts
