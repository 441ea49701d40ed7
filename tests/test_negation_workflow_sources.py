"""The negation study's sources through Snakemake: the real VALSE file fetched from a local path, and damaged
or missing sources stopping with a message and no output."""

import hashlib
import json
import zipfile

import pandas as pd
import pytest
from workflow_runs import copy_workflow, local_negation_sources, snakemake, write_config

pytestmark = pytest.mark.slow

def test_valse_counts_through_the_workflow(tmp_path, shared_data):
    """The real VALSE file, fetched by the workflow from a local path, gives 505 / 490 (250 + 240) instances."""
    workdir = copy_workflow(tmp_path / "wf")
    entries = json.loads((shared_data / "valse" / "existence.json").read_text())
    images = workdir / "results" / "raw" / "images"
    images.mkdir(parents=True)
    for entry in entries.values():
        (images / entry["image_file"]).write_bytes(b"stand-in")
    sha = hashlib.sha256((shared_data / "valse" / "existence.json").read_bytes()).hexdigest()
    config = write_config(workdir, "config.yaml", local_negation_sources(
        "file://" + str(shared_data / "valse" / "existence.json"), tmp_path / "unused.zip", tmp_path / "unused.tsv",
        valse_sha256=sha))
    targets = ["results/datasets/valse_existence_standard.parquet",
               "results/datasets/valse_existence_rephrased.parquet"]
    snakemake(workdir, *targets, "--configfile", str(config), "--allowed-rules", "fetch_valse", "prepare_valse")
    standard = pd.read_parquet(workdir / targets[0])
    rephrased = pd.read_parquet(workdir / targets[1])
    assert len(standard) == 505
    assert len(rephrased) == 490
    assert rephrased["negation"].value_counts().to_dict() == {"caption": 250, "foil": 240}


def _fails_cleanly(workdir, config, target, expected_message):
    proc = snakemake(workdir, target, "--configfile", str(config), check=False)
    assert proc.returncode != 0
    logs = "".join(p.read_text() for p in (workdir / "logs").rglob("*.log")) if (workdir / "logs").exists() else ""
    assert expected_message in proc.stdout + proc.stderr + logs
    assert not (workdir / target).exists(), "a failed rule must leave no output"
    assert not list((workdir / "results").rglob("*.part")) if (workdir / "results").exists() else True


def test_sha256_mismatch_stops_with_clear_message(tmp_path, shared_data):
    workdir = copy_workflow(tmp_path / "wf")
    config = write_config(workdir, "config.yaml", local_negation_sources(
        shared_data / "valse" / "existence.json", tmp_path / "x.zip", tmp_path / "x.tsv", valse_sha256="0" * 64))
    _fails_cleanly(workdir, config, "results/raw/valse/existence.json", "sources.valse_existence")


def test_lfs_pointer_instead_of_tsv_stops(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    pointer = tmp_path / "cannot_dataset_v1.1.tsv"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "a" * 64 + "\nsize 123\n")
    sources = local_negation_sources(tmp_path / "x.json", tmp_path / "x.zip", pointer)
    config = write_config(workdir, "config.yaml", sources)
    _fails_cleanly(workdir, config, "results/raw/cannot/cannot_dataset_v1.1.tsv", "LFS")


def test_missing_image_stops(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    valse = tmp_path / "existence.json"
    valse.write_text(json.dumps({"k1": {
        "caption": "There is no dog.", "foil": "There is a dog.", "image_file": "absent.jpg",
        "mturk": {"caption": 3, "foil": 0, "other": 0}, "provenance_of_foils": "zero_to_something"}}))
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("images/other.jpg", b"x")
    config = write_config(workdir, "config.yaml", local_negation_sources(valse, archive, tmp_path / "x.tsv"))
    _fails_cleanly(workdir, config, "results/raw/images", "absent.jpg")

