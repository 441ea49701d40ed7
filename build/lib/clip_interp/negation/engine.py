"""Causal tracing of negation in CLIP's text tower and single-colour ablation in its image tower.

Per instance there is a caption ``c``, a foil ``f`` and an image ``i``. ``S(t, i)`` is CLIP's
logit, ``logit_scale * cos(image embedding, text embedding)``, and ``d = S(c, i) - S(f, i)``.
One of ``c`` and ``f`` is the *negated* sentence ("There are no dogs."), the other the
*non-negated* one ("There are some dogs."), both of the same token length; ``negation``
(``"caption"`` or ``"foil"``) says which one is negated.

**Causal tracing** (text tower). The non-negated sentence is run with its residual stream
``resid[l]`` (``l = 0`` the embedding output, ``l = L`` the last block's output) at one
token position ``p`` overwritten by the negated sentence's ``resid[l][p]``; ``S*`` is the
similarity of this patched sentence with the image. With the negation in the foil
``d* = S(c, i) - S*(c, i)``, with the negation in the caption ``d* = S*(f, i) - S(f, i)``,
and the causal tracing effect is ``CTE(l, p) = d* / d``. The two sentences agree on every
token before the negator, so under the causal mask their residual streams agree there and
such a patch changes nothing: positions before the negator get ``S* = S``, ``d* = 0`` and
``CTE = 0`` without a forward.

**Image ablation** (image tower). The single-colour image sets every channel of the
preprocessed image to its mean over the image. At block ``l`` (1..L) the attention output
(component ``"mha"``, site ``attn_out``) or the MLP output (``"mlp"``, site ``mlp_out``) of
the real image's forward is replaced at every position by the single-colour image's output
of the same block; ``S*`` uses the resulting image embedding, ``d* = S*(c, i) - S*(f, i)``
and the image ablation effect is ``IAE(l) = d - d*``.

The definitions sit on the generic intervention engine (:mod:`clip_interp.interventions`):
causal tracing is a residual patch sweep with the non-negated sentence as receiver and the
negated one as donor, image ablation a block-output replacement with the single-colour
image's outputs. The ``reference_*`` functions compute the same tables the slow, direct way
through the library's own modules (one full forward per intervention) and exist to check
the fast ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..batching import pixel_batches, row_slices, rows_as_tensor
from ..encoding import encode_images, encode_texts, is_embedding, token_id_lists
from ..errors import InputError
from ..interventions import iter_resid_patches, replace_block_outputs
from ..interventions.reference import (capturing_resid, library_ids, library_logit, library_model, overwriting_resid,
                                       reference_block_output_replacement)
from .ablation import check_components
from .caches import single_colour as single_colour_image
from .labels import COMPONENTS, NEGATION_SIDES

__all__ = [
    "CAUSAL_TRACING_COLUMNS", "IMAGE_ABLATION_COLUMNS", "causal_tracing_effects", "encode_images", "encode_texts",
    "image_ablation_activations", "image_ablation_effects", "image_ablation_effects_from_activations",
    "reference_causal_tracing", "reference_image_ablation", "single_colour_image", "tracing_instances",
]

CAUSAL_TRACING_COLUMNS = [
    "key", "negation", "layer", "position", "S_caption", "S_foil", "d", "S_patched", "d_star", "cte",
]
IMAGE_ABLATION_COLUMNS = [
    "key", "negation", "layer", "component", "S_caption", "S_foil", "d",
    "S_caption_patched", "S_foil_patched", "d_star", "iae",
]


# --------------------------------------------------------------------------- inputs


def tracing_instances(model, frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``negated_ids``, ``non_negated_ids``, ``negator_pos`` and ``eot_pos`` to a table of sentence pairs.

    ``frame`` needs ``key``, ``negation``, ``negated`` and ``non_negated`` (sentences); the
    negator position is the first token at which the two encodings differ.
    """
    out = frame.copy()
    neg = token_id_lists(model, frame["negated"])
    non = token_id_lists(model, frame["non_negated"])
    negator = []
    for key, a, b in zip(frame["key"], neg, non):
        if len(a) != len(b):
            raise InputError(f"instance {key!r}: negated and non-negated sentences have {len(a)} and {len(b)} "
                             "tokens; causal tracing needs the rephrased variant (equal lengths)")
        diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        if not diff:
            raise InputError(f"instance {key!r}: negated and non-negated sentences are identical")
        negator.append(diff[0])
    out["negated_ids"], out["non_negated_ids"] = neg, non
    out["negator_pos"] = negator
    out["eot_pos"] = [len(a) - 1 for a in neg]
    return out


def _tracing_inputs(instances: pd.DataFrame):
    """Validated (negated ids, non-negated ids, negator positions, EOT positions) of ``instances``."""
    needed = {"key", "negation", "negated_ids", "non_negated_ids", "negator_pos"}
    missing = needed - set(instances.columns)
    if missing:
        raise InputError(f"causal tracing instances lack column(s) {sorted(missing)}; see tracing_instances()")
    neg = [[int(i) for i in s] for s in instances["negated_ids"]]
    non = [[int(i) for i in s] for s in instances["non_negated_ids"]]
    negator = instances["negator_pos"].to_numpy(dtype=np.int64)
    eot = np.asarray([len(s) - 1 for s in neg], dtype=np.int64)
    given_eot = instances["eot_pos"].to_numpy(dtype=np.int64) if "eot_pos" in instances else eot
    for n, key in enumerate(instances["key"]):
        side = instances["negation"].iloc[n]
        if side not in NEGATION_SIDES:
            raise InputError(f"instance {key!r}: negation is {side!r}, not 'caption' or 'foil'")
        if len(neg[n]) != len(non[n]):
            raise InputError(f"instance {key!r}: negated/non-negated ids differ in length ({len(neg[n])} vs {len(non[n])})")
        if given_eot[n] != eot[n]:
            raise InputError(f"instance {key!r}: eot_pos {given_eot[n]} is not the last position {eot[n]}")
        if not 0 < negator[n] <= eot[n]:
            raise InputError(f"instance {key!r}: negator_pos {negator[n]} outside 1..{eot[n]}")
        if neg[n][: negator[n]] != non[n][: negator[n]]:
            raise InputError(f"instance {key!r}: the sentences differ before the negator position {negator[n]}")
    return neg, non, negator, eot


# --------------------------------------------------------------------------- causal tracing


def _aligned_image_embeddings(image_embeddings: torch.Tensor, n: int, device) -> torch.Tensor:
    """The (N, E) image embeddings on ``device``, checked to be one per instance."""
    if image_embeddings.shape[0] != n:
        raise InputError(f"{image_embeddings.shape[0]} image embeddings for {n} instances")
    return image_embeddings.to(device)


def _tracing_mask(negator: np.ndarray, eot: np.ndarray, t: int, device) -> torch.Tensor:
    """(B, T): the positions traced per instance, from the negator to EOT (earlier ones cannot differ)."""
    positions = np.arange(t)[None, :]
    return torch.as_tensor((positions >= negator[:, None]) & (positions <= eot[:, None]), device=device)


def clean_pair_run(model, neg, non, eot: np.ndarray, cache):
    """One clean text forward of a batch's negated sentences (rows 0..B-1) and non-negated ones (B..2B-1), caching ``cache``."""
    dev = model.device
    ids = model.tokenizer.pad(neg + non, int(eot.max()) + 1).to(dev)
    eot_t = torch.as_tensor(eot, device=dev)
    return model.text.run(ids, cache=cache, pool_index=torch.cat([eot_t, eot_t]))


@dataclass
class CleanPairBatch:
    """A batch's clean forward (:func:`clean_pair_run`): the run, the EOT positions (B,), the padded
    length T, and the similarities S(negated), S(non-negated) (B,) with the batch's images."""

    run: object
    eot: torch.Tensor
    n_tokens: int
    s_negated: torch.Tensor
    s_non_negated: torch.Tensor

    @property
    def size(self) -> int:
        return len(self.eot)


def clean_pair_batch(model, neg, non, eot: np.ndarray, image_emb: torch.Tensor, cache) -> CleanPairBatch:
    """:func:`clean_pair_run` of one batch and the similarities of both sentences with its images ``image_emb``."""
    run = clean_pair_run(model, neg, non, eot, cache)
    b = len(neg)
    return CleanPairBatch(run, torch.as_tensor(eot, device=model.device), int(eot.max()) + 1,
                          model.similarity(image_emb, run.embedding[:b]), model.similarity(image_emb, run.embedding[b:]))


def patched_similarities(model, image_emb: torch.Tensor, patched) -> torch.Tensor:
    """S* (n_patched_layers, n_rows): the similarity of each patched run's embedding (``patched.embeddings``,
    (n_patched_layers, n_rows, E)) with the image of its row (``patched.rows``)."""
    n_layers, n_rows = patched.embeddings.shape[:2]
    emb = patched.embeddings.reshape(n_layers * n_rows, -1)
    return model.similarity(image_emb[patched.rows].repeat(n_layers, 1), emb).view(n_layers, n_rows)


def tracing_effect(s_caption, s_foil, s_patched, in_caption):
    """``d*`` and ``CTE = d* / d``: ``d* = S* - S(f)`` with the negation in the caption, ``S(c) - S*`` in the foil."""
    d = s_caption - s_foil
    d_star = np.where(in_caption, s_patched - s_foil, s_caption - s_patched)
    with np.errstate(divide="ignore", invalid="ignore"):
        cte = d_star / d + 0.0
    return d_star, cte


def _trace_chunk(model, neg, non, negator, eot, image_emb):
    """S(negated), S(non-negated) (B,) and the patched similarities S* (B, L+1, T) of one batch of instances.

    The non-negated sentence receives, at (l, p), the negated sentence's ``resid[l][p]``
    (:func:`~clip_interp.interventions.iter_resid_patches`). Positions before the negator keep
    ``S* = S(non-negated)``; a patch of ``resid[L]`` at EOT gives the negated sentence's own embedding.
    """
    tower, dev = model.text, model.device
    n_layers = tower.n_layers
    clean = clean_pair_batch(model, neg, non, eot, image_emb, ["resid"])
    b, t, eot_t, s_neg, s_non = clean.size, clean.n_tokens, clean.eot, clean.s_negated, clean.s_non_negated
    resid = clean.run.cache.stack("resid")
    s_patch = s_non[:, None, None].expand(b, n_layers + 1, t).clone()
    s_patch[torch.arange(b, device=dev), n_layers, eot_t] = s_neg
    mask = _tracing_mask(negator, eot, t, dev)
    for patched in iter_resid_patches(tower, resid[b:], resid[:b], mask, eot_t):
        s_patch[patched.rows, :n_layers, patched.position] = patched_similarities(model, image_emb, patched).T
    return s_neg, s_non, s_patch


def _tracing_frame(instances, s_neg, s_non, s_patch_rows, n_layers) -> pd.DataFrame:
    """The long causal-tracing table from per-instance similarities (S* arrays of shape (L+1, T_n))."""
    in_caption = instances["negation"].to_numpy() == "caption"
    s_cap = np.where(in_caption, s_neg, s_non)
    s_foil = np.where(in_caption, s_non, s_neg)
    sizes = [a.size for a in s_patch_rows]
    lengths = [a.shape[1] for a in s_patch_rows]

    def rep(values):
        return np.repeat(np.asarray(values), sizes)

    s_patched = np.concatenate([a.reshape(-1) for a in s_patch_rows])
    layer = np.concatenate([np.repeat(np.arange(n_layers + 1), t) for t in lengths])
    position = np.concatenate([np.tile(np.arange(t), n_layers + 1) for t in lengths])
    s_c, s_f, cap = rep(s_cap), rep(s_foil), rep(in_caption)
    d = s_c - s_f
    d_star, cte = tracing_effect(s_c, s_f, s_patched, cap)
    return pd.DataFrame({
        "key": rep(instances["key"].to_numpy()), "negation": rep(instances["negation"].to_numpy()),
        "layer": layer.astype(np.int16), "position": position.astype(np.int16),
        "S_caption": s_c, "S_foil": s_f, "d": d, "S_patched": s_patched, "d_star": d_star, "cte": cte,
    }, columns=CAUSAL_TRACING_COLUMNS)


def _length_batches(eot: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Instance indices in batches of at most ``batch_size``, each of one token length."""
    batches = []
    for length in np.unique(eot):
        same = np.flatnonzero(eot == length)
        batches.extend(same[sl] for sl in row_slices(len(same), batch_size))
    return batches


@torch.inference_mode()
def causal_tracing_effects(model, instances: pd.DataFrame, image_embeddings: torch.Tensor, *,
                           batch_size: int = 64, progress: bool = True) -> pd.DataFrame:
    """Causal tracing effects of every layer (0..L) and token position (0..T-1) of every instance.

    ``instances`` has columns ``key``, ``negation``, ``negated_ids``, ``non_negated_ids``
    (id lists with SOT and EOT, equal length per instance), ``negator_pos`` and optionally
    ``eot_pos`` (see :func:`tracing_instances`); ``image_embeddings`` (N, E) are the row-aligned
    image embeddings (:func:`encode_images`). Returns one row per instance x layer x position
    with columns :data:`CAUSAL_TRACING_COLUMNS`, instances in input order.

    Each batch of up to ``batch_size`` instances of one token length is run once cleanly,
    caching both sentences' residual streams; the patches then resume from them
    (:func:`~clip_interp.interventions.iter_resid_patches`).
    """
    neg, non, negator, eot = _tracing_inputs(instances)
    n = len(neg)
    image_embeddings = _aligned_image_embeddings(image_embeddings, n, model.device)
    s_neg, s_non = np.zeros(n), np.zeros(n)
    s_patch: list[np.ndarray | None] = [None] * n
    for idx in tqdm(_length_batches(eot, batch_size), desc="causal tracing", disable=not progress):
        sn, sp, patched = _trace_chunk(
            model, [neg[i] for i in idx], [non[i] for i in idx], negator[idx], eot[idx],
            image_embeddings[torch.as_tensor(idx, device=model.device)],
        )
        sn, sp, patched = sn.double().cpu().numpy(), sp.double().cpu().numpy(), patched.double().cpu().numpy()
        for j, i in enumerate(idx):
            s_neg[i], s_non[i] = sn[j], sp[j]
            s_patch[i] = patched[j, :, : eot[i] + 1]
    return _tracing_frame(instances, s_neg, s_non, s_patch, model.text.n_layers)


# --------------------------------------------------------------------------- image ablation


def _ablation_frame(keys, negation, layers, components, s_cap, s_foil, s_cap_star, s_foil_star) -> pd.DataFrame:
    """The long ablation table; starred arrays are (N, len(layers), len(components))."""
    n, n_l, n_c = s_cap_star.shape
    per = n_l * n_c
    s_c, s_f = np.repeat(s_cap, per), np.repeat(s_foil, per)
    d = s_c - s_f
    d_star = (s_cap_star - s_foil_star).reshape(-1)
    return pd.DataFrame({
        "key": np.repeat(np.asarray(keys, dtype=object), per),
        "negation": np.repeat(np.asarray(negation, dtype=object), per),
        "layer": np.tile(np.repeat(np.asarray(layers), n_c), n).astype(np.int16),
        "component": np.tile(np.asarray(components, dtype=object), n * n_l),
        "S_caption": s_c, "S_foil": s_f, "d": d,
        "S_caption_patched": s_cap_star.reshape(-1), "S_foil_patched": s_foil_star.reshape(-1),
        "d_star": d_star, "iae": d - d_star,
    }, columns=IMAGE_ABLATION_COLUMNS)


def _labels(keys, negation, n: int):
    keys = list(range(n)) if keys is None else list(keys)
    negation = [None] * n if negation is None else list(negation)
    if len(keys) != n or len(negation) != n:
        raise InputError(f"{len(keys)} keys and {len(negation)} negation labels for {n} images")
    return keys, negation


def _ablation_layers(layers, n_layers: int) -> list[int]:
    layers = list(range(1, n_layers + 1)) if layers is None else sorted({int(l) for l in layers})
    if any(not 1 <= l <= n_layers for l in layers):
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
    keys, negation = _labels(keys, negation, n)
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
        values = {"attn_out": rows_as_tensor(single_attn_out, sl, dev), "mlp_out": rows_as_tensor(single_mlp_out, sl, dev)}
        cap, foil = rows_as_tensor(caption_emb, sl, dev), rows_as_tensor(foil_emb, sl, dev)
        b = rr.shape[0]
        clean = tower.to_joint_space(rr[:, n_layers, 0])
        s_cap[sl] = model.similarity(clean, cap).double().cpu().numpy()
        s_foil[sl] = model.similarity(clean, foil).double().cpu().numpy()
        emb, order = replace_block_outputs(tower, rr, rm, values, layers, sites)
        groups = len(order)
        s_c = model.similarity(emb, cap.repeat(groups * n_c, 1)).view(groups, n_c, b)
        s_f = model.similarity(emb, foil.repeat(groups * n_c, 1)).view(groups, n_c, b)
        col = [layers.index(l) for l in order]
        s_cap_star[sl, col] = s_c.permute(2, 0, 1).double().cpu().numpy()
        s_foil_star[sl, col] = s_f.permute(2, 0, 1).double().cpu().numpy()
    return _ablation_frame(keys, negation, layers, components, s_cap, s_foil, s_cap_star, s_foil_star)


@torch.inference_mode()
def image_ablation_activations(model, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The vision activations the ablation needs, for preprocessed ``pixels`` (N, 3, H, W).

    Keys ``real_resid`` (N, L+1, P, D), ``real_resid_mid``, ``single_attn_out`` and
    ``single_mlp_out`` (N, L, P, D), as :func:`image_ablation_effects_from_activations` takes them.
    """
    pixels = pixels.to(model.device)
    real = model.vision.run(pixels, cache=["resid", "resid_mid"])
    single = model.vision.run(single_colour_image(pixels), cache=["attn_out", "mlp_out"])
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
    keys, negation = _labels(keys, negation, n)
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


# --------------------------------------------------------------------------- references (library modules)


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
    neg, non, negator, eot = _tracing_inputs(instances)
    n_layers, dev = len(lib.text_blocks), model.device
    layers = range(n_layers + 1) if layers is None else sorted({int(l) for l in layers})
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
    return _tracing_frame(instances, s_neg, s_non, s_patch, n_layers)


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
    layers = list(range(1, n_layers + 1)) if layers is None else sorted({int(l) for l in layers})
    keys, negation = _labels(keys, negation, n)
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
        ablated = reference_block_output_replacement(model, px, single_colour_image(px), layers, sites)
        s_cap_star[i] = (scale * (ablated * cap).sum(-1)).cpu().numpy()
        s_foil_star[i] = (scale * (ablated * foil).sum(-1)).cpu().numpy()
    return _ablation_frame(keys, negation, layers, components, s_cap, s_foil, s_cap_star, s_foil_star)
