import os
import re

# Shared by all studies: the models, runtime settings and cluster resources. Each study's settings
# are in its own config section (`negation`), read by its rule files.
STUDIES = list(config["studies"])
MODELS = list(config["models"])


wildcard_constraints:
    model="|".join(re.escape(m) for m in MODELS),
    variant="standard|rephrased",


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


# Each stage file of a study appends its final outputs (tables and figures) to STUDY_TARGETS[study];
# `rule all` requests those of the studies listed in `studies`.
STUDY_TARGETS = {study: [] for study in STUDIES}


def all_targets():
    return [target for study in STUDIES for target in STUDY_TARGETS[study]]


MODEL_RESOURCES = dict(
    mem_mb=config["cluster_resources"]["model_mem_mb"], gpu=config["cluster_resources"]["gpu"]
)
# Runtime settings of the model rules, passed to their scripts as params.
DEVICE = config["device"]
TEXT_BATCH_SIZE = config["batch_size"]["text"]
IMAGE_BATCH_SIZE = config["batch_size"]["image"]


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
