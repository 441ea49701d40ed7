"""Causal tracing of negation in CLIP's text tower.

Definitions of ``S``, ``d``, the negated and non-negated sentences and ``negation`` as in
:mod:`.tracing_kernel`. The non-negated sentence is run with its residual stream ``resid[l]``
(``l = 0`` the embedding output, ``l = L`` the last block's output) at one token position ``p``
overwritten by the negated sentence's ``resid[l][p]``; ``S*`` is the similarity of this patched
sentence with the image. With the negation in the foil ``d* = S(c, i) - S*(c, i)``, with the
negation in the caption ``d* = S*(f, i) - S(f, i)``, and the causal tracing effect is
``CTE(l, p) = d* / d``. Positions before the negator get ``S* = S``, ``d* = 0`` and ``CTE = 0``
without a forward.

Causal tracing is a residual patch sweep of the generic intervention engine
(:func:`clip_interp.interventions.iter_resid_patches`) with the non-negated sentence as
receiver and the negated one as donor; :func:`.library_references.reference_causal_tracing`
computes the same table one library forward per patch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..interventions import iter_resid_patches
from .tracing_kernel import (
    aligned_image_embeddings,
    clean_pair_batch,
    length_batches,
    patched_similarities,
    tracing_frame,
    tracing_inputs,
    tracing_mask,
)


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
    mask = tracing_mask(negator, eot, t, dev)
    for patched in iter_resid_patches(tower, resid[b:], resid[:b], mask, eot_t):
        s_patch[patched.rows, :n_layers, patched.position] = patched_similarities(model, image_emb, patched).T
    return s_neg, s_non, s_patch


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
    neg, non, negator, eot = tracing_inputs(instances)
    n = len(neg)
    image_embeddings = aligned_image_embeddings(image_embeddings, n, model.device)
    s_neg, s_non = np.zeros(n), np.zeros(n)
    s_patch: list[np.ndarray | None] = [None] * n
    for idx in tqdm(length_batches(eot, batch_size), desc="causal tracing", disable=not progress):
        sn, sp, patched = _trace_chunk(
            model, [neg[i] for i in idx], [non[i] for i in idx], negator[idx], eot[idx],
            image_embeddings[torch.as_tensor(idx, device=model.device)],
        )
        sn, sp, patched = sn.double().cpu().numpy(), sp.double().cpu().numpy(), patched.double().cpu().numpy()
        for j, i in enumerate(idx):
            s_neg[i], s_non[i] = sn[j], sp[j]
            s_patch[i] = patched[j, :, : eot[i] + 1]
    return tracing_frame(instances, s_neg, s_non, s_patch, model.text.n_layers)
