"""Linear probes for negation: can the residual stream at one layer and generic position tell a negated sentence?

Per instance there are two sentences of the text cache, the negated one (label 1) and the
non-negated one (label 0). The feature of a sentence at layer ``l`` (0..L) and generic
position ``g`` (:data:`.positions.GENERIC_NAMES`) is ``resid[l]`` at the token positions the
slot stands for, averaged over them; an instance whose slot stands for no token
(``subject_further`` of a one-token subject) is left out of that slot's probe.

The probe is a logistic regression (scikit-learn's ``liblinear`` solver, L2 penalty of
strength ``1/C``, the intercept penalised like the weights, a fixed random state so that the
table is reproducible) on the standardised features. Its **accuracy** is the share of correctly labelled held-out
sentences in a grouped K-fold cross-validation (:class:`sklearn.model_selection.GroupKFold`)
whose groups are the instances, so an instance's two sentences are always on the same side
of a split. The **shuffled-label control** repeats the same cross-validation with the labels
of a random half of the instances swapped (each instance keeps one sentence of each label),
which leaves no relation between features and labels: it sits near 0.5 whatever the
features (on few instances it can fall below 0.5 where the features separate the sentences
perfectly: a fold's held-out instances then hold fewer swapped ones than its training set
whenever the training set holds more, the known negative bias of cross-validating a
label-free split). Positions before the negator are identical in both sentences of a causal tower, so
their probes score exactly 0.5 too.
"""

from __future__ import annotations

from typing import Sequence

import h5py
import numpy as np
import pandas as pd

from ..errors import InputError
from ..plotting import new_figure
from ..store import decode_keys, match_rows
from .positions import GENERIC_NAMES, generic_slot_positions
from .tracing import POSITION_LABELS

PROBE_COLUMNS = ["layer", "generic_position", "n_instances", "n_splits", "accuracy", "accuracy_sd",
                 "control_accuracy", "control_sd"]


def probe_features(negated_resid: np.ndarray, non_negated_resid: np.ndarray,
                   slots: Sequence[dict[str, list[int]]]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per generic position: (features (2n, L+1, D), labels (2n,), instance index (2n,)).

    ``negated_resid`` and ``non_negated_resid`` are (N, L+1, T, D) residual streams of the
    instances in ``slots``' order. Rows alternate negated (label 1) and non-negated (0) per
    instance; instances whose slot is empty are left out.
    """
    if negated_resid.shape != non_negated_resid.shape or len(negated_resid) != len(slots):
        raise InputError(f"residual streams of shapes {negated_resid.shape} and {non_negated_resid.shape} for "
                         f"{len(slots)} instances")
    out = {}
    for name in GENERIC_NAMES:
        keep = [i for i, s in enumerate(slots) if s[name]]
        features = np.empty((2 * len(keep), *negated_resid.shape[1:2], negated_resid.shape[-1]), dtype=np.float64)
        for j, i in enumerate(keep):
            positions = slots[i][name]
            features[2 * j] = negated_resid[i][:, positions].mean(axis=1)
            features[2 * j + 1] = non_negated_resid[i][:, positions].mean(axis=1)
        labels = np.tile([1, 0], len(keep))
        groups = np.repeat(np.asarray(keep, dtype=np.int64), 2)
        out[name] = (features, labels, groups)
    return out


def swapped_labels(labels: np.ndarray, groups: np.ndarray, seed: int) -> np.ndarray:
    """``labels`` with both labels of a random half of the groups (instances) swapped."""
    rng = np.random.default_rng(seed)
    unique = np.unique(groups)
    swap = set(unique[rng.permutation(len(unique))[: len(unique) // 2]].tolist())
    flip = np.asarray([g in swap for g in groups])
    return np.where(flip, 1 - labels, labels)


def cross_validated_accuracy(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, *, n_splits: int,
                             c: float = 1.0, max_iter: int = 1000) -> np.ndarray:
    """Held-out accuracy per fold of a standardised logistic regression in a grouped K-fold split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    regression = LogisticRegression(C=c, solver="liblinear", max_iter=max_iter, random_state=0)
    probe = make_pipeline(StandardScaler(), regression)
    return cross_val_score(probe, features, labels, groups=groups, cv=GroupKFold(n_splits=n_splits),
                           scoring="accuracy")


def probe_table(features: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], *, n_splits: int = 5,
                c: float = 1.0, seed: int = 0, progress=None) -> pd.DataFrame:
    """Probe and control accuracy (mean and SD over folds) per layer × generic position (:data:`PROBE_COLUMNS`).

    ``features`` is :func:`probe_features`' output. A slot with fewer than 2 instances has no
    probe (NaN accuracies, ``n_splits`` 0); otherwise ``n_splits`` is min(``n_splits``, instances).
    """
    if n_splits < 2:
        raise InputError(f"negation.followups.probes.n_splits is {n_splits}; a cross-validation needs at least 2")
    rows = []
    for name in GENERIC_NAMES:
        x, y, groups = features[name]
        n_inst = len(np.unique(groups))
        splits = min(n_splits, n_inst) if n_inst >= 2 else 0
        control = swapped_labels(y, groups, seed) if splits else y
        for layer in range(x.shape[1]):
            if progress is not None:
                progress.update(1)
            if not splits:
                rows.append((layer, name, n_inst, 0, np.nan, np.nan, np.nan, np.nan))
                continue
            acc = cross_validated_accuracy(x[:, layer], y, groups, n_splits=splits, c=c)
            ctl = cross_validated_accuracy(x[:, layer], control, groups, n_splits=splits, c=c)
            rows.append((layer, name, n_inst, splits, acc.mean(), acc.std(ddof=0), ctl.mean(), ctl.std(ddof=0)))
    out = pd.DataFrame(rows, columns=PROBE_COLUMNS)
    out["layer"] = out["layer"].astype(np.int16)
    out["generic_position"] = pd.Categorical(out["generic_position"], categories=list(GENERIC_NAMES), ordered=True)
    return out.sort_values(["layer", "generic_position"]).reset_index(drop=True)


def probe_features_from_cache(text_cache, instances: pd.DataFrame):
    """:func:`probe_features` of ``instances`` (rows of the positions table with ``generic_ok``), read from the text
    cache by key."""
    keys = instances["key"].astype(str).tolist()
    slots = generic_slot_positions(instances)
    with h5py.File(text_cache, "r") as f:
        for name in ("keys", "negated/resid", "non_negated/resid"):
            if name not in f:
                raise InputError(f"text cache {text_cache} has no dataset {name!r}; delete it and re-run its rule")
        rows = match_rows(keys, decode_keys(f["keys"][:]), what="probe instances", where=f"text cache {text_cache}")
        order = np.argsort(rows, kind="stable")
        t = max(max(p for positions in s.values() for p in positions) for s in slots) + 1
        negated = np.empty((len(keys), *f["negated/resid"].shape[1:2], t, f["negated/resid"].shape[-1]), np.float32)
        non_negated = np.empty_like(negated)
        negated[order] = f["negated/resid"][rows[order], :, :t]
        non_negated[order] = f["non_negated/resid"][rows[order], :, :t]
    return probe_features(negated, non_negated, slots)


def plot_probes(table: pd.DataFrame, model: str, variant: str):
    """Heatmaps of the probe accuracy and the shuffled-label control per layer (rows, 0 at the bottom) × generic
    position."""
    fig, axes = new_figure(1, 2, figsize=(12, max(3.2, 0.32 * (table["layer"].max() + 1) + 1.8)), squeeze=False)
    labels = [POSITION_LABELS[name] for name in GENERIC_NAMES]
    image = None
    for ax, (value, title) in zip(axes[0], (("accuracy", "probe accuracy (grouped CV)"),
                                            ("control_accuracy", "shuffled-label control"))):
        grid = table.pivot(index="layer", columns="generic_position", values=value).reindex(
            columns=list(GENERIC_NAMES)).sort_index().to_numpy(dtype=float)
        image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0.5, vmax=1.0, origin="lower",
                          aspect="auto", interpolation="nearest")
        ax.set_facecolor("0.8")
        if grid.size <= 160:
            for r in range(grid.shape[0]):
                for c in range(grid.shape[1]):
                    if np.isfinite(grid[r, c]):
                        ax.text(c, r, f"{grid[r, c]:.2f}", ha="center", va="center", fontsize=6,
                                color="black" if grid[r, c] > 0.8 else "white")
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_yticks(range(grid.shape[0]))
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylabel("layer (0 = embeddings)")
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), fraction=0.03, pad=0.02, label="accuracy (0.5 = chance)", extend="min")
    n = int(table["n_instances"].max())
    fig.suptitle(f"{model}: linear probes for 'negated or not' on the residual stream ({variant} variant, "
                 f"{n} instances, {2 * n} sentences)", fontsize=10)
    return fig
