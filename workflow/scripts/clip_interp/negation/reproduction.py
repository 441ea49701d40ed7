"""The reproduction report: every number the negation study publishes beside ours.

The published values live in ``resources/negation_published.yaml`` as groups of entries
``{value, tolerance, what}`` (:func:`load_published`). :data:`OUR_VALUES` maps each
``group.key`` to the function that reads our value from the workflow's tables
(:class:`Sources`). :func:`reproduction_table` puts them side by side with the difference
``ours − published`` and ``within_tolerance = |difference| <= tolerance``; a value we could
not compute (e.g. a variant not configured, or a table without the rows) is NaN with the
reason in ``note`` and ``within_tolerance`` missing.

The study ran OpenAI's ViT-B/32 on the real VALSE existence benchmark;
:func:`setup_differences` names how a run departs from that (on the demo: a toy model on a
synthetic benchmark), so the report can say plainly when its numbers cannot match.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import yaml

from ..errors import InputError
from ..plotting import new_figure
from .preliminary import REPEATED_CAPTION
from .statistics import pearson

REPRODUCTION_COLUMNS = ["key", "group", "what", "published", "ours", "difference", "tolerance", "within_tolerance",
                        "note"]
STUDY_SETUP = {"backend": "open_clip", "name": "ViT-B-32", "pretrained": "openai", "benchmark": "valse"}
TABLE3_NAMES = {"pos": "negator_pos", "size": "relative_size", "sim": "cosine_similarity", "score": "d"}
STUDY_MIN_SIZE = 0.1
STUDY_FIGURE_SEGMENT = "correct"


class Missing(Exception):
    """Our value cannot be computed from the tables of this run; the message says why."""


@dataclass
class Sources:
    """The tables the report reads (one model's results)."""

    scores: pd.DataFrame
    table1: pd.DataFrame
    table2: pd.DataFrame
    preliminary: pd.DataFrame
    table3: pd.DataFrame
    size_accuracy: pd.DataFrame
    selectivity_heads: pd.DataFrame
    iae_averages: pd.DataFrame
    cannot_report: Mapping[str, Any]


def load_published(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The published values as ``{"group.key": {"value", "tolerance", "what"}}``, checked."""
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError:
        raise InputError(f"published values file {str(path)!r} does not exist") from None
    if not isinstance(data, dict):
        raise InputError(f"{str(path)!r} must map groups to entries, got {type(data).__name__}")
    out = {}
    for group, entries in data.items():
        if not isinstance(entries, dict):
            raise InputError(f"{str(path)!r}: group {group!r} must map keys to entries")
        for key, entry in entries.items():
            name = f"{group}.{key}"
            if not isinstance(entry, dict) or set(entry) != {"value", "tolerance", "what"}:
                raise InputError(f"{str(path)!r}: {name} must have exactly value, tolerance and what, got {entry!r}")
            for field in ("value", "tolerance"):
                if isinstance(entry[field], bool) or not isinstance(entry[field], (int, float)):
                    raise InputError(f"{str(path)!r}: {name}.{field} is {entry[field]!r}; expected a number")
            if entry["tolerance"] < 0:
                raise InputError(f"{str(path)!r}: {name}.tolerance is negative ({entry['tolerance']})")
            out[name] = dict(entry)
    return out


def setup_differences(model_spec: Mapping[str, Any], benchmark: str) -> list[str]:
    """How this run departs from the study's set-up (OpenAI ViT-B/32 on VALSE); empty if it does not."""
    differences = []
    for field in ("backend", "name", "pretrained"):
        if model_spec.get(field) != STUDY_SETUP[field]:
            differences.append(f"model {field} is {model_spec.get(field)!r}, the study's is {STUDY_SETUP[field]!r}")
    if model_spec.get("random_init"):
        differences.append("the model has random weights")
    if model_spec.get("path") and not model_spec.get("pretrained"):
        differences.append(f"the model comes from the local file {model_spec['path']!r}")
    if benchmark != STUDY_SETUP["benchmark"]:
        differences.append(f"the benchmark is {benchmark!r}, not the real VALSE existence")
    return differences


# --------------------------------------------------------------------------- our values


def _count(variant: str, side: str | None) -> Callable[[Sources], float]:
    def value(src: Sources) -> float:
        part = src.scores[src.scores["variant"] == variant]
        if part.empty:
            raise Missing(f"no {variant} scores (negation.dataset.variants)")
        return float(len(part) if side is None else (part["negation"] == side).sum())
    return value


def _table1(side: str, variant: str) -> Callable[[Sources], float]:
    def value(src: Sources) -> float:
        rows = src.table1[(src.table1["negation"] == side) & (src.table1["variant"] == variant)]
        if rows.empty:
            raise Missing(f"Table 1 has no {variant} row (both variants are needed for the difference)")
        return float(rows["accuracy"].iloc[0])
    return value


def _table2(side: str, segment: str) -> Callable[[Sources], float]:
    def value(src: Sources) -> float:
        rows = src.table2[(src.table2["variant"] == "rephrased") & (src.table2["negation"] == side)
                          & (src.table2["segment"] == segment)]
        if rows.empty:
            raise Missing("Table 2 has no rephrased rows (negation.dataset.variants)")
        return float(rows["n"].iloc[0])
    return value


def _side(src: Sources, side: str) -> pd.DataFrame:
    return src.preliminary[src.preliminary["negation"] == side]


def _finite(value: float, why: str) -> float:
    if not np.isfinite(value):
        raise Missing(why)
    return float(value)


def _r_similarity(side: str, without_repeated: bool = False) -> Callable[[Sources], float]:
    def value(src: Sources) -> float:
        part = _side(src, side)
        if without_repeated:
            part = part[part["caption"].str.strip() != REPEATED_CAPTION]
        return _finite(pearson(part["cosine_similarity"], part["d"])[0], "fewer than 3 instances or a constant")
    return value


def _repeated(column: str | None) -> Callable[[Sources], float]:
    def value(src: Sources) -> float:
        part = _side(src, "caption")
        part = part[part["caption"].str.strip() == REPEATED_CAPTION]
        if column is None:
            return float(len(part))
        if part.empty:
            raise Missing(f"no instance has the caption {REPEATED_CAPTION!r}")
        return float(part[column].mean())
    return value


def _r_size(src: Sources) -> float:
    part = _side(src, "foil")
    return _finite(pearson(part["relative_size"], part["d"])[0], "no subject sizes, or fewer than 3")


def _size_filter(column: str) -> Callable[[Sources], float]:
    def value(src: Sources) -> float:
        rows = src.size_accuracy[src.size_accuracy["size"] == "relative_size"]
        if rows.empty:
            raise Missing("the size_accuracy table has no relative_size row")
        if not np.isclose(rows["min_size"].iloc[0], STUDY_MIN_SIZE):
            raise Missing(f"negation.preliminary.min_size is {rows['min_size'].iloc[0]:g}, the study's is "
                          f"{STUDY_MIN_SIZE:g}")
        return _finite(rows[column].iloc[0], "no instance with a subject size")
    return value


def _table3(x: str, y: str) -> Callable[[Sources], float]:
    def value(src: Sources) -> float:
        rows = src.table3[(src.table3["variable_x"] == TABLE3_NAMES[x]) & (src.table3["variable_y"] == TABLE3_NAMES[y])]
        if rows.empty:
            raise Missing(f"Table 3 has no cell ({TABLE3_NAMES[x]}, {TABLE3_NAMES[y]})")
        return _finite(rows["r"].iloc[0], f"undefined over n = {int(rows['n'].iloc[0])} instances")
    return value


def _selectivity(what: str) -> Callable[[Sources], float]:
    def value(src: Sources) -> float:
        heads = src.selectivity_heads
        return float(len(heads)) if what == "n" else float(heads["selective"].mean())
    return value


def _iae(component: str) -> Callable[[Sources], float]:
    def value(src: Sources) -> float:
        table = src.iae_averages
        rows = table[(table["component"] == component) & (table["segment"] == STUDY_FIGURE_SEGMENT)
                     & (table["negation"] == "both")]
        if rows.empty:
            raise Missing(f"{component} is not in negation.image_ablation.components")
        return _finite(rows["mean_iae_over_layers"].iloc[0], f"no instance in the {STUDY_FIGURE_SEGMENT} segment")
    return value


def _cannot_pairs(src: Sources) -> float:
    note = ""
    if src.cannot_report.get("reading") not in (None, "noun_chunk"):
        note = f" (reading {src.cannot_report['reading']})"
    if note:
        raise Missing(f"the study's reading is noun_chunk; this run used{note}")
    return float(src.cannot_report["pairs"])


OUR_VALUES: dict[str, Callable[[Sources], float]] = {
    **{f"counts.{variant}_{side or 'all'}": _count(variant, side)
       for variant in ("standard", "rephrased") for side in (None, "caption", "foil")},
    **{f"table1.{side}_{variant}": _table1(side, variant)
       for side in ("caption", "foil", "all") for variant in ("standard", "rephrased")},
    **{f"table1.{side}_difference": _table1(side, "standard_minus_rephrased") for side in ("caption", "foil", "all")},
    **{f"table2.{side}_{segment}": _table2(side, segment)
       for side in ("caption", "foil") for segment in ("correct", "ambiguous", "incorrect")},
    "figure6.r_similarity_d_foil": _r_similarity("foil"),
    "figure6.r_similarity_d_caption": _r_similarity("caption"),
    "figure6.r_similarity_d_caption_without_repeated": _r_similarity("caption", without_repeated=True),
    "figure6.repeated_caption_instances": _repeated(None),
    "figure6.repeated_caption_cosine": _repeated("cosine_similarity"),
    "figure7.r_size_d": _r_size,
    "figure7.share_removed_min_size": _size_filter("share_removed"),
    "figure7.accuracy_min_size": _size_filter("accuracy_kept"),
    **{f"table3.{x}_{y}": _table3(x, y)
       for x, y in (("pos", "size"), ("pos", "sim"), ("pos", "score"), ("size", "sim"), ("size", "score"),
                    ("sim", "score"))},
    "selectivity.n_heads": _selectivity("n"),
    "selectivity.share_selective_heads": _selectivity("share"),
    "image_ablation.iae_average_mlp": _iae("mlp"),
    "image_ablation.iae_average_mha": _iae("mha"),
    "cannot.pairs": _cannot_pairs,
}


def check_coverage(published: Mapping[str, Any]) -> None:
    """Every published value has a definition of ours and every definition a published value."""
    unknown = sorted(set(published) - set(OUR_VALUES))
    unused = sorted(set(OUR_VALUES) - set(published))
    if unknown or unused:
        raise InputError(f"the published values and clip_interp.negation.reproduction.OUR_VALUES differ: "
                         f"published without a definition of ours {unknown}; definitions without a published "
                         f"value {unused}")


def reproduction_table(published: Mapping[str, Mapping[str, Any]], sources: Sources) -> pd.DataFrame:
    """One row per published value, in the file's order (:data:`REPRODUCTION_COLUMNS`)."""
    check_coverage(published)
    rows = []
    for name, entry in published.items():
        group, key = name.split(".", 1)
        try:
            ours, note = OUR_VALUES[name](sources), ""
        except Missing as reason:
            ours, note = np.nan, str(reason)
        difference = ours - entry["value"]
        within = pd.NA if not np.isfinite(ours) else bool(abs(difference) <= entry["tolerance"] + 1e-9)
        rows.append({"key": name, "group": group, "what": entry["what"], "published": float(entry["value"]),
                     "ours": float(ours), "difference": float(difference), "tolerance": float(entry["tolerance"]),
                     "within_tolerance": within, "note": note})
    table = pd.DataFrame(rows, columns=REPRODUCTION_COLUMNS)
    table["within_tolerance"] = table["within_tolerance"].astype("boolean")
    return table


def read_sources(paths: Mapping[str, str]) -> Sources:
    """The tables named by ``paths`` (keys: the fields of :class:`Sources`; ``cannot_report`` is JSON)."""
    frames = {name: pd.read_parquet(paths[name]) for name in Sources.__dataclass_fields__ if name != "cannot_report"}
    with open(paths["cannot_report"]) as handle:
        return Sources(**frames, cannot_report=json.load(handle))


def _number(value: float, key: str) -> str:
    if not np.isfinite(value):
        return "–"
    if key.startswith(("counts.", "table2.", "cannot.")) or key.endswith(("_instances", "n_heads")):
        text = f"{value:.0f}"
    else:
        text = f"{value:.3f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def plot_reproduction(table: pd.DataFrame, model: str, differences: list[str]):
    """The report as a figure: one line per published value with ours, the difference and a
    verdict (green: within tolerance, red: outside, grey: not computed); the title says when
    the run is not the study's set-up."""
    fig, ax = new_figure(figsize=(13, 0.24 * (len(table) + 1) + 0.9))
    ax.axis("off")
    cells, colours = [], []
    verdict = {True: ("yes", "#c7e9c0"), False: ("no", "#fcbba1")}
    for row in table.itertuples():
        word, colour = ("not computed", "#e0e0e0") if pd.isna(row.within_tolerance) else \
            verdict[bool(row.within_tolerance)]
        cells.append([row.key, row.what if len(row.what) <= 72 else row.what[:71] + "…",
                      _number(row.published, row.key), _number(row.ours, row.key),
                      _number(row.difference, row.key) if np.isfinite(row.difference) else "–",
                      _number(row.tolerance, row.key), word])
        colours.append(["white"] * 6 + [colour])
    drawn = ax.table(cellText=cells, cellColours=colours, bbox=[0, 0, 1, 1], cellLoc="left",
                     colLabels=["key", "quantity", "published", "ours", "ours − published", "tolerance", "within"],
                     colWidths=[0.25, 0.4, 0.065, 0.065, 0.085, 0.065, 0.08])
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(7)
    counted = table["within_tolerance"].dropna()
    title = (f"{model}: the negation study's published numbers beside ours — {int(counted.sum())} of "
             f"{len(table)} within tolerance, {len(table) - len(counted)} not computed")
    if differences:
        title += "\nNOT THE STUDY'S SET-UP, the numbers are not expected to match: " + "; ".join(differences)
    fig.suptitle(title, fontsize=9, color="black" if not differences else "darkred")
    fig.tight_layout(rect=(0, 0, 1, 0.97 if not differences else 0.95))
    return fig
