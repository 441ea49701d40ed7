"""Single-colour ablation of windows of consecutive image-tower blocks.

Definitions as in image ablation (:mod:`.image_ablation`): ``S(t, i)`` is CLIP's logit and
``d = S(c, i) − S(f, i)``. Ablating the window of ``k`` blocks ``l..l+k−1`` of component
``"mha"`` (``"mlp"``) replaces, in the real image's forward, the attention (MLP) output of
every one of those blocks at every position by the single-colour image's output of the same
block, all at once; ``d* = S*(c, i) − S*(f, i)`` with the ablated image embedding and
``IAE = d − d*``. A window of one block is image ablation's ``IAE(l)``. The windows of size
``k`` start at blocks 1..L−k+1.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..batching import row_slices, rows_as_tensor
from ..errors import InputError
from ..interventions import replace_block_output_windows
from ..plotting import new_figure
from .caches import effects_from_caches
from .image_ablation import check_components, score_columns
from .image_ablation_summary import COMPONENT_LABELS
from .labels import COMPONENTS, NEGATION_SIDES
from .statistics import standard_error

WINDOW_DATASETS = ("keys", "real/resid", "single_colour/attn_out", "single_colour/mlp_out")
WINDOW_ABLATION_COLUMNS = [
    "key", "negation", "component", "window_size", "first_layer", "last_layer",
    "S_caption", "S_foil", "d", "S_caption_patched", "S_foil_patched", "d_star", "iae",
]
WINDOW_SUMMARY_COLUMNS = ["component", "negation", "window_size", "first_layer", "last_layer", "n", "mean_iae",
                          "sem_iae", "mean_d", "mean_d_star", "accuracy_before", "accuracy_after"]
BOTH_SIDES = "both"


def layer_windows(window_sizes: Sequence[int], n_layers: int) -> list[tuple[int, int]]:
    """Every window (first, last) of each size in ``window_sizes``: first = 1..L−k+1, last = first + k − 1."""
    sizes = [int(k) for k in window_sizes]
    bad = [k for k in sizes if not 1 <= k <= n_layers]
    if bad or not sizes or len(set(sizes)) != len(sizes):
        raise InputError(f"negation.followups.ablation_windows.window_sizes is {sizes}; give distinct sizes in "
                         f"1..{n_layers} (the image tower has {n_layers} blocks)")
    return [(first, first + k - 1) for k in sizes for first in range(1, n_layers - k + 2)]


@torch.inference_mode()
def window_ablation_effects_from_activations(model, real_resid, single_attn_out, single_mlp_out, caption_emb,
                                             foil_emb, window_sizes: Sequence[int], *, keys, negation,
                                             components: Iterable[str] = ("mha", "mlp"), batch_size: int = 16,
                                             progress: bool = True) -> pd.DataFrame:
    """Window ablation effects from stored activations of the vision tower.

    ``real_resid`` (N, L+1, P, D) is the real image's ``resid``; ``single_attn_out`` and
    ``single_mlp_out`` (N, L, P, D) the single-colour image's block outputs (tensors, arrays
    or h5py datasets, read ``batch_size`` rows at a time); ``caption_emb`` and ``foil_emb``
    (N, E) the text embeddings. Returns one row per image × component × window
    (:data:`WINDOW_ABLATION_COLUMNS`), computed with
    :func:`~clip_interp.interventions.replace_block_output_windows`.
    """
    tower = model.vision
    dev = model.device
    components = check_components(components)
    windows = layer_windows(window_sizes, tower.n_layers)
    n = len(caption_emb)
    if len(foil_emb) != n or len(keys) != n or len(negation) != n:
        raise InputError(f"{len(caption_emb)} caption and {len(foil_emb)} foil embeddings, {len(keys)} keys and "
                         f"{len(negation)} negation labels; they must match")
    for name, arr, depth in (("real_resid", real_resid, tower.n_layers + 1),
                             ("single_attn_out", single_attn_out, tower.n_layers),
                             ("single_mlp_out", single_mlp_out, tower.n_layers)):
        if tuple(arr.shape[:2]) != (n, depth):
            raise InputError(f"{name} has shape {tuple(arr.shape)}, expected ({n}, {depth}, P, D)")
    sources = {"mha": single_attn_out, "mlp": single_mlp_out}
    s_cap, s_foil = np.zeros(n), np.zeros(n)
    s_cap_star = np.zeros((n, len(components), len(windows)))
    s_foil_star = np.zeros_like(s_cap_star)
    for sl in tqdm(row_slices(n, batch_size), desc="window ablation", disable=not progress):
        resid = rows_as_tensor(real_resid, sl, dev)
        cap, foil = rows_as_tensor(caption_emb, sl, dev), rows_as_tensor(foil_emb, sl, dev)
        clean = tower.to_joint_space(resid[:, tower.n_layers, 0])
        s_cap[sl] = model.similarity(clean, cap).double().cpu().numpy()
        s_foil[sl] = model.similarity(clean, foil).double().cpu().numpy()
        for c, component in enumerate(components):
            values = rows_as_tensor(sources[component], sl, dev)
            emb = replace_block_output_windows(tower, resid, values, COMPONENTS[component], windows)
            s_cap_star[sl, c] = model.similarity(emb, cap[None]).T.double().cpu().numpy()
            s_foil_star[sl, c] = model.similarity(emb, foil[None]).T.double().cpu().numpy()
    return _window_frame(keys, negation, components, windows, s_cap, s_foil, s_cap_star, s_foil_star)


def _window_frame(keys, negation, components, windows, s_cap, s_foil, s_cap_star, s_foil_star) -> pd.DataFrame:
    """The long window-ablation table; starred arrays are (N, len(components), len(windows))."""
    n, n_c, n_w = s_cap_star.shape
    first = np.asarray([w[0] for w in windows])
    last = np.asarray([w[1] for w in windows])
    return pd.DataFrame({
        **score_columns(keys, negation, s_cap, s_foil, s_cap_star, s_foil_star),
        "component": np.tile(np.repeat(np.asarray(components, dtype=object), n_w), n),
        "window_size": np.tile(last - first + 1, n * n_c).astype(np.int16),
        "first_layer": np.tile(first, n * n_c).astype(np.int16),
        "last_layer": np.tile(last, n * n_c).astype(np.int16),
    }, columns=WINDOW_ABLATION_COLUMNS)


def window_ablation_from_caches(model, image_cache, text_cache, negation_by_key, window_sizes: Sequence[int], *,
                                components: Iterable[str] = ("mha", "mlp"), batch_size: int = 16,
                                progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """The window ablation table of every instance of ``text_cache``, activations from ``image_cache`` matched by key.

    Instances in the text cache's order; counts for the metadata. As
    :func:`.image_ablation.image_ablation_from_caches`, reading only the rows it uses
    (:func:`.caches.effects_from_caches`).
    """
    def effects(activations, caption_emb, foil_emb, keys, negation):
        return window_ablation_effects_from_activations(
            model, activations["real/resid"], activations["single_colour/attn_out"],
            activations["single_colour/mlp_out"], caption_emb, foil_emb, window_sizes,
            keys=keys, negation=negation, components=components,
            batch_size=batch_size, progress=progress,
        )

    table, instances = effects_from_caches(image_cache, text_cache, negation_by_key, WINDOW_DATASETS, effects)
    counts = {
        **instances.counts(),
        "n_windows": int(table.drop_duplicates(["component", "first_layer", "last_layer"]).shape[0]),
    }
    return table, counts


def window_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean IAE per component × negation side (and ``"both"`` pooled) × window (:data:`WINDOW_SUMMARY_COLUMNS`).

    ``sem_iae`` is the standard error (sample SD / sqrt(n)); ``accuracy_before`` and
    ``accuracy_after`` the shares with ``d > 0`` and ``d* > 0``.
    """
    missing = set(WINDOW_ABLATION_COLUMNS) - set(table.columns)
    if missing:
        raise InputError(f"window ablation table lacks column(s) {sorted(missing)}; re-run the ablation_windows rule")
    data = pd.concat([table, table.assign(negation=BOTH_SIDES)], ignore_index=True)
    data = data.assign(before=data["d"] > 0, after=data["d_star"] > 0)
    group = ["component", "negation", "window_size", "first_layer", "last_layer"]
    out = data.groupby(group, sort=False).agg(
        n=("iae", "size"), mean_iae=("iae", "mean"), sem_iae=("iae", standard_error), mean_d=("d", "mean"),
        mean_d_star=("d_star", "mean"), accuracy_before=("before", "mean"), accuracy_after=("after", "mean"),
    ).reset_index()
    order = {side: i for i, side in enumerate((*NEGATION_SIDES, BOTH_SIDES))}
    out = out.sort_values(["component", "negation", "window_size", "first_layer"],
                          key=lambda c: c.map(order) if c.name == "negation" else c).reset_index(drop=True)
    out["n"] = out["n"].astype(np.int64)
    return out[WINDOW_SUMMARY_COLUMNS]


def plot_window_ablation(summary: pd.DataFrame, model: str):
    """Mean IAE (± s.e.m.) of each window against its first block, one line per window size; rows: MHA, MLP;
    columns: negation side."""
    components = [c for c in COMPONENTS if c in set(summary["component"])]
    sides = (*NEGATION_SIDES, BOTH_SIDES)
    fig, axes = new_figure(len(components), len(sides), figsize=(4.2 * len(sides), 3.2 * len(components)),
                           squeeze=False, sharey="row")
    for r, component in enumerate(components):
        for c, side in enumerate(sides):
            ax = axes[r, c]
            part = summary[(summary["component"] == component) & (summary["negation"] == side)]
            n = int(part["n"].max()) if len(part) else 0
            for size, rows in part.groupby("window_size"):
                rows = rows.sort_values("first_layer")
                ax.errorbar(rows["first_layer"], rows["mean_iae"], yerr=rows["sem_iae"].fillna(0), marker="o", ms=3,
                            capsize=3, label=f"{size} blocks")
            ax.axhline(0, color="black", lw=0.6)
            ax.set_xticks(sorted(part["first_layer"].unique()))
            ax.set_title(f"{COMPONENT_LABELS[component]}, negation in {side} (n={n})", fontsize=9)
            ax.set_xlabel("first ablated block of the window")
            if c == 0:
                ax.set_ylabel("mean IAE = d − d*  (± s.e.m.)")
            ax.legend(fontsize=7, title="window", title_fontsize=7)
    fig.suptitle(f"{model}: single-colour ablation of windows of consecutive image-tower blocks", fontsize=11)
    fig.tight_layout()
    return fig
