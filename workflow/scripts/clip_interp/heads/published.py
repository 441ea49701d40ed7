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

import pandas as pd

from ..errors import InputError
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
