"""The workflow config: the shipped files validate, errors are one readable line each, the old layout is refused.

Fast: clip_interp.config is called directly on the YAML files; the few Snakemake dry runs take seconds.
"""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from clip_interp.config import ConfigError, check_config, config_problems

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def old_layout(config: dict) -> dict:
    """``config`` (new layout) written in the old flat layout, as configs were before the per-study sections."""
    negation = config["negation"]
    old = {key: config[key] for key in ("device", "threads", "cache", "models")}
    old.update({key: negation[key] for key in ("benchmark", "spacy_model", "sources", "dataset")})
    old["analysis"] = {"batch_size": config["batch_size"]["text"]}
    old["analysis"].update({key: negation[key] for key in ("segments", "preliminary", "causal_tracing", "selectivity",
                                                           "image_ablation", "subject_size")})
    old["resources"] = config["cluster_resources"]
    old.update(config.get("demo", {}))
    return old


@pytest.mark.parametrize("name", ["config.yaml", "demo.yaml"])
def test_shipped_configs_validate(name):
    assert config_problems(load(name), SCHEMA) == []
    check_config(load(name), SCHEMA)


def test_shipped_configs_keep_the_batch_sizes():
    """64 sentences and 16 images (formerly analysis.batch_size and batch_size // 4): results do not change."""
    for name in ("config.yaml", "demo.yaml"):
        assert load(name)["batch_size"] == {"text": 64, "image": 16}, name


def test_schema_defaults_fill_a_minimal_config():
    """snakemake.utils.validate, run after check_config, fills the defaults of the new layout."""
    from snakemake.utils import validate

    config = {"models": {"m": {"backend": "hf", "path": "/models/clip"}},
              "negation": {"sources": load("config.yaml")["negation"]["sources"]}}
    assert config_problems(config, SCHEMA) == []
    validate(config, str(SCHEMA))
    assert config["studies"] == ["negation"] and config["device"] == "auto"
    assert config["batch_size"] == {"text": 64, "image": 16}
    assert config["cluster_resources"] == {"gpu": 0, "model_mem_mb": 16000}
    assert config["negation"]["segments"] == {"correct": 1.0, "incorrect": -1.0}
    assert config["negation"]["dataset"]["variants"] == ["standard", "rephrased"]
    assert config["demo"]["synthetic"]["n_eval"] == 200


@pytest.mark.parametrize("name", ["config.yaml", "demo.yaml"])
def test_old_layout_says_where_each_key_moved(name):
    old = old_layout(load(name))
    problems = config_problems(old, SCHEMA)
    for line in (
        "config key `analysis.segments` moved to `negation.segments`",
        "config key `analysis.subject_size` moved to `negation.subject_size`",
        "config key `benchmark` moved to `negation.benchmark`",
        "config key `sources` moved to `negation.sources`",
        "config key `dataset` moved to `negation.dataset`",
        "config key `spacy_model` moved to `negation.spacy_model`",
        "config key `resources` moved to `cluster_resources`",
    ):
        assert line in problems, (line, problems)
    batch = [p for p in problems if p.startswith("config key `analysis.batch_size`")]
    assert len(batch) == 1 and "moved to `batch_size.text` (image batches: `batch_size.image`" in batch[0]
    if name == "demo.yaml":
        assert "config key `synthetic` moved to `demo.synthetic`" in problems
        assert "config key `toy_clip` moved to `demo.toy_clip`" in problems
    # only the moves: no schema noise about the old keys or the missing `negation` section
    assert all(p.startswith("config key `") for p in problems), problems
    with pytest.raises(ConfigError) as err:
        check_config(old, SCHEMA)
    assert "old layout" in str(err.value) and "`resources` moved to `cluster_resources`" in str(err.value)


def test_one_old_key_on_a_new_config_is_named():
    """e.g. `--config resources=...` on top of the new layout."""
    config = load("config.yaml")
    config["resources"] = {"gpu": 1}
    assert config_problems(config, SCHEMA) == ["config key `resources` moved to `cluster_resources`"]


def test_wrong_value_gives_one_line_with_key_value_and_allowed():
    config = load("demo.yaml")
    config["negation"]["segments"]["correct"] = "high"
    assert config_problems(config, SCHEMA) == ["`negation.segments.correct` is 'high' (a string); expected a number"]
    config = load("demo.yaml")
    config["negation"]["benchmark"] = "valsee"
    assert config_problems(config, SCHEMA) == ["`negation.benchmark` is 'valsee'; allowed: 'valse' or 'synthetic'"]
    config = load("demo.yaml")
    config["negation"]["image_ablation"]["components"] = ["mha", "attn"]
    assert config_problems(config, SCHEMA) == [
        "`negation.image_ablation.components[1]` is 'attn'; allowed: 'mha' or 'mlp'"]
    config = load("demo.yaml")
    config["threads"] = 0
    assert config_problems(config, SCHEMA) == ["`threads` is 0; it must be >= 1"]


def test_segmentation_protocol_keys_default_to_the_paper_and_reject_other_values():
    from snakemake.utils import validate

    config = load("demo.yaml")
    for key in ("mask_geometry", "clip_negative"):
        del config["decomposition"]["segmentation"][key]
    validate(config, str(SCHEMA))
    assert config["decomposition"]["segmentation"]["mask_geometry"] == "resize"
    assert config["decomposition"]["segmentation"]["clip_negative"] is True
    for key, value, expected in [
            ("mask_geometry", "crop", "`decomposition.segmentation.mask_geometry` is 'crop'; allowed: 'resize' or "
                                      "'aligned'"),
            ("mask_geometry", None, "`decomposition.segmentation.mask_geometry` is null; allowed: 'resize' or "
                                    "'aligned'"),
            ("clip_negative", "yes", "`decomposition.segmentation.clip_negative` is 'yes' (a string); expected true "
                                     "or false"),
            ("clip_negative", 1, "`decomposition.segmentation.clip_negative` is 1 (an integer); expected true or "
                                 "false")]:
        config = load("demo.yaml")
        config["decomposition"]["segmentation"][key] = value
        assert config_problems(config, SCHEMA) == [expected], (key, value)


def test_several_problems_are_listed_one_per_line_without_the_schema():
    config = load("config.yaml")
    config["negation"]["segments"]["correct"] = "high"
    config["negation"]["selectivity"]["layer"] = 0
    config["negation"]["sources"]["cannot"]["sha256"] = "abc"
    config["batch_size"]["image"] = "16"
    config["studies"] = ["negation", "probing"]
    problems = config_problems(config, SCHEMA)
    assert len(problems) == 5, problems
    for key in ("`negation.segments.correct`", "`negation.selectivity.layer`", "`negation.sources.cannot.sha256`",
                "`batch_size.image`", "`studies[1]`"):
        assert sum(p.startswith(key) for p in problems) == 1, (key, problems)
    for problem in problems:
        assert "\n" not in problem and len(problem) < 200 and "'type'" not in problem and "{'" not in problem, problem
    with pytest.raises(ConfigError) as err:
        check_config(config, SCHEMA)
    message = str(err.value)
    assert "5 problems" in message and all(p in message for p in problems)
    assert isinstance(err.value, ValueError)


def test_unknown_key_is_named_with_a_suggestion():
    config = load("demo.yaml")
    config["negation"]["dataset"]["min_caption_vots"] = 2
    (problem,) = config_problems(config, SCHEMA)
    assert problem.startswith("`negation.dataset.min_caption_vots` is not a known key")
    assert "did you mean `min_caption_votes`?" in problem
    config = load("demo.yaml")
    config["studys"] = ["negation"]
    (problem,) = config_problems(config, SCHEMA)
    assert problem.startswith("`studys` is not a known key") and "did you mean `studies`?" in problem


def test_missing_key_is_named():
    config = load("config.yaml")
    del config["negation"]["sources"]["cannot"]
    assert config_problems(config, SCHEMA) == ["`negation.sources.cannot` is missing; it is required"]
    config = load("config.yaml")
    del config["negation"]
    (problem,) = config_problems(config, SCHEMA)
    assert problem.startswith("`negation` is missing") and "studies" in problem


def test_hf_model_given_by_path_needs_no_name():
    config = load("config.yaml")
    config["models"] = {"local-hf": {"backend": "hf", "path": "/models/clip-vit-base-patch32"}}
    assert config_problems(config, SCHEMA) == []
    config["models"] = {"hub-hf": {"backend": "hf", "name": "openai/clip-vit-base-patch32"}}
    assert config_problems(config, SCHEMA) == []
    for spec in ({"backend": "hf"}, {"backend": "open_clip", "path": "/models/vit.pt"}):
        config["models"] = {"m": spec}
        (problem,) = config_problems(config, SCHEMA)
        assert problem.startswith("`models.m.name` is missing"), problem
        assert "except an hf model given by a local `path`" in problem


def test_bad_model_id_is_named():
    config = load("config.yaml")
    config["models"]["my model"] = copy.deepcopy(config["models"]["openai-ViT-B-32"])
    (problem,) = config_problems(config, SCHEMA)
    assert problem.startswith("`models` has an entry named 'my model'")


def test_config_module_imports_no_torch_and_no_study():
    code = ("import sys, clip_interp.config; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('clip_interp.negation')]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- Snakemake dry runs (a few seconds each) ------------------------------------------------------

def dry_run(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--directory", str(workdir),
           "-s", str(REPO / "Snakefile"), "--configfile", str(path), *args]
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.mark.slow  # a Snakemake dry run in a subprocess
def test_dry_run_of_an_old_layout_config_stops_with_the_moves(tmp_path):
    proc = dry_run(tmp_path, old_layout(load("demo.yaml")))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "uses the old layout" in out
    assert "config key `analysis.segments` moved to `negation.segments`" in out
    assert "config key `resources` moved to `cluster_resources`" in out
    assert "config key `analysis.batch_size` moved to `batch_size.text` (image batches: `batch_size.image`" in out
    assert "config key `synthetic` moved to `demo.synthetic`" in out
    assert "Job stats" not in out and not (tmp_path / "results").exists()


@pytest.mark.slow  # a Snakemake dry run in a subprocess
def test_dry_run_of_a_wrong_value_names_the_key(tmp_path):
    config = load("demo.yaml")
    config["negation"]["segments"]["correct"] = "high"
    proc = dry_run(tmp_path, config)
    assert proc.returncode != 0
    assert "`negation.segments.correct` is 'high' (a string); expected a number" in proc.stdout + proc.stderr


def in_repo(image):
    """An image given by file path in the demo config, made absolute so that a run elsewhere finds it."""
    return str(REPO / image) if isinstance(image, str) else image


@pytest.mark.slow  # a Snakemake dry run in a subprocess
def test_studies_gate_the_requested_targets(tmp_path):
    config = load("demo.yaml")
    config["negation"]["sources"]["cannot"]["url"] = str(REPO / "resources" / "cannot_demo.tsv")  # run elsewhere
    config["heads"]["taxonomy"] = str(REPO / "resources" / "heads" / "taxonomy_demo.yaml")
    neighbours, spatial = config["decomposition"]["neighbours"], config["decomposition"]["spatial_maps"]
    neighbours["image_queries"] = [in_repo(query) for query in neighbours["image_queries"]]
    spatial["images"] = [in_repo(image) for image in spatial["images"]]
    proc = dry_run(tmp_path, config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "compute_scores" in proc.stdout and "results/negation/toy-clip/scores.parquet" in proc.stdout
    config["studies"] = []
    del config["negation"]  # a study that is not run needs no section
    proc = dry_run(tmp_path, config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "results/negation/" not in proc.stdout and "compute_scores" not in proc.stdout
