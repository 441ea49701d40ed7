"""Settings that used to fail only inside a job now stop the workflow before that job: head and layer numbers and a
local TEXTSPAN pool at the dry run, image rows as soon as the image list exists. Each message names the config key."""

import pytest
from workflow_runs import SMALL_DEMO, copy_workflow, deep_merge, snakemake, write_config

# Each dry run plans the whole demo (over 10 s on a shared 2-core machine).
pytestmark = pytest.mark.slow

NEIGHBOUR_LOG = "logs/head_neighbours"
ANALYSIS_LOG = "logs/heads_topic_maps"


def dry_run_fails(tmp_path, overrides: dict) -> str:
    """The output of a dry run of the demo with ``overrides``, which must fail before planning any job."""
    workdir = copy_workflow(tmp_path / "wf")
    config = write_config(workdir, "demo.yaml", overrides)
    proc = snakemake(workdir, "--configfile", str(config), "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Job stats" not in out, out[-3000:]
    assert not (workdir / "results").exists()
    return out


@pytest.mark.parametrize("override, expected", [
    ({"decomposition": {"neighbours": {"heads": [[99, 0]]}}},
     ("`decomposition.neighbours.heads` is [[99, 0]], but [[99, 0]] name no head of the image tower of model "
      "`toy-clip`: allowed are layers 1..3, or counted from the end -1..-3, and heads 0..3")),
    ({"decomposition": {"spurious": {"heads": [[2, 7]]}}},
     "`decomposition.spurious.heads` is [[2, 7]], but [[2, 7]] name no head of the image tower"),
    ({"heads": {"analyses": {"heads": [[1, 0]]}}},
     ("`heads.analyses.heads` is [[1, 0]], but [[1, 0]] name no head of the image tower of model `toy-clip`: "
      "allowed are layers 2..3 (the last 2)")),
], ids=["neighbour-heads", "spurious-heads", "analysed-heads"])
def test_head_numbers_beyond_the_model_stop_the_dry_run(tmp_path, override, expected):
    assert expected in dry_run_fails(tmp_path, override)


def test_a_local_textspan_pool_smaller_than_texts_per_head_stops_the_dry_run(tmp_path):
    pool = tmp_path / "pool.txt"
    pool.write_text("a red circle\na blue square\n")
    out = dry_run_fails(tmp_path, {"decomposition": {"sources": {"descriptions": {"url": str(pool)}}}})
    assert (f"`decomposition.sources.descriptions.url` is {str(pool)!r}, a pool of 2 descriptions (non-empty lines), "
            "fewer than `decomposition.textspan.texts_per_head` (5)") in out


def test_image_rows_beyond_the_image_list_stop_before_the_analysis_jobs(tmp_path):
    """Once the image list's checkpoint has run, rows beyond it stop the run before any job that reads them."""
    workdir = copy_workflow(tmp_path / "wf")
    settings = deep_merge(SMALL_DEMO, {"studies": ["decomposition", "heads"]})
    good = write_config(workdir, "demo.yaml", settings)
    snakemake(workdir, "results/decomposition/datasets/classification.parquet", "--configfile", str(good))
    n_images = SMALL_DEMO["demo"]["synthetic"]["decomposition"]["n_classification"]
    for override, expected in [
        ({"heads": {"analyses": {"images": [0, 100000]}}},
         (f"`heads.analyses.images` is [0, 100000], but the image list "
          f"results/decomposition/datasets/classification.parquet has {n_images} images, so rows [100000] do not "
          f"exist; allowed are rows 0..{n_images - 1}")),
        ({"decomposition": {"neighbours": {"image_queries": [n_images]}}},
         f"`decomposition.neighbours.image_queries` is [{n_images}], but the image list"),
        ({"decomposition": {"spatial_maps": {"images": [1, n_images]}}},
         f"`decomposition.spatial_maps.images` is [1, {n_images}], but the image list"),
    ]:
        bad = write_config(workdir, "demo.yaml", deep_merge(settings, override), name="bad.yaml")
        proc = snakemake(workdir, "--configfile", str(bad), check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and expected in out, out[-3000:]
        assert not (workdir / NEIGHBOUR_LOG).exists() and not (workdir / ANALYSIS_LOG).exists()
        assert not (workdir / "logs" / "train_toy_clip.log").exists()  # stopped while planning, before any job
