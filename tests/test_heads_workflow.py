"""The heads study through Snakemake: the reduced demo with heads on, the six-model dry run, start-up errors."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_runs import SMALL_DEMO, copy_workflow, planned_jobs, snakemake, write_config

from clip_interp.heads import ANALYSES
from clip_interp.heads.steps import MODEL_SCOPE

pytestmark = pytest.mark.slow

CROSS_FIGURES = ["scores_per_model", "property_distribution", "property_layers", "reproduction"]
SIX_MODELS = ["laion2b-ViT-B-16", "openai-ViT-B-16", "datacomp-ViT-B-32", "openai-ViT-B-32", "laion2b-ViT-L-14",
              "openai-ViT-L-14"]
DEMO_PROPERTIES = {"colours", "shapes", "positions", "sizes", "backgrounds"}


@pytest.fixture(scope="module")
def heads_run(demo_run):
    """The working directory of the session's reduced demo run (every study, the heads study included)."""
    return demo_run.workdir


def test_demo_writes_every_heads_table_and_figure(heads_run):
    results = heads_run / "results" / "heads"
    model = results / "toy-clip"
    for name in ["labels_taxonomy.parquet", "scores.parquet", "explorer.json",
                 *[f"analyses/{a}.parquet" for a in ANALYSES],
                 *[f"figures/{a}.{e}" for a in ANALYSES for e in ("png", "pdf")],
                 "../cross_model_scores.parquet", "../property_layers.parquet", "../reproduction.parquet",
                 *[f"../figures/{f}.{e}" for f in CROSS_FIGURES for e in ("png", "pdf")]]:
        path = model / name
        assert path.is_file() and path.stat().st_size > 0, name


def test_demo_labels_and_scores(heads_run):
    model = heads_run / "results" / "heads" / "toy-clip"
    labels = pd.read_parquet(model / "labels_taxonomy.parquet")
    assert list(labels.columns) == ["layer", "head", "label", "confidence", "texts", "labeller"]
    assert sorted(set(labels["layer"])) == [2, 3] and len(labels) == 2 * 4  # the toy's last 2 of 3 layers, 4 heads
    assert set(labels["label"]) <= DEMO_PROPERTIES and (labels["labeller"] == "taxonomy").all()
    scores = pd.read_parquet(model / "scores.parquet")
    assert len(scores) == 1 and 0 <= scores["entanglement"].iloc[0] < 1 and 0 <= scores["association"].iloc[0] <= 1
    assert scores["n_agreement_heads"].iloc[0] == 0 and np.isnan(scores["agreement"].iloc[0])  # no published labels
    cross = pd.read_parquet(heads_run / "results" / "heads" / "cross_model_scores.parquet")
    assert cross["model"].tolist() == ["toy-clip"]
    layers = pd.read_parquet(heads_run / "results" / "heads" / "property_layers.parquet")
    assert layers["n_heads"].sum() == len(labels)


def test_demo_reproduction_report_says_the_toy_is_not_the_papers_model(heads_run):
    """The heads reproduction report runs on the demo: it states that the toy is not one of the paper's models,
    leaves the paper's column empty for it, judges the claims on the paper's own scores only, and says so in the
    figure's title (the log) and the table's metadata."""
    from clip_interp.io import read_parquet_metadata

    path = heads_run / "results" / "heads" / "reproduction.parquet"
    table = pd.read_parquet(path)
    setup = table[table["key"] == "setup.toy-clip"].iloc[0]
    assert setup["holds"] == False and setup["status"] == "not the paper's model"  # noqa: E712
    assert "not one of the paper's models" in setup["note"]
    scores = table[table["section"] == "scores"]
    assert len(scores) == 2 and scores["paper"].isna().all() and scores["holds"].isna().all()
    ours = pd.read_parquet(heads_run / "results" / "heads" / "toy-clip" / "scores.parquet").iloc[0]
    assert scores["ours"].tolist() == [ours["entanglement"], ours["association"]]
    claims = table[table["section"] == "claims"]
    assert claims.loc[claims["labeller"].isna(), "status"].eq("true").all()  # the paper's claims on its own numbers
    assert claims.loc[claims["labeller"] == "taxonomy", "status"].eq("not evaluable").all()
    assert table.loc[table["section"] == "figure_heads", "status"].eq("not evaluable").sum() == 8
    assert table.loc[table["key"] == "published_readings.reproduces", "status"].iloc[0] == "not evaluable"
    metadata = read_parquet_metadata(path)
    assert metadata["paper_models"] == [] and metadata["statement"].startswith("NOT the paper's models")
    log = (heads_run / "logs" / "heads_reproduction_report.log").read_text()
    assert "no configured model is one of the paper's (toy-clip)" in log

def test_demo_labels_judge_each_heads_textspan_texts_and_the_planted_check_runs(heads_run):
    """Each label row carries its own head's top TEXTSPAN texts in rank order (a wrong head would show), and the
    planted-structure check (README) gives every head a planted property from those texts."""
    from clip_interp.demo.decomposition_sets import planted_label_check

    model = heads_run / "results"
    labels = pd.read_parquet(model / "heads" / "toy-clip" / "labels_taxonomy.parquet")
    textspan = pd.read_parquet(model / "decomposition" / "toy-clip" / "textspan.parquet")
    n_texts = yaml.safe_load((heads_run / "config" / "demo.yaml").read_text())["heads"]["n_texts"]
    for row in labels.itertuples():
        own = textspan[(textspan["layer"] == row.layer) & (textspan["head"] == row.head)].sort_values("rank")
        assert list(row.texts) == own["text"].head(n_texts).tolist(), (row.layer, row.head)
    check = planted_label_check(labels)
    assert len(check) == len(labels) and check["kinds"].str.count(",").eq(n_texts - 1).all()
    assert check["planted"].isin(DEMO_PROPERTIES | {None}).all()


def test_demo_explorer_index_and_analyses(heads_run):
    from clip_interp.heads.index import HeadIndex
    from clip_interp.heads.vectors import INDEX_FILES

    manifest = json.loads((heads_run / "results" / "heads" / "toy-clip" / "explorer.json").read_text())
    assert manifest["root"] == "../../.." and manifest["layers"] == [2, 3] and manifest["image_set"] == "classification"
    index = HeadIndex.open(heads_run / "results", "toy-clip")
    assert set(manifest["index"]["files"]) == set(INDEX_FILES) and index.vectors.search.dtype == np.float16
    assert index.contributions.shape[:3] == (SMALL_DEMO["demo"]["synthetic"]["decomposition"]["n_classification"], 2, 4)
    analyses = heads_run / "results" / "heads" / "toy-clip" / "analyses"
    k = yaml.safe_load((heads_run / "config" / "demo.yaml").read_text())["heads"]["analyses"]["k"]
    for name in ("image_neighbours", "property_neighbours"):
        table = pd.read_parquet(analyses / f"{name}.parquet")
        keys = [c for c in table.columns if c.startswith("query") or c in ("layer", "head", "property")]
        groups = table.groupby(keys)
        assert (groups.size() == k).all() and groups["score"].is_monotonic_decreasing.all(), name
    firsts = pd.read_parquet(analyses / "image_neighbours.parquet").query("rank == 1")
    assert (firsts["row"] == firsts["query_row"]).all()  # an indexed image is its own nearest neighbour (cosine 1)
    assert np.allclose(firsts["score"], 1.0, atol=1e-4) and (firsts["paper_layer"] == firsts["layer"] - 1).all()
    by_property = pd.read_parquet(analyses / "property_neighbours.parquet")  # no app groups for the toy: taxonomy
    assert set(by_property["property_set"]) == {"taxonomy"} and set(by_property["similarity"]) == {"dot"}
    topic = pd.read_parquet(analyses / "topic_maps.parquet")
    assert (topic["scope"] == MODEL_SCOPE).any() and topic["patch_scores"].map(len).eq(64).all()  # an 8x8 patch grid
    contrast = pd.read_parquet(analyses / "contrastive_maps.parquet")
    pairs = contrast.pivot_table(index=["query_row", "layer", "head"], columns="direction", values="max_score")
    assert len(pairs) and set(pairs.columns) == {"a-b", "b-a"}


def test_six_model_dry_run_lists_every_models_heads_outputs(tmp_path, shared_data):
    workdir = copy_workflow(tmp_path / "wf")
    imagenet = tmp_path / "imagenet_val"
    imagenet.mkdir()
    published = shared_data / "clip_interpret"
    overrides = {"decomposition": {"sources": {"classification_images": {"url": str(imagenet)}}},
                 "heads": {"sources": {"published_labels": {"url": str(published / "head_labels.tsv")},
                                       "property_groups": {"url": str(published / "property_heads.tsv")}}}}
    config = write_config(workdir, "six_models.yaml", overrides)
    jobs = planned_jobs(snakemake(workdir, "--configfile", str(config), "-n"))
    assert jobs.get("heads_labels") == 12  # the taxonomy and published labellers of each model
    for rule in ("heads_scores", "heads_explorer_manifest", "heads_association_sheet", "heads_app_groups",
                 "heads_explorer_index",
                 *[f"heads_{a}" for a in ANALYSES]):
        assert jobs.get(rule) == 6, rule
    assert jobs.get("heads_cross_model") == 1 and jobs.get("cross_model_profiles") == 1
    assert jobs.get("heads_reproduction_report") == 1
    listed = snakemake(workdir, "--configfile", str(config), "-n", "--summary", check=False).stdout
    for model in SIX_MODELS:
        for name in ("labels_taxonomy.parquet", "labels_published.parquet", "scores.parquet", "explorer.json",
                     "association_sheet.tsv", "analyses/topic_maps.parquet", "figures/property_neighbours.png"):
            assert f"results/heads/{model}/{name}" in listed, (model, name)
        assert f"results/negation/{model}/" in listed and f"results/decomposition/{model}/textspan.parquet" in listed
    assert "results/heads/reproduction.parquet" in listed and "results/heads/figures/reproduction.png" in listed


@pytest.mark.parametrize("override, message", [
    ({"studies": ["negation", "heads"]}, "`studies` lists heads but not decomposition"),
    ({"decomposition": {"textspan": {"n_layers": 1}}},
     "`decomposition.textspan.n_layers` (1) is smaller than `heads.n_layers` (2)"),
    ({"heads": {"taxonomy": "resources/heads/nope.yaml"}},
     "`heads.taxonomy` is 'resources/heads/nope.yaml', which does not exist"),
    ({"heads": {"association": {"min_matches": 6}}}, "`heads.association.min_matches` (6) exceeds"),
    ({"heads": {"labellers": ["llm"]}},
     '`heads.labellers` is ["llm"]; it must contain an item matching {"const": "taxonomy"}'),
    ({"heads": {"labellers": ["taxonomy", "llm"], "llm": {"examples": "resources/heads/llm_examples.yaml"}}},
     "`heads.llm.examples` with `heads.taxonomy`: resources/heads/llm_examples.yaml: examples[0].label 'locations' "
     "names no property of the taxonomy"),
    ({"heads": {"labellers": ["taxonomy", "published"]}},
     "`heads.labellers` lists published, but model 'toy-clip' (open_clip ToyCLIP None) is not one of the six that "
     "CLIP-InterpreT labelled (open_clip, with their weights: ViT-B-32 openai;"),
    ({"heads": {"llm": {"vocabulary": "free"}}}, "`heads.llm.vocabulary`"),
    ({"heads": {"association": {"judgements": "judged/{model}.tsv"}}},
     "`heads.association.judgements` is 'judged/toy-clip.tsv', which does not exist"),
    ({"heads": {"association": {"judgements": "results/heads/{model}/association_sheet.tsv"}}},
     "the judging sheet the workflow writes for model 'toy-clip' (and would write over); fill a copy elsewhere"),
    ({"heads": {"analyses": {"property_set": "gpt"}}},
     "`heads.analyses.property_set` is 'gpt', neither auto, app nor a labeller of `heads.labellers` (taxonomy)"),
    ({"heads": {"analyses": {"property_set": "app"}}},
     "`heads.analyses.property_set: app` needs CLIP-InterpreT's property groups, which exist only for its six models; "
     "model toy-clip is not one of them"),
    ({"heads": {"analyses": {"similarity": "l2"}}}, "similarity"),
])
def test_heads_settings_are_checked_at_start(tmp_path, override, message):
    workdir = copy_workflow(tmp_path / "wf")
    config = write_config(workdir, "demo.yaml", override)
    proc = snakemake(workdir, "--configfile", str(config), "-n", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr


@pytest.mark.parametrize("vocabulary, mapped", [("open", True), ("closed", False)])
def test_open_llm_labels_are_mapped_before_the_scores(tmp_path, vocabulary, mapped):
    """With `heads.llm.vocabulary: open` (the default) the LLM labels' mapping onto the taxonomy is a target and an
    input of the scores; with `closed` it is not planned."""
    workdir = copy_workflow(tmp_path / "wf")
    config = write_config(workdir, "demo.yaml", {"heads": {"labellers": ["taxonomy", "llm"],
                                                           "llm": {"vocabulary": vocabulary}}})
    proc = snakemake(workdir, "--configfile", str(config), "-n", "results/heads/toy-clip/scores.parquet")
    jobs, out = planned_jobs(proc), proc.stdout + proc.stderr
    assert jobs.get("heads_labels") == 2 and jobs.get("heads_scores") == 1
    assert (jobs.get("heads_llm_label_mapping") == 1) is mapped
    assert ("results/heads/toy-clip/llm_label_mapping.parquet" in out) is mapped


LLM_CLOSED = "heads={labellers: [taxonomy, llm], llm: {vocabulary: closed}}"


def test_llm_labeller_through_the_workflow_against_a_local_chat_server(demo_run_copy, monkeypatch):
    """`heads.labellers: [taxonomy, llm]` (closed vocabulary) with the endpoint from the environment: the LLM rule
    writes the default labeller's table format, one request per head; a forced re-run answers from the cache
    without a request."""
    from test_heads_llm import ChatServer

    heads_run, config = demo_run_copy
    model = heads_run / "results" / "heads" / "toy-clip"
    taxonomy = pd.read_parquet(model / "labels_taxonomy.parquet")
    answers = ["colours", "Shapes", "positions", "sizes", "backgrounds", "colours", "shapes", "colours"]
    server = ChatServer([("answer", a) for a in answers])
    monkeypatch.setenv("CLIP_INTERP_LLM_BASE_URL", server.base_url)
    monkeypatch.setenv("CLIP_INTERP_LLM_MODEL", "canned-model")
    config = str(config)
    target = "results/heads/toy-clip/labels_llm.parquet"
    try:
        snakemake(heads_run, target, "--configfile", config, "--config", LLM_CLOSED)
        assert len(server.requests) == len(taxonomy) == len(answers)
        llm = pd.read_parquet(model / "labels_llm.parquet")
        assert list(llm.columns) == list(taxonomy.columns) and (llm.dtypes == taxonomy.dtypes).all()
        assert llm[["layer", "head"]].equals(taxonomy[["layer", "head"]]) and (llm["labeller"] == "llm").all()
        assert llm["label"].tolist() == [a.lower() for a in answers]
        assert [list(t) for t in llm["texts"]] == [list(t) for t in taxonomy["texts"]]
        snakemake(heads_run, target, "--configfile", config, "--config", LLM_CLOSED, "--forcerun", "heads_labels")
        assert len(server.requests) == len(answers)
        assert pd.read_parquet(model / "labels_llm.parquet").equals(llm)
    finally:
        server.close()


LLM_OPEN = "heads={labellers: [taxonomy, llm], llm: {vocabulary: open}}"


def test_open_vocabulary_llm_labels_through_the_workflow(demo_run_copy, monkeypatch):
    """`heads.llm.vocabulary: open` (the default, the paper's way) against a local chat server: the labels are the
    LLM's free-form answers (end punctuation stripped); the scores count them normalised (a hand count here) and
    mapped onto the taxonomy by the model's text tower, and the mapping table is written."""
    from test_heads_llm import ChatServer

    from clip_interp.heads.taxonomy import load_taxonomy
    from clip_interp.heads.vocabulary import normalise_free_label

    heads_run, config = demo_run_copy
    model = heads_run / "results" / "heads" / "toy-clip"
    n_heads = len(pd.read_parquet(model / "labels_taxonomy.parquet"))
    answers = ["Bright colours", "colour.", "Shapes", "Night-scenes", "Timepieces", "timepiece", "Positions", "Colours"]
    assert n_heads == len(answers)
    server = ChatServer([("answer", f"Label: {a}") for a in answers])
    monkeypatch.setenv("CLIP_INTERP_LLM_BASE_URL", server.base_url)
    monkeypatch.setenv("CLIP_INTERP_LLM_MODEL", "canned-model")
    try:
        snakemake(heads_run, "results/heads/toy-clip/scores.parquet", "--configfile", str(config), "--config", LLM_OPEN)
    finally:
        server.close()
    assert len(server.requests) == n_heads
    labels = ["Bright colours", "colour", "Shapes", "Night-scenes", "Timepieces", "timepiece", "Positions", "Colours"]
    assert pd.read_parquet(model / "labels_llm.parquet")["label"].tolist() == labels  # end punctuation stripped
    mapping = pd.read_parquet(model / "llm_label_mapping.parquet")
    assert list(mapping.columns) == ["label", "normalised", "property", "similarity"]
    assert set(mapping["label"]) == set(labels)
    taxonomy = load_taxonomy(heads_run / "resources" / "heads" / "taxonomy_demo.yaml")
    assert set(mapping["property"]) <= set(taxonomy.names)
    row = pd.read_parquet(model / "scores.parquet").set_index("labeller").loc["llm"]
    assert row["label_vocabulary"] == "open" and row["mapped_by"] == "text embedding"
    # bright colour, colour, shape, night scene, timepiece, position
    distinct = {normalise_free_label(a) for a in answers}
    assert len(distinct) == 6 and row["entanglement"] == pytest.approx((n_heads - 6) / n_heads)
