import os
import re
from pathlib import Path

from clip_interp.sources import is_remote, local_path

MODELS = list(config["models"])
VARIANTS = list(config["dataset"]["variants"])
SYNTHETIC = config["benchmark"] == "synthetic"


wildcard_constraints:
    model="|".join(re.escape(m) for m in MODELS),
    variant="standard|rephrased",


def valse_json():
    """The VALSE-format benchmark file: generated (demo) or fetched."""
    if SYNTHETIC:
        return "results/synthetic/existence.json"
    return "results/raw/valse/existence.json"


def images_dir():
    if SYNTHETIC:
        return "results/synthetic/images"
    return "results/raw/images"


def images_archive():
    """The images source to extract from: a downloaded zip, or the configured local zip/folder."""
    url = config["sources"]["visual7w_images"]["url"]
    return "results/raw/downloads/visual7w_images.zip" if is_remote(url) else str(local_path(url))


def model_spec(wildcards):
    return config["models"][wildcards.model]


def model_files(wildcards):
    """Files that a model entry depends on (its config/checkpoint), so a change re-runs its rules."""
    spec = config["models"][wildcards.model]
    return [spec[key] for key in ("config", "path") if spec.get(key)]


def rule_log(name, *wildcards):
    return os.path.join("logs", name, *wildcards) + ".log"


def rule_benchmark(name, *wildcards):
    return os.path.join("benchmarks", name, *wildcards) + ".tsv"


# Each stage file appends its final outputs (tables and figures) here; `rule all` requests them.
STUDY_TARGETS = []


def analysis_variant(analysis):
    """The dataset variant an analysis reads (`analysis.<name>.variant`), checked against `dataset.variants`."""
    variant = config["analysis"][analysis]["variant"]
    if variant not in VARIANTS:
        raise WorkflowError(
            f"config analysis.{analysis}.variant is {variant!r}, which is not among dataset.variants {VARIANTS}; "
            f"add it to dataset.variants or choose one of them"
        )
    return variant


MODEL_RESOURCES = dict(mem_mb=config["resources"]["model_mem_mb"], gpu=config["resources"]["gpu"])


def all_targets():
    targets = expand("results/datasets/valse_existence_{variant}.parquet", variant=VARIANTS)
    targets += expand(
        "results/datasets/{model}/valse_existence_{variant}_positions.parquet", model=MODELS, variant=VARIANTS
    )
    targets += expand("results/datasets/{model}/cannot_pairs.parquet", model=MODELS)
    targets += expand("results/cache/{model}/text_{variant}.h5", model=MODELS, variant=VARIANTS)
    targets += expand("results/cache/{model}/image.h5", model=MODELS)
    targets += expand("results/negation/{model}/scores.parquet", model=MODELS)
    return targets + STUDY_TARGETS


def check_model_entries():
    """A `train_toy: true` model must point at the files the toy-CLIP rule writes."""
    expected = {"config": "results/models/toy-clip/ToyCLIP.json", "path": "results/models/toy-clip/toy_clip.pt"}
    for model, spec in config["models"].items():
        if not spec.get("train_toy"):
            continue
        for key, path in expected.items():
            if os.path.normpath(spec.get(key, "")) != path:
                raise WorkflowError(
                    f"config models.{model}.{key} must be {path!r} for a model with train_toy: true "
                    f"(got {spec.get(key)!r})"
                )
        if spec.get("name") != "ToyCLIP" or spec.get("backend") != "open_clip":
            raise WorkflowError(f"config models.{model}: a train_toy model has backend open_clip and name ToyCLIP")


check_model_entries()
