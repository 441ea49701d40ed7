"""The head index and the five analyses of the heads study on a tiny random-init model, with their error paths."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clip_interp.contribution_store import write_decomposition
from clip_interp.contributions import decompose
from clip_interp.errors import InputError
from clip_interp.heads import analyses
from clip_interp.heads.index import HeadIndex, build_manifest, manifest_path, read_manifest
from clip_interp.images import load_images

N_IMAGES = 6
LAYERS = [2, 3]


def _picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, size=(40, 48, 3), dtype=np.uint8))


def _labels(n_heads: int) -> pd.DataFrame:
    rows = [{"layer": layer, "head": head, "label": "colours" if (layer + head) % 2 else "shapes", "confidence": 0.6,
             "texts": [f"text {layer} {head}"], "labeller": "taxonomy"} for layer in LAYERS for head in range(n_heads)]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def index(tiny_clip, tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("heads_index")
    paths = []
    for i in range(N_IMAGES):
        paths.append(root / "images" / f"img{i}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        _picture(i).save(paths[-1])
    keys = [p.stem for p in paths]
    write_decomposition(tiny_clip, paths, keys, root / "store.h5", model_id="toy", dtype="float32", batch_size=4)
    image_table = pd.DataFrame({"key": keys, "path": [f"images/{p.name}" for p in paths], "label": 0})
    image_table.to_parquet(root / "images.parquet")
    pd.DataFrame({"layer": [3], "head": [0], "rank": [1], "text": ["a"]}).to_parquet(root / "textspan.parquet")
    n_heads = tiny_clip.vision.n_heads
    _labels(n_heads).to_parquet(root / "labels_taxonomy.parquet")
    manifest = build_manifest(model="toy", spec=tiny_clip.spec, image_set="classification", store="store.h5",
                              images="images.parquet", textspan="textspan.parquet",
                              labels={"taxonomy": "labels_taxonomy.parquet"}, scores="scores.parquet", layers=LAYERS,
                              n_layers=tiny_clip.vision.n_layers, n_heads=n_heads, n_images=N_IMAGES,
                              convention="uniform", root="../../..")
    manifest_path(root / "results", "toy").parent.mkdir(parents=True)
    manifest_path(root / "results", "toy").write_text(json.dumps(manifest))
    # root/results/heads/toy/explorer.json: "../../.." is root
    return HeadIndex.open(root / "results", "toy", loaded_model=tiny_clip)


def test_index_holds_the_stores_contributions_of_the_analysed_layers(index, tiny_clip):
    assert index.contributions.shape == (N_IMAGES, len(LAYERS), tiny_clip.vision.n_heads,
                                         tiny_clip.vision.proj.shape[1])
    pixels = load_images(list(index.images["path"]), tiny_clip.preprocess)
    expected = decompose(tiny_clip.vision, pixels, convention="uniform").unit().heads
    torch.testing.assert_close(index.head_matrix(3, 1), expected[:, 2, 1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(index.head_norms(2, 0), expected[:, 1, 0].norm(dim=1), atol=1e-5, rtol=1e-5)
    assert index.properties() == ["colours", "shapes"] and index.head_label(2, 1) == "colours"


def test_an_indexed_image_is_its_own_nearest_neighbour_with_cosine_one(index):
    for row in (0, 4):
        found = analyses.head_image_neighbours(index, Image.open(index.images["path"][row]), 3, 2, k=3)
        assert list(found.columns) == ["rank", "row", "image", "path", "score"]
        assert found["row"].iloc[0] == row and found["image"].iloc[0] == f"img{row}"
        assert found["score"].iloc[0] == pytest.approx(1.0, abs=1e-5)
        assert found["rank"].tolist() == [1, 2, 3] and found["score"].is_monotonic_decreasing


def test_property_neighbours_rank_by_the_mean_of_the_heads_of_the_property(index):
    query = Image.open(index.images["path"][2])
    found = analyses.property_neighbours(index, query, "colours", k=N_IMAGES + 5, similarity="cosine")
    assert len(found) == N_IMAGES and found["row"].iloc[0] == 2
    assert found["score"].iloc[0] == pytest.approx(1.0, abs=1e-5)
    heads = analyses.property_heads(index, "colours")
    assert heads == [(2, 1), (2, 3), (3, 0), (3, 2)]
    mean = sum(index.head_matrix(layer, head) for layer, head in heads) / len(heads)
    expected = torch.nn.functional.cosine_similarity(mean, mean[2:3], dim=1).double()
    np.testing.assert_allclose(found.sort_values("row")["score"], expected.numpy(), atol=1e-5)
    by_dot = analyses.property_neighbours(index, query, "colours", k=N_IMAGES)  # the app's default
    np.testing.assert_allclose(by_dot.sort_values("row")["score"], (mean @ mean[2]).double().numpy(), rtol=1e-4,
                               atol=1e-9)
    assert by_dot["score"].is_monotonic_decreasing


def test_text_neighbours_score_the_cosine_with_the_text_embedding(index):
    found = analyses.head_text_neighbours(index, "a red circle", 2, 3, k=4)
    text = analyses.text_embedding(index, "a red circle")
    expected = torch.nn.functional.cosine_similarity(index.head_matrix(2, 3), text[None], dim=1).double()
    assert found["row"].tolist() == torch.argsort(-expected, stable=True)[:4].tolist()
    np.testing.assert_allclose(found["score"], expected.numpy()[found["row"].to_numpy()], atol=1e-5)


def test_the_all_heads_topic_scores_are_the_sum_of_the_per_head_scores(index, tiny_clip):
    image = _picture(11)
    texts = ["a red circle", "a blue square"]
    per_head = torch.stack([analyses.topic_scores(index, image, texts, layer, head)
                            for layer in range(1, tiny_clip.vision.n_layers + 1) for head in range(index.n_heads)])
    layer_two = analyses.topic_scores(index, image, texts, 2, None)
    everything = analyses.topic_scores(index, image, texts, None, None)
    torch.testing.assert_close(everything, per_head.sum(0), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(layer_two, per_head[index.n_heads:2 * index.n_heads].sum(0), atol=1e-5, rtol=1e-4)
    assert everything.shape == (2, int(np.prod(tiny_clip.vision.grid_size)))
    topic = analyses.head_topic_map(index, image, "a red circle", 3, 1)
    assert topic.shape == (tiny_clip.image_size,) * 2 and topic.min() == 0.0 and topic.max() == pytest.approx(1.0)


def test_contrastive_maps_are_antisymmetric(index):
    image = _picture(12)
    a_minus_b, b_minus_a = analyses.contrastive_scores(index, image, "a red circle", "a blue square", 3, 0)
    torch.testing.assert_close(a_minus_b, -b_minus_a)
    both = analyses.topic_scores(index, image, ["a red circle", "a blue square"], 3, 0)
    torch.testing.assert_close(a_minus_b, both[0] - both[1])
    map_a, map_b = analyses.contrastive_maps(index, image, "a red circle", "a blue square", 3, 0)
    np.testing.assert_allclose(map_a + map_b, 1.0, atol=1e-5)


@pytest.mark.parametrize("call, message", [
    (lambda ix, im: analyses.head_image_neighbours(ix, im, 3, 99, 3), "head 99 is outside model toy: heads are 0..3"),
    (lambda ix, im: analyses.head_image_neighbours(ix, im, 9, 0, 3), "layer 9 is outside model toy: layers are 1..3"),
    (lambda ix, im: analyses.head_image_neighbours(ix, im, 1, 0, 3), r"layer 1 is not indexed .* \[2, 3\]"),
    (lambda ix, im: analyses.head_text_neighbours(ix, "  ", 3, 0, 3), "query text must be a non-empty string"),
    (lambda ix, im: analyses.head_text_neighbours(ix, "x", 3, 0, 0), "k must be an integer of at least 1, got 0"),
    (lambda ix, im: analyses.property_neighbours(ix, im, "animals", 3), "property 'animals' in property set "
                                                                         "'taxonomy'; its properties: colours, shapes"),
    (lambda ix, im: analyses.property_neighbours(ix, im, "colours", 3, property_set="llm"),
     "property set 'llm' does not exist for model toy; its property sets: taxonomy"),
    (lambda ix, im: analyses.property_neighbours(ix, im, "colours", 3, similarity="l2"),
     "similarity 'l2' is not one of dot, cosine"),
    (lambda ix, im: analyses.head_topic_map(ix, b"not an image", "x", 3, 0), "must be a PIL image, got bytes"),
    (lambda ix, im: analyses.head_topic_map(ix, im, "x", None, 1), "head 1 needs a layer"),
])
def test_bad_queries_name_the_bad_value(index, call, message):
    with pytest.raises(InputError, match=message):
        call(index, _picture(0))


def test_manifest_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="run the heads study"):
        HeadIndex.open(tmp_path, "nomodel")
    path = manifest_path(tmp_path, "m")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(InputError, match=f"{path} is not valid JSON"):
        read_manifest(path)
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(InputError, match="has format 'other'"):
        read_manifest(path)
    path.write_text(json.dumps({"format": "clip_interp.heads.explorer/1", "model": "m"}))
    with pytest.raises(InputError, match="lacks"):
        read_manifest(path)


def test_planted_property_is_the_most_named_kind():
    from clip_interp.demo.decomposition_sets import GENERAL_DESCRIPTIONS, planted_property

    general = GENERAL_DESCRIPTIONS[0]
    assert planted_property(["Some squares.", "There is a red thing.", general, "Something blue."]) == "colours"
    assert planted_property([general, "Some squares.", "Something blue."]) == "shapes"  # a tie: the earlier text
    assert planted_property([general]) is None


# --------------------------------------------------------------------------- the rules' steps


def test_analysed_layers_and_the_textspan_they_need():
    from clip_interp.heads.steps import analysed_layers, analysed_textspan

    assert analysed_layers(12, 4) == [9, 10, 11, 12] and analysed_layers(3, 4) == [1, 2, 3]
    textspan = pd.DataFrame({"layer": [11, 11, 12], "head": [0, 0, 0], "rank": [2, 1, 1], "text": ["b", "a", "c"]})
    assert analysed_textspan(textspan, [11, 12], "t.parquet")["text"].tolist() == ["a", "b", "c"]
    with pytest.raises(InputError,
                       match=r"t.parquet has no heads of layers \[9, 10\].*decomposition.textspan.n_layers"):
        analysed_textspan(textspan, [9, 10, 11, 12], "t.parquet")


def test_query_heads_and_rows(index):
    import dataclasses

    from clip_interp.heads.steps import query_heads, query_properties, query_rows

    labels = _labels(index.n_heads).assign(confidence=[0.2, 0.8, 0.8, 0.4, 0.6, 0.2, 0.6, 0.2])
    relabelled = dataclasses.replace(index, labels={"taxonomy": labels}, _cache={})
    assert query_heads(relabelled, "auto") == [(2, 1), (3, 0)]  # largest confidence per layer, ties to the lower head
    assert query_heads(index, [[-1, 2], [2, 0]]) == [(3, 2), (2, 0)]
    with pytest.raises(InputError, match=r"`heads.analyses.heads` has \[1, 0\].*analysed layers \[2, 3\]"):
        query_heads(index, [[1, 0]])
    with pytest.raises(InputError, match=r"`heads.analyses.images` has rows \[6\].*rows 0..5"):
        query_rows([0, 6], N_IMAGES)
    assert query_properties(index, ["shapes", "animals"]) == (["shapes"], ["animals"])


def test_every_analysis_has_one_step():
    from clip_interp.heads import ANALYSES
    from clip_interp.heads.steps import ANALYSIS_STEPS

    assert sorted(ANALYSIS_STEPS) == sorted(ANALYSES) and len(ANALYSES) == 5


SETTINGS = {"images": [1], "heads": [[3, 1]], "property_set": "auto", "similarity": "cosine", "properties": "auto",
            "texts": ["a red circle"], "contrastive": [["a red circle", "a blue square"]], "k": 3}


@pytest.mark.parametrize("analysis, n_rows", [("property_neighbours", 2 * 3), ("image_neighbours", 3),
                                              ("text_neighbours", 3), ("topic_maps", 2), ("contrastive_maps", 4)])
def test_each_analysis_writes_its_table_and_grid(index, tmp_path, analysis, n_rows):
    from clip_interp.heads.steps import run_analysis

    paths = [tmp_path / f"{analysis}.png", tmp_path / f"{analysis}.pdf"]
    table, metadata = run_analysis(analysis, index, SETTINGS, paths)
    assert len(table) == n_rows and all(p.stat().st_size > 0 for p in paths)
    assert metadata["heads"] == [[3, 1]] and metadata["query_rows"] == [1]
    if "query_row" in table and "rank" in table:
        firsts = table[table["rank"] == 1]
        assert (firsts["row"] == 1).all() and np.allclose(firsts["score"], 1.0, atol=1e-5)
    if "path" in table:  # as the image table holds them: relative to the workflow's folder, not where it ran
        assert table["path"].tolist() == [f"images/img{row}.png" for row in table["row"]]


def test_map_tables_name_the_model_scope_with_null_layer_and_head(index, tmp_path):
    from clip_interp.heads.steps import HEAD_SCOPE, MODEL_SCOPE, run_analysis

    for analysis in ("topic_maps", "contrastive_maps"):
        table, _ = run_analysis(analysis, index, SETTINGS, [tmp_path / f"{analysis}.png"])
        heads = table[table["scope"] == HEAD_SCOPE]
        model = table[table["scope"] == MODEL_SCOPE]
        assert set(table["scope"]) == {HEAD_SCOPE, MODEL_SCOPE} and len(heads) == len(model)
        assert heads[["layer", "head"]].values.tolist() == [[3, 1]] * len(heads)
        assert model["layer"].isna().all() and model["head"].isna().all()
        assert str(table["layer"].dtype) == "Int64" and list(table.columns).index("scope") + 1 == list(
            table.columns).index("layer")


def test_texts_textspan_runs_each_heads_own_textspan_texts(index, tmp_path):
    from clip_interp.heads.steps import HEAD_SCOPE, MODEL_SCOPE, run_analysis

    settings = {**SETTINGS, "heads": [[3, 0]], "texts": "textspan"}  # the fixture's TEXTSPAN table: "a" for L3 H0
    table, _ = run_analysis("text_neighbours", index, settings, [tmp_path / "e.png"], n_texts=2)
    assert table[["text", "layer", "paper_layer", "head"]].drop_duplicates().values.tolist() == [["a", 3, 2, 0]]
    assert len(table) == SETTINGS["k"]
    topic, _ = run_analysis("topic_maps", index, settings, [tmp_path / "b.png"], n_texts=2)
    assert topic[["text", "scope"]].values.tolist() == [["a", HEAD_SCOPE], ["a", MODEL_SCOPE]]
    with pytest.raises(InputError, match="has no texts for head L3 H1"):
        run_analysis("text_neighbours", index, {**settings, "heads": [[3, 1]]}, [tmp_path / "e.png"], n_texts=2)
