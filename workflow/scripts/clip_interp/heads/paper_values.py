"""What CLIP-InterpreT (Madasu et al.) publishes about its six models, read from ``resources/heads/paper_values.yaml``.

The file has four keys, each required, and no other (:func:`load_paper_values` rejects a missing or unknown key
with the file and key named):

- ``tolerance``: a value of ours reproduces the paper's when ``|ours - paper| <= tolerance``;
- ``models``: one entry per model, ``name`` (open_clip), ``pretrained``, ``size`` (:data:`SIZES`), ``source``
  (:data:`SOURCES`) and the paper's ``entanglement`` and ``association`` (:data:`SCORES`);
- ``claims``: claim name -> ``statement`` and ``comparisons``, each ``{score, lower, higher}`` whose ``lower`` and
  ``higher`` select models by ``size`` and/or ``source`` (how a comparison is judged:
  :func:`clip_interp.heads.reproduction.judge_comparison`);
- ``figure_heads``: the heads the paper's figures name: ``name``, ``pretrained``, ``layer_paper`` (the paper's
  0-based layer), ``head`` and ``property`` (the figure's word; ``a/b`` names either). The tables returned add
  ``layer = layer_paper + 1``, this project's numbering.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import yaml

from ..errors import InputError

DEFAULT_PAPER_VALUES = Path(__file__).resolve().parents[4] / "resources" / "heads" / "paper_values.yaml"
SCORES = ("entanglement", "association")
SIZES = ("small", "large")
SOURCES = ("openai", "openclip")
TOP_KEYS = {"tolerance", "models", "claims", "figure_heads"}
MODEL_KEYS = {"name", "pretrained", "size", "source", *SCORES}
CLAIM_KEYS = {"statement", "comparisons"}
COMPARISON_KEYS = {"score", "lower", "higher"}
GROUP_VALUES = {"size": SIZES, "source": SOURCES}
FIGURE_HEAD_KEYS = {"name", "pretrained", "layer_paper", "head", "property"}


@dataclass(frozen=True)
class Comparison:
    """``score`` is lower for every model of group ``lower`` than for every model of group ``higher``; a group is a
    ``{size, source}`` selector (a missing key selects any)."""

    score: str
    lower: dict[str, str]
    higher: dict[str, str]


@dataclass(frozen=True)
class Claim:
    """A qualitative claim of the paper: it holds when all its comparisons do."""

    name: str
    statement: str
    comparisons: tuple[Comparison, ...]


@dataclass(frozen=True)
class PaperValues:
    """The file's contents: ``models`` (``name, pretrained, size, source, entanglement, association``, file order),
    ``claims`` (file order), ``figure_heads`` (``name, pretrained, layer_paper, layer, head, property``)."""

    tolerance: float
    models: pd.DataFrame
    claims: tuple[Claim, ...]
    figure_heads: pd.DataFrame
    source: str = "<in memory>"

    def scores(self) -> dict[tuple[str, str], dict[str, float]]:
        """``{(name, pretrained): {"entanglement": .., "association": ..}}``."""
        return {(row.name, row.pretrained): {score: float(getattr(row, score)) for score in SCORES}
                for row in self.models.itertuples(index=False)}

    def model_of(self, name, pretrained) -> dict[str, Any] | None:
        """The entry of model (``name``, ``pretrained``), or None when the paper has no such model."""
        rows = self.models[(self.models["name"] == name) & (self.models["pretrained"] == pretrained)]
        return rows.iloc[0].to_dict() if len(rows) else None


def _keys(entry, expected: set[str], where: str, path: str, optional: set[str] = frozenset()) -> None:
    if not isinstance(entry, dict):
        raise InputError(f"{path}: {where} must be a mapping, got {entry!r}")
    missing, unknown = sorted(expected - optional - set(entry)), sorted(set(entry) - expected)
    if missing or unknown:
        raise InputError(f"{path}: {where} must have the keys {sorted(expected)}; missing {missing}, unknown "
                         f"{unknown}")


def _number(value, where: str, path: str, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{path}: {where} is {value!r}; expected a number")
    if minimum is not None and value < minimum:
        raise InputError(f"{path}: {where} is {value!r}; it must be at least {minimum}")
    return float(value)


def _integer(value, where: str, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{path}: {where} is {value!r}; expected a non-negative integer")
    return value


def _text(value, where: str, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{path}: {where} is {value!r}; expected a non-empty string")
    return value


def _choice(value, choices, where: str, path: str) -> str:
    if value not in choices:
        raise InputError(f"{path}: {where} is {value!r}; choose one of {list(choices)}")
    return value


def _models(entries, path: str) -> pd.DataFrame:
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{path}: models must be a non-empty list")
    rows = []
    for i, entry in enumerate(entries):
        where = f"models[{i}]"
        _keys(entry, MODEL_KEYS, where, path)
        rows.append({"name": _text(entry["name"], f"{where}.name", path),
                     "pretrained": _text(entry["pretrained"], f"{where}.pretrained", path),
                     "size": _choice(entry["size"], SIZES, f"{where}.size", path),
                     "source": _choice(entry["source"], SOURCES, f"{where}.source", path),
                     **{score: _number(entry[score], f"{where}.{score}", path, 0) for score in SCORES}})
    table = pd.DataFrame(rows)
    repeated = table.duplicated(["name", "pretrained"])
    if repeated.any():
        row = table[repeated].iloc[0]
        raise InputError(f"{path}: model {row['name']} {row['pretrained']} is listed more than once")
    return table


def _group(selector, where: str, path: str) -> dict[str, str]:
    _keys(selector, set(GROUP_VALUES), where, path, optional=set(GROUP_VALUES))
    if not selector:
        raise InputError(f"{path}: {where} selects no models; give size and/or source")
    return {key: _choice(value, GROUP_VALUES[key], f"{where}.{key}", path) for key, value in selector.items()}


def _claims(entries, path: str) -> tuple[Claim, ...]:
    if not isinstance(entries, dict) or not entries:
        raise InputError(f"{path}: claims must map claim names to claims")
    claims = []
    for name, entry in entries.items():
        where = f"claims.{name}"
        _keys(entry, CLAIM_KEYS, where, path)
        if not isinstance(entry["comparisons"], list) or not entry["comparisons"]:
            raise InputError(f"{path}: {where}.comparisons must be a non-empty list")
        comparisons = []
        for i, comparison in enumerate(entry["comparisons"]):
            at = f"{where}.comparisons[{i}]"
            _keys(comparison, COMPARISON_KEYS, at, path)
            comparisons.append(Comparison(_choice(comparison["score"], SCORES, f"{at}.score", path),
                                          _group(comparison["lower"], f"{at}.lower", path),
                                          _group(comparison["higher"], f"{at}.higher", path)))
        claims.append(Claim(str(name), _text(entry["statement"], f"{where}.statement", path), tuple(comparisons)))
    return tuple(claims)


def _figure_heads(entries, models: pd.DataFrame, path: str) -> pd.DataFrame:
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{path}: figure_heads must be a non-empty list")
    known = set(zip(models["name"], models["pretrained"]))
    rows = []
    for i, entry in enumerate(entries):
        where = f"figure_heads[{i}]"
        _keys(entry, FIGURE_HEAD_KEYS, where, path)
        if (entry["name"], entry["pretrained"]) not in known:
            raise InputError(f"{path}: {where} names model {entry['name']} {entry['pretrained']}, which is not "
                             f"under models")
        layer_paper = _integer(entry["layer_paper"], f"{where}.layer_paper", path)
        rows.append({"name": entry["name"], "pretrained": entry["pretrained"], "layer_paper": layer_paper,
                     "layer": layer_paper + 1, "head": _integer(entry["head"], f"{where}.head", path),
                     "property": _text(entry["property"], f"{where}.property", path)})
    return pd.DataFrame(rows)


def parse_paper_values(data: Mapping, path: str = "<in memory>") -> PaperValues:
    """The checked contents of a paper-values mapping (the module docstring gives its layout)."""
    _keys(data, TOP_KEYS, "the file", path)
    models = _models(data["models"], path)
    return PaperValues(tolerance=_number(data["tolerance"], "tolerance", path, 0), models=models,
                       claims=_claims(data["claims"], path),
                       figure_heads=_figure_heads(data["figure_heads"], models, path), source=path)


def load_paper_values(path: str | os.PathLike = DEFAULT_PAPER_VALUES) -> PaperValues:
    """The paper's values from ``path`` (YAML), checked; an InputError names the file and the key."""
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError:
        raise InputError(f"the paper-values file {str(path)!r} does not exist") from None
    except yaml.YAMLError as error:
        raise InputError(f"the paper-values file {str(path)!r} is not valid YAML: {error}") from None
    return parse_paper_values(data, str(path))
