"""Causal tracing of two generic positions patched together: is the negation's information redundant or additive?

Definitions as in causal tracing (:mod:`.causal_tracing`): the non-negated sentence receives, at
layer ``l`` (0..L), the negated sentence's residual stream ``resid[l]``, here at every token
of a **patch set** at once; ``S*`` is the patched sentence's similarity with the image and
``CTE = d* / d``. The patch sets are built from the generic positions from the negator on
(:data:`PAIR_SLOTS`: negator, subject_first, subject_further, full_stop, EOT): each slot
alone (all tokens the slot stands for; a slot of one token gives exactly causal tracing's
CTE at that token) and each unordered pair of slots (the union of their tokens), labelled
``"A"`` and ``"A+B"``. A slot that stands for no token (``subject_further`` of a one-token
subject) gives no set, and neither do its pairs.

The comparison per instance, layer and pair ``A+B`` is ``interaction = CTE(A+B) − (CTE(A) +
CTE(B))``: about 0 when the two positions' effects add up, below 0 when they are redundant
(the pair restores less than the sum, e.g. both carry the same information), above 0 when
they are synergistic. :func:`pair_summary` averages over instances per negation side,
segment, layer and pair.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..errors import InputError
from ..interventions import iter_resid_set_patches
from ..plotting import annotated_heatmap, new_figure
from .labels import NEGATION_SIDES
from .positions import generic_slot_positions
from .statistics import standard_error
from .tracing import SUMMARY_SEGMENTS, with_all_segment
from .tracing_kernel import (
    aligned_image_embeddings,
    clean_pair_batch,
    length_batches,
    patched_similarities,
    tracing_effect,
    tracing_inputs,
)

PAIR_SLOTS = ("negator", "subject_first", "subject_further", "full_stop", "EOT")
PAIRS = tuple(combinations(PAIR_SLOTS, 2))
PATCH_SETS = tuple((slot, "") for slot in PAIR_SLOTS) + PAIRS
PATCH_LABELS = tuple(a if not b else f"{a}+{b}" for a, b in PATCH_SETS)
# A pair's set extends its first slot's set: its run resumes from the single-slot run (interventions' ``base``).
PATCH_BASE = [None if not b else PAIR_SLOTS.index(a) for a, b in PATCH_SETS]
PAIR_LABELS = PATCH_LABELS[len(PAIR_SLOTS):]
PAIR_PATCHING_COLUMNS = [
    "key", "negation", "layer", "patch", "first", "second", "n_tokens",
    "S_caption", "S_foil", "d", "S_patched", "d_star", "cte",
]
PAIR_SUMMARY_COLUMNS = [
    "negation", "segment", "layer", "pair", "first", "second", "n", "cte_pair", "cte_first", "cte_second",
    "sum_singles", "interaction", "sem_interaction", "share_below_sum",
]


def slot_positions(instances: pd.DataFrame) -> list[dict[str, list[int]]]:
    """Per instance, the token positions of each of :data:`PAIR_SLOTS` (rows of the positions table, ``generic_ok``)."""
    return [{slot: list(mapping[slot]) for slot in PAIR_SLOTS} for mapping in generic_slot_positions(instances)]


def _set_masks(slots: list[dict[str, list[int]]], t: int, device) -> torch.Tensor:
    """(B, S, T): the token positions of each patch set (:data:`PATCH_SETS`) per instance; empty where a slot is
    empty."""
    masks = torch.zeros(len(slots), len(PATCH_SETS), t, dtype=torch.bool)
    for i, positions in enumerate(slots):
        for s, (a, b) in enumerate(PATCH_SETS):
            if not positions[a] or (b and not positions[b]):
                continue
            chosen = positions[a] + (positions[b] if b else [])
            masks[i, s, chosen] = True
    return masks.to(device)


def _pair_chunk(model, neg, non, eot, slots, image_emb):
    """S(negated), S(non-negated) (B,) and S* (B, L+1, S) of one batch; NaN where a set is empty."""
    tower, dev = model.text, model.device
    n_layers = tower.n_layers
    clean = clean_pair_batch(model, neg, non, eot, image_emb, ["resid"])
    b, t, eot_t, s_neg, s_non = clean.size, clean.n_tokens, clean.eot, clean.s_negated, clean.s_non_negated
    resid = clean.run.cache.stack("resid")
    masks = _set_masks(slots, t, dev)
    s_patch = torch.full((b, n_layers + 1, len(PATCH_SETS)), float("nan"), device=dev, dtype=s_non.dtype)
    present = masks.any(dim=2)
    holds_eot = masks[torch.arange(b, device=dev), :, eot_t]
    s_patch[:, n_layers] = torch.where(holds_eot, s_neg[:, None], s_non[:, None])
    s_patch[:, n_layers][~present] = float("nan")
    for patched in iter_resid_set_patches(tower, resid[b:], resid[:b], masks, eot_t, base=PATCH_BASE):
        s_patch[patched.rows, :n_layers, patched.index] = patched_similarities(model, image_emb, patched).T
    return s_neg, s_non, s_patch, masks.sum(dim=2)


def _pair_frame(instances, s_neg, s_non, s_patch, n_tokens, n_layers) -> pd.DataFrame:
    """The long table from per-instance S (N,) and S* (N, L+1, S), leaving out empty sets."""
    n, n_sets = len(instances), len(PATCH_SETS)
    in_caption = instances["negation"].to_numpy() == "caption"
    s_cap, s_foil = np.where(in_caption, s_neg, s_non), np.where(in_caption, s_non, s_neg)
    per = (n_layers + 1) * n_sets
    index = pd.MultiIndex.from_product([range(n), range(n_layers + 1), range(n_sets)])
    inst, layer, sets = (index.get_level_values(k).to_numpy() for k in range(3))
    s_patched = s_patch.reshape(-1)
    d_star, cte = tracing_effect(s_cap[inst], s_foil[inst], s_patched, in_caption[inst])
    frame = pd.DataFrame({
        "key": instances["key"].to_numpy()[inst], "negation": instances["negation"].to_numpy()[inst],
        "layer": layer.astype(np.int16), "patch": np.asarray(PATCH_LABELS, dtype=object)[sets],
        "first": np.asarray([a for a, _ in PATCH_SETS], dtype=object)[sets],
        "second": np.asarray([b for _, b in PATCH_SETS], dtype=object)[sets],
        "n_tokens": np.repeat(n_tokens, n_layers + 1, axis=0).reshape(-1).astype(np.int16),
        "S_caption": s_cap[inst], "S_foil": s_foil[inst], "d": s_cap[inst] - s_foil[inst],
        "S_patched": s_patched, "d_star": d_star, "cte": cte,
    }, columns=PAIR_PATCHING_COLUMNS)
    assert len(frame) == n * per
    return frame[frame["n_tokens"] > 0].reset_index(drop=True)


@torch.inference_mode()
def pair_patching_effects(model, instances: pd.DataFrame, image_embeddings: torch.Tensor, *,
                          batch_size: int = 64, progress: bool = True) -> pd.DataFrame:
    """CTE of every patch set (:data:`PATCH_LABELS`) at every layer 0..L of every instance.

    ``instances`` are rows of the token-positions table selected for causal tracing
    (:func:`.tracing.select_tracing_instances`: ids, ``negator_pos``, the generic positions);
    ``image_embeddings`` (N, E) the row-aligned image embeddings. Returns one row per instance
    × layer × non-empty patch set (:data:`PAIR_PATCHING_COLUMNS`). Batches of one token length
    are run once cleanly and every set resumes from the cached residual streams
    (:func:`~clip_interp.interventions.iter_resid_set_patches`), as causal tracing does; a pair
    recomputes only the positions from its second slot on, the earlier ones coming from its
    first slot's run.
    """
    neg, non, _, eot = tracing_inputs(instances)
    slots = slot_positions(instances)
    n = len(neg)
    image_embeddings = aligned_image_embeddings(image_embeddings, n, model.device)
    n_layers = model.text.n_layers
    s_neg, s_non = np.zeros(n), np.zeros(n)
    s_patch = np.zeros((n, n_layers + 1, len(PATCH_SETS)))
    n_tokens = np.zeros((n, len(PATCH_SETS)), dtype=np.int64)
    for idx in tqdm(length_batches(eot, batch_size), desc="pair patching", disable=not progress):
        sn, sp, patched, counts = _pair_chunk(
            model, [neg[i] for i in idx], [non[i] for i in idx], eot[idx], [slots[i] for i in idx],
            image_embeddings[torch.as_tensor(idx, device=model.device)],
        )
        s_neg[idx], s_non[idx] = sn.double().cpu().numpy(), sp.double().cpu().numpy()
        s_patch[idx] = patched.double().cpu().numpy()
        n_tokens[idx] = counts.cpu().numpy()
    return _pair_frame(instances, s_neg, s_non, s_patch, n_tokens, n_layers)


def pair_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """Per instance × layer × pair: ``cte_pair``, ``cte_first``, ``cte_second``, ``sum_singles`` and ``interaction``.

    ``table`` is :func:`pair_patching_effects`' table (with any extra per-key columns such as
    ``segment``, which are carried over). A pair appears where both its slots are non-empty.
    """
    missing = {"key", "layer", "patch", "first", "second", "cte"} - set(table.columns)
    if missing:
        raise InputError(f"pair patching table lacks column(s) {sorted(missing)}; re-run the pair_patching rule")
    singles = table[table["second"] == ""].set_index(["key", "layer", "first"])["cte"]
    pairs = table[table["second"] != ""].reset_index(drop=True)
    first = singles.reindex(pd.MultiIndex.from_arrays([pairs["key"], pairs["layer"], pairs["first"]])).to_numpy()
    second = singles.reindex(pd.MultiIndex.from_arrays([pairs["key"], pairs["layer"], pairs["second"]])).to_numpy()
    if np.isnan(first).any() or np.isnan(second).any():
        raise InputError("pair patching table has a pair without one of its single-slot rows; re-run the rule")
    out = pairs.rename(columns={"patch": "pair", "cte": "cte_pair"})
    out["cte_first"], out["cte_second"] = first, second
    out["sum_singles"] = first + second
    out["interaction"] = out["cte_pair"] - out["sum_singles"]
    return out


def pair_summary(comparison: pd.DataFrame, n_layers: int) -> pd.DataFrame:
    """Means over instances per negation side × segment × layer × pair (:data:`PAIR_SUMMARY_COLUMNS`).

    ``comparison`` is :func:`pair_comparison`'s table with a ``segment`` column and finite
    CTEs. ``n`` is the number of instances with the pair, ``share_below_sum`` the share with
    ``CTE(A+B) < CTE(A) + CTE(B)``; segment ``"all"`` pools the segments. Every side,
    segment (:data:`.tracing.SUMMARY_SEGMENTS`), layer 0..``n_layers`` and pair has a row
    (``n = 0`` and NaN means where no instance falls).
    """
    data = with_all_segment(comparison)
    data = data.assign(below=data["cte_pair"] < data["sum_singles"])
    group = ["negation", "segment", "layer", "pair"]
    stats = data.groupby(group, sort=False).agg(
        n=("key", "size"), cte_pair=("cte_pair", "mean"), cte_first=("cte_first", "mean"),
        cte_second=("cte_second", "mean"), sum_singles=("sum_singles", "mean"), interaction=("interaction", "mean"),
        sem_interaction=("interaction", standard_error), share_below_sum=("below", "mean"),
    )
    grid = pd.MultiIndex.from_product([list(NEGATION_SIDES), list(SUMMARY_SEGMENTS), range(n_layers + 1),
                                       list(PAIR_LABELS)], names=group)
    out = stats.reindex(grid).reset_index()
    out["n"] = out["n"].fillna(0).astype(np.int64)
    out["layer"] = out["layer"].astype(np.int16)
    parts = out["pair"].str.split("+", n=1)
    out["first"], out["second"] = parts.str[0], parts.str[1]
    return out[PAIR_SUMMARY_COLUMNS]


def _pair_grid(summary: pd.DataFrame, side: str, segment: str, value: str) -> np.ndarray:
    part = summary[(summary["negation"] == side) & (summary["segment"] == segment)]
    wide = part.pivot(index="layer", columns="pair", values=value)
    return wide.reindex(columns=list(PAIR_LABELS)).sort_index().to_numpy(dtype=float)


def plot_pair_patching(summary: pd.DataFrame, segment: str, model: str, variant: str):
    """Per negation side: the mean CTE of each pair of slots patched together, and its interaction
    ``CTE(A+B) − (CTE(A) + CTE(B))``.

    Layers on the y axis (0 = embeddings, at the bottom), pairs on the x axis; both panels on
    a diverging scale fixed to [−1, 1] (values beyond saturate). ``segment`` picks the instances;
    n is the number of instances of the side and segment (pairs with ``subject_further`` have
    fewer: the table's ``n`` per pair).
    """
    labels = [p.replace("+", "\n+ ").replace("subject_", "subj. ") for p in PAIR_LABELS]
    n_layers = int(summary["layer"].max())
    height = max(2.8, 0.3 * (n_layers + 1) + 1.6)
    fig, axes = new_figure(len(NEGATION_SIDES), 2, figsize=(14, height * len(NEGATION_SIDES)), squeeze=False)
    titles = {"cte_pair": "mean CTE of the pair patched together",
              "interaction": "interaction: CTE(A+B) − CTE(A) − CTE(B)"}
    for r, side in enumerate(NEGATION_SIDES):
        part = summary[(summary["negation"] == side) & (summary["segment"] == segment)]
        n = int(part["n"].max()) if len(part) else 0
        for c, value in enumerate(("cte_pair", "interaction")):
            ax = axes[r, c]
            grid = _pair_grid(summary, side, segment, value)
            image = annotated_heatmap(ax, grid, limit=1.0, origin="lower", fontsize=6, annotate=grid.size <= 200)
            ax.set_xticks(range(len(labels)), labels, fontsize=6)
            ax.set_yticks(range(grid.shape[0]))
            ax.tick_params(axis="y", labelsize=7)
            ax.set_ylabel("layer (0 = embeddings)")
            ax.set_title(f"negation in the {side}, {segment} (n = {n}): {titles[value]}", fontsize=8)
            fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
            if n == 0:
                ax.text(0.5, 0.5, "n = 0: no instances in this segment", ha="center", va="center",
                        transform=ax.transAxes, fontsize=10, color="0.4")
    fig.suptitle(f"{model}: pairs of generic positions patched together ({variant} variant); "
                 "interaction < 0: redundant, > 0: synergistic", fontsize=10)
    fig.tight_layout()
    return fig


def pair_counts(table: pd.DataFrame) -> dict:
    """Counts for the metadata: instances, per side, and instances per pair (a pair needs both slots non-empty)."""
    per_key = table.drop_duplicates("key")
    pairs = table[table["second"] != ""].drop_duplicates(["key", "patch"])["patch"].value_counts()
    return {
        "n_instances": int(len(per_key)),
        "n_instances_caption": int((per_key["negation"] == "caption").sum()),
        "n_instances_foil": int((per_key["negation"] == "foil").sum()),
        "n_instances_per_pair": {label: int(pairs.get(label, 0)) for label in PAIR_LABELS},
    }
