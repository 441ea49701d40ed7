"""Image covariates of the score d: contrast, brightness and colourfulness beside size, similarity and length.

Per image (RGB scaled to [0, 1]; luminance ``Y = 0.299 R + 0.587 G + 0.114 B``):

* ``brightness``: the mean of ``Y`` over the pixels;
* ``contrast``: the RMS contrast, the population SD of ``Y`` over the pixels;
* ``colourfulness``: Hasler and Süsstrunk's (2003) metric on [0, 1] values:
  ``sqrt(SD(rg)² + SD(yb)²) + 0.3 · sqrt(mean(rg)² + mean(yb)²)`` with ``rg = R − G`` and
  ``yb = (R + G) / 2 − B``.

The regression is ordinary least squares of ``d`` on the standardised predictors (each
centred and divided by its population SD over the instances used), with an intercept, so a
coefficient is the change of ``d`` per SD of its predictor with the others held fixed. Its
interval is the two-sided ``1 − alpha`` t interval (``n − p − 1`` degrees of freedom). ``r2``
is the share of the variance of ``d`` explained, ``adj_r2`` adjusted for the number of
predictors, and ``delta_r2`` of a predictor the drop of ``r2`` when it alone is left out.
Two models (:data:`MODELS`): with the subject size, on the instances with the negation in
the foil (the only ones with a size), and without it, on all instances.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import InputError
from ..plotting import new_figure

IMAGE_COVARIATES = ("contrast", "brightness", "colourfulness")
MODELS = {
    "with_size": {"predictors": (*IMAGE_COVARIATES, "relative_size", "cosine_similarity", "caption_len"),
                  "negation": ("foil",)},
    "without_size": {"predictors": (*IMAGE_COVARIATES, "cosine_similarity", "caption_len"),
                     "negation": ("caption", "foil")},
}
PREDICTOR_LABELS = {
    "contrast": "contrast (RMS)", "brightness": "brightness", "colourfulness": "colourfulness",
    "relative_size": "relative subject size", "cosine_similarity": "cos(caption, foil)",
    "caption_len": "caption length (tokens)",
}
COEFFICIENT_COLUMNS = ["model", "term", "coefficient", "se", "ci_low", "ci_high", "t", "p_value", "delta_r2",
                       "n", "r2", "adj_r2"]


def image_statistics(path: str | Path) -> dict[str, float]:
    """Brightness, RMS contrast and colourfulness of one image file (definitions in the module docstring)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    except (OSError, ValueError) as error:
        raise InputError(f"image {path} cannot be read ({error}); check the images folder") from None
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luminance = 0.299 * r + 0.587 * g + 0.114 * b
    rg, yb = r - g, 0.5 * (r + g) - b
    colourfulness = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    return {"brightness": float(luminance.mean()), "contrast": float(luminance.std()),
            "colourfulness": float(colourfulness)}


def covariate_table(instances: pd.DataFrame, dataset: pd.DataFrame, images_dir: str | Path) -> pd.DataFrame:
    """The preliminary instance table with the image covariates of each instance's image added.

    ``instances`` needs ``key`` (the preliminary table), ``dataset`` ``key`` and ``image_file``
    (relative to ``images_dir``). A key without an image row, or a missing file, is an InputError.
    """
    for frame, what, cols in ((instances, "the preliminary table", ("key", "negation", "d")),
                              (dataset, "the dataset table", ("key", "image_file"))):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise InputError(f"{what} lacks column(s) {missing}; re-run the rule that writes it")
    files = dataset.drop_duplicates("key").set_index("key")["image_file"]
    absent = [k for k in instances["key"] if k not in files.index]
    if absent:
        raise InputError(f"{len(absent)} instances have no image in the dataset table, e.g. {absent[:3]}")
    paths = [Path(images_dir) / files[k] for k in instances["key"]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"{len(missing)} image files are missing, e.g. {missing[:3]}; re-run the image extraction")
    stats = pd.DataFrame([image_statistics(p) for p in paths], columns=list(IMAGE_COVARIATES))
    out = instances.reset_index(drop=True).copy()
    for column in IMAGE_COVARIATES:
        out[column] = stats[column].to_numpy()
    out["image_file"] = [files[k] for k in out["key"]]
    return out


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Coefficients (intercept first), their standard errors, R² and the residual degrees of freedom."""
    design = np.column_stack([np.ones(len(y)), x])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ beta
    dof = len(y) - design.shape[1]
    sigma2 = residual @ residual / dof
    se = np.sqrt(np.diag(sigma2 * np.linalg.inv(design.T @ design)))
    total = ((y - y.mean()) ** 2).sum()
    return beta, se, float(1 - residual @ residual / total), dof


def fit_model(data: pd.DataFrame, name: str, predictors: Sequence[str], alpha: float = 0.05
              ) -> tuple[pd.DataFrame, dict]:
    """One regression of d on standardised ``predictors`` over the complete cases of ``data``.

    Predictors that are constant over those cases are dropped (named in the returned info);
    too few cases for the rest (n ≤ p + 1) gives a table of NaN coefficients with the reason.
    Returns the coefficient rows (:data:`COEFFICIENT_COLUMNS`, ``intercept`` first) and info.
    """
    from scipy import stats

    complete = data[[*predictors, "d"]].astype(float).dropna()
    n = len(complete)
    constant = [p for p in predictors if n == 0 or np.ptp(complete[p].to_numpy()) == 0]
    used = [p for p in predictors if p not in constant]
    info = {"n": n, "n_incomplete": len(data) - n, "constant_predictors_dropped": constant, "predictors": used}
    terms = ["intercept", *used]
    if n <= len(used) + 1 or not used:
        info["not_fitted"] = f"{n} complete cases for {len(used)} predictors"
        table = pd.DataFrame({"model": name, "term": terms, "n": n})
        return table.reindex(columns=COEFFICIENT_COLUMNS), info
    x = complete[used].to_numpy()
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    y = complete["d"].to_numpy()
    beta, se, r2, dof = _ols(x, y)
    delta = [r2 - _ols(np.delete(x, j, axis=1), y)[2] if len(used) > 1 else r2 for j in range(len(used))]
    t = beta / se
    q = stats.t.ppf(1 - alpha / 2, dof)
    table = pd.DataFrame({
        "model": name, "term": terms, "coefficient": beta, "se": se, "ci_low": beta - q * se,
        "ci_high": beta + q * se, "t": t, "p_value": 2 * stats.t.sf(np.abs(t), dof),
        "delta_r2": [np.nan, *delta], "n": n, "r2": r2, "adj_r2": 1 - (1 - r2) * (n - 1) / dof,
    }, columns=COEFFICIENT_COLUMNS)
    info.update(r2=r2, adj_r2=float(table["adj_r2"].iloc[0]))
    return table, info


def covariate_regressions(covariates: pd.DataFrame, alpha: float = 0.05) -> tuple[pd.DataFrame, dict]:
    """Both :data:`MODELS` fitted to the covariate table; coefficient rows and per-model info."""
    tables, info = [], {}
    for name, spec in MODELS.items():
        part = covariates[covariates["negation"].isin(spec["negation"])]
        table, info[name] = fit_model(part, name, spec["predictors"], alpha)
        info[name]["negation"] = list(spec["negation"])
        tables.append(table)
    return pd.concat(tables, ignore_index=True), info


def plot_covariates(coefficients: pd.DataFrame, model: str, alpha: float = 0.05):
    """Coefficients (per SD of each predictor) with their intervals, one panel per regression, R² in the titles."""
    fig, axes = new_figure(1, len(MODELS), figsize=(6 * len(MODELS), 3.8), squeeze=False)
    for ax, name in zip(axes[0], MODELS):
        part = coefficients[(coefficients["model"] == name) & (coefficients["term"] != "intercept")]
        n = int(part["n"].max()) if len(part) else 0
        r2 = part["r2"].iloc[0] if len(part) else np.nan
        if part.empty or part["coefficient"].isna().all():
            ax.text(0.5, 0.5, f"not fitted (n = {n})", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            y = np.arange(len(part))[::-1]
            values = part["coefficient"].to_numpy(dtype=float)
            err = np.vstack([values - part["ci_low"].to_numpy(dtype=float),
                             part["ci_high"].to_numpy(dtype=float) - values])
            ax.errorbar(values, y, xerr=err, fmt="o", color="tab:blue", capsize=3)
            ax.axvline(0, color="black", lw=0.6)
            ax.set_yticks(y, [PREDICTOR_LABELS.get(t, t) for t in part["term"]], fontsize=8)
            ax.set_xlabel(f"change of d per SD of the predictor ({100 * (1 - alpha):.0f}% interval)")
        sides = " and ".join(MODELS[name]["negation"])
        ax.set_title(f"{name.replace('_', ' ')}: negation in {sides}\nn = {n}, R² = {r2:.3f}", fontsize=9)
    fig.suptitle(f"{model}: image covariates, size, similarity and length as predictors of d (OLS)", fontsize=10)
    fig.tight_layout()
    return fig
