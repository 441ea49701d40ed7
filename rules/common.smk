import os
import re

from clip_interp.config import ConfigError, device_problem, model_path_problems, produced_by_workflow
from clip_interp.sources import is_remote, local_fingerprint, local_path

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


# The configured sources of every study (`<section>.sources.<name>`: an http(s) URL, a file:// URL or a local path).


def source_path(section, name, download=None):
    """Where the rules read source `<section>.sources.<name>`: its local path as configured (normalised), or for
    an http(s) URL the file its fetch rule writes, `download` (default `results/raw/<section>/<name>`); None when
    the source is not configured."""
    spec = config[section]["sources"].get(name)
    if spec is None:
        return None
    if is_remote(spec["url"]):
        return download or f"results/raw/{section}/{name}"
    return os.path.normpath(str(local_path(spec["url"])))


def source_fingerprint(section, name):
    """A `params:` entry that changes when the local source `<section>.sources.<name>` is changed in place (its
    content, or for a folder its files), so the rules that read it re-run; None for an http(s) URL and for a path
    the workflow writes itself."""

    def fingerprint(wildcards):
        url = config[section]["sources"][name]["url"]
        return None if produced_by_workflow(url) else local_fingerprint(url)

    return fingerprint


MODEL_RESOURCES = dict(
    mem_mb=config["cluster_resources"]["model_mem_mb"], gpu=config["cluster_resources"]["gpu"]
)

# Seconds per input row of the model rules, measured in the full-size run of the negation study
# (ViT-B/32 on 2 CPU cores; README "Speed"). A cluster job's `runtime` (minutes) is the rows of its
# input table times this, times 3 for slower or shared nodes, plus 10 minutes for start-up and
# model loading, and doubles on each retry. Larger models need more: `--set-resources RULE:runtime=...`.
SECONDS_PER_ROW = {
    "cache_text_activations": 21.7 / 980,
    "cache_cannot_activations": 12.3 / 554,
    "cache_image_activations": 66 / 505,
    "causal_tracing": 42 / 490,
    "image_ablation": 259 / 490,
    "subject_size": 193 / 249,
}
# Light jobs (seconds each) share cluster jobs: the dataset preparation, and the summaries, tables and
# figures. Two groups, because model rules lie between them.
PREPARATION_GROUP = "preparation"
LIGHT_GROUP = "summaries"


def parquet_rows(path):
    """Rows of a Parquet table; a table not yet written raises the FileNotFoundError by which
    Snakemake defers a resource until the job's input exists."""
    import errno
    import pyarrow.parquet as pq

    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "input table not written yet", path)
    return pq.read_metadata(path).num_rows


def runtime_minutes(rule_name, table):
    """The `runtime` resource of a model rule, from the row count of its input `table`."""

    def runtime(wildcards, input, attempt):
        seconds = 3 * SECONDS_PER_ROW[rule_name] * parquet_rows(input[table])
        return attempt * (10 + int(seconds // 60) + 1)

    return runtime
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


def toy_model_files():
    """The model files written by the workflow itself (the demo's toy CLIP), not expected to exist yet."""
    return [spec[key] for spec in config["models"].values() if spec.get("train_toy") for key in ("config", "path")]


def toy_model_configs():
    """The open_clip config that the toy-CLIP rule writes, by the path each `train_toy` model entry names, so the
    layer and head numbers of the config are checked at start against the model it will be."""
    from clip_interp.demo.toy_clip import DEFAULT_CONFIG

    return {spec["config"]: DEFAULT_CONFIG for spec in config["models"].values() if spec.get("train_toy")}


def check_runtime_settings():
    """The device and the models' local files, checked before anything runs. A job that requests GPUs
    from a cluster (`cluster_resources.gpu` > 0) runs where CUDA is, so the device is then checked by the job."""
    problems = model_path_problems(config["models"], produced=toy_model_files())
    if config["cluster_resources"]["gpu"] == 0:
        problems += [p for p in [device_problem(DEVICE)] if p]
    if problems:
        raise WorkflowError(str(ConfigError(problems, "the config cannot run on this machine as given")))


check_runtime_settings()
