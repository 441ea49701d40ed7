"""The protocol report: each experiment's numbers under the paper's protocol beside those under each named
alternative.

Alternatives that change the decomposition store (:func:`store_variants`) run the store's experiments again on a
store written with one setting changed: ``convention_per_component`` / ``convention_uniform`` (the other LayerNorm
folding) and ``dtype_float16`` / ``dtype_float32`` (the other precision). Alternatives that change only a later step
are computed by that step's rule beside its configured protocol (segmentation: aligned masks, unclipped maps;
Waterbirds: heads-only ablation; neighbours: cosine).
"""

from __future__ import annotations

from typing import Sequence

from ..contributions import CONVENTIONS
from ..errors import InputError
from .store import DTYPES

STORE_SETTINGS = ("convention", "dtype")


def store_variants(convention: str, dtype: str, settings: Sequence[str] = STORE_SETTINGS) -> dict[str, dict]:
    """``{name: {"convention": ..., "dtype": ...}}``: for each of ``settings``, the configured store with that
    setting changed to its other value, named ``{setting}_{value}`` (e.g. ``convention_per_component``)."""
    unknown = [s for s in settings if s not in STORE_SETTINGS]
    if unknown:
        raise InputError(f"decomposition.protocol_report.store_variants names {unknown}; choose from {STORE_SETTINGS}")
    configured = {"convention": convention, "dtype": dtype}
    choices = {"convention": CONVENTIONS, "dtype": DTYPES}
    variants = {}
    for setting in settings:
        other = next(value for value in choices[setting] if value != configured[setting])
        variants[f"{setting}_{other}"] = {**configured, setting: other}
    return variants


REPORT_COLUMNS = ("experiment", "setting", "metric", "alternative", "paper", "value", "difference")


def compare_tables(experiment: str, keys: Sequence[str], metrics: Sequence[str], paper, alternatives: dict):
    """Rows of the report for one experiment: for each alternative (name -> its table), each row of ``paper``
    matched on ``keys`` (the row's ``setting``, joined by '/') and each of ``metrics``: the paper's value, the
    alternative's and ``difference = value - paper``. A row of the paper's table that an alternative lacks is an
    InputError (the two runs differ in what they computed)."""
    import pandas as pd

    rows = []
    for name, table in alternatives.items():
        merged = paper.merge(table, on=list(keys), how="left", suffixes=("_paper", "_alternative"),
                             indicator=True)
        missing = merged[merged["_merge"] != "both"]
        if not missing.empty:
            raise InputError(f"{experiment}: the alternative {name!r} has no row for "
                             f"{missing[list(keys)].to_dict('records')[:3]}; re-run both with one configuration")
        for record in merged.to_dict("records"):
            setting = "/".join(str(record[k]) for k in keys)
            for metric in metrics:
                base, value = float(record[f"{metric}_paper"]), float(record[f"{metric}_alternative"])
                rows.append({"experiment": experiment, "setting": setting, "metric": metric, "alternative": name,
                             "paper": base, "value": value, "difference": value - base})
    return pd.DataFrame(rows, columns=list(REPORT_COLUMNS))


def split_by_protocol(table, column: str, paper_value: str):
    """A step's table with its alternatives as rows (``column`` names the protocol of each row): the paper's rows
    and ``{alternative: its rows}``, each without ``column``."""
    if column not in table.columns:
        raise InputError(f"the table has no column {column!r} naming each row's protocol; re-run its rule")
    paper = table[table[column] == paper_value].drop(columns=[column])
    if paper.empty:
        raise InputError(f"the table has no rows of the protocol {paper_value!r} in {column!r}; re-run its rule")
    alternatives = {str(name): rows.drop(columns=[column]) for name, rows in table.groupby(column, sort=True)
                    if name != paper_value}
    return paper, alternatives
