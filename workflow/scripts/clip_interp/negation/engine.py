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

The fast functions (:func:`causal_tracing_effects`, :func:`image_ablation_effects`,
:func:`image_ablation_effects_from_activations`) run on :class:`HookedCLIP` towers, resume
each intervention from stored residual streams and batch many interventions per forward.
The ``reference_*`` functions compute the same tables the slow, direct way through the
library's own modules (one full forward per intervention, with PyTorch module hooks) and
exist to check the fast ones.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..cache import single_colour as single_colour_image
from ..errors import InputError
from .labels import COMPONENTS, NEGATION_SIDES

CAUSAL_TRACING_COLUMNS = [
    "key", "negation", "layer", "position", "S_caption", "S_foil", "d", "S_patched", "d_star", "cte",
]
IMAGE_ABLATION_COLUMNS = [
    "key", "negation", "layer", "component", "S_caption", "S_foil", "d",
    "S_caption_patched", "S_foil_patched", "d_star", "iae",
]


# --------------------------------------------------------------------------- inputs


def _id_lists(model, texts) -> list[list[int]]:
    """Sentences (strings) or id sequences (with SOT and EOT) as lists of ints."""
    out = []
    for t in texts:
        out.append(model.tokenizer.encode(t) if isinstance(t, str) else [int(i) for i in t])
    return out


def _is_embedding(x) -> bool:
    return isinstance(x, torch.Tensor) and x.ndim == 2 and x.is_floating_point()


def _pixel_batches(pixels, batch_size: int) -> Iterator[torch.Tensor]:
    """Batches of a (N, 3, H, W) tensor, or the tensors of an iterable of batches (a loader)."""
    if isinstance(pixels, torch.Tensor):
        for start in range(0, len(pixels), batch_size):
            yield pixels[start:start + batch_size]
        return
    for batch in pixels:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        yield torch.as_tensor(batch)


def _rows(array, sl: slice, device) -> torch.Tensor:
    """Rows ``sl`` of a tensor, NumPy array or h5py dataset as a float32 tensor on ``device``."""
    if isinstance(array, torch.Tensor):
        return array[sl].to(device=device, dtype=torch.float32)
    return torch.as_tensor(np.asarray(array[sl]), dtype=torch.float32, device=device)


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


@torch.inference_mode()
def encode_images(model, pixels, *, batch_size: int = 32) -> torch.Tensor:
    """Image embeddings (N, E) on ``model.device`` of preprocessed pixels (N, 3, H, W) or of a loader."""
    return torch.cat([model.vision.run(b.to(model.device)).embedding for b in _pixel_batches(pixels, batch_size)])


@torch.inference_mode()
def encode_texts(model, texts: Sequence, *, batch_size: int = 256) -> torch.Tensor:
    """Text embeddings (N, E) on ``model.device`` of sentences or id sequences (SOT ... EOT, unpadded)."""
    seqs = _id_lists(model, texts)
    out = []
    for sl in _chunks(len(seqs), batch_size):
        part = seqs[sl]
        ids = model.tokenizer.pad(part).to(model.device)
        eot = torch.as_tensor([len(s) - 1 for s in part], device=model.device)
        out.append(model.text.run(ids, pool_index=eot).embedding)
    return torch.cat(out)


def tracing_instances(model, frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``negated_ids``, ``non_negated_ids``, ``negator_pos`` and ``eot_pos`` to a table of sentence pairs.

    ``frame`` needs ``key``, ``negation``, ``negated`` and ``non_negated`` (sentences); the
    negator position is the first token at which the two encodings differ.
    """
    out = frame.copy()
    neg = _id_lists(model, frame["negated"])
    non = _id_lists(model, frame["non_negated"])
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


# --------------------------------------------------------------------------- resumed forwards


def _final_block_pooled(tower, x: torch.Tensor, pool: torch.Tensor, prefix=None) -> torch.Tensor:
    """Block L applied to ``resid[L-1]`` = ``x`` (B, T, D), returning only the pooled rows of ``resid[L]`` (B, D).

    Keys and values come from every position (after ``prefix``'s, for a causal tower);
    the query, output projection and MLP only from the pooled position.
    """
    block = tower.blocks[-1]
    b, t, d = x.shape
    n_h, d_h = tower.n_heads, tower.d_head
    rows = torch.arange(b, device=x.device)
    h = block.ln_1(x)
    bias = block.b_qkv
    kv = F.linear(h, block.w_qkv[d:], None if bias is None else bias[d:]).view(b, t, 2, n_h, d_h)
    k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
    q = F.linear(h[rows, pool], block.w_qkv[:d], None if bias is None else bias[:d]).view(b, n_h, 1, d_h)
    n_prefix = 0
    if prefix is not None:
        n_prefix = prefix[0].shape[2]
        k = torch.cat([prefix[0], k], dim=2)
        v = torch.cat([prefix[1], v], dim=2)
    mask = None
    if tower.causal:
        keys = torch.arange(k.shape[2], device=x.device)
        mask = (keys.unsqueeze(0) <= (pool + n_prefix).unsqueeze(1)).view(b, 1, 1, -1)
    z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    y = x[rows, pool] + block.ls_1(F.linear(z.reshape(b, d), block.w_out, block.b_out))
    return y + block.ls_2(block.mlp(block.ln_2(y)))


def _mlp_step(block, x: torch.Tensor) -> torch.Tensor:
    """``resid_mid`` -> ``resid`` of one block: add its MLP output."""
    return x + block.ls_2(block.mlp(block.ln_2(x)))


# --------------------------------------------------------------------------- causal tracing


def _trace_chunk(model, neg, non, negator, eot, image_emb):
    """S(negated), S(non-negated) (B,) and the patched similarities S* (B, L+1, T) of one batch of instances.

    For each position p, the patches of all layers go through the blocks together: block m
    runs on the patches made at layers 0..m-1 (a patch at layer l joins before block l+1),
    over positions p..EOT, with the clean keys and values of positions < p.
    """
    tower = model.text
    n_layers, dev = tower.n_layers, model.device
    b = len(neg)
    t = int(eot.max()) + 1
    ids = model.tokenizer.pad(neg + non, t).to(dev)
    eot_t = torch.as_tensor(eot, device=dev)
    clean = tower.run(ids, cache=["resid"], pool_index=torch.cat([eot_t, eot_t]))
    resid = clean.cache.stack("resid")
    r_neg, r_non = resid[:b], resid[b:]
    s_neg = model.similarity(image_emb, clean.embedding[:b])
    s_non = model.similarity(image_emb, clean.embedding[b:])
    kv = {m: tower.keys_values(r_non[:, m - 1], m) for m in range(1, n_layers + 1)}
    s_patch = s_non[:, None, None].expand(b, n_layers + 1, t).clone()
    s_patch[torch.arange(b, device=dev), n_layers, eot_t] = s_neg
    for p in range(int(negator.min()), t):
        sel = np.flatnonzero((negator <= p) & (eot >= p))
        if len(sel) == 0:
            continue
        rows = torch.as_tensor(sel, device=dev)
        end = int(eot[sel].max()) + 1
        x = None
        for m in range(1, n_layers + 1):
            start = r_non[rows, m - 1, p:end]
            start[:, 0] = r_neg[rows, m - 1, p]
            x = start if x is None else torch.cat([x, start])
            pool = (eot_t[rows] - p).repeat(m)
            prefix = None if p == 0 else tuple(z[rows, :, :p].repeat(m, 1, 1, 1) for z in kv[m])
            if m < n_layers:
                x = tower.run(start_layer=m - 1, start_resid=x, prefix_kv=None if prefix is None else {m: prefix},
                              pool_index=pool, stop_layer=m).resid_final
            else:
                x = _final_block_pooled(tower, x, pool, prefix)
        emb = tower.head(x)
        s = model.similarity(image_emb[rows].repeat(n_layers, 1), emb).view(n_layers, len(sel))
        s_patch[rows, :n_layers, p] = s.T
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
    d_star = np.where(cap, s_patched - s_f, s_c - s_patched)
    with np.errstate(divide="ignore", invalid="ignore"):
        cte = d_star / d + 0.0
    return pd.DataFrame({
        "key": rep(instances["key"].to_numpy()), "negation": rep(instances["negation"].to_numpy()),
        "layer": layer.astype(np.int16), "position": position.astype(np.int16),
        "S_caption": s_c, "S_foil": s_f, "d": d, "S_patched": s_patched, "d_star": d_star, "cte": cte,
    }, columns=CAUSAL_TRACING_COLUMNS)


@torch.inference_mode()
def causal_tracing_effects(model, instances: pd.DataFrame, image_embeddings: torch.Tensor, *,
                           batch_size: int = 64, progress: bool = True) -> pd.DataFrame:
    """Causal tracing effects of every layer (0..L) and token position (0..T-1) of every instance.

    ``instances`` has columns ``key``, ``negation``, ``negated_ids``, ``non_negated_ids``
    (id lists with SOT and EOT, equal length per instance), ``negator_pos`` and optionally
    ``eot_pos`` (see :func:`tracing_instances`); ``image_embeddings`` (N, E) are the row-aligned
    image embeddings (:func:`encode_images`). Returns one row per instance x layer x position
    with columns :data:`CAUSAL_TRACING_COLUMNS`, instances in input order.

    Each batch of up to ``batch_size`` instances of one token length is run once cleanly, caching
    both sentences' residual streams and the non-negated sentence's keys and values. A patch
    at ``(l, p)`` resumes from the patched ``resid[l]`` and recomputes only positions ``>= p``
    (earlier positions enter through their clean keys and values), and the last block only
    for the EOT row. The patches at one position ``p`` of all instances of the batch and all
    layers share the forwards: block m runs once on every patch made at a layer below m.
    """
    neg, non, negator, eot = _tracing_inputs(instances)
    n = len(neg)
    image_embeddings = image_embeddings.to(model.device)
    if image_embeddings.shape[0] != n:
        raise InputError(f"{image_embeddings.shape[0]} image embeddings for {n} instances")
    n_layers = model.text.n_layers
    batches = []
    for length in np.unique(eot):
        same = np.flatnonzero(eot == length)
        batches.extend(same[sl] for sl in _chunks(len(same), batch_size))
    s_neg, s_non = np.zeros(n), np.zeros(n)
    s_patch: list[np.ndarray | None] = [None] * n
    for idx in tqdm(batches, desc="causal tracing", disable=not progress):
        sn, sp, patched = _trace_chunk(
            model, [neg[i] for i in idx], [non[i] for i in idx], negator[idx], eot[idx],
            image_embeddings[torch.as_tensor(idx, device=model.device)],
        )
        sn, sp, patched = sn.double().cpu().numpy(), sp.double().cpu().numpy(), patched.double().cpu().numpy()
        for j, i in enumerate(idx):
            s_neg[i], s_non[i] = sn[j], sp[j]
            s_patch[i] = patched[j, :, : eot[i] + 1]
    return _tracing_frame(instances, s_neg, s_non, s_patch, n_layers)


# --------------------------------------------------------------------------- image ablation


def _check_components(components) -> tuple[str, ...]:
    components = tuple(components)
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown or not components:
        raise InputError(f"unknown ablation component(s) {unknown}; choose from {sorted(COMPONENTS)}")
    return components


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


def _ablation_start(tower, layer: int, component: str, rr, rm, sa, sm) -> torch.Tensor:
    """The ablated ``resid[layer]`` of a batch (only the class token at the last layer)."""
    keep = slice(None) if layer < tower.n_layers else slice(0, 1)
    if component == "mha":
        return _mlp_step(tower.blocks[layer - 1], (rr[:, layer - 1] + sa[:, layer - 1])[:, keep])
    return (rm[:, layer - 1] + sm[:, layer - 1])[:, keep]


def _ablate_chunk(tower, rr, rm, sa, sm, layers, components):
    """Pooled ``resid[L]`` rows of every ablation of a batch, and the layer of each row group.

    Rows come in groups of ``len(components) * B`` (component-major), one group per ablated
    layer, in the returned order. Block m runs once on all ablations made at layers < m.
    """
    n_layers = tower.n_layers
    wanted = set(layers)
    x, order = None, []
    for m in range(2, n_layers + 1):
        if m - 1 in wanted:
            new = torch.cat([_ablation_start(tower, m - 1, c, rr, rm, sa, sm) for c in components])
            x = new if x is None else torch.cat([x, new])
            order.append(m - 1)
        if x is None:
            continue
        pool = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        if m < n_layers:
            x = tower.run(start_layer=m - 1, start_resid=x, pool_index=pool, stop_layer=m).resid_final
        else:
            x = _final_block_pooled(tower, x, pool)
    parts = [] if x is None else [x]
    if n_layers in wanted:
        parts.append(torch.cat([_ablation_start(tower, n_layers, c, rr, rm, sa, sm)[:, 0] for c in components]))
        order.append(n_layers)
    return torch.cat(parts), order


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

    The ablated ``resid[l]`` is ``resid[l-1] + single attn_out[l]`` followed by block l's MLP
    ("mha") or ``resid_mid[l] + single mlp_out[l]`` ("mlp"); blocks l+1..L then run from it
    (the last one for the class token only). Within a batch of ``batch_size`` images, block m
    runs once on every ablation made at a layer below m.
    """
    tower = model.vision
    n_layers, dev = tower.n_layers, model.device
    components = _check_components(components)
    layers = list(range(1, n_layers + 1)) if layers is None else sorted({int(l) for l in layers})
    if any(not 1 <= l <= n_layers for l in layers):
        raise InputError(f"ablation layers must lie in 1..{n_layers}, got {layers}")
    n = len(caption_emb)
    keys, negation = _labels(keys, negation, n)
    shapes = {"real_resid": (real_resid, n_layers + 1), "real_resid_mid": (real_resid_mid, n_layers),
              "single_attn_out": (single_attn_out, n_layers), "single_mlp_out": (single_mlp_out, n_layers)}
    for name, (arr, depth) in shapes.items():
        if tuple(arr.shape[:2]) != (n, depth) or len(arr.shape) != 4:
            raise InputError(f"{name} has shape {tuple(arr.shape)}, expected ({n}, {depth}, P, D)")
    if len(foil_emb) != n:
        raise InputError(f"{len(foil_emb)} foil embeddings for {n} caption embeddings")
    s_cap, s_foil = np.zeros(n), np.zeros(n)
    s_cap_star = np.zeros((n, len(layers), len(components)))
    s_foil_star = np.zeros_like(s_cap_star)
    n_c = len(components)
    for sl in tqdm(_chunks(n, batch_size), desc="image ablation", disable=not progress):
        rr, rm = _rows(real_resid, sl, dev), _rows(real_resid_mid, sl, dev)
        sa, sm = _rows(single_attn_out, sl, dev), _rows(single_mlp_out, sl, dev)
        cap, foil = _rows(caption_emb, sl, dev), _rows(foil_emb, sl, dev)
        b = rr.shape[0]
        clean = tower.head(rr[:, n_layers, 0])
        s_cap[sl] = model.similarity(clean, cap).double().cpu().numpy()
        s_foil[sl] = model.similarity(clean, foil).double().cpu().numpy()
        pooled, order = _ablate_chunk(tower, rr, rm, sa, sm, layers, components)
        emb = tower.head(pooled)
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
    components = _check_components(components)
    cap_emb = captions.to(model.device) if _is_embedding(captions) else encode_texts(model, captions)
    foil_emb = foils.to(model.device) if _is_embedding(foils) else encode_texts(model, foils)
    n = len(cap_emb)
    keys, negation = _labels(keys, negation, n)
    frames, offset = [], 0
    batches = _pixel_batches(pixels, batch_size)
    total = -(-len(pixels) // batch_size) if isinstance(pixels, torch.Tensor) else None
    for batch in tqdm(batches, total=total, desc="image ablation", disable=not progress):
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


def _open_clip_parts(model):
    """(library model, text resblocks, vision resblocks, text context length) of an open_clip model."""
    if model.spec.get("backend") != "open_clip":
        raise NotImplementedError(
            f"the reference implementations drive open_clip's modules; backend {model.spec.get('backend')!r} "
            "is not supported (the fast functions are)"
        )
    src = model.source_model
    text = getattr(src, "text", src)
    context = int(getattr(text, "context_length", None) or model.tokenizer.context_length)
    return src, text.transformer.resblocks, src.visual.transformer.resblocks, context


def _library_ids(ids: Sequence[int], context: int, device) -> torch.Tensor:
    """One id sequence zero-padded to the context length, as ``open_clip.tokenize`` pads."""
    out = torch.zeros(1, context, dtype=torch.long)
    out[0, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
    return out.to(device)


def _library_logit(src, pixels: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``logit_scale * cos`` from one forward of the library model on an image and a text."""
    out = src(pixels, ids)
    if isinstance(out, dict):
        image, text, scale = out["image_features"], out["text_features"], out["logit_scale"]
    else:
        image, text, scale = out[0], out[1], out[2]
    return (scale * (image * text).sum(-1))[0]


def _resid_overwrite(blocks, layer: int, pos: int, value: torch.Tensor):
    """Register a hook on the library's resblocks setting ``resid[layer][:, pos] = value``; returns its handle."""
    def overwrite(x):
        x = x.clone()
        x[:, pos] = value
        return x

    if layer == 0:
        return blocks[0].register_forward_pre_hook(lambda module, args: (overwrite(args[0]), *args[1:]))
    return blocks[layer - 1].register_forward_hook(lambda module, args, output: overwrite(output))


def _capture_resid(blocks, store: dict):
    """Hooks storing ``resid[0..L]`` (the input of block 1 and every block's output) in ``store``."""
    handles = [blocks[0].register_forward_pre_hook(lambda module, args: store.__setitem__(0, args[0].detach().clone()))]
    for i, block in enumerate(blocks):
        handles.append(block.register_forward_hook(
            lambda module, args, output, layer=i + 1: store.__setitem__(layer, output.detach().clone())))
    return handles


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
    src, blocks, _, context = _open_clip_parts(model)
    neg, non, negator, eot = _tracing_inputs(instances)
    n_layers, dev = len(blocks), model.device
    layers = range(n_layers + 1) if layers is None else sorted({int(l) for l in layers})
    n = len(neg)
    s_neg, s_non, s_patch = np.zeros(n), np.zeros(n), []
    for i in tqdm(range(n), desc="reference causal tracing", disable=not progress):
        px = pixels[i:i + 1].to(dev)
        neg_ids, non_ids = _library_ids(neg[i], context, dev), _library_ids(non[i], context, dev)
        donor: dict = {}
        handles = _capture_resid(blocks, donor)
        try:
            s_neg[i] = _library_logit(src, px, neg_ids).item()
        finally:
            for h in handles:
                h.remove()
        s_non[i] = _library_logit(src, px, non_ids).item()
        patched = np.full((n_layers + 1, eot[i] + 1), np.nan)
        first = 0 if all_positions else negator[i]
        for layer in layers:
            patched[layer] = s_non[i]
            for p in range(first, eot[i] + 1):
                handle = _resid_overwrite(blocks, layer, p, donor[layer][:, p])
                try:
                    patched[layer, p] = _library_logit(src, px, non_ids).item()
                finally:
                    handle.remove()
        s_patch.append(patched)
    return _tracing_frame(instances, s_neg, s_non, s_patch, n_layers)


@torch.inference_mode()
def reference_image_ablation(model, pixels: torch.Tensor, captions, foils, *, keys: Sequence | None = None,
                             negation: Sequence | None = None, components: Iterable[str] = ("mha", "mlp"),
                             layers: Iterable[int] | None = None, progress: bool = False) -> pd.DataFrame:
    """Image ablation the direct way: one full library image forward per (layer, component).

    The single-colour image's outputs of ``ls_1`` (attention) and ``ls_2`` (MLP) of every
    library resblock are recorded with forward hooks, then substituted, one block and one
    component at a time, into the real image's forward. Text embeddings come from the
    library's ``encode_text`` on zero-padded ids, once per instance. Columns as
    :func:`image_ablation_effects_from_activations`.
    """
    src, _, blocks, context = _open_clip_parts(model)
    components = _check_components(components)
    dev = model.device
    cap_ids, foil_ids = _id_lists(model, captions), _id_lists(model, foils)
    n, n_layers = len(cap_ids), len(blocks)
    layers = list(range(1, n_layers + 1)) if layers is None else sorted({int(l) for l in layers})
    keys, negation = _labels(keys, negation, n)
    scale = src.logit_scale.exp()
    sites = {"mha": "ls_1", "mlp": "ls_2"}
    s_cap, s_foil = np.zeros(n), np.zeros(n)
    s_cap_star = np.zeros((n, len(layers), len(components)))
    s_foil_star = np.zeros_like(s_cap_star)
    for i in tqdm(range(n), desc="reference image ablation", disable=not progress):
        cap = src.encode_text(_library_ids(cap_ids[i], context, dev), normalize=True)
        foil = src.encode_text(_library_ids(foil_ids[i], context, dev), normalize=True)
        px = pixels[i:i + 1].to(dev)
        single: dict = {}
        handles = [getattr(block, sites[c]).register_forward_hook(
            lambda module, args, output, key=(c, l + 1): single.__setitem__(key, output.detach().clone()))
            for l, block in enumerate(blocks) for c in components]
        try:
            src.encode_image(single_colour_image(px))
        finally:
            for h in handles:
                h.remove()
        image = src.encode_image(px, normalize=True)
        s_cap[i], s_foil[i] = (scale * (image * cap).sum()).item(), (scale * (image * foil).sum()).item()
        for k, layer in enumerate(layers):
            for j, comp in enumerate(components):
                value = single[(comp, layer)]
                handle = getattr(blocks[layer - 1], sites[comp]).register_forward_hook(
                    lambda module, args, output, value=value: value)
                try:
                    image = src.encode_image(px, normalize=True)
                finally:
                    handle.remove()
                s_cap_star[i, k, j] = (scale * (image * cap).sum()).item()
                s_foil_star[i, k, j] = (scale * (image * foil).sum()).item()
    return _ablation_frame(keys, negation, layers, components, s_cap, s_foil, s_cap_star, s_foil_star)
