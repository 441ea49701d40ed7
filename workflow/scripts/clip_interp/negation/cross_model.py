"""Layer profiles of the negation study compared across models.

Two per-layer measures are gathered from each model's tables:

* **localisation** (``localisation.parquet``): the standard deviation over the generic
  positions from the negator on of the mean causal tracing effect, per residual-stream
  layer ``l = 0..L`` (0 = embedding output), for all instances of each negation side;
* **selectivity** (``selectivity_layers.parquet``): the negator selectivity ``a(l, h)``
  averaged over heads and instances, per block ``l = 1..L``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from ..errors import InputError
from ..plotting import layer_profile, new_figure

PROFILE_COLUMNS = ["model", "measure", "negation", "layer", "value", "n_layers"]


def _require(df: pd.DataFrame, columns, source: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{source} lacks column(s) {missing}; re-run the rule that writes it")


def layer_profiles(localisation: Mapping[str, pd.DataFrame],
                   selectivity_layers: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One long table (:data:`PROFILE_COLUMNS`) of both measures for every model.

    Localisation rows come from the ``segment == "all"`` rows, one per negation side;
    selectivity rows have ``negation == "all"``. ``n_layers`` is the model's text depth L.
    """
    if set(localisation) != set(selectivity_layers):
        raise InputError(f"models differ between the localisation {sorted(localisation)} and "
                         f"selectivity {sorted(selectivity_layers)} tables")
    parts = []
    for model in localisation:
        loc, sel = localisation[model], selectivity_layers[model]
        _require(loc, ["negation", "segment", "layer", "localisation"], f"localisation table of {model!r}")
        _require(sel, ["layer", "mean_a"], f"selectivity layer table of {model!r}")
        n_layers = int(sel["layer"].max())
        loc = loc[loc["segment"] == "all"]
        parts.append(pd.DataFrame({
            "model": model, "measure": "localisation", "negation": loc["negation"].to_numpy(),
            "layer": loc["layer"].to_numpy(dtype=int), "value": loc["localisation"].to_numpy(dtype=float),
            "n_layers": n_layers,
        }))
        parts.append(pd.DataFrame({
            "model": model, "measure": "selectivity", "negation": "all", "layer": sel["layer"].to_numpy(dtype=int),
            "value": sel["mean_a"].to_numpy(dtype=float), "n_layers": n_layers,
        }))
    return pd.concat(parts, ignore_index=True)[PROFILE_COLUMNS]


def plot_layer_profiles(profiles: pd.DataFrame):
    """Localisation per layer (one panel per negation side) and selectivity per layer, one line per model."""
    models = list(dict.fromkeys(profiles["model"]))
    sides = [s for s in ("caption", "foil") if s in set(profiles.loc[profiles.measure == "localisation", "negation"])]
    fig, axes = new_figure(1, len(sides) + 1, figsize=(4.6 * (len(sides) + 1), 3.8), squeeze=False)
    panels = [("localisation", side, f"localisation, negation in the {side}",
               "layer l of the text residual stream (0 = embeddings)", "SD of mean CTE over positions ≥ negator")
              for side in sides]
    panels.append(("selectivity", "all", "negator selectivity", "text block l",
                   "mean a(l, h) over heads and instances"))
    for ax, (measure, side, title, xlabel, ylabel) in zip(axes[0], panels):
        lines = {}
        for model in models:
            part = profiles[(profiles.model == model) & (profiles.measure == measure) & (profiles.negation == side)]
            lines[model] = (part["layer"].to_numpy(), part["value"].to_numpy(dtype=float))
        layer_profile(ax, lines, title=title, xlabel=xlabel, ylabel=ylabel, zero_line=measure == "selectivity")
    axes[0, -1].legend(fontsize=8, title="model", title_fontsize=8)
    fig.suptitle("Negation across models: where the text encoder localises and attends to the negator", fontsize=11)
    fig.tight_layout()
    return fig


def check_profiles(profiles: pd.DataFrame) -> list[str]:
    """Models whose profile holds no finite value (e.g. no instance survived the filters)."""
    empty = []
    for model, part in profiles.groupby("model", sort=False):
        if not np.isfinite(part["value"].to_numpy(dtype=float)).any():
            empty.append(model)
    return empty
