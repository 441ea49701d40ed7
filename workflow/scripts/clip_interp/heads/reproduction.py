"""The heads reproduction report: what CLIP-InterpreT (Madasu et al.) publishes beside what this run computes.

The paper's values come from ``resources/heads/paper_values.yaml`` (:mod:`clip_interp.heads.paper_values`); ours
from the score tables of the configured models (one row per model and labeller, as ``scores.parquet``), their
label tables and, when a configured model is one of the paper's six, the published labels (``head_labels.tsv``).
:func:`reproduction_table` writes one row per comparison (:data:`REPRODUCTION_COLUMNS`), in five sections:

- ``setup``: per configured model, whether it is one of the paper's six (by open_clip name and pretrained tag),
  and how many of the six are configured;
- ``scores``: per model, labeller and score (entanglement, association): the paper's value, ours, ``difference =
  ours - paper`` and ``holds = |difference| <= tolerance`` (the file's ``tolerance``); for a model the paper does
  not have, ``paper`` is NaN and ``holds`` missing;
- ``claims``: each of the paper's qualitative claims judged on the paper's own six scores (labeller null) and on
  ours, per labeller (:func:`judge_claim`); ``holds`` missing when no configured model of a group it compares
  has a score;
- ``figure_heads``: each head the paper's figures name (its 0-based layer in ``layer_paper``, ours in ``layer``),
  the figure's property (``paper_label``) beside each labeller's label (``our_label``); ``holds`` when both name
  the same property of the taxonomy (:func:`same_property`);
- ``published_readings``: the three entanglement readings (:mod:`clip_interp.heads.scores`) of the paper's own
  published labels, raw and mapped onto the taxonomy, beside the paper's entanglement of each model, and one row
  ``published_readings.reproduces``: whether any one reading gives every model's value within tolerance.

``status`` says each verdict in words (:data:`STATUSES`) and ``note`` why, with the numbers compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import InputError
from ..plotting import plt
from . import head_title
from .paper_values import Claim, Comparison, PaperValues
from .published import published_scores, read_head_labels
from .scores import READINGS
from .taxonomy import Taxonomy, load_taxonomy, normalise_label

REPRODUCTION_COLUMNS = ["section", "key", "model", "open_clip_name", "pretrained", "labeller", "layer", "layer_paper",
                        "head", "what", "paper", "ours", "difference", "tolerance", "paper_label", "our_label",
                        "holds", "status", "note"]
SCORE_COLUMNS = ("model", "labeller", "open_clip_name", "pretrained", "entanglement", "association")
SECTIONS = ("setup", "scores", "claims", "figure_heads", "published_readings")
NOT_EVALUABLE = "not evaluable"
STATUSES = {"setup": ("the paper's model", "not the paper's model"),
            "scores": ("within tolerance", "outside tolerance"),
            "claims": ("true", "false"),
            "figure_heads": ("same property", "other property"),
            "published_readings": ("within tolerance", "outside tolerance")}
FINDING_STATUSES = ("true", "false")  # the summary rows: setup.paper_models, published_readings.reproduces
SOURCE_NAMES = {"openai": "OpenAI", "openclip": "OpenCLIP"}
READING_VARIANTS = ("raw", "mapped")


@dataclass
class ReportInputs:
    """Our side of the report. ``scores``: one row per (model, labeller) with :data:`SCORE_COLUMNS`
    (``open_clip_name``/``pretrained`` null for a model that is not an open_clip model with weights); ``labels``:
    (model, labeller) -> its label table (``layer, head, label``); ``taxonomy``: the configured taxonomy;
    ``published``: the published labels (:func:`clip_interp.heads.published.read_head_labels`), None when not
    read; ``specs``: model -> its config entry, for the reason a model is not the paper's."""

    scores: pd.DataFrame
    labels: Mapping[tuple[str, str], pd.DataFrame]
    taxonomy: Taxonomy
    published: pd.DataFrame | None = None
    specs: Mapping[str, Mapping] | None = None


def _row(section: str, key: str, what: str, holds, note: str = "", statuses: tuple[str, str] | None = None,
         **fields) -> dict:
    """A report row; ``status`` in words from ``statuses`` (default: the section's, :data:`STATUSES`)."""
    statuses = statuses or STATUSES[section]
    status = NOT_EVALUABLE if holds is None or holds is pd.NA else statuses[0 if holds else 1]
    return {"section": section, "key": key, "what": what, "holds": pd.NA if holds is None else bool(holds),
            "status": status, "note": note, **fields}


def _compared(paper: float, ours: float, tolerance: float) -> dict:
    difference = ours - paper
    holds = None if not (np.isfinite(paper) and np.isfinite(ours)) else bool(abs(difference) <= tolerance + 1e-9)
    return {"paper": paper, "ours": ours, "difference": difference, "tolerance": tolerance, "holds": holds}


def _identities(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per configured model: ``model, open_clip_name, pretrained`` (first row of each model)."""
    return scores.drop_duplicates("model")[["model", "open_clip_name", "pretrained"]].reset_index(drop=True)


def _model_text(name, pretrained) -> str:
    return f"{name} {pretrained}"


# --------------------------------------------------------------------------- setup and scores


def _not_the_papers(model: str, name, pretrained, spec: Mapping | None) -> str:
    """Why ``model`` is not one of the paper's: its backend, random weights, local weights or its identity."""
    spec = spec or {}
    if spec.get("backend", "open_clip") != "open_clip":
        what = f"a {spec['backend']} model"
    elif spec.get("random_init"):
        what = f"open_clip {name or spec.get('name')} with random weights"
    elif (pretrained is None or pd.isna(pretrained)) and spec.get("path"):
        what = f"open_clip {name} with weights from the local file {spec['path']}"
    elif name is None or pd.isna(name):
        what = "not an open_clip model with pretrained weights"
    else:
        what = _model_text(name, pretrained)
    return f"{model} is {what}, not one of the paper's models"


def setup_rows(paper: PaperValues, inputs: ReportInputs) -> list[dict]:
    """Per configured model, whether it is one of the paper's models; then how many of them are configured."""
    rows, found = [], set()
    for ident in _identities(inputs.scores).itertuples(index=False):
        entry = paper.model_of(ident.open_clip_name, ident.pretrained)
        if entry is not None:
            found.add((entry["name"], entry["pretrained"]))
        spec = (inputs.specs or {}).get(ident.model)
        note = (f"the paper's {entry['size']} {SOURCE_NAMES[entry['source']]} model" if entry is not None
                else _not_the_papers(ident.model, ident.open_clip_name, ident.pretrained, spec) +
                "; the paper's columns are empty for it")
        rows.append(_row("setup", f"setup.{ident.model}", "the model is one of the paper's models",
                         entry is not None, note, model=ident.model, open_clip_name=ident.open_clip_name,
                         pretrained=ident.pretrained))
    missing = [_model_text(n, p) for n, p in zip(paper.models["name"], paper.models["pretrained"])
               if (n, p) not in found]
    rows.append(_row("setup", "setup.paper_models", "every model of the paper is configured", not missing,
                     f"{len(found)} of the paper's {len(paper.models)} models configured"
                     + (f"; missing {', '.join(missing)}" if missing else ""), statuses=FINDING_STATUSES,
                     paper=float(len(paper.models)), ours=float(len(found))))
    return rows


def score_rows(paper: PaperValues, inputs: ReportInputs) -> list[dict]:
    """Per model, labeller and score: the paper's value beside ours (NaN paper value for a model it lacks)."""
    rows = []
    for record in inputs.scores.itertuples(index=False):
        entry = paper.model_of(record.open_clip_name, record.pretrained)
        for score in ("entanglement", "association"):
            value = float(entry[score]) if entry is not None else np.nan
            compared = _compared(value, float(getattr(record, score)), paper.tolerance)
            note = "" if entry is not None else f"{record.model} is not one of the paper's models: no paper value"
            if entry is not None and not np.isfinite(compared["ours"]):
                note = f"no {score} of ours in the scores of {record.model}"
            rows.append(_row("scores", f"scores.{record.model}.{record.labeller}.{score}",
                             f"{score} ({record.labeller} labels)", compared.pop("holds"), note, model=record.model,
                             open_clip_name=record.open_clip_name, pretrained=record.pretrained,
                             labeller=record.labeller, **compared))
    return rows


# --------------------------------------------------------------------------- claims


def group_name(selector: Mapping[str, str]) -> str:
    """``small OpenCLIP``, ``large``, ``OpenAI``: the models a group selector names."""
    words = [selector["size"]] if "size" in selector else []
    words += [SOURCE_NAMES[selector["source"]]] if "source" in selector else []
    return " ".join(words) + " models"


def selected_models(paper: PaperValues, selector: Mapping[str, str]) -> list[tuple[str, str]]:
    """The (name, pretrained) of the paper's models that ``selector`` selects."""
    table = paper.models
    mask = np.ones(len(table), dtype=bool)
    for key, value in selector.items():
        mask &= (table[key] == value).to_numpy()
    return list(zip(table.loc[mask, "name"], table.loc[mask, "pretrained"]))


def _values_text(part: pd.DataFrame) -> str:
    return ", ".join(f"{_model_text(r.name, r.pretrained)} {r.value:.3f}" for r in part.itertuples(index=False))


def judge_comparison(comparison: Comparison, values: pd.DataFrame, paper: PaperValues) -> tuple[bool | None, str]:
    """Whether ``comparison.score`` is lower for every model of ``lower`` than for every model of ``higher``
    (``max(lower) < min(higher)``), over ``values`` (``name, pretrained, value``: one row per model scored, NaN
    values left out); None, with the reason, when no scored model belongs to one of the two groups."""
    parts = {}
    for side in ("lower", "higher"):
        selector = getattr(comparison, side)
        members = set(selected_models(paper, selector))
        part = values[np.array([(n, p) in members for n, p in zip(values["name"], values["pretrained"])], dtype=bool)]
        part = part[np.isfinite(part["value"].astype(float))]
        if part.empty:
            names = ", ".join(_model_text(n, p) for n, p in sorted(members))
            return None, f"{comparison.score}: no {group_name(selector)} scored ({names})"
        parts[side] = part
    holds = bool(parts["lower"]["value"].max() < parts["higher"]["value"].min())
    return holds, (f"{comparison.score}: {group_name(comparison.lower)} ({_values_text(parts['lower'])}) "
                   f"{'<' if holds else 'not all <'} {group_name(comparison.higher)} "
                   f"({_values_text(parts['higher'])})")


def judge_claim(claim: Claim, values: Mapping[str, pd.DataFrame], paper: PaperValues) -> tuple[bool | None, str]:
    """A claim holds when all its comparisons do; it fails when one evaluated comparison fails; otherwise (a
    comparison not evaluable) it is None. ``values``: score -> ``name, pretrained, value``."""
    verdicts = [judge_comparison(c, values[c.score], paper) for c in claim.comparisons]
    notes = "; ".join(note for _, note in verdicts)
    if any(holds is False for holds, _ in verdicts):
        return False, notes
    if any(holds is None for holds, _ in verdicts):
        return None, notes
    return True, notes


def _paper_values(paper: PaperValues) -> dict[str, pd.DataFrame]:
    return {score: paper.models[["name", "pretrained"]].assign(value=paper.models[score].astype(float))
            for score in ("entanglement", "association")}


def _our_values(scores: pd.DataFrame) -> dict[str, pd.DataFrame]:
    named = scores[scores["open_clip_name"].notna()]
    return {score: pd.DataFrame({"name": named["open_clip_name"], "pretrained": named["pretrained"],
                                 "value": named[score].astype(float)}) for score in ("entanglement", "association")}


def claim_rows(paper: PaperValues, inputs: ReportInputs) -> list[dict]:
    """Each claim on the paper's own scores (labeller null), then on ours per labeller (the configured models)."""
    rows = []
    labellers = list(dict.fromkeys(inputs.scores["labeller"]))
    for claim in paper.claims:
        holds, note = judge_claim(claim, _paper_values(paper), paper)
        rows.append(_row("claims", f"claims.{claim.name}.paper", f"{claim.statement} (the paper's scores)", holds,
                         note))
        for labeller in labellers:
            ours = inputs.scores[inputs.scores["labeller"] == labeller]
            holds, note = judge_claim(claim, _our_values(ours), paper)
            if holds is None:
                note = "a group the claim compares has no configured model with a score: " + note
            rows.append(_row("claims", f"claims.{claim.name}.{labeller}",
                             f"{claim.statement} (ours, {labeller} labels)", holds, note, labeller=labeller))
    return rows


# --------------------------------------------------------------------------- the figures' heads


def same_property(paper_label: str, our_label, taxonomy: Taxonomy) -> tuple[bool, str]:
    """Whether our label names the property of the figure's (``a/b`` names either): both map onto the same
    property of ``taxonomy``, or, unmapped, read the same (:func:`~clip_interp.heads.taxonomy.normalise_label`)."""
    if our_label is None or pd.isna(our_label):
        return False, "no label of ours"
    parts = [part for part in str(paper_label).split("/") if part.strip()]
    theirs = {taxonomy.canonical(part) for part in parts} - {None}
    ours = taxonomy.canonical(our_label)
    if ours is not None and ours in theirs:
        return True, f"both name {ours}"
    if normalise_label(our_label) in {normalise_label(part) for part in parts}:
        return True, "the same word"
    where = f"maps to {ours}" if ours else "maps to no property of the taxonomy"
    return False, (f"the paper's {paper_label!r} maps to {', '.join(sorted(theirs)) or 'no property'}; "
                   f"ours {our_label!r} {where}")


def _figure_head_rows(entry, models: Sequence[str], inputs: ReportInputs) -> list[dict]:
    fields = {"open_clip_name": entry.name, "pretrained": entry.pretrained, "layer": entry.layer,
              "layer_paper": entry.layer_paper, "head": entry.head, "paper_label": entry.property}
    what = f"{_model_text(entry.name, entry.pretrained)} {head_title(entry.layer, entry.head)}"
    base = f"figure_heads.{entry.name}.{entry.pretrained}.L{entry.layer}H{entry.head}"
    if not models:
        return [_row("figure_heads", base, what, None, f"{_model_text(entry.name, entry.pretrained)} is not "
                     f"configured", **fields)]
    rows = []
    for model in models:
        for labeller in dict.fromkeys(inputs.scores.loc[inputs.scores["model"] == model, "labeller"]):
            table = inputs.labels.get((model, labeller))
            key, at = f"{base}.{model}.{labeller}", {**fields, "model": model, "labeller": labeller}
            found = None if table is None else table[(table["layer"] == entry.layer) & (table["head"] == entry.head)]
            if found is None or found.empty:
                layers = [] if table is None else sorted(set(table["layer"].astype(int)))
                rows.append(_row("figure_heads", key, what, None, f"the {labeller} labels of {model} have no "
                                 f"L{entry.layer} H{entry.head} (labelled layers {layers})", **at))
                continue
            label = found["label"].iloc[0]
            holds, note = same_property(entry.property, label, inputs.taxonomy)
            rows.append(_row("figure_heads", key, what, holds, note,
                             **{**at, "our_label": None if pd.isna(label) else str(label)}))
    return rows


def figure_head_rows(paper: PaperValues, inputs: ReportInputs) -> list[dict]:
    """Per head of the paper's figures and configured model it belongs to: the figure's property beside each
    labeller's label; one row marked not evaluable for a head whose model is not configured."""
    identities = _identities(inputs.scores)
    rows = []
    for entry in paper.figure_heads.itertuples(index=False):
        models = identities.loc[(identities["open_clip_name"] == entry.name)
                                & (identities["pretrained"] == entry.pretrained), "model"].tolist()
        rows += _figure_head_rows(entry, models, inputs)
    return rows


# --------------------------------------------------------------------------- the published labels' readings


def published_reading_rows(paper: PaperValues, inputs: ReportInputs) -> list[dict]:
    """Each entanglement reading of the paper's published labels (raw, and mapped onto the taxonomy) beside the
    paper's entanglement of the model, then whether one reading reproduces every model's value."""
    what = ("one reading of entanglement, on the paper's own published labels, gives the paper's entanglement of "
            "every model within tolerance")
    if inputs.published is None:
        return [_row("published_readings", "published_readings.reproduces", what, None,
                     "the published labels are read only when a configured model is one of the paper's (none is)")]
    readings = published_scores(inputs.published, inputs.taxonomy)
    rows, matched = [], {f"{v}_{r}": [] for v in READING_VARIANTS for r in READINGS}
    for entry in paper.models.itertuples(index=False):
        found = readings[(readings["model"] == entry.name) & (readings["pretrained"] == entry.pretrained)]
        if found.empty:
            continue
        for reading in matched:
            compared = _compared(float(entry.entanglement), float(found[reading].iloc[0]), paper.tolerance)
            if compared["holds"]:
                matched[reading].append(_model_text(entry.name, entry.pretrained))
            rows.append(_row("published_readings", f"published_readings.{entry.name}.{entry.pretrained}.{reading}",
                             f"entanglement read as {reading} on the published labels", compared.pop("holds"),
                             open_clip_name=entry.name, pretrained=entry.pretrained, **compared))
    n_models = len({(r["open_clip_name"], r["pretrained"]) for r in rows})
    if not n_models:
        return [_row("published_readings", "published_readings.reproduces", what, None,
                     "the published labels hold none of the paper's models")]
    best = max(matched, key=lambda reading: len(matched[reading]))
    note = (f"{n_models} models; closest: {best}, {len(matched[best])} of {n_models} within {paper.tolerance:g}"
            + (f" ({', '.join(matched[best])})" if matched[best] else ""))
    rows.append(_row("published_readings", "published_readings.reproduces", what,
                     len(matched[best]) == n_models, note, statuses=FINDING_STATUSES, paper=float(n_models),
                     ours=float(len(matched[best])), tolerance=paper.tolerance))
    return rows


# --------------------------------------------------------------------------- the table


def check_scores(scores: pd.DataFrame, source: str = "the score tables") -> None:
    """The score rows need :data:`SCORE_COLUMNS` and one row per (model, labeller)."""
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise InputError(f"{source} lack the columns {missing} (have {list(scores.columns)})")
    repeated = scores.duplicated(["model", "labeller"])
    if repeated.any():
        row = scores[repeated].iloc[0]
        raise InputError(f"{source} hold model {row['model']!r} with labeller {row['labeller']!r} more than once")


def reproduction_table(paper: PaperValues, inputs: ReportInputs) -> pd.DataFrame:
    """The report's rows (module docstring), section by section, in :data:`REPRODUCTION_COLUMNS`."""
    check_scores(inputs.scores)
    rows = (setup_rows(paper, inputs) + score_rows(paper, inputs) + claim_rows(paper, inputs)
            + figure_head_rows(paper, inputs) + published_reading_rows(paper, inputs))
    table = pd.DataFrame(rows).reindex(columns=REPRODUCTION_COLUMNS)
    for column in ("layer", "layer_paper", "head"):
        table[column] = table[column].astype("Int64")
    for column in ("paper", "ours", "difference", "tolerance"):
        table[column] = table[column].astype(float)
    table["holds"] = table["holds"].astype("boolean")
    for column in ("model", "open_clip_name", "pretrained", "labeller", "paper_label", "our_label"):
        table[column] = table[column].astype(object).where(table[column].notna(), None)
    return table


def read_inputs(*, models: Sequence[str], scores: Sequence[str], label_keys: Sequence[Sequence[str]],
                labels: Sequence[str], taxonomy_path, published_path=None,
                specs: Mapping[str, Mapping] | None = None) -> ReportInputs:
    """Our side of the report from files: each model's score table (``scores[i]`` of ``models[i]``; a
    ``model`` column is added), the label tables ``labels[i]`` of (model, labeller) ``label_keys[i]``, the
    taxonomy and, when given, the published labels."""
    if len(models) != len(scores) or len(label_keys) != len(labels):
        raise InputError(f"{len(models)} models for {len(scores)} score tables, {len(label_keys)} (model, "
                         f"labeller) pairs for {len(labels)} label tables; give one file each")
    parts = []
    for model, path in zip(models, scores):
        table = pd.read_parquet(path)
        check_scores(table.assign(model=model), f"the score table {path}")
        parts.append(table.assign(model=model)[list(SCORE_COLUMNS)])
    tables = {(str(model), str(labeller)): pd.read_parquet(path) for (model, labeller), path in zip(label_keys, labels)}
    return ReportInputs(scores=pd.concat(parts, ignore_index=True), labels=tables,
                        taxonomy=load_taxonomy(taxonomy_path),
                        published=read_head_labels(published_path) if published_path else None, specs=specs)


def paper_models_configured(table: pd.DataFrame) -> list[str]:
    """The configured models that are the paper's (the ``setup`` rows that hold)."""
    setup = table[(table["section"] == "setup") & table["model"].notna()]
    return setup.loc[setup["holds"].fillna(False).astype(bool), "model"].tolist()


def summary_line(table: pd.DataFrame) -> str:
    """One line: the configured paper models and how many rows of each section hold, fail, are not evaluable."""
    parts = []
    for section in SECTIONS[1:]:
        part = table[table["section"] == section]
        held = part["holds"].dropna()
        parts.append(f"{section}: {int(held.sum())} hold, {int((~held.astype(bool)).sum())} fail, "
                     f"{len(part) - len(held)} not evaluable")
    models = paper_models_configured(table)
    return (f"{len(models)} of the configured models are the paper's ({', '.join(models) or 'none'}); "
            + "; ".join(parts))


# --------------------------------------------------------------------------- the figure

VERDICT_COLOURS = {True: "#c7e9c0", False: "#fcbba1", None: "#e0e0e0"}


def _verdict(holds) -> bool | None:
    return None if pd.isna(holds) else bool(holds)


def _short(text, width: int) -> str:
    text = "" if text is None or (isinstance(text, float) and np.isnan(text)) else str(text)
    return text if len(text) <= width else text[:width - 1] + "…"


def _score_panel(ax, part: pd.DataFrame, score: str) -> None:
    """Per configured model: the paper's value (black star; none for a model it lacks) and each labeller's."""
    models = list(dict.fromkeys(part["model"]))
    labellers = list(dict.fromkeys(part["labeller"]))
    for j, labeller in enumerate(labellers):
        rows = part[part["labeller"] == labeller].set_index("model").reindex(models)
        offset = (j - (len(labellers) - 1) / 2) * 0.12
        ax.scatter(np.arange(len(models)) + offset, rows["ours"], label=f"ours ({labeller})", zorder=3)
    paper = part.drop_duplicates("model").set_index("model").reindex(models)["paper"]
    if paper.notna().any():
        ax.scatter(np.arange(len(models)), paper, marker="*", s=140, color="black", label="paper", zorder=4)
    ax.set_xticks(np.arange(len(models)), models, rotation=20, ha="right", fontsize=7)
    ax.set_xlim(-0.6, len(models) - 0.4)
    ax.set_ylim(0, 1)
    ax.set_title(score, fontsize=9)
    ax.legend(fontsize=6, loc="upper right")


def _table(ax, cells, colours, labels, widths) -> None:
    ax.axis("off")
    if not cells:
        ax.text(0.5, 0.5, "no rows", ha="center", va="center", fontsize=8)
        return
    drawn = ax.table(cellText=cells, cellColours=colours, colLabels=labels, colWidths=widths, bbox=[0, 0, 1, 1],
                     cellLoc="left")
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(6.5)


def _claim_cells(table: pd.DataFrame):
    part = table[(table["section"] == "claims") | (table["key"] == "published_readings.reproduces")]
    cells, colours = [], []
    for row in part.itertuples(index=False):
        on = "paper's scores" if row.section == "claims" and row.labeller is None else (
            row.labeller or "published labels")
        cells.append([_short(row.what.split(" (")[0], 80), on, row.status, _short(row.note, 105)])
        colours.append(["white", "white", VERDICT_COLOURS[_verdict(row.holds)], "white"])
    return cells, colours


def _head_cells(table: pd.DataFrame):
    part = table[table["section"] == "figure_heads"]
    cells, colours = [], []
    for row in part.itertuples(index=False):
        cells.append([row.model or f"({_model_text(row.open_clip_name, row.pretrained)})",
                      head_title(row.layer, row.head), row.paper_label, row.labeller or "–",
                      row.our_label or "–", row.status, _short(row.note, 70)])
        colours.append(["white"] * 5 + [VERDICT_COLOURS[_verdict(row.holds)], "white"])
    return cells, colours


def plot_reproduction(table: pd.DataFrame):
    """The report as a figure: the paper's entanglement and association beside ours per model and labeller, the
    claims and the published-labels finding with their verdicts (green: holds, red: fails, grey: not evaluable),
    and the figures' heads; the title says plainly when no configured model is the paper's."""
    claims, claim_colours = _claim_cells(table)
    heads, head_colours = _head_cells(table)
    heights = [2.6, 0.2 * (len(claims) + 1) + 0.2, 0.2 * (len(heads) + 1) + 0.2]
    fig = plt.figure(figsize=(15, sum(heights) + 1.1))
    grid = fig.add_gridspec(3, 2, height_ratios=heights)
    scores = table[table["section"] == "scores"]
    for column, score in enumerate(("entanglement", "association")):
        _score_panel(fig.add_subplot(grid[0, column]), scores[scores["what"].str.startswith(score)], score)
    _table(fig.add_subplot(grid[1, :]), claims, claim_colours, ["claim / finding", "on", "verdict", "why"],
           [0.37, 0.08, 0.07, 0.48])
    _table(fig.add_subplot(grid[2, :]), heads, head_colours,
           ["model", "head", "paper's property", "labeller", "our label", "verdict", "why"],
           [0.13, 0.15, 0.1, 0.07, 0.1, 0.08, 0.37])
    models = paper_models_configured(table)
    title = "Heads study (CLIP-InterpreT): the paper's numbers, claims and figure heads beside ours"
    if not models:
        configured = ", ".join(dict.fromkeys(table.loc[table["section"] == "scores", "model"]))
        title += (f"\nNOT THE PAPER'S MODELS ({configured}): the paper's values are empty for them and its claims "
                  f"are not evaluable on ours")
    fig.suptitle(title, fontsize=10, color="darkred" if not models else "black")
    fig.tight_layout(rect=(0, 0, 1, 0.96 if models else 0.94))
    return fig
