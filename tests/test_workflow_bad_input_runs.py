"""Bad input through Snakemake (issue 8): damaged sources stop with a message naming the file, key or value,
leave nothing finished-looking, and after a fix in place the re-run gives the tables of a clean run."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from workflow_runs import REPO, copy_workflow, snakemake

pytestmark = pytest.mark.slow

LONG = "There is no cat" + " and a very small red dog" * 14 + "."  # about 100 CLIP tokens
TABLES = ["scores", "table1_accuracy", "table2_segments"]


def entry(caption, foil, image, negation_in_caption):
    return {"caption": caption, "foil": foil, "image_file": image, "dataset": "test",
            "provenance_of_foils": "zero_to_something" if negation_in_caption else "something_to_zero",
            "mturk": {"caption": 3, "foil": 0, "other": 0}}


def benchmark(foil_k3="There is no cat."):
    return {
        "k1": entry("There is no dog.", "There is a dog.", "a.jpg", True),
        "k2": entry("There are people.", "There are no people.", "b.jpg", False),
        "k3": entry("There is a cat.", foil_k3, "c.jpg", False),
        "k4": entry("There are no cars.", "There are cars.", "d.jpg", True),
    }


def good_image(seed: int) -> bytes:
    path = Path(f"/tmp/_img_{seed}.jpg")
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path, quality=90)
    data = path.read_bytes()
    path.unlink()
    return data


def setup_study(root: Path, valse: dict) -> tuple[Path, Path, Path, Path]:
    """A copy of the workflow, a local VALSE-format file and image folder, and a tiny random-init model."""
    from clip_interp.demo.toy_clip import toy_clip_config

    workdir = copy_workflow(root / "wf")
    data = root / "data"
    (data / "images").mkdir(parents=True)
    (data / "existence.json").write_text(json.dumps(valse))
    for seed, name in enumerate(["a.jpg", "b.jpg", "c.jpg", "d.jpg"]):
        (data / "images" / name).write_bytes(good_image(seed))
    (data / "cannot.tsv").write_text("sentence_1\tsentence_2\tlabel\n")
    model_config = data / "TinyIssue8.json"
    model_config.write_text(json.dumps(toy_clip_config()))
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["models"] = {"tiny": {"backend": "open_clip", "name": "TinyIssue8", "config": str(model_config),
                                 "random_init": True}}
    config["threads"] = 1
    config["negation"]["selectivity"]["layer"] = 2
    config["negation"]["sources"] = {
        "valse_existence": {"url": str(data / "existence.json")},
        "visual7w_images": {"url": str(data / "images")},
        "cannot": {"url": str(data / "cannot.tsv")},
    }
    path = workdir / "config" / "test.yaml"
    path.write_text(yaml.safe_dump(config))
    return workdir, path, data / "existence.json", data / "images"


def run_tables(workdir, config, check=True):
    targets = [f"results/negation/tiny/{t}.parquet" for t in TABLES]
    return snakemake(workdir, *targets, "--configfile", str(config), check=check)


def table_bytes(workdir) -> dict[str, bytes]:
    return {t: (workdir / "results" / "negation" / "tiny" / f"{t}.parquet").read_bytes() for t in TABLES}


def all_logs(workdir) -> str:
    return "".join(p.read_text() for p in (workdir / "logs").rglob("*.log"))


def test_over_long_sentence_then_fix_in_place_then_broken_image(tmp_path):
    # 1. k3's foil is longer than the context: k3 is excluded everywhere, with the reason in the metadata.
    workdir, config, valse, images = setup_study(tmp_path / "run", benchmark(foil_k3=LONG))
    run_tables(workdir, config)
    scores = pd.read_parquet(workdir / "results" / "negation" / "tiny" / "scores.parquet")
    assert "k3" not in set(scores.key) and len(scores) == 2 * 3, "an over-long instance must not be scored"
    from clip_interp.io import read_parquet_metadata

    for table in TABLES:
        excluded = read_parquet_metadata(workdir / "results" / "negation" / "tiny" / f"{table}.parquet")["excluded"]
        assert {(r["reason"], tuple(r["keys"])) for r in excluded} == {("too_long", ("k3",))}, table
        assert len(excluded) == 2, "one record per variant's positions table"
    assert "1 of 4 instances excluded" in (workdir / "logs" / "token_positions" / "tiny" / "standard.log").read_text()

    # 2. The file fixed in place (same path): the re-run picks it up and scores k3.
    valse.write_text(json.dumps(benchmark()))
    proc = run_tables(workdir, config)
    assert "Nothing to be done" not in proc.stdout + proc.stderr
    scores = pd.read_parquet(workdir / "results" / "negation" / "tiny" / "scores.parquet")
    assert "k3" in set(scores.key) and len(scores) == 2 * 4
    fixed = table_bytes(workdir)

    # 3. An image replaced in place by a truncated one: the run stops naming the file and the instance key.
    good = (images / "c.jpg").read_bytes()
    (images / "c.jpg").write_bytes(good[: len(good) // 2])
    proc = run_tables(workdir, config, check=False)
    out = proc.stdout + proc.stderr + all_logs(workdir)
    assert proc.returncode != 0
    assert "c.jpg (instance 'k3') cannot be read: image file is truncated" in out
    assert not (workdir / "results" / "cache" / "tiny" / "image.h5").exists()
    assert not list((workdir / "results").rglob("*.part"))
    log = (workdir / "logs" / "cache_image_activations" / "tiny.log").read_text()
    assert "an unreadable image file stops the run" in log

    # 4. The image restored in place: the re-run gives the tables of step 2, which equal a clean run's.
    (images / "c.jpg").write_bytes(good)
    run_tables(workdir, config)
    assert table_bytes(workdir) == fixed
    clean, clean_config, _, _ = setup_study(tmp_path / "clean", benchmark())
    run_tables(clean, clean_config)
    assert table_bytes(clean) == fixed


@pytest.mark.parametrize("damaged, expected", [
    ("{}", "is an empty JSON object (no entries)"),
    (json.dumps(list(benchmark().values())), "holds a list at the top level, but a JSON object of entries is expected"),
], ids=["empty-object", "list"])
def test_benchmark_without_entries_stops_at_fetch(tmp_path, damaged, expected):
    workdir, config, valse, _ = setup_study(tmp_path / "run", benchmark())
    valse.write_text(damaged)
    targets = [f"results/datasets/valse_existence_{v}.parquet" for v in ("standard", "rephrased")]
    proc = snakemake(workdir, *targets, "--configfile", str(config), check=False)
    out = proc.stdout + proc.stderr + all_logs(workdir)
    assert proc.returncode != 0
    assert "negation.sources.valse_existence" in out and str(valse) in out and expected in out
    assert not (workdir / "results" / "raw" / "valse" / "existence.json").exists()
    assert not (workdir / "results" / "datasets").exists()
    valse.write_text(json.dumps(benchmark()))
    snakemake(workdir, *targets, "--configfile", str(config))
    clean, clean_config, _, _ = setup_study(tmp_path / "clean", benchmark())
    snakemake(clean, *targets, "--configfile", str(clean_config))
    for target in targets:
        assert (workdir / target).read_bytes() == (clean / target).read_bytes()
    shutil.rmtree(tmp_path / "clean")
