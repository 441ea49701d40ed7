"""The workflow end to end, across studies: params-triggered re-runs, adding a model, the report, byte-identical
repeated runs, and an invalid config."""

import hashlib
import zipfile
from pathlib import Path

import pytest
import yaml
from test_decomposition_workflow import DECOMPOSITION_FIGURES
from test_negation_workflow import STUDY_FIGURES
from workflow_runs import copy_workflow, planned_jobs, run_reduced_demo, snakemake, write_config

pytestmark = pytest.mark.slow

def test_editing_an_analysis_parameter_reruns_only_dependent_rules(demo_run, tmp_path):
    workdir, config = demo_run
    assert planned_jobs(snakemake(workdir, "--configfile", str(config), "-n")) == {}
    data = yaml.safe_load(config.read_text())
    data["negation"]["segments"]["correct"] = 0.5
    edited = tmp_path / "edited.yaml"  # outside the shared run's folder
    edited.write_text(yaml.safe_dump(data))
    jobs = planned_jobs(snakemake(workdir, "--configfile", str(edited), "-n"))
    assert jobs.get("compute_scores") == 1 and jobs.get("causal_tracing_summary") == 1
    assert jobs.get("image_ablation_summary") == 1
    for expensive in ("causal_tracing", "image_ablation", "cache_text_activations", "cache_image_activations",
                      "cache_cannot_activations", "subject_size", "train_toy_clip"):
        assert expensive not in jobs, f"{expensive} must not re-run when only the segment thresholds change"

    data["negation"]["dataset"]["min_caption_votes"] = 3
    edited.write_text(yaml.safe_dump(data))
    jobs = planned_jobs(snakemake(workdir, "--configfile", str(edited), "-n"))
    assert jobs.get("prepare_valse") == 2 and jobs.get("compute_scores") == 1
    for upstream in ("generate_synthetic_benchmark", "train_toy_clip", "fetch_cannot", "cannot_pairs"):
        assert upstream not in jobs, f"{upstream} must not re-run when only min_caption_votes changes"


def test_adding_a_model_adds_only_its_own_jobs(demo_run, tmp_path):
    workdir, config = demo_run
    data = yaml.safe_load(config.read_text())
    data["models"]["toy-random"] = {"backend": "open_clip", "name": "ToyCLIP", "random_init": True,
                                    "config": "results/models/toy-clip/ToyCLIP.json"}
    extended = tmp_path / "two_models.yaml"  # outside the shared run's folder
    extended.write_text(yaml.safe_dump(data))
    proc = snakemake(workdir, "--configfile", str(extended), "-n")
    out = proc.stdout + proc.stderr
    assert "model=toy-random" in out
    assert "model=toy-clip" not in out, "the results of a model already listed must not re-run"
    jobs = planned_jobs(proc)
    assert jobs.get("cross_model_profiles") == 1 and jobs.get("causal_tracing") == 1
    for shared in ("generate_synthetic_benchmark", "train_toy_clip", "prepare_valse", "fetch_cannot"):
        assert shared not in jobs, shared


def test_report_holds_every_figure_with_its_caption(demo_run, tmp_path):
    workdir, config = demo_run
    report = tmp_path / "report.zip"
    snakemake(workdir, "--configfile", str(config), "--report", str(report))
    with zipfile.ZipFile(report) as z:
        names = z.namelist()
        text = "".join(z.read(n).decode("utf-8", "replace") for n in names if n.endswith((".html", ".js", ".json")))
    for figure in ["fig3_score_distribution", *STUDY_FIGURES, "fig_cross_model_layers", *DECOMPOSITION_FIGURES]:
        assert any(name.endswith(f"{figure}.png") for name in names), figure
    for phrase in ("causal tracing effect", "single-colour", "CANNOT", "TEXTSPAN", "worst group"):
        assert phrase.lower() in text.lower(), phrase


def test_the_same_config_twice_gives_byte_identical_outputs(demo_run, tmp_path):
    """Two runs of the reduced demo from scratch (the session's and one more): the same bytes in every table,
    figure and cache."""
    first, _ = demo_run
    second, _ = run_reduced_demo(tmp_path / "again")

    def checksums(workdir):
        files = [p for p in (workdir / "results").rglob("*") if p.suffix in (".parquet", ".png", ".pdf", ".h5")]
        return {str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    one, two = checksums(first), checksums(second)
    assert sorted(one) == sorted(two)
    assert {Path(name).suffix for name in one} == {".parquet", ".png", ".pdf", ".h5"}
    differing = sorted(name for name in one if one[name] != two[name])
    assert not differing, f"{len(differing)} of {len(one)} files differ between two runs: {differing[:10]}"


def test_invalid_config_names_the_key(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    config = write_config(workdir, "demo.yaml", {"negation": {"dataset": {"min_caption_vots": 2}}})
    proc = snakemake(workdir, "--configfile", str(config), "-n", check=False)
    assert proc.returncode != 0
    assert "`negation.dataset.min_caption_vots` is not a known key" in proc.stdout + proc.stderr
    config = write_config(workdir, "demo.yaml", {"negation": {"segments": {"correct": "high"}}}, "bad2.yaml")
    proc = snakemake(workdir, "--configfile", str(config), "-n", check=False)
    assert proc.returncode != 0
    assert "`negation.segments.correct` is 'high' (a string); expected a number" in proc.stdout + proc.stderr
    assert not (workdir / "results").exists()

