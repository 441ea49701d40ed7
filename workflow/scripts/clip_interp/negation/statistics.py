"""Statistics shared by the analyses."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats


def pearson(x, y) -> tuple[float, float]:
    """Pearson's r and its two-sided p-value over the pairs where both values are finite.

    NaN for both when fewer than 3 such pairs remain or either variable is constant.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"pearson: {len(x)} and {len(y)} values")
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        result = stats.pearsonr(x, y)
    return float(result.statistic), float(result.pvalue)


def standard_error(values: pd.Series) -> float:
    """The standard error of the mean: sample standard deviation (ddof 1) / sqrt(n); NaN for fewer than 2 values."""
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else np.nan
