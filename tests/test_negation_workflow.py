"""The negation study end to end: the reduced demo's tables and figures, its invariants, the default config's
dry run, the settings checked at start, and a model rule interrupted and re-run."""

import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_runs import (
    N_EVAL,
    REPO,
    copy_workflow,
    interrupt_forced_rerun,
    local_negation_sources,
    planned_jobs,
    snakemake,
    write_config,
)

from clip_interp.io import read_parquet_metadata

pytestmark = pytest.mark.slow

def test_demo_produces_tables(demo_run):
    workdir, _ = demo_run
    results = workdir / "results"
    standard = pd.read_parquet(results / "datasets" / "valse_existence_standard.parquet")
    rephrased = pd.read_parquet(results / "datasets" / "valse_existence_rephrased.parquet")
    assert {"key", "caption", "foil", "negation", "image_file"} <= set(standard.columns)
    assert len(standard) == len(rephrased) == N_EVAL
    assert (standard["negation"] == "caption").sum() == (standard["negation"] == "foil").sum()
    positions = pd.read_parquet(results / "datasets" / "toy-clip" / "valse_existence_rephrased_positions.parquet")
    assert positions["positions_ok"].all()
    for name in ("text_standard.h5", "text_rephrased.h5", "image.h5"):
        assert (results / "cache" / "toy-clip" / name).stat().st_size > 0
    assert not list(results.rglob("*.part")), "no temporary file may be left behind"
    scores = pd.read_parquet(results / "negation" / "toy-clip" / "scores.parquet")
    assert len(scores) == 2 * N_EVAL
    assert ((scores.d > 0) == scores.correct).all()
    for name in ("fig3_score_distribution.png", "fig3_score_distribution.pdf"):
        assert (results / "negation" / "toy-clip" / "figures" / name).stat().st_size > 1000


STUDY_TABLES = [
    "table1_accuracy", "table2_segments", "preliminary", "table3_correlations", "table3_correlations_foil",
    "length_accuracy", "size_accuracy", "causal_tracing", "causal_tracing_generic", "causal_tracing_summary",
    "localisation", "selectivity", "selectivity_by_position", "selectivity_heads", "selectivity_heads_by_side",
    "selectivity_layers", "cannot_selectivity", "cannot_selectivity_heads", "image_ablation", "image_ablation_summary",
    "image_ablation_iae_averages", "reproduction",
]


STUDY_FIGURES = [
    "fig6_similarity_vs_score", "fig7_subject_size", "fig8_causal_tracing", "fig8_causal_tracing_all",
    "fig8_causal_tracing_by_segment", "fig9_negator_selectivity", "fig9_negator_selectivity_pooled",
    "fig10_selectivity_by_position", "fig10_selectivity_by_position_pooled", "fig11_cannot_selectivity",
    "fig12_mha_ablation", "fig12_mha_ablation_all", "fig12_mha_ablation_by_segment",
    "fig13_mlp_ablation", "fig13_mlp_ablation_all", "fig13_mlp_ablation_by_segment",
    "fig14_mha_vs_mlp", "fig14_mha_vs_mlp_all", "fig14_mha_vs_mlp_by_segment", "ablation_caption_foil_scores",
    "reproduction",
]


def test_demo_produces_every_table_and_figure_of_the_study(demo_run):
    workdir, _ = demo_run
    out = workdir / "results" / "negation" / "toy-clip"
    for name in STUDY_TABLES:
        assert len(pd.read_parquet(out / f"{name}.parquet")) > 0, name
    for name in STUDY_FIGURES:
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"{name}.{ext}").stat().st_size > 1000, f"{name}.{ext}"
    assert len(pd.read_parquet(workdir / "results" / "datasets" / "subject_size.parquet")) == N_EVAL
    assert (workdir / "results" / "cross_model" / "figures" / "fig_cross_model_layers.png").stat().st_size > 1000
    profiles = pd.read_parquet(workdir / "results" / "cross_model" / "layer_profiles.parquet")
    assert set(profiles.model) == {"toy-clip"}


FOLLOWUP_TABLES = [
    "pair_patching", "pair_patching_summary", "site_tracing", "site_tracing_summary", "probes", "ablation_windows",
    "ablation_windows_summary", "image_covariates", "covariate_regression",
]


FOLLOWUP_FIGURES = ["pair_patching", "site_tracing", "probes", "ablation_windows", "covariates"]


def test_demo_produces_every_follow_up(demo_run):
    workdir, _ = demo_run
    out = workdir / "results" / "negation" / "toy-clip"
    tables = {name: pd.read_parquet(out / "followups" / f"{name}.parquet") for name in FOLLOWUP_TABLES}
    for name, table in tables.items():
        assert len(table) > 0, name
    for name in FOLLOWUP_FIGURES:
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"followup_{name}.{ext}").stat().st_size > 1000, f"followup_{name}.{ext}"
    ct = pd.read_parquet(out / "causal_tracing_generic.parquet")
    pairs = tables["pair_patching"]
    assert pairs.key.nunique() == ct.key.nunique()
    single_eot = pairs[(pairs.patch == "EOT") & (pairs.layer == pairs.layer.max())]
    assert np.allclose(single_eot.cte, 1.0, atol=1e-4)
    assert set(tables["site_tracing_summary"].site) == {"resid", "attn_out", "mlp_out"}
    probes = tables["probes"]
    before = probes[probes.generic_position.astype(str).isin(["SOT", "There", "is/are"])]
    assert np.allclose(before.accuracy, 0.5)
    windows = tables["ablation_windows"]
    assert set(windows.window_size) == {2, 3} and np.allclose(windows.iae, windows.d - windows.d_star)
    regression = tables["covariate_regression"]
    assert set(regression.model) == {"with_size", "without_size"}
    assert tables["image_covariates"][["contrast", "brightness", "colourfulness"]].notna().all().all()


def test_demo_causal_tracing_invariants(demo_run):
    workdir, _ = demo_run
    out = workdir / "results" / "negation" / "toy-clip"
    datasets = workdir / "results" / "datasets" / "toy-clip"
    positions = pd.read_parquet(datasets / "valse_existence_rephrased_positions.parquet")
    ct = pd.read_parquet(out / "causal_tracing.parquet").merge(positions[["key", "negator_pos", "eot_pos_negated"]],
                                                               on="key")
    n_layers = int(ct.layer.max())
    at_negator = ct[(ct.layer == 0) & (ct.position == ct.negator_pos)]
    at_eot = ct[(ct.layer == n_layers) & (ct.position == ct.eot_pos_negated)]
    assert len(at_negator) == len(at_eot) == ct.key.nunique() > 0
    assert np.allclose(at_negator.cte, 1.0, atol=1e-4) and np.allclose(at_eot.cte, 1.0, atol=1e-4)
    assert (ct.loc[ct.position < ct.negator_pos, "cte"] == 0).all()
    heads = pd.read_parquet(out / "selectivity_heads.parquet")
    assert len(heads) == heads["layer"].nunique() * heads["head"].nunique() and heads.layer.min() == 1
    ablation = pd.read_parquet(out / "image_ablation.parquet")
    assert np.allclose(ablation.iae, ablation.d - ablation.d_star)
    assert len(ablation) == ablation.key.nunique() * ablation.layer.nunique() * 2
    table3 = pd.read_parquet(out / "table3_correlations.parquet")
    assert len(table3) > 0


def test_demo_tables_are_the_studys(demo_run):
    """Table 1's difference is standard − rephrased; Table 3 pools both sides with n per cell; the preliminary
    analyses read the rephrased variant; the reproduction report says the demo is not the study's set-up."""
    workdir, _ = demo_run
    out = workdir / "results" / "negation" / "toy-clip"
    t1 = pd.read_parquet(out / "table1_accuracy.parquet").set_index(["variant", "negation"])["accuracy"]
    for side in ("caption", "foil", "all"):
        assert t1[("standard_minus_rephrased", side)] == pytest.approx(t1[("standard", side)] - t1[("rephrased", side)])
    instances = pd.read_parquet(out / "preliminary.parquet")
    assert read_parquet_metadata(out / "preliminary.parquet")["variant"] == "rephrased"
    assert (instances["seq_len"] == instances["caption_len"]).all()
    table3 = pd.read_parquet(out / "table3_correlations.parquet").set_index(["variable_x", "variable_y"])
    n_foil = int((instances["negation"] == "foil").sum())
    assert table3.loc[("cosine_similarity", "d"), "n"] == len(instances) == N_EVAL
    assert table3.loc[("relative_size", "d"), ["n", "n_caption", "n_foil"]].tolist() == [n_foil, 0, n_foil]
    assert len(pd.read_parquet(out / "table3_correlations_foil.parquet")) == 7
    averages = pd.read_parquet(out / "image_ablation_iae_averages.parquet")
    assert set(averages["negation"]) == {"both", "caption", "foil"}
    report = pd.read_parquet(out / "reproduction.parquet")
    meta = read_parquet_metadata(out / "reproduction.parquet")
    assert not meta["study_setup"] and "NOT the study's model" in meta["statement"]
    assert len(report) == 40 and report["published"].notna().all()
    assert report.set_index("key").loc["counts.rephrased_all", "ours"] == N_EVAL
    pairs_meta = read_parquet_metadata(workdir / "results" / "datasets" / "toy-clip" / "cannot_pairs.parquet")
    steps = pairs_meta["filter_report"]
    assert steps["reading"] == "noun_chunk" and steps["after_duplicates_removed"] == steps["pairs"]


def test_spot_check_recomputes_the_demo_tables_directly(demo_run):
    """Random cells of the demo's tables equal one full hooked forward each (catches misaligned rows across rules)."""
    workdir, config = demo_run
    proc = subprocess.run([sys.executable, str(workdir / "tools" / "spot_check_results.py"),
                           "--configfile", str(config), "--instances", "5"],
                          cwd=workdir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for what in ("scores d", "causal tracing d*", "selectivity a", "image ablation IAE"):
        assert what in proc.stdout, what
    assert "RESULT: PASS" in proc.stdout


def test_default_config_dry_run_lists_the_study(tmp_path, shared_data):
    workdir = copy_workflow(tmp_path / "wf")
    images = tmp_path / "images.zip"
    with zipfile.ZipFile(images, "w") as z:
        z.writestr("images/placeholder.jpg", b"")
    overrides = local_negation_sources(shared_data / "valse" / "existence.json", images, tmp_path / "cannot.tsv")
    config = write_config(workdir, "config.yaml", overrides)
    jobs = planned_jobs(snakemake(workdir, "--configfile", str(config), "-n"))
    for rule in ("fetch_valse", "extract_valse_images", "fetch_cannot", "prepare_valse", "token_positions",
                 "cache_text_activations", "cache_image_activations", "cache_cannot_activations", "compute_scores",
                 "subject_size", "preliminary_analyses", "causal_tracing", "causal_tracing_summary",
                 "negator_selectivity", "cannot_selectivity", "image_ablation", "image_ablation_summary",
                 "cross_model_profiles", "reproduction_report"):
        assert rule in jobs, rule
    proc = snakemake(workdir, "--configfile", str(config), "-n", "--summary", check=False)
    listed = proc.stdout
    for table in STUDY_TABLES:
        assert f"results/negation/openai-ViT-B-32/{table}.parquet" in listed, table
    for figure in STUDY_FIGURES:
        assert f"results/negation/openai-ViT-B-32/figures/{figure}.png" in listed, figure
    assert "download_visual7w_images" not in jobs, "a local images source is used in place"


def test_analysis_variant_missing_from_the_dataset_names_the_key(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    dataset = {"min_caption_votes": 2, "variants": ["standard"]}
    config = write_config(workdir, "demo.yaml", {"negation": {"dataset": dataset}})
    proc = snakemake(workdir, "--configfile", str(config), "-n", check=False)
    assert proc.returncode != 0
    for analysis in ("preliminary", "causal_tracing", "selectivity", "image_ablation", "followups"):
        assert f"negation.{analysis}.variant" in proc.stdout + proc.stderr, analysis


def test_mask_subject_size_on_real_data_is_refused(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["negation"]["subject_size"]["source"] = "mask"
    path = workdir / "config" / "mask.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = snakemake(workdir, "--configfile", str(path), "-n", check=False)
    assert proc.returncode != 0
    assert "only the synthetic benchmark has subject masks" in proc.stdout + proc.stderr


def test_interrupted_rule_reruns_to_the_same_table(demo_run_copy):
    """A model rule killed mid-run is re-run by --rerun-incomplete and writes the same table."""
    workdir, config = demo_run_copy
    target = "results/negation/toy-clip/causal_tracing.parquet"
    reference = pd.read_parquet(workdir / target)
    interrupt_forced_rerun(demo_run_copy, target, "causal_tracing", "logs/causal_tracing/toy-clip.log", 1.0)
    assert "causal_tracing" in planned_jobs(snakemake(workdir, target, "--configfile", str(config), "-n"))
    snakemake(workdir, target, "--rerun-incomplete", "--configfile", str(config))
    pd.testing.assert_frame_equal(pd.read_parquet(workdir / target), reference)
    assert not list((workdir / "results").rglob("*.part"))
