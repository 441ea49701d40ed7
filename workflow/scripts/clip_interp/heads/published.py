"""The labels and scores that CLIP-InterpreT (Madasu et al.) published, and this study's scores on them.

``head_labels.tsv`` (``model, pretrained, layer, head, label``): one free-form label per head of the last 4
layers of six models; ``property_heads.tsv`` (``model, pretrained, property, layer, head``): heads grouped by
property. Both number layers from 0; the readers return layers numbered 1..L like the rest of the package
(published layer + 1), and keep the published number in ``layer_published``.

Run as a module, it prints the three entanglement readings (:mod:`clip_interp.heads.scores`) of the
published labels of each model, on the raw label strings and after mapping them onto a taxonomy, beside the
paper's values::

    python3 -m clip_interp.heads.published ../shared/data/clip_interpret [--taxonomy resources/heads/taxonomy.yaml]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Mapping

import pandas as pd

from ..errors import InputError
from .labels import PropertyMatcher, head_texts, label_table
from .paper_values import DEFAULT_PAPER_VALUES, load_paper_values
from .scores import READINGS, entanglement_readings
from .taxonomy import Taxonomy, load_taxonomy

HEAD_LABEL_COLUMNS = ("model", "pretrained", "layer", "head", "label")
PROPERTY_HEAD_COLUMNS = ("model", "pretrained", "property", "layer", "head")

# The paper's scores per (open_clip model name, pretrained tag), from resources/heads/paper_values.yaml.
PAPER_SCORES: dict[tuple[str, str], dict[str, float]] = load_paper_values(DEFAULT_PAPER_VALUES).scores()

DEFAULT_TAXONOMY = Path(__file__).resolve().parents[4] / "resources" / "heads" / "taxonomy.yaml"


def _read_tsv(path, columns: tuple[str, ...]) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"published table {path} does not exist")
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise InputError(f"published table {path} is not a readable TSV: {error}") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(f"published table {path} lacks the columns {missing} (has {list(table.columns)}); "
                         f"it needs the tab-separated columns {list(columns)}")
    table = table[list(columns)]
    for column in columns:
        blank = table[column].isna() | (table[column].str.strip() == "")
        if blank.any():
            raise InputError(f"published table {path}: column {column!r} is empty on line "
                             f"{int(blank.to_numpy().argmax()) + 2}")
    for column in ("layer", "head"):
        numbers = pd.to_numeric(table[column], errors="coerce")
        bad = numbers.isna() | (numbers < 0) | (numbers != numbers.round())
        if bad.any():
            line = int(bad.to_numpy().argmax())
            raise InputError(f"published table {path}: column {column!r} holds {table[column].iloc[line]!r} on "
                             f"line {line + 2}; it must be a non-negative integer (0-based)")
        table[column] = numbers.astype("int64")
    table.insert(table.columns.get_loc("layer"), "layer_published", table["layer"])
    table["layer"] = table["layer"] + 1
    return table


def read_head_labels(path) -> pd.DataFrame:
    """``model, pretrained, layer_published, layer, head, label`` (layer = published 0-based layer + 1);
    one row per head, else an error naming the file and the repeated head."""
    table = _read_tsv(path, HEAD_LABEL_COLUMNS)
    duplicated = table.duplicated(["model", "pretrained", "layer", "head"])
    if duplicated.any():
        row = table[duplicated].iloc[0]
        raise InputError(f"published table {path} labels head {row['head']} of layer {row['layer_published']} "
                         f"(0-based) of {row['model']} {row['pretrained']} more than once")
    return table.sort_values(["model", "pretrained", "layer", "head"], ignore_index=True)


def read_property_heads(path) -> pd.DataFrame:
    """``model, pretrained, property, layer_published, layer, head`` (layer = published 0-based layer + 1)."""
    table = _read_tsv(path, PROPERTY_HEAD_COLUMNS)
    return table.sort_values(["model", "pretrained", "property", "layer", "head"], ignore_index=True)


def model_labels(head_labels: pd.DataFrame, model: str, pretrained: str) -> pd.DataFrame:
    """The published labels of one model (``layer, head, label``), else an error listing the models there are."""
    rows = head_labels[(head_labels["model"] == model) & (head_labels["pretrained"] == pretrained)]
    if rows.empty:
        have = sorted(set(zip(head_labels["model"], head_labels["pretrained"])))
        raise InputError(f"no published labels for model {model!r} with pretrained {pretrained!r}; "
                         f"the table has {have}")
    return rows[["layer", "head", "label"]].reset_index(drop=True)


def published_identity(spec: Mapping) -> tuple[str, str] | None:
    """``(open_clip name, pretrained tag)`` of a model entry when CLIP-InterpreT published labels of it (an
    open_clip model of the six of :data:`PAPER_SCORES`, with its weights, not ``random_init``), else None."""
    if spec.get("backend") != "open_clip" or spec.get("random_init"):
        return None
    identity = (spec.get("name"), spec.get("pretrained"))
    return identity if identity in PAPER_SCORES else None


def published_labeller_problems(models: Mapping[str, Mapping]) -> list[str]:
    """One line per configured model that the ``published`` labeller cannot label (:func:`published_identity`)."""
    six = "; ".join(f"{name} {pretrained}" for name, pretrained in PAPER_SCORES)
    return [f"`heads.labellers` lists published, but model {model!r} ({spec.get('backend')} {spec.get('name')} "
            f"{spec.get('pretrained')}{', random_init' if spec.get('random_init') else ''}) is not one of the six "
            f"that CLIP-InterpreT labelled (open_clip, with their weights: {six}); remove published from "
            "`heads.labellers` or the model from `models`"
            for model, spec in models.items() if published_identity(spec) is None]


def label_heads_published(head_labels: pd.DataFrame, identity: tuple[str, str], textspan: pd.DataFrame,
                          n_texts: int, matcher: PropertyMatcher) -> tuple[pd.DataFrame, int]:
    """The label table (labeller ``"published"``) of model ``identity`` = (open_clip name, pretrained): per head
    of the TEXTSPAN table (the analysed layers) that the published table labels, its published label as written
    (layer = published 0-based layer + 1), the head's first ``n_texts`` TEXTSPAN texts of this workflow, and as
    ``confidence`` the share of those texts that ``matcher`` assigns to the label's taxonomy property
    (:meth:`Taxonomy.canonical`, the aliases), NaN when the label maps to no property.

    Returns the table and the number of analysed heads the published table does not label (left out). A
    published head inside the analysed layers that the model does not have is an error (wrong model)."""
    labels = model_labels(head_labels, *identity)
    texts = head_texts(textspan, n_texts)
    layers = sorted({layer for layer, _ in texts})
    inside = labels[labels["layer"].isin(layers)]
    unknown = inside[[(int(r.layer), int(r.head)) not in texts for r in inside.itertuples()]]
    if len(unknown):
        row = unknown.iloc[0]
        raise InputError(f"the published labels of {identity[0]} {identity[1]} name head {row['head']} of layer "
                         f"{row['layer'] - 1} (0-based; our L{row['layer']}), which the model's TEXTSPAN table does "
                         f"not have (heads {min(h for _, h in texts)}..{max(h for _, h in texts)}); check the "
                         "model's name and pretrained tag")
    published = {(int(r.layer), int(r.head)): str(r.label) for r in inside.itertuples()}
    if not published:
        raise InputError(f"the published labels of {identity[0]} {identity[1]} label no head of the analysed layers "
                         f"{layers} (they label 0-based layers {sorted(set(labels['layer'] - 1))})")
    heads = [head for head in texts if head in published]
    matched = iter(matcher.properties([t for head in heads for t in texts[head]]))
    rows = []
    for layer, head in heads:
        judged, label = texts[(layer, head)], published[(layer, head)]
        found = [next(matched) for _ in judged]
        prop = matcher.taxonomy.canonical(label)
        rows.append({"layer": layer, "head": head, "label": label, "texts": judged, "labeller": "published",
                     "confidence": found.count(prop) / len(judged) if prop else float("nan")})
    return label_table(rows), len(texts) - len(rows)


def published_scores(head_labels: pd.DataFrame, taxonomy: Taxonomy) -> pd.DataFrame:
    """Per model: the entanglement readings of the raw published labels (``raw_*``) and of the labels mapped
    onto ``taxonomy`` (``mapped_*``; unmapped labels left out and counted in ``n_unmapped``), beside
    ``paper_entanglement`` and ``paper_association``."""
    rows = []
    for (model, pretrained), group in head_labels.groupby(["model", "pretrained"], sort=True):
        raw = entanglement_readings(group)
        mapped = entanglement_readings(group.assign(label=group["label"].map(taxonomy.canonical)))
        paper = PAPER_SCORES.get((model, pretrained), {})
        rows.append({
            "model": model, "pretrained": pretrained, "n_heads": raw["n_heads"],
            **{f"raw_{r}": raw[r] for r in READINGS}, "raw_n_labels": raw["n_labels"],
            "n_unmapped": mapped["n_unlabelled"],
            **{f"mapped_{r}": mapped[r] for r in READINGS}, "mapped_n_labels": mapped["n_labels"],
            "paper_entanglement": paper.get("entanglement", float("nan")),
            "paper_association": paper.get("association", float("nan")),
        })
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m clip_interp.heads.published", description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="folder with head_labels.tsv (e.g. ../shared/data/clip_interpret)")
    parser.add_argument("--taxonomy", default=str(DEFAULT_TAXONOMY), help="taxonomy YAML (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        labels = read_head_labels(Path(args.folder) / "head_labels.tsv")
        taxonomy = load_taxonomy(args.taxonomy)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    table = published_scores(labels, taxonomy)
    with pd.option_context("display.width", 250, "display.max_columns", 50, "display.float_format", "{:.3f}".format):
        print(table.to_string(index=False))
    unmapped = labels.loc[labels["label"].map(taxonomy.canonical).isna(), "label"].value_counts()
    print(f"\n{int(unmapped.sum())} of {len(labels)} published labels map to no property of {args.taxonomy}: "
          + ", ".join(f"{name} ({count})" for name, count in unmapped.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
