"""Snakemake runs shared by the end-to-end tests: copies of the workflow, configs, runs, and the reduced demo.

The reduced demo (:data:`SMALL_DEMO` over ``config/demo.yaml``) is run once per pytest session by the
``demo_run`` fixture of ``tests/conftest.py``; a test that changes results works on :func:`copy_run` of it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import yaml

REPO = Path(__file__).resolve().parents[1]
COPIED = ["Snakefile", "rules", "workflow", "config", "envs", "resources", "report", "tools"]

# A reduced demo: few benchmark instances, so the whole DAG runs in a few minutes on 2 cores. The toy CLIP is
# trained and the decomposition study's sets drawn as in config/demo.yaml (the same toy, classification set and
# Waterbirds-like set): a shorter training leaves a toy that reads no shape on the Waterbirds-like images, and
# TEXTSPAN on fewer classification images chooses other heads, so the demo's spurious-feature result (the worst
# group rises when the background heads are mean-ablated) is only asserted on the demo's own set-up.
SMALL_DEMO = {
    "demo": {
        "synthetic": {"n_eval": 40, "n_train": 4000, "image_size": 64, "seed": 0,
                      "decomposition": {"n_classification": 150, "n_waterbirds_train": 400, "n_waterbirds_test": 120,
                                        "spurious_correlation": 0.95, "camouflage": 0.7}},
        "toy_clip": {"epochs": 4, "batch_size": 32, "lr": 0.001, "seed": 0},
    },
    # Stores of 64 images (3 classification shards, 9 Waterbirds shards); one store variant in the protocol report
    "decomposition": {"shard_size": 64, "protocol_report": {"store_variants": ["convention"]}},
    "threads": 2,
}
N_EVAL = SMALL_DEMO["demo"]["synthetic"]["n_eval"]
DEMO_CONFIG_NAME = "test.yaml"


class DemoRun(NamedTuple):
    """A finished run of the reduced demo: its working directory and the config file it ran with."""

    workdir: Path
    config: Path


def copy_workflow(dest: Path) -> Path:
    """A copy of the workflow's files (without results or caches) in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "results"))
        else:
            shutil.copy(src, dest / name)
    return dest


def deep_merge(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` merged in, nested mappings key by key (lists and values are replaced)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def write_config(workdir: Path, base: str, overrides: dict, name: str = DEMO_CONFIG_NAME) -> Path:
    """``config/<name>`` in ``workdir``: the repository's ``config/<base>`` with ``overrides`` merged in."""
    config = deep_merge(yaml.safe_load((REPO / "config" / base).read_text()), overrides)
    path = workdir / "config" / name
    path.write_text(yaml.safe_dump(config))
    return path


def local_negation_sources(valse, images, cannot, valse_sha256=None) -> dict:
    """A config override pointing `negation.sources` at local files (no checksum unless given).

    The workflow checks at start that every local source exists, so a source the test does not
    use is created as an empty placeholder file.
    """
    for path in (valse, images, cannot):
        placeholder = Path(str(path).removeprefix("file://"))
        if not placeholder.exists():
            placeholder.write_bytes(b"")
    return {"negation": {"sources": {
        "valse_existence": {"url": str(valse), "sha256": valse_sha256},
        "visual7w_images": {"url": str(images), "sha256": None},
        "cannot": {"url": str(cannot), "sha256": None},
    }}}


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """The command line of Snakemake on 2 cores in ``workdir`` with its own Snakefile."""
    return [sys.executable, "-m", "snakemake", "--cores", "2", "--directory", str(workdir), "-s",
            str(workdir / "Snakefile"), *args]


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run Snakemake to the end; with ``check``, a failure raises an AssertionError showing the output's tail."""
    proc = subprocess.run(snakemake_command(workdir, *args), capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc


def planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Job counts from the 'Job stats' table of a dry run."""
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return {}
    lines = out.split("Job stats:", 1)[1].splitlines()[3:]
    jobs = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        jobs[parts[0]] = int(parts[1])
    jobs.pop("total", None)
    return jobs


def run_reduced_demo(dest: Path) -> DemoRun:
    """The whole reduced demo (every study) run in a fresh copy of the workflow in ``dest``."""
    workdir = copy_workflow(dest)
    config = write_config(workdir, "demo.yaml", SMALL_DEMO)
    snakemake(workdir, "--configfile", str(config))
    return DemoRun(workdir, config)


def copy_run(run: DemoRun, dest: Path) -> DemoRun:
    """A full copy of a finished run (results, logs, Snakemake's records; modification times kept) in ``dest``,
    so a test may re-run or change results without touching ``run``."""
    shutil.copytree(run.workdir, dest, symlinks=True)
    return DemoRun(dest, dest / run.config.relative_to(run.workdir))


def results_state(workdir: Path) -> dict[str, tuple[int, int]]:
    """Each file under ``workdir/results``: (size, modification time in ns), to notice a run being changed."""
    return {str(p.relative_to(workdir)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted((workdir / "results").rglob("*")) if p.is_file()}


def interrupt_forced_rerun(run: DemoRun, target: str, rule: str, log: str, wait_after_start: float) -> None:
    """Kill a forced re-run of ``rule`` for ``target`` once the rule has started (its ``log`` exists) and
    ``wait_after_start`` seconds more have passed, check that no output is left behind, and unlock the workdir
    (the test then re-runs with ``--rerun-incomplete``)."""
    workdir, config = run
    (workdir / log).unlink()
    cmd = snakemake_command(workdir, target, "--forcerun", rule, "--configfile", str(config))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (workdir / log).exists():
            assert proc.poll() is None, f"snakemake stopped before {rule} started"
            assert time.monotonic() < deadline, f"{rule} did not start within 300 s"
            time.sleep(0.02)
        time.sleep(wait_after_start)
        assert proc.poll() is None, f"{rule} finished before it could be interrupted"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (workdir / target).exists(), f"an interrupted {rule} must not leave its output behind"
    snakemake(workdir, "--unlock", "--configfile", str(config))
