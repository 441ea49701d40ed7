"""Causal tracing of the attention (MHA) and MLP outputs of the text tower's blocks, beside the residual stream.

Definitions as in causal tracing (:mod:`.causal_tracing`), with a different patch: the non-negated
sentence receives, at block ``l`` (1..L) and token position ``p``, the negated sentence's
attention output (site ``attn_out``, component MHA) or MLP output (``mlp_out``) of that block
at ``p`` only; everything else is computed from the patched stream on. ``S*`` is the
patched sentence's similarity with the image, ``d*`` as in causal tracing and ``CTE = d* / d``.
Positions before the negator agree in both sentences, so their patches change nothing
(``CTE = 0`` without a forward). The patch is run as a residual-stream patch of
``resid[l]`` at ``p`` (:mod:`clip_interp.interventions.site_patching`) with causal tracing's
batched resume.

Where the two sentences agree on ``resid[l-1]`` at ``p`` (block 1, positions after the
negator: same token, same position), patching ``attn_out`` of block ``l`` at ``p`` equals
patching ``resid[l]`` at ``p``: the attention output is then the only difference.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..errors import InputError
from ..interventions import PATCHABLE_BLOCK_SITES, block_output_patch_values, iter_resid_patches
from ..plotting import new_figure
from .labels import NEGATION_SIDES
from .tracing import COLOUR_LIMIT, colour_bar_extend, draw_cte_heatmap, heatmap
from .tracing_kernel import (
    CAUSAL_TRACING_COLUMNS,
    aligned_image_embeddings,
    clean_pair_batch,
    length_batches,
    patched_similarities,
    tracing_frame,
    tracing_inputs,
    tracing_mask,
)

SITE_LABELS = {"resid": "residual stream", "attn_out": "MHA output (attn_out)", "mlp_out": "MLP output (mlp_out)"}
SITE_TRACING_COLUMNS = ["site", *CAUSAL_TRACING_COLUMNS]


def check_sites(sites: Iterable[str]) -> list[str]:
    """The block-output sites asked for, validated against :data:`PATCHABLE_BLOCK_SITES`."""
    sites = list(sites)
    bad = [s for s in sites if s not in PATCHABLE_BLOCK_SITES]
    if bad or not sites or len(set(sites)) != len(sites):
        raise InputError(f"negation.followups.site_tracing.sites is {sites}; choose distinct sites of "
                         f"{list(PATCHABLE_BLOCK_SITES)}")
    return sites


def _site_chunk(model, neg, non, negator, eot, image_emb, sites):
    """S(negated), S(non-negated) (B,) and per site S* (B, L+1, T) of one batch (layer 0: no patch,
    S* = S(non-negated))."""
    tower, dev = model.text, model.device
    n_layers = tower.n_layers
    clean = clean_pair_batch(model, neg, non, eot, image_emb, ["resid", "resid_mid", *sites])
    b, t, eot_t, s_neg, s_non = clean.size, clean.n_tokens, clean.eot, clean.s_negated, clean.s_non_negated
    rows = torch.arange(b, device=dev)
    resid, resid_mid = clean.run.cache.stack("resid"), clean.run.cache.stack("resid_mid")
    receiver = {"resid": resid[b:], "resid_mid": resid_mid[b:]}
    mask = tracing_mask(negator, eot, t, dev)
    out = {}
    for site in sites:
        values = block_output_patch_values(tower, site, receiver, clean.run.cache.stack(site)[:b])
        s_patch = s_non[:, None, None].expand(b, n_layers + 1, t).clone()
        s_patch[rows, n_layers, eot_t] = model.similarity(image_emb,
                                                          tower.to_joint_space(values[rows, n_layers, eot_t]))
        for patched in iter_resid_patches(tower, resid[b:], values, mask, eot_t, first_layer=1):
            s_patch[patched.rows, 1:n_layers, patched.position] = patched_similarities(model, image_emb, patched).T
        out[site] = s_patch
    return s_neg, s_non, out


@torch.inference_mode()
def site_tracing_effects(model, instances: pd.DataFrame, image_embeddings: torch.Tensor, *,
                         sites: Iterable[str] = PATCHABLE_BLOCK_SITES, batch_size: int = 64,
                         progress: bool = True) -> pd.DataFrame:
    """CTE of patching each block's ``sites`` output at every block 1..L and token position of every instance.

    Arguments as :func:`.causal_tracing.causal_tracing_effects`. Returns one row per site × instance ×
    block × position (:data:`SITE_TRACING_COLUMNS`; ``layer`` is the block, 1..L).
    """
    sites = check_sites(sites)
    neg, non, negator, eot = tracing_inputs(instances)
    n = len(neg)
    image_embeddings = aligned_image_embeddings(image_embeddings, n, model.device)
    s_neg, s_non = np.zeros(n), np.zeros(n)
    s_patch: dict[str, list] = {site: [None] * n for site in sites}
    for idx in tqdm(length_batches(eot, batch_size), desc="MHA/MLP tracing", disable=not progress):
        sn, sp, patched = _site_chunk(
            model, [neg[i] for i in idx], [non[i] for i in idx], negator[idx], eot[idx],
            image_embeddings[torch.as_tensor(idx, device=model.device)], sites,
        )
        sn, sp = sn.double().cpu().numpy(), sp.double().cpu().numpy()
        for site in sites:
            arr = patched[site].double().cpu().numpy()
            for j, i in enumerate(idx):
                s_patch[site][i] = arr[j, :, : eot[i] + 1]
        for j, i in enumerate(idx):
            s_neg[i], s_non[i] = sn[j], sp[j]
    frames = []
    for site in sites:
        frame = tracing_frame(instances, s_neg, s_non, s_patch[site], model.text.n_layers)
        frame = frame[frame["layer"] > 0]
        frames.append(frame.assign(site=site)[SITE_TRACING_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def plot_site_tracing(summaries: dict[str, pd.DataFrame], segment: str, model: str, variant: str):
    """Per negation side (rows): the mean CTE heatmap of the residual stream, the MHA output and the MLP output.

    ``summaries[site]`` is :func:`.tracing.summarise_effects`' table of that site. Same colour
    scale as Figure 8 ([−1, 1], saturating); block outputs have no layer 0 (drawn blank).
    """
    sites = list(summaries)
    maps = {(side, site): heatmap(summaries[site], side, segment) for side in NEGATION_SIDES for site in sites}
    n_layers = max(m.shape[0] for m in maps.values()) - 1
    for key, grid in maps.items():
        if grid.shape[0] == n_layers:
            maps[key] = np.vstack([np.full((1, grid.shape[1]), np.nan), grid])
    extend = colour_bar_extend(maps.values(), COLOUR_LIMIT)
    height = max(2.6, 0.3 * (n_layers + 1) + 1.6)
    fig, axes = new_figure(len(NEGATION_SIDES), len(sites), figsize=(4.6 * len(sites) + 1, height * 2),
                           squeeze=False, layout="constrained")
    image = None
    for r, side in enumerate(NEGATION_SIDES):
        for c, site in enumerate(sites):
            ax = axes[r, c]
            part = summaries[site]
            part = part[(part["negation"] == side) & (part["segment"] == segment)]
            n = int(part["n"].max()) if len(part) else 0
            grid = maps[(side, site)]
            image = draw_cte_heatmap(ax, grid, grid.size <= 120, rotate=True)
            ax.set_title(f"negation in the {side}, {segment} (n = {n})\n{SITE_LABELS[site]}", fontsize=8)
            ax.set_ylabel("layer / block (0 = embeddings)", fontsize=7)
            if n == 0:
                ax.text(0.5, 0.5, "n = 0: no instances in this segment", ha="center", va="center",
                        transform=ax.transAxes, fontsize=10, color="0.3")
    if image is not None:
        fig.colorbar(image, ax=axes, fraction=0.03, pad=0.01, label="CTE = d* / d", extend=extend)
    fig.suptitle(f"{model}: causal tracing of the MHA and MLP outputs beside the residual stream ({variant} variant)",
                 fontsize=10)
    return fig
