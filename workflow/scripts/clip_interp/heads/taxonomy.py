"""Property taxonomies: the properties a head can be labelled with, their seed descriptions and aliases.

A taxonomy file (YAML) has one top-level key, ``properties``, mapping each property name to

- ``seeds``: a few descriptions of the property (at least one), which the default labeller embeds with the
  analysed model's text encoder, and
- ``aliases`` (optional): other names of the property, such as the free-form labels that CLIP-InterpreT
  published (``Colors``, ``Geo-location``, ...), used to map a label string onto the taxonomy.

A label string maps onto a property when its normalised form (lower case, runs of spaces, hyphens and
underscores made one space) equals the normalised name or an alias of exactly one property; no other
guessing (plural forms, substrings) is done, so every mapping is written in the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import yaml

from ..errors import InputError

PROPERTY_KEYS = {"seeds", "aliases"}


def normalise_label(label: str) -> str:
    """Lower case, stripped, runs of whitespace, hyphens and underscores made one space."""
    return re.sub(r"[\s\-_]+", " ", str(label).strip().lower()).strip()


@dataclass(frozen=True)
class Taxonomy:
    """``properties``: property name -> seed descriptions (in file order); ``aliases``: property name -> aliases."""

    properties: dict[str, tuple[str, ...]]
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = "<in memory>"

    def __post_init__(self):
        _check_taxonomy(self)

    @property
    def names(self) -> tuple[str, ...]:
        """The property names in file order (the order that breaks ties between properties)."""
        return tuple(self.properties)

    def canonical(self, label) -> str | None:
        """The property that ``label`` names (by its name or an alias, after :func:`normalise_label`), else None."""
        if label is None or (isinstance(label, float) and label != label):
            return None
        return self._lookup.get(normalise_label(label))

    @cached_property
    def _lookup(self) -> dict[str, str]:
        lookup = {}
        for name in self.properties:
            lookup[normalise_label(name)] = name
            for alias in self.aliases.get(name, ()):
                lookup[normalise_label(alias)] = name
        return lookup


def _check_taxonomy(taxonomy: Taxonomy) -> None:
    where = taxonomy.source
    if len(taxonomy.properties) < 2:
        raise InputError(f"{where}: a taxonomy needs at least 2 properties, got {len(taxonomy.properties)}")
    unknown = set(taxonomy.aliases) - set(taxonomy.properties)
    if unknown:
        raise InputError(f"{where}: aliases given for properties that do not exist: {sorted(unknown)}")
    owner: dict[str, str] = {}
    for name, seeds in taxonomy.properties.items():
        if not isinstance(name, str) or not normalise_label(name):
            raise InputError(f"{where}: property name {name!r} must be a non-empty string")
        if not seeds or not all(isinstance(s, str) and s.strip() for s in seeds):
            raise InputError(f"{where}: properties.{name}.seeds must be a non-empty list of non-empty strings")
        for spelling in (name, *taxonomy.aliases.get(name, ())):
            if not isinstance(spelling, str) or not normalise_label(spelling):
                raise InputError(f"{where}: properties.{name}.aliases holds {spelling!r}; "
                                 "aliases are non-empty strings")
            key = normalise_label(spelling)
            if key in owner and owner[key] != name:
                raise InputError(f"{where}: {spelling!r} (properties.{name}) already names property {owner[key]!r}; "
                                 "a name or alias may belong to one property only")
            owner[key] = name


def _string_list(value, where: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list):
        raise InputError(f"{where} must be a list of strings, got {type(value).__name__}")
    for item in value:
        if not isinstance(item, str):
            raise InputError(f"{where} holds {item!r} ({type(item).__name__}); it must be a list of strings")
    return tuple(value)


def taxonomy_from_mapping(data, source: str) -> Taxonomy:
    """A :class:`Taxonomy` from the parsed file content
    ``{"properties": {name: {"seeds": [...], "aliases": [...]}}}``."""
    if not isinstance(data, dict) or set(data) != {"properties"}:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise InputError(f"{source}: a taxonomy file has exactly one top-level key, 'properties' (got {keys})")
    entries = data["properties"]
    if not isinstance(entries, dict) or not entries:
        raise InputError(f"{source}: 'properties' must map property names to their seeds and aliases")
    properties, aliases = {}, {}
    for name, entry in entries.items():
        key = f"{source}: properties.{name}"
        if not isinstance(entry, dict):
            raise InputError(f"{key} must be a mapping with 'seeds' (and optionally 'aliases')")
        extra = set(entry) - PROPERTY_KEYS
        if extra or "seeds" not in entry:
            raise InputError(f"{key} has keys {sorted(entry)}; it needs 'seeds' and may have 'aliases', nothing else")
        properties[str(name)] = _string_list(entry["seeds"], f"{key}.seeds")
        aliases[str(name)] = _string_list(entry.get("aliases") or [], f"{key}.aliases")
    return Taxonomy(properties, aliases, source)


def load_taxonomy(path) -> Taxonomy:
    """Read and check a taxonomy file; errors name the file and the key at fault."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"taxonomy file {path} does not exist; give the path of a YAML file with a 'properties' key")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise InputError(f"taxonomy file {path} is not valid YAML: {error}") from None
    return taxonomy_from_mapping(data, str(path))
