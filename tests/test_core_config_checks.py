"""The config checks across study sections that the Snakefile runs at start (clip_interp.config), on the demo
config without Snakemake: every message names the config key, the value and what is allowed."""

import json

import pytest
import yaml
from workflow_runs import REPO, deep_merge

from clip_interp.config import (
    PAPER_HEADS_FILE,
    description_count,
    head_list_problems,
    heads_missing_files,
    heads_problems,
    image_row_problems,
    local_decomposition_problems,
    open_clip_model_config,
    produced_by_workflow,
    vision_tower_shape,
)
from clip_interp.demo.toy_clip import DEFAULT_CONFIG

TOY_CONFIG = "results/models/toy-clip/ToyCLIP.json"
WRITTEN = {TOY_CONFIG: DEFAULT_CONFIG}  # the toy CLIP (3 image blocks of 4 heads), written by the workflow
VIT_B_32 = {"clip": {"backend": "open_clip", "name": "ViT-B-32"}}


@pytest.fixture
def demo(monkeypatch):
    """The demo config, with the repository as the working directory (its paths are relative to it)."""
    monkeypatch.chdir(REPO)
    return yaml.safe_load((REPO / "config" / "demo.yaml").read_text())


def test_the_demo_passes_both_sections(demo):
    assert local_decomposition_problems(demo, WRITTEN) == []
    assert heads_problems(demo, written_configs=WRITTEN) == []


def test_vision_tower_shapes_are_read_without_weights(tmp_path):
    assert vision_tower_shape(VIT_B_32["clip"]) == (12, 12)
    assert vision_tower_shape({"backend": "open_clip", "name": "ViT-L-14"}) == (24, 16)
    assert vision_tower_shape({"backend": "open_clip", "name": "RN50"}) is None  # a ResNet has no heads to list
    toy = {"backend": "open_clip", "name": "ToyCLIP", "config": TOY_CONFIG}
    assert vision_tower_shape(toy) is None  # not yet written
    assert vision_tower_shape(toy, {"./" + TOY_CONFIG: DEFAULT_CONFIG}) == (3, 4)
    assert open_clip_model_config(toy, WRITTEN) is DEFAULT_CONFIG
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"vision_config": {"num_hidden_layers": 6, "num_attention_heads": 8}}))
    assert vision_tower_shape({"backend": "hf", "path": str(hf)}) == (6, 8)
    assert vision_tower_shape({"backend": "hf", "random_init": True}) == (12, 12)
    assert vision_tower_shape({"backend": "hf", "name": "openai/clip-vit-base-patch32"}) is None  # a hub id


def test_head_lists_are_checked_against_the_image_tower():
    assert head_list_problems("decomposition.neighbours.heads", [[12, 11], [-12, 0]], VIT_B_32) == []
    assert head_list_problems("decomposition.neighbours.heads", "auto", VIT_B_32) == []
    lines = head_list_problems("decomposition.neighbours.heads", [[99, 0], [1, 12], [2, 3]], VIT_B_32)
    assert lines == [("`decomposition.neighbours.heads` is [[99, 0], [1, 12], [2, 3]], but [[99, 0], [1, 12]] name "
                      "no head of the image tower of model `clip`: allowed are layers 1..12, or counted from the end "
                      "-1..-12, and heads 0..11")]
    lines = head_list_problems("heads.analyses.heads", [[8, 0], [-4, 0]], VIT_B_32, last_layers=4)
    assert lines == [("`heads.analyses.heads` is [[8, 0], [-4, 0]], but [[8, 0]] name no head of the image tower "
                      "of model `clip`: allowed are layers 9..12 (the last 4), or counted from the end -1..-4, and "
                      "heads 0..11")]


@pytest.mark.parametrize("override, expected", [
    ({"neighbours": {"heads": [[99, 0]]}},
     ("`decomposition.neighbours.heads` is [[99, 0]], but [[99, 0]] name no head of the image tower of model "
      "`toy-clip`: allowed are layers 1..3")),
    ({"spurious": {"heads": [[1, 4]]}}, "`decomposition.spurious.heads` is [[1, 4]], but [[1, 4]] name no head"),
    ({"textspan": {"texts_per_head": 30, "rank": 20}}, "`decomposition.textspan.texts_per_head` (30) exceeds"),
    ({"sources": {"segmentation": {"url": "/nonexistent/gtsegs_ijcv.mat"}}},
     "`decomposition.sources.segmentation.url` is '/nonexistent/gtsegs_ijcv.mat', which does not exist"),
    ({"sources": {"classification_images": {"url": "https://example.org/val.tar"}}},
     "`decomposition.sources.classification_images.url` is 'https://example.org/val.tar'; the classification"),
    ({"sources": {"place_descriptions": None}}, "`decomposition.spurious.heads` is 'auto', which needs"),
    ({"textspan": {"sweep": {"texts_per_head": [5, 25]}}},
     "`decomposition.textspan.sweep.texts_per_head` (largest 25) exceeds `decomposition.textspan.rank` (20)"),
    ({"sources": {"words": {"url": "/nonexistent/google_3498_english.txt"}}},
     "`decomposition.sources.words.url` is '/nonexistent/google_3498_english.txt', which does not exist"),
    ({"spurious": {"heads": "paper"}},
     ("`decomposition.spurious.heads` is 'paper', but the paper chose Waterbirds heads only for ViT-L-14 "
      "(laion2b_s32b_b82k), ViT-H-14 (laion2b_s32b_b79k), ViT-B-16 (laion2b_s34b_b88k); model `toy-clip` "
      "('ToyCLIP', no pretrained tag) has none: set `decomposition.spurious.heads_by_model.toy-clip` to auto")),
    ({"spurious": {"heads": "paper", "heads_by_model": {"toy-clip": [[9, 0]]}}},
     "`decomposition.spurious.heads_by_model.toy-clip` is [[9, 0]], but [[9, 0]] name no head"),
    ({"spurious": {"heads_by_model": {"toy": "auto"}}},
     "`decomposition.spurious.heads_by_model` names model `toy`, which `models` does not list; use one of"),
    ({"spurious": {"heads": "paper", "paper_heads_file": "resources/nope.tsv"}},
     "`decomposition.spurious.paper_heads_file`: published head table 'resources/nope.tsv' not found"),
], ids=["neighbour-heads", "spurious-heads", "rank", "missing-source", "remote-images", "auto-needs-places",
        "sweep-rank", "missing-pool", "paper-heads-missing", "per-model-list", "per-model-unknown",
        "paper-file-missing"])
def test_decomposition_problems_name_the_key(demo, override, expected):
    config = deep_merge(demo, {"decomposition": override})
    config["decomposition"]["sources"] = {k: v for k, v in config["decomposition"]["sources"].items() if v}
    lines = local_decomposition_problems(config, WRITTEN)
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_paper_heads_are_read_in_the_papers_numbering_plus_one(demo):
    from clip_interp.head_selection import published_head_pairs, published_heads_of, read_published_heads

    table = read_published_heads(REPO / PAPER_HEADS_FILE)
    large = published_heads_of(table, {"backend": "open_clip", "name": "ViT-L-14", "pretrained": "laion2b_s32b_b82k"})
    assert len(large) == 6 + 10 and {row.property for row in large} == {"geography", "setting"}
    pairs = published_head_pairs(large)
    assert len(pairs) == 15 and pairs[:3] == [(22, 1), (23, 12), (23, 13)]  # paper (21, 1), (22, 12), (22, 13)
    assert all(row.layer == row.paper_layer + 1 for row in table)
    huge = published_head_pairs(published_heads_of(table, {"backend": "open_clip", "name": "ViT-H-14",
                                                           "pretrained": "laion2b_s32b_b79k"}))
    assert huge == [(32, 12), (31, 11), (30, 4), (32, 8), (31, 15), (31, 12), (31, 6), (30, 14), (30, 8)]
    base = published_head_pairs(published_heads_of(table, {"backend": "open_clip", "name": "ViT-B-16",
                                                           "pretrained": "laion2b_s34b_b88k"}))
    assert base == [(12, 3), (11, 11), (11, 10), (10, 8), (10, 6), (12, 6), (12, 0)]
    assert published_heads_of(table, {"backend": "open_clip", "name": "ViT-B-16", "pretrained": "openai"}) == []


def test_the_paper_heads_table_errors_name_the_file_and_line(tmp_path):
    from clip_interp.errors import InputError
    from clip_interp.head_selection import read_published_heads

    bad = tmp_path / "heads.tsv"
    bad.write_text("# a comment\narchitecture\tpretrained\tproperty\tpaper_layer\thead\nViT-B-16\tx\tsetting\tten\t3\n")
    with pytest.raises(InputError, match="line 3: paper_layer 'ten' and head '3' must be integers"):
        read_published_heads(bad)
    bad.write_text("architecture\tproperty\tpaper_layer\thead\n")
    with pytest.raises(InputError, match=r"lacks the columns \['pretrained'\]"):
        read_published_heads(bad)


def test_the_shipped_configs_run_the_paper_heads_where_the_model_has_them(demo):
    from clip_interp.config import spurious_heads_problems, spurious_heads_setting

    for name, paper in (("config.yaml", set()), ("six_models.yaml", {"laion2b-ViT-B-16", "laion2b-ViT-L-14"})):
        config = yaml.safe_load((REPO / "config" / name).read_text())
        assert spurious_heads_problems(config) == [], name
        assert {m for m in config["models"] if spurious_heads_setting(config, m) == "paper"} == paper, name
        assert config["decomposition"]["spurious"]["templates"] == "openai_imagenet", name
        assert config["decomposition"]["spurious"]["ablation"] == "paper", name
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    huge = {"backend": "open_clip", "name": "ViT-H-14", "pretrained": "laion2b_s32b_b79k"}
    config["models"]["laion2b-ViT-H-14"] = huge
    assert spurious_heads_problems(config) == [] and spurious_heads_setting(config, "laion2b-ViT-H-14") == "paper"


def test_a_local_description_pool_smaller_than_texts_per_head_is_named(demo, tmp_path):
    pool = tmp_path / "pool.txt"
    pool.write_text("a red circle\n\n  a blue square  \na green triangle\n")
    assert description_count(pool) == 3
    config = deep_merge(demo, {"decomposition": {"sources": {"descriptions": {"url": str(pool)}}}})
    assert local_decomposition_problems(config, WRITTEN) == [
        (f"`decomposition.sources.descriptions.url` is {str(pool)!r}, a pool of 3 descriptions (non-empty lines), "
         "fewer than `decomposition.textspan.texts_per_head` (5); give a larger pool or set texts_per_head to at "
         "most 3"),
        (f"`decomposition.sources.descriptions.url` is {str(pool)!r}, a pool of 3 descriptions (non-empty lines), "
         "fewer than `decomposition.textspan.sweep.texts_per_head` (largest 20); give a larger pool or set every K "
         "to at most 3")]
    assert produced_by_workflow("results/synthetic/decomposition/descriptions.txt")  # the demo's: checked by its rule


def test_the_sweep_checks_every_local_text_pool(demo, shared_data, tmp_path):
    words = shared_data / "text_descriptions" / "google_3498_english.txt"
    descriptions = shared_data / "text_descriptions" / "image_descriptions_general.txt"
    assert description_count(words) == description_count(descriptions) == 3498  # the paper's two pools
    paper = {"textspan": {"rank": 80, "texts_per_head": 20, "sweep": {"texts_per_head": [10, 20, 30, 40, 50, 60]}},
             "sources": {"descriptions": {"url": str(descriptions)}, "words": {"url": str(words)}}}
    assert local_decomposition_problems(deep_merge(demo, {"decomposition": paper}), WRITTEN) == []
    small = tmp_path / "words.txt"
    small.write_text("red\ncircle\n\nwater\n")
    config = deep_merge(demo, {"decomposition": deep_merge(paper, {"sources": {"words": {"url": str(small)}}})})
    assert local_decomposition_problems(config, WRITTEN) == [
        (f"`decomposition.sources.words.url` is {str(small)!r}, a pool of 3 texts (non-empty lines), fewer than "
         "`decomposition.textspan.sweep.texts_per_head` (largest 60); give a larger pool or set every K to at most 3")]


@pytest.mark.parametrize("override, expected", [
    ({"studies": ["negation", "heads"]}, "`studies` lists heads but not decomposition"),
    ({"decomposition": {"textspan": {"n_layers": 1}}},
     "`decomposition.textspan.n_layers` (1) is smaller than `heads.n_layers` (2)"),
    ({"heads": {"n_texts": 6}}, "`heads.n_texts` (6) exceeds `decomposition.textspan.texts_per_head` (5)"),
    ({"heads": {"association": {"min_matches": 6}}}, "`heads.association.min_matches` (6) exceeds"),
    ({"heads": {"taxonomy": "resources/heads/nope.yaml"}},
     "`heads.taxonomy` is 'resources/heads/nope.yaml', which does not exist"),
    ({"heads": {"analyses": {"heads": [[1, 0]]}}},
     ("`heads.analyses.heads` is [[1, 0]], but [[1, 0]] name no head of the image tower of model `toy-clip`: "
      "allowed are layers 2..3 (the last 2)")),
    ({"heads": {"analyses": {"property_set": "llm"}}},
     "`heads.analyses.property_set` is 'llm', neither auto, app nor a labeller of `heads.labellers` (taxonomy)"),
], ids=["needs-decomposition", "textspan-layers", "n-texts", "min-matches", "taxonomy", "analysed-layers",
        "property-set"])
def test_heads_problems_name_the_key(demo, override, expected):
    lines = heads_problems(deep_merge(demo, override), written_configs=WRITTEN)
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_heads_files_published_labels_only_when_a_model_has_them(demo):
    config = deep_merge(demo, {"heads": {"sources": {"published_labels": {"url": "/no/such/labels.tsv"}}}})
    assert heads_missing_files(config) == []
    assert heads_missing_files(config, uses_published_labels=True) == [
        ("heads.sources.published_labels.url", "/no/such/labels.tsv")]
    config = deep_merge(demo, {"heads": {"labellers": ["taxonomy", "llm"], "llm": {"examples": "nope.yaml"}}})
    assert heads_missing_files(config) == [("heads.llm.examples", "nope.yaml")]


def test_heads_judgements_file_of_each_model(demo, tmp_path):
    (tmp_path / "toy-clip.tsv").write_text("model\n")
    other = {"backend": "open_clip", "name": "ViT-B-32", "pretrained": "openai"}
    config = deep_merge(demo, {"models": {"other": other},
                               "heads": {"association": {"judgements": f"{tmp_path}/{{model}}.tsv"}}})
    assert heads_missing_files(config) == [("heads.association.judgements", f"{tmp_path}/other.tsv")]
    config["heads"]["association"]["judgements"] = str(tmp_path / "toy-clip.tsv")  # one file for every model
    assert heads_missing_files(config) == []


def test_image_rows_beyond_the_list_are_named():
    assert image_row_problems("heads.analyses.images", [0, 1], 45, "list.parquet") == []
    assert image_row_problems("heads.analyses.images", [0, 100000], 45, "list.parquet") == [
        ("`heads.analyses.images` is [0, 100000], but the image list list.parquet has 45 images, so rows [100000] "
         "do not exist; allowed are rows 0..44")]
