"""Checking the workflow config: readable schema errors, and where the keys of the old layout moved.

The config is organised by study (``studies: [negation]``, a ``negation:`` section) with shared
settings at the top level (``device``, ``threads``, ``batch_size``, ``cache``, ``cluster_resources``,
``models``) and the offline demo's settings under ``demo``. :func:`config_problems` returns one
line per problem, naming the key path, the offending value and what is allowed;
:func:`check_config` raises :class:`ConfigError` listing them. A config in the old (flat) layout
gets one line per old key saying where it moved instead of schema errors.

This module imports neither torch nor any study, so the Snakefile can call it before planning.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import InputError

# Studies the workflow knows; the schema's `studies` enum lists the same names. A new study adds
# its name here and in the schema, a `<study>:` section to the schema, and its rule files.
STUDIES = ("negation", "decomposition", "heads")

# Old top-level keys (flat layout) and where they moved.
MOVED_TOP_LEVEL = {
    "benchmark": "negation.benchmark",
    "spacy_model": "negation.spacy_model",
    "sources": "negation.sources",
    "dataset": "negation.dataset",
    "resources": "cluster_resources",
    "synthetic": "demo.synthetic",
    "toy_clip": "demo.toy_clip",
}
# The old `analysis:` section: every analysis moved under `negation`, its batch size to `batch_size`.
OLD_ANALYSES = ("segments", "preliminary", "causal_tracing", "selectivity", "image_ablation", "subject_size")


class ConfigError(InputError):
    """The workflow config does not match the schema or uses the old layout."""

    def __init__(self, problems: list[str], header: str = "invalid config"):
        self.problems = list(problems)
        super().__init__(header + ":\n" + "\n".join(f"  - {p}" for p in self.problems))


def moved_keys(config: Mapping) -> list[str]:
    """One line per key of the old flat layout present in ``config``, saying where it moved."""
    lines = []
    for key, value in config.items():
        if key in MOVED_TOP_LEVEL:
            lines.append(f"config key `{key}` moved to `{MOVED_TOP_LEVEL[key]}`")
        elif key == "analysis":
            if not isinstance(value, Mapping) or not value:
                lines.append("config key `analysis` was split: its analyses moved to `negation.<analysis>`, "
                             "`analysis.batch_size` to `batch_size.text` (image batches: `batch_size.image`)")
                continue
            for sub, sub_value in value.items():
                if sub == "batch_size":
                    image = (f", formerly batch_size // 4 = {max(1, sub_value // 4)}"
                             if isinstance(sub_value, int) and not isinstance(sub_value, bool) else "")
                    lines.append(f"config key `analysis.batch_size` moved to `batch_size.text` "
                                 f"(image batches: `batch_size.image`{image})")
                else:
                    note = "" if sub in OLD_ANALYSES else " (not a known analysis)"
                    lines.append(f"config key `analysis.{sub}` moved to `negation.{sub}`{note}")
    return lines


def load_schema(schema: Mapping | str | Path) -> dict:
    """The schema itself, or loaded from a YAML/JSON file."""
    if isinstance(schema, Mapping):
        return dict(schema)
    import yaml

    return yaml.safe_load(Path(schema).read_text())


def config_problems(config: Mapping, schema: Mapping | str | Path) -> list[str]:
    """Problems of ``config``, one readable line each; empty when it is valid.

    A config with keys of the old layout gives only the lines saying where they moved (its schema
    errors would all be consequences of the old layout). Otherwise every JSON-schema error
    (Draft 2020-12) becomes one line: the key path, the offending value and what is allowed.
    """
    if not isinstance(config, Mapping):
        return [f"the config is {_show(config)}, not a mapping of keys to values"]
    moved = moved_keys(config)
    if moved:
        return moved
    from jsonschema import Draft202012Validator

    schema = load_schema(schema)
    validator = Draft202012Validator(schema)
    lines: list[str] = []
    for error in sorted(validator.iter_errors(config), key=lambda e: (_path(e.absolute_path), e.validator)):
        for line in _describe(error):
            if line not in lines:
                lines.append(line)
    return lines or followup_problems(config)


def followup_problems(config: Mapping) -> list[str]:
    """Problems of ``negation.followups`` that the schema cannot express (schema defaults assumed where unset).

    The MHA/MLP tracing is drawn beside the residual-stream tracing of the same instances, so
    ``negation.followups.variant`` must equal ``negation.causal_tracing.variant``.
    """
    negation = config.get("negation")
    if not isinstance(negation, Mapping):
        return []
    followups = negation.get("followups") or {}
    tracing = negation.get("causal_tracing") or {}
    variant, traced = followups.get("variant", "rephrased"), tracing.get("variant", "rephrased")
    if variant != traced:
        return [f"`negation.followups.variant` is {_show(variant)} but `negation.causal_tracing.variant` is "
                f"{_show(traced)}; the MHA/MLP tracing is drawn beside the residual-stream tracing of the same "
                "instances, so set both to the same variant"]
    return []


def check_config(config: Mapping, schema: Mapping | str | Path, source: str | None = None) -> None:
    """Raise :class:`ConfigError` listing every problem of ``config`` (see :func:`config_problems`)."""
    problems = config_problems(config, schema)
    if not problems:
        return
    where = f" ({source})" if source else ""
    if isinstance(config, Mapping) and moved_keys(config):
        header = (f"the config{where} uses the old layout (the keys are now grouped by study; see the README's "
                  "Configuration section)")
    else:
        header = f"invalid config{where}, {len(problems)} problem{'s' if len(problems) > 1 else ''}"
    raise ConfigError(problems, header)


# --- formatting of schema errors ---------------------------------------------------------------

TYPE_NAMES = {
    "integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
    "object": "a mapping (key: value)", "array": "a list", "null": "null",
}


def _path(parts) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _key(path: str) -> str:
    return f"`{path}`" if path else "the config"


def _show(value: Any, limit: int = 80) -> str:
    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def _hint(schema: Mapping) -> str:
    description = schema.get("description") if isinstance(schema, Mapping) else None
    return f" ({description})" if description else ""


def _describe(error) -> list[str]:
    path = _path(error.absolute_path)
    key, value, kind, schema = _key(path), error.instance, error.validator, error.schema
    expected = error.validator_value
    if "propertyNames" in error.absolute_schema_path:
        return [f"{key} has an entry named {_show(value)}; names must match {getattr(error, 'validator_value', '')}"
                f"{_hint(schema)}"]
    if kind == "additionalProperties" and expected is False:
        known = sorted(error.schema.get("properties", {}))
        lines = []
        for extra in sorted(k for k in value if k not in known):
            where = f"{path}.{extra}" if path else str(extra)
            close = difflib.get_close_matches(str(extra), known, n=1)
            suggestion = f"; did you mean `{close[0]}`?" if close else ""
            allowed = ", ".join(known) if known else "none"
            lines.append(f"`{where}` is not a known key (allowed under {_key(path)}: {allowed}){suggestion}")
        return lines
    if kind == "required":
        # A conditional requirement (`then`/`else`) explains itself in its description.
        conditional = len(error.absolute_schema_path) > 1 and error.absolute_schema_path[-2] in ("then", "else")
        hint = _hint(schema) if conditional else ""
        lines = []
        for missing in expected:
            if isinstance(value, Mapping) and missing not in value:
                where = f"{path}.{missing}" if path else str(missing)
                lines.append(f"`{where}` is missing; it is required{hint}")
        return lines
    if kind in ("oneOf", "anyOf") and error.context:
        return _describe_alternatives(error, key, value)
    if kind == "not":
        return [f"{key} is {_show(value)}, which is not allowed{_hint(schema)}"]
    if kind == "enum":
        return [f"{key} is {_show(value)}; allowed: {_join([_show(v) for v in expected])}"]
    if kind == "const":
        return [f"{key} is {_show(value)}; it must be {_show(expected)}"]
    if kind == "type":
        types = [expected] if isinstance(expected, str) else list(expected)
        return [f"{key} is {_show(value)} ({_type_of(value)}); expected {_join([TYPE_NAMES.get(t, t) for t in types])}"]
    bounds = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    if kind in bounds:
        return [f"{key} is {_show(value)}; it must be {bounds[kind]} {expected}"]
    if kind == "multipleOf":
        return [f"{key} is {_show(value)}; it must be a multiple of {expected}"]
    if kind == "minItems":
        return [f"{key} is {_show(value)}; it needs at least {expected} item{'s' if expected != 1 else ''}"]
    if kind == "maxItems":
        return [f"{key} is {_show(value)}; it takes at most {expected} item{'s' if expected != 1 else ''}"]
    if kind == "uniqueItems":
        return [f"{key} is {_show(value)}; each item may appear only once"]
    if kind == "minLength":
        return [f"{key} is {_show(value)}; it must not be empty" if expected == 1
                else f"{key} is {_show(value)}; it needs at least {expected} characters"]
    if kind == "pattern":
        return [f"{key} is {_show(value)}; it must match the pattern {expected}{_hint(schema)}"]
    if kind == "minProperties":
        return [f"{key} is {_show(value)}; it needs at least {expected} entr{'ies' if expected != 1 else 'y'}"]
    if kind == "contains":
        return [f"{key} is {_show(value)}; it must contain an item matching {_show(expected)}"]
    message = error.message if len(error.message) <= 200 else error.message[:197] + "..."
    return [f"{key}: {message}"]


def _describe_alternatives(error, key: str, value: Any) -> list[str]:
    """A value matching none of a oneOf/anyOf's alternatives: the errors inside its items when an alternative got
    that far (e.g. a list item breaking a pattern), else the alternatives' description."""
    deepest = max(len(sub.absolute_path) for sub in error.context)
    if deepest > len(error.absolute_path):
        return list(dict.fromkeys(line for sub in error.context if len(sub.absolute_path) == deepest
                                  for line in _describe(sub)))
    description = error.schema.get("description")
    return [f"{key} is {_show(value)}; allowed: {description}" if description
            else f"{key}: {error.message if len(error.message) <= 200 else error.message[:197] + '...'}"]


# --- checks of what the config points at, made when the workflow starts ----------------------------
# These need no weights and no torch (except to ask whether CUDA exists when a CUDA device is named),
# so the Snakefile runs them before planning: a wrong device, a missing local file or a layer beyond
# the model's tower stops the run at once, naming the config key, instead of after the upstream jobs.


def device_problem(device: Any, cuda_available: bool | None = None, cuda_count: int | None = None) -> str | None:
    """Why ``device`` (the config's ``device``) cannot run on this machine, or None.

    ``auto`` and ``cpu`` always can; ``cuda`` and ``cuda:N`` need CUDA (and N below the device count).
    ``cuda_available``/``cuda_count`` default to what torch reports here.
    """
    text = str(device).strip().lower()
    if not text.startswith("cuda"):
        return None
    if cuda_available is None or cuda_count is None:
        import torch

        cuda_available = torch.cuda.is_available()
        cuda_count = torch.cuda.device_count() if cuda_available else 0
    if not cuda_available:
        return (f"`device` is {_show(device)}, but CUDA is not available on this machine; "
                "use `device: auto` (CUDA when present, else the CPU) or `device: cpu`")
    index = text.partition(":")[2]
    if index.isdigit() and int(index) >= cuda_count:
        return (f"`device` is {_show(device)}, but this machine has {cuda_count} CUDA device(s) "
                f"(cuda:0..cuda:{cuda_count - 1}); use `device: auto` or an existing index")
    return None


def model_path_problems(models: Mapping[str, Mapping], produced: Iterable[str] = ()) -> list[str]:
    """One line per local file of a model entry (``config``, ``path``) that does not exist.

    Paths in ``produced`` (written by a rule of the workflow, e.g. the demo's toy CLIP) are not
    checked.
    """
    produced = {os.path.normpath(p) for p in produced}
    lines = []
    for model, spec in models.items():
        for key in ("config", "path"):
            value = spec.get(key) if isinstance(spec, Mapping) else None
            if not value or os.path.normpath(str(value)) in produced:
                continue
            if not Path(os.path.expanduser(str(value))).exists():
                what = "an open_clip model-config JSON" if key == "config" else "a checkpoint file or a model folder"
                lines.append(f"`models.{model}.{key}` is {_show(value)}, which does not exist; give the path of "
                             f"{what}, or remove the key to use `pretrained` / a hub `name`")
    return lines


def _open_clip_config_dir() -> Path | None:
    """open_clip's bundled model configs, found without importing open_clip (and torch)."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "model_configs"


def _read_json(path: Path) -> Mapping | None:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, Mapping) else None


def text_layer_count(spec: Mapping) -> int | None:
    """Blocks of the text tower of model entry ``spec``, read from its config file; None when unknown.

    open_clip: the entry's ``config`` JSON or open_clip's bundled ``model_configs/<name>.json``
    (``text_cfg.layers``, open_clip's default 12). Hugging Face: ``config.json`` of a local ``path``
    (``text_config.num_hidden_layers``, default 12), or the default CLIPConfig (12) for a
    ``random_init`` entry without ``path``. A hub id or a file not yet written is unknown.
    """
    backend = spec.get("backend")
    if backend == "open_clip":
        data = open_clip_model_config(spec)
        text = data.get("text_cfg") if data else None
        return int(text.get("layers", 12)) if isinstance(text, Mapping) else None
    if backend in ("hf", "transformers"):
        if spec.get("path"):
            data = _read_json(Path(spec["path"]) / "config.json")
            text = data.get("text_config", {}) if data else None
            return int(text.get("num_hidden_layers", 12)) if isinstance(text, Mapping) else None
        return 12 if spec.get("random_init") else None
    return None


def text_layer_problems(key: str, layer: int, models: Mapping[str, Mapping]) -> list[str]:
    """One line per model whose text tower has fewer than ``layer`` (1-based) blocks, for config key ``key``.

    Models whose layer count is not known without loading them are left to the rule that uses the layer.
    """
    lines = []
    for model, spec in models.items():
        count = text_layer_count(spec) if isinstance(spec, Mapping) else None
        if count is not None and not 1 <= int(layer) <= count:
            lines.append(f"`{key}` is {_show(layer)}, but the text tower of model `{model}` has {count} layers "
                         f"(numbered 1..{count}); choose a layer in 1..{count}")
    return lines


def open_clip_model_config(spec: Mapping, written_configs: Mapping[str, Mapping] | None = None) -> Mapping | None:
    """The open_clip model config of model entry ``spec``; None when it is not known without loading the model.

    The entry's ``config`` JSON when ``written_configs`` has it (by normalised path: a file the workflow writes
    itself, such as the demo's toy CLIP) or when it exists, else open_clip's bundled ``model_configs/<name>.json``.
    """
    if spec.get("config"):
        written = {os.path.normpath(str(path)): data for path, data in (written_configs or {}).items()}
        key = os.path.normpath(str(spec["config"]))
        return written[key] if key in written else _read_json(Path(spec["config"]))
    folder = _open_clip_config_dir()
    return _read_json(folder / f"{spec.get('name')}.json") if folder and spec.get("name") else None


def vision_tower_shape(spec: Mapping, written_configs: Mapping[str, Mapping] | None = None) -> tuple[int, int] | None:
    """(blocks, attention heads per block) of the image tower of model entry ``spec``; None when unknown.

    open_clip (a ViT; see :func:`open_clip_model_config`): ``vision_cfg.layers`` (default 12) and
    ``vision_cfg.width // vision_cfg.head_width`` (defaults 768 and 64); a ResNet or timm tower is unknown.
    Hugging Face: ``vision_config.num_hidden_layers`` and ``num_attention_heads`` (defaults 12) of a local
    ``path``'s ``config.json``, or the default CLIPConfig's (12, 12) for a ``random_init`` entry without ``path``.
    """
    backend = spec.get("backend")
    if backend == "open_clip":
        data = open_clip_model_config(spec, written_configs)
        vision = data.get("vision_cfg") if data else None
        if not isinstance(vision, Mapping) or vision.get("timm_model_name"):
            return None
        if not isinstance(vision.get("layers", 12), int):  # a ResNet's stages
            return None
        return int(vision.get("layers", 12)), int(vision.get("width", 768)) // int(vision.get("head_width", 64))
    if backend in ("hf", "transformers"):
        if spec.get("path"):
            data = _read_json(Path(spec["path"]) / "config.json")
            vision = data.get("vision_config", {}) if data else None
            if not isinstance(vision, Mapping):
                return None
            return int(vision.get("num_hidden_layers", 12)), int(vision.get("num_attention_heads", 12))
        return (12, 12) if spec.get("random_init") else None
    return None


def head_list_problems(key: str, heads: Any, models: Mapping[str, Mapping],
                       written_configs: Mapping[str, Mapping] | None = None,
                       last_layers: int | None = None) -> list[str]:
    """One line per configured ``[layer, head]`` of config key ``key`` that is no head of a model's image tower.

    A layer is 1..L or -1..-L (counted from the end), a head 0..H-1, with (L, H) from
    :func:`vision_tower_shape`; with ``last_layers`` = n the layer must also be one of the last min(n, L).
    ``auto`` and models whose shape is not known without loading them are left to the rule.
    """
    if not isinstance(heads, list):
        return []
    lines = []
    for model, spec in models.items():
        shape = vision_tower_shape(spec, written_configs) if isinstance(spec, Mapping) else None
        if shape is None:
            continue
        n_layers, n_heads = shape
        first = n_layers - min(last_layers, n_layers) + 1 if last_layers else 1
        bad = [pair for pair in heads if not _names_a_head(pair, n_layers, n_heads, first)]
        if bad:
            counted = n_layers - first + 1
            layers = f"{first}..{n_layers}" + (f" (the last {counted})" if first > 1 else "")
            lines.append(f"`{key}` is {_show(heads)}, but {_show(bad)} name no head of the image tower of model "
                         f"`{model}`: allowed are layers {layers}, or counted from the end -1..-{counted}, "
                         f"and heads 0..{n_heads - 1}")
    return lines


def _names_a_head(pair: Sequence, n_layers: int, n_heads: int, first_layer: int) -> bool:
    layer, head = pair
    resolved = layer + n_layers + 1 if layer < 0 else layer
    return first_layer <= resolved <= n_layers and 0 <= head < n_heads


def image_row_problems(key: str, rows: Iterable[int | str], n_images: int, image_list: str) -> list[str]:
    """The line saying which of the rows configured under ``key`` are beyond an image list of ``n_images`` rows
    (entries that are strings, image files outside the list, are checked by :func:`image_file_problems`)."""
    rows = list(rows)
    bad = [row for row in rows if not isinstance(row, str) and not 0 <= row < n_images]
    if not bad:
        return []
    return [(f"`{key}` is {_show(list(rows))}, but the image list {image_list} has {n_images} images, so rows "
             f"{_show(bad)} do not exist; allowed are rows 0..{n_images - 1}")]


def image_file_problems(key: str, entries: Iterable[int | str]) -> list[str]:
    """One line per image file named under ``key`` (its string entries; integers are rows of an image list) that
    is missing or cannot be decoded as an image, naming the key and the path."""
    files = [entry for entry in entries if isinstance(entry, str)]
    if not files:
        return []
    from PIL import Image

    lines = []
    for entry in files:
        path = Path(entry)
        if not path.is_file():
            lines.append(f"`{key}` names the image file {entry!r}, which does not exist (looked for "
                         f"{str(path.resolve())!r}); fix the path (relative to the working directory) or remove it")
            continue
        try:
            with Image.open(path) as image:
                image.convert("RGB")
        except (OSError, ValueError, SyntaxError) as exc:
            lines.append(f"`{key}` names the image file {entry!r}, which cannot be read as an image ({exc}); "
                         "replace the file or remove it from the list")
    return lines


def description_count(path: str | Path) -> int:
    """The descriptions of a pool file: its non-empty lines (blank lines and surrounding spaces ignored)."""
    return sum(1 for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip())


# --- checks across the sections of the decomposition and head-properties studies ---------------------------
# The Snakefile calls these with the validated config (schema defaults filled in).


def produced_by_workflow(path: str | Path) -> bool:
    """Whether the workflow itself writes this path (the demo's synthetic sets under ``results/synthetic``)."""
    return os.path.normpath(str(path)).startswith(os.path.join("results", "synthetic"))


def local_decomposition_problems(config: Mapping, written_configs: Mapping[str, Mapping] | None = None) -> list[str]:
    """One line per setting of the ``decomposition`` section that cannot work, found without running anything.

    The classification images must be a local folder; every local source must exist (paths the workflow writes
    excepted); ``textspan.texts_per_head`` and every K of ``textspan.sweep.texts_per_head`` can be at most
    ``textspan.rank`` and at most the texts of a local pool that uses them (:func:`_textspan_problems`); the image
    files named by ``neighbours.image_queries`` and ``spatial_maps.images`` must be readable images
    (:func:`image_file_problems`); configured heads must be heads of each model's image tower
    (:func:`head_list_problems`); the Waterbirds heads of every model must be known (:func:`spurious_heads_problems`).
    """
    from .sources import is_remote, local_path

    decomposition = config["decomposition"]
    sources = decomposition["sources"]
    lines = []
    images = sources["classification_images"]["url"]
    if is_remote(images):
        lines.append(
            f"`decomposition.sources.classification_images.url` is {images!r}; the classification images "
            "(ImageNet validation) are read from a local folder only; download them with your ImageNet "
            "account and give the folder"
        )
    for name, spec in sources.items():
        url = spec["url"]
        if is_remote(url) or produced_by_workflow(local_path(url)):
            continue
        if not local_path(url).exists():
            lines.append(
                f"`decomposition.sources.{name}.url` is {url!r}, which does not exist (looked for "
                f"{str(local_path(url))!r}); fix the path, put the file there, or give an http(s) URL"
            )
    return lines + _textspan_problems(decomposition) + _query_image_problems(decomposition) + (
        spurious_heads_problems(config, written_configs)) + [
        line
        for key in ("neighbours", "spatial_maps")
        if key in decomposition
        for line in head_list_problems(f"decomposition.{key}.heads", decomposition[key].get("heads", "auto"),
                                       config["models"], written_configs)
    ]


PAPER_HEADS_FILE = "resources/decomposition/waterbirds_paper_heads.tsv"


def spurious_heads_key(config: Mapping, model: str) -> str:
    """The config key that sets the Waterbirds heads of ``model``: its entry under
    ``decomposition.spurious.heads_by_model``, else ``decomposition.spurious.heads``."""
    by_model = config["decomposition"]["spurious"].get("heads_by_model") or {}
    return f"decomposition.spurious.heads_by_model.{model}" if model in by_model else "decomposition.spurious.heads"


def spurious_heads_setting(config: Mapping, model: str) -> Any:
    """The Waterbirds heads setting of ``model`` (``paper``, ``auto`` or a ``[layer, head]`` list): its entry under
    ``decomposition.spurious.heads_by_model``, else ``decomposition.spurious.heads``."""
    spurious = config["decomposition"]["spurious"]
    return (spurious.get("heads_by_model") or {}).get(model, spurious["heads"])


def paper_heads_file(config: Mapping) -> str:
    """``decomposition.spurious.paper_heads_file`` (default :data:`PAPER_HEADS_FILE`)."""
    return config["decomposition"]["spurious"].get("paper_heads_file") or PAPER_HEADS_FILE


def spurious_heads_problems(config: Mapping, written_configs: Mapping[str, Mapping] | None = None) -> list[str]:
    """One line per model whose Waterbirds heads setting (:func:`spurious_heads_setting`) cannot work: ``auto``
    without ``sources.place_descriptions``; ``paper`` for a model the paper chose no heads for (the same
    architecture and weights, :func:`clip_interp.head_selection.published_heads_of`), or an unreadable
    ``paper_heads_file``; a list naming no head of the model's tower; a ``heads_by_model`` key that is no model."""
    from .head_selection import published_head_models, published_heads_of, read_published_heads

    models, lines = config["models"], []
    by_model = config["decomposition"]["spurious"].get("heads_by_model") or {}
    lines += [f"`decomposition.spurious.heads_by_model` names model `{name}`, which `models` does not list; "
              f"use one of {sorted(models)}" for name in by_model if name not in models]
    table = None
    for model, spec in models.items():
        key, setting = spurious_heads_key(config, model), spurious_heads_setting(config, model)
        if setting == "auto" and not config["decomposition"]["sources"].get("place_descriptions"):
            lines.append(f"`{key}` is 'auto', which needs `decomposition.sources.place_descriptions` (a file of "
                         "place/background descriptions); add it or list the heads")
        elif setting == "paper":
            try:
                table = read_published_heads(paper_heads_file(config)) if table is None else table
            except InputError as error:
                return lines + [f"`decomposition.spurious.paper_heads_file`: {error}"]
            if not published_heads_of(table, spec):
                weights = f"pretrained {spec['pretrained']!r}" if spec.get("pretrained") else "no pretrained tag"
                lines.append(
                    f"`{key}` is 'paper', but the paper chose Waterbirds heads only for "
                    f"{', '.join(published_head_models(table))}; model `{model}` ({spec.get('name')!r}, "
                    f"{weights}) has none: set `decomposition.spurious.heads_by_model.{model}` to auto or a list "
                    "of [layer, head]")
        elif isinstance(setting, list):
            lines += head_list_problems(key, setting, {model: spec}, written_configs)
    return list(dict.fromkeys(lines))


def _query_image_problems(decomposition: Mapping) -> list[str]:
    """The image files (string entries) of ``neighbours.image_queries`` and ``spatial_maps.images``: each must
    exist and be an image (:func:`image_file_problems`)."""
    return [line
            for section, key in (("neighbours", "image_queries"), ("spatial_maps", "images"))
            for line in image_file_problems(f"decomposition.{section}.{key}",
                                            decomposition.get(section, {}).get(key, []))]


TEXTSPAN_POOLS = ("descriptions", "words")
"""The text pools TEXTSPAN's K sweep runs on, each where ``decomposition.sources`` configures it
(``descriptions`` always: the pool of the ``textspan`` rule too)."""


def _textspan_problems(decomposition: Mapping) -> list[str]:
    """``textspan.texts_per_head`` and every K of ``textspan.sweep.texts_per_head`` against ``textspan.rank`` and
    against the size of each local text pool (:data:`TEXTSPAN_POOLS`) that uses them."""
    from .sources import is_remote, local_path

    textspan, lines = decomposition["textspan"], []
    wanted = {"decomposition.textspan.texts_per_head": textspan["texts_per_head"],
              "decomposition.textspan.sweep.texts_per_head": max(textspan["sweep"]["texts_per_head"])}
    for key, k in wanted.items():
        if k > textspan["rank"]:
            lines.append(f"`{key}` ({_largest(key, k)}) exceeds "
                         f"`decomposition.textspan.rank` ({textspan['rank']}); lower it or raise the rank")
    for name in TEXTSPAN_POOLS:
        spec = decomposition["sources"].get(name)
        url = spec["url"] if spec else None
        if url is None or is_remote(url) or produced_by_workflow(local_path(url)) or not local_path(url).is_file():
            continue  # absent, remote (checked when fetched), or missing (named above)
        count = description_count(local_path(url))
        what = "descriptions" if name == "descriptions" else "texts"
        for key, k in wanted.items():
            if k > count and (name == "descriptions" or "sweep" in key):
                fix = "every K" if "sweep" in key else "texts_per_head"
                lines.append(f"`decomposition.sources.{name}.url` is {url!r}, a pool of {count} {what} (non-empty "
                             f"lines), fewer than `{key}` ({_largest(key, k)}); give a larger pool or set {fix} to "
                             f"at most {count}")
    return lines


def _largest(key: str, k: int) -> str:
    """``k`` as a message shows it: the largest of a list of K (the sweep's), or the one K."""
    return f"largest {k}" if "sweep" in key else str(k)


def heads_missing_files(config: Mapping, uses_published_labels: bool = False) -> list[tuple[str, str]]:
    """(config key, path) of each local file of the ``heads`` section that does not exist: the taxonomy, the
    LLM's examples when ``llm`` labels, the local published labels when a model has them
    (``uses_published_labels``), and the filled judging sheet of each model when ``association.judgements`` is
    set (``{model}`` in it replaced by each model's name)."""
    from .sources import is_remote, local_path

    heads = config["heads"]
    files = [("heads.taxonomy", heads["taxonomy"])]
    if "llm" in heads["labellers"]:
        files.append(("heads.llm.examples", heads["llm"]["examples"]))
    if uses_published_labels:
        files += [(f"heads.sources.{name}.url", spec["url"]) for name, spec in heads["sources"].items()
                  if not is_remote(spec["url"])]
    judgements = heads["association"].get("judgements")
    if judgements is not None:
        files += sorted({("heads.association.judgements", judgements.replace("{model}", model))
                         for model in config["models"]})
    return [(key, path) for key, path in files if not local_path(path).exists()]


def heads_problems(config: Mapping, uses_published_labels: bool = False,
                   written_configs: Mapping[str, Mapping] | None = None) -> list[str]:
    """One line per setting of the ``heads`` section (or of the sections it depends on) that cannot work.

    The study needs the decomposition study; TEXTSPAN must cover the analysed layers and give at least the texts
    judged per head; ``association.min_matches`` is at most ``association.n_texts``; the local files exist
    (:func:`heads_missing_files`); ``analyses.heads`` are heads of the analysed layers (:func:`head_list_problems`).
    """
    if "decomposition" not in config["studies"]:
        return [("`studies` lists heads but not decomposition; the heads study reads the decomposition study's stores "
                 "and TEXTSPAN tables: add decomposition to `studies`")]
    heads, textspan, lines = config["heads"], config["decomposition"]["textspan"], []
    if textspan["n_layers"] < heads["n_layers"]:
        lines.append(
            f"`decomposition.textspan.n_layers` ({textspan['n_layers']}) is smaller than `heads.n_layers` "
            f"({heads['n_layers']}): TEXTSPAN must cover the last min({heads['n_layers']}, L) layers that the heads "
            f"study labels; raise `decomposition.textspan.n_layers` to {heads['n_layers']}"
        )
    judged = (("heads.n_texts", heads["n_texts"]), ("heads.association.n_texts", heads["association"]["n_texts"]))
    for key, value in judged:
        if value > textspan["texts_per_head"]:
            lines.append(
                f"`{key}` ({value}) exceeds `decomposition.textspan.texts_per_head` ({textspan['texts_per_head']}), "
                "the TEXTSPAN texts there are per head; lower it or raise texts_per_head"
            )
    if heads["association"]["min_matches"] > heads["association"]["n_texts"]:
        lines.append(
            f"`heads.association.min_matches` ({heads['association']['min_matches']}) exceeds "
            f"`heads.association.n_texts` ({heads['association']['n_texts']}); no head could be associated"
        )
    property_set = heads["analyses"].get("property_set", "auto")
    if property_set not in ("auto", "app", *heads["labellers"]):
        lines.append(f"`heads.analyses.property_set` is {property_set!r}, neither auto, app nor a labeller of "
                     f"`heads.labellers` ({', '.join(heads['labellers'])}); use one of those")
    for key, path in heads_missing_files(config, uses_published_labels):
        lines.append(f"`{key}` is {path!r}, which does not exist; fix the path or put the file there")
    return lines + head_list_problems("heads.analyses.heads", heads["analyses"]["heads"], config["models"],
                                      written_configs, last_layers=heads["n_layers"])
