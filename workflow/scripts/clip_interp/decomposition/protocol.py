"""The protocol report: each experiment's numbers under the paper's protocol beside those under each named
alternative.

Alternatives that change the decomposition store (:func:`store_variants`) run the store's experiments again on a
store written with one setting changed: ``convention_per_component`` / ``convention_uniform`` (the other LayerNorm
folding) and ``dtype_float16`` / ``dtype_float32`` (the other precision). Alternatives that change only a later step
are computed by that step's rule beside its configured protocol (segmentation: aligned masks, unclipped maps;
Waterbirds: heads-only ablation; neighbours: cosine).
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Experiment:
    """One experiment of the report: the columns that name a row of its table (``keys``), the metrics compared,
    and, for a table that holds its own alternatives as rows, the column naming each row's protocol (the rows of
    the configured protocol have ``configured`` true; rows repeated over a column outside ``keys``, such as a
    neighbour's rank, are read once)."""

    keys: tuple[str, ...]
    metrics: tuple[str, ...]
    protocol_column: str | None = None
    not_alternatives: tuple[str, ...] = ()

    def configured_rows(self, table):
        """The rows of ``table`` under the configured protocol, without the protocol columns."""
        if self.protocol_column is None:
            return table
        if "configured" not in table.columns:
            raise InputError("a table with its alternatives as rows needs a `configured` column; re-run its rule")
        rows = table[table["configured"].astype(bool)].drop(columns=[self.protocol_column, "configured"])
        return rows.drop_duplicates(list(self.keys))

    def alternative_rows(self, table) -> dict:
        """``{protocol: its rows}`` for the alternatives ``table`` holds as rows (none without a protocol column)."""
        if self.protocol_column is None:
            return {}
        others = table[~table["configured"].astype(bool) & ~table[self.protocol_column].isin(self.not_alternatives)]
        return {str(name): rows.drop(columns=[self.protocol_column, "configured"]).drop_duplicates(list(self.keys))
                for name, rows in others.groupby(self.protocol_column, sort=False)}


# The experiments of the report, in its order.
EXPERIMENTS = {
    "zero_shot_ablation": Experiment(("ablation",), ("accuracy",)),
    "textspan_reconstruction": Experiment(("condition",), ("accuracy",)),
    "segmentation": Experiment(("method",), ("pixel_accuracy", "miou", "map"), protocol_column="protocol"),
    # The ablated rows: the paper's ablation (or the configured one) beside the other; the baseline is no protocol.
    "waterbirds": Experiment(("condition",), ("worst_group", "average"), protocol_column="ablation_mode",
                             not_alternatives=("none",)),
    # Per head and query: the share of the top k that the paper's dot-product list also holds (1 for itself).
    "neighbours": Experiment(("layer", "head", "query"), ("shared_with_paper",), protocol_column="similarity"),
}


def protocol_report(paper_tables: dict, variant_tables: dict):
    """The report (:data:`REPORT_COLUMNS`) from each experiment's table under the configured protocol
    (``paper_tables``: experiment -> table) and under each store variant (``variant_tables``: experiment ->
    {variant: table}), plus the alternatives a table holds as rows of its own (:class:`Experiment`)."""
    import pandas as pd

    parts = []
    for experiment, spec in EXPERIMENTS.items():
        if experiment not in paper_tables:
            continue
        table = paper_tables[experiment]
        alternatives = {name: spec.configured_rows(t) for name, t in variant_tables.get(experiment, {}).items()}
        alternatives.update(spec.alternative_rows(table))
        parts.append(compare_tables(experiment, spec.keys, spec.metrics, spec.configured_rows(table), alternatives))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(REPORT_COLUMNS))


def largest_differences(report):
    """Per experiment and alternative, the largest absolute difference over its settings and metrics, with the
    setting and metric where it occurs: which choices matter and by how much."""
    if report.empty:
        return report.assign(abs_difference=[])
    ranked = report.assign(abs_difference=report["difference"].abs())
    top = ranked.sort_values(["experiment", "alternative", "abs_difference"], ascending=[True, True, False])
    return top.drop_duplicates(["experiment", "alternative"]).reset_index(drop=True)
