"""Property sets (a labeller's groups or the CLIP-InterpreT app's), dot vs cosine on a hand-made index with a known
answer, the TEXTSPAN texts of a head (explorer prefill, ``texts: textspan``), both head numberings, and the explorer's
default map scopes."""

import inspect

import numpy as np
import pandas as pd
import pytest
import torch
from heads_results import write_results

from clip_interp.errors import InputError
from clip_interp.heads import analyses, head_title
from clip_interp.heads.explorer.layout import build_app
from clip_interp.heads.explorer.request_checks import CONTRAST_SCOPE, MAP_SCOPES, TOPIC_SCOPE
from clip_interp.heads.explorer.state import PREFILL_TEXTS, Explorer
from clip_interp.heads.index import HeadIndex
from clip_interp.heads.steps import (
    app_property_groups,
    head_name,
    query_property_set,
    query_texts,
    text_neighbour_table,
)
from clip_interp.heads.vectors import HeadVectors

# --------------------------------------------------------------------------- a hand-made index

# Group means m(i) of three images, chosen so that dot and cosine rank them differently against q = (1, 0):
# dot: m0.q = 3 > m1.q = 1 > m2.q = 0  (rows 0, 1, 2); cosine: 1 (row 1) > 0.707 (row 0) > 0 (row 2).
MEANS = np.array([[3.0, 3.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
QUERY_MEAN = np.array([1.0, 0.0], dtype=np.float32)
OTHER = np.array([1.0, -1.0], dtype=np.float32)  # head 1 of every image: head 0 = 2 m - OTHER, so the mean is m
LOUD = np.array([[0.0, 0.0], [0.0, 0.0], [100.0, 0.0]], dtype=np.float32)  # head 2: would put row 2 first if used


def _hand_index() -> HeadIndex:
    """One analysed layer (12 of 12), three heads, E = 2: heads 0 and 1 are labelled ``colours`` (mean = MEANS), head 2
    ``shapes``; the app's group ``pattern`` is heads 0 and 2, ``wildlife`` heads 0 and 1 (a head in two groups)."""
    contributions = np.stack([2 * MEANS - OTHER, np.broadcast_to(OTHER, MEANS.shape), LOUD], axis=1)[:, None]
    labels = pd.DataFrame({"layer": [12, 12, 12], "head": [0, 1, 2], "label": ["colours", "colours", "shapes"],
                           "confidence": [1.0, 1.0, 1.0], "texts": [["a"], ["b"], ["c"]], "labeller": "taxonomy"})
    app = pd.DataFrame({"property": ["pattern", "pattern", "wildlife", "wildlife"], "layer": [12, 12, 12, 12],
                        "paper_layer": [11, 11, 11, 11], "head": [0, 2, 0, 1]})
    textspan = pd.DataFrame({"layer": [12] * 4, "head": [0, 0, 0, 1], "rank": [3, 1, 2, 1],
                             "text": ["third", "first", "second", "other head"]})
    images = pd.DataFrame({"key": ["i0", "i1", "i2"], "path": ["i0.png", "i1.png", "i2.png"]})
    return HeadIndex(model_id="hand", spec={}, root=".", layers=[12], n_layers=12, n_heads=3,
                     vectors=HeadVectors.in_memory(np.ascontiguousarray(contributions.transpose(1, 2, 0, 3))),
                     images=images, textspan=textspan, labels={"taxonomy": labels}, default_labeller="taxonomy",
                     scores=None, property_groups={"app": app})


@pytest.fixture
def hand(monkeypatch):
    """The hand-made index, with the query's head contributions (heads 0 and 1 with mean QUERY_MEAN) in place of a
    forward of the model."""
    index = _hand_index()
    query = np.stack([2 * QUERY_MEAN - OTHER, OTHER, np.array([50.0, 0.0], dtype=np.float32)])[None]
    monkeypatch.setattr(analyses, "query_head_contributions", lambda ix, image: torch.from_numpy(query))
    return index


def test_dot_and_cosine_rank_the_hand_made_images_as_computed_by_hand(hand):
    by_dot = analyses.property_neighbours(hand, None, "colours", 3, "taxonomy", "dot")
    by_cosine = analyses.property_neighbours(hand, None, "colours", 3, "taxonomy", "cosine")
    assert by_dot["row"].tolist() == [0, 1, 2] and by_cosine["row"].tolist() == [1, 0, 2]
    np.testing.assert_allclose(by_dot["score"], [3.0, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(by_cosine["score"], [1.0, 2 ** -0.5, 0.0], atol=1e-6)
    assert analyses.property_neighbours(hand, None, "colours", 3)["row"].tolist() == [0, 1, 2]  # default: the app's


def test_an_unknown_similarity_is_named(hand):
    with pytest.raises(InputError, match="similarity 'euclid' is not one of dot, cosine"):
        analyses.property_neighbours(hand, None, "colours", 3, "taxonomy", "euclid")


def test_the_app_groups_are_a_property_set_beside_the_labellers(hand):
    assert analyses.property_sets(hand) == ["taxonomy", "app"]
    assert analyses.set_properties(hand, "app") == ["pattern", "wildlife"]
    assert analyses.set_properties(hand) == ["colours", "shapes"]
    assert analyses.property_heads(hand, "pattern", "app") == [(12, 0), (12, 2)]
    assert analyses.property_heads(hand, "wildlife", "app") == analyses.property_heads(hand, "colours")
    # the app's "pattern" group holds the loud head 2: its mean puts row 2 first by the dot product
    pattern = analyses.property_neighbours(hand, None, "pattern", 3, "app", "dot")
    query_mean = (2 * QUERY_MEAN - OTHER + np.array([50.0, 0.0])) / 2
    expected = (np.stack([2 * MEANS - OTHER, LOUD], axis=1).mean(1) @ query_mean).astype(float)
    assert pattern["row"].iloc[0] == 2
    np.testing.assert_allclose(pattern.sort_values("row")["score"], expected, rtol=1e-6)
    with pytest.raises(InputError, match="property 'colours' in property set 'app'; its properties: pattern, wildlife"):
        analyses.property_heads(hand, "colours", "app")
    with pytest.raises(InputError, match="property set 'llm' does not exist for model hand; its property sets: "
                                         "taxonomy, app"):
        analyses.set_properties(hand, "llm")


def test_auto_chooses_the_app_groups_where_the_model_has_them(hand):
    assert query_property_set(hand, "auto") == "app" and query_property_set(hand, "taxonomy") == "taxonomy"
    hand.property_groups = {}
    assert query_property_set(hand, "auto") == "taxonomy"
    with pytest.raises(InputError, match=r"`heads.analyses.property_set` is 'app', which model hand does not have "
                                         r"\(the app's groups exist only for its six models\)"):
        query_property_set(hand, "app")


def test_a_heads_textspan_texts_in_rank_order(hand):
    assert analyses.top_textspan_texts(hand, 12, 0, 2) == ["first", "second"]
    assert analyses.top_textspan_texts(hand, 12, 0, 10) == ["first", "second", "third"]
    with pytest.raises(InputError, match="has no texts for head L12 H2"):
        analyses.top_textspan_texts(hand, 12, 2, 3)
    texts = query_texts(hand, "textspan", [(12, 0), (12, 1)], 2)
    assert texts == {(12, 0): ["first", "second"], (12, 1): ["other head"],
                     analyses.ALL_HEADS: ["first", "second", "other head"]}
    listed = query_texts(hand, ["x", "y"], [(12, 0), (12, 1)], 2)
    assert listed == {(12, 0): ["x", "y"], (12, 1): ["x", "y"], analyses.ALL_HEADS: ["x", "y"]}


def test_text_neighbours_of_each_heads_own_texts(hand, monkeypatch):
    monkeypatch.setattr(analyses, "text_embedding", lambda ix, text: torch.tensor([1.0, 0.0]))
    texts = query_texts(hand, "textspan", [(12, 0), (12, 1)], 2)
    table = text_neighbour_table(hand, texts, [(12, 0), (12, 1)], 1)
    assert table[["text", "layer", "paper_layer", "head"]].values.tolist() == [
        ["first", 12, 11, 0], ["second", 12, 11, 0], ["other head", 12, 11, 1]]


def test_both_numberings_name_a_head():
    assert head_title(12, 3) == "L12 H3 (paper L11.H3)"
    assert head_name(1, 0) == "L1 H0 (paper L0.H0)"


def test_the_app_groups_of_a_model_from_the_published_table(shared_data):
    from clip_interp.heads.published import read_property_heads

    table = read_property_heads(shared_data / "clip_interpret" / "property_heads.tsv")
    spec = {"backend": "open_clip", "name": "ViT-B-32", "pretrained": "openai"}
    groups = app_property_groups(table, spec)
    assert sorted(set(groups["property"])) == ["locations", "pattern", "photography"]
    assert (groups["layer"] == groups["paper_layer"] + 1).all() and groups["layer"].between(9, 12).all()
    assert groups[groups["property"] == "pattern"][["layer", "head"]].values.tolist() == [[9, 2], [9, 9]]
    with pytest.raises(InputError, match="no model 'ViT-B-32' with pretrained 'laion'"):
        app_property_groups(table, {**spec, "pretrained": "laion"})


# --------------------------------------------------------------------------- the explorer


@pytest.fixture(scope="module")
def app_explorer(tiny_clip, tmp_path_factory, one_thread):
    """The toy results with the app's groups (heads of the toy's two analysed layers 2 and 3)."""
    groups = pd.DataFrame({"property": ["pattern", "pattern", "wildlife"], "layer": [2, 3, 3], "paper_layer": [1, 2, 2],
                           "head": [0, 1, 3]})
    results = write_results(tmp_path_factory.mktemp("explorer_app_groups"), tiny_clip, app_groups=groups)
    return Explorer(results, open_index=lambda folder, model: HeadIndex.open(folder, model, loaded_model=tiny_clip))


def test_the_explorer_offers_the_app_groups_first_and_by_default(app_explorer):
    overview = app_explorer.overview("toy")
    assert [value for _, value in overview.property_sets] == ["app", "llm", "taxonomy"]
    assert overview.property_set == "app" and overview.properties == ["pattern", "wildlife"]
    assert "app's hand-curated groups" in overview.property_sets[0][0]
    assert app_explorer.properties("toy", "llm") == ["backgrounds", "colours", "shapes"]


def test_the_explorer_scores_an_app_group_by_each_similarity(app_explorer):
    query = app_explorer.image_from_set("toy", "2: red_square_white")
    by_cosine = app_explorer.property_neighbours("toy", query, "pattern", 12, "app", "cosine")
    by_dot = app_explorer.property_neighbours("toy", query, "pattern", 12, "app", "dot")
    assert by_cosine.table["image"].iloc[0] == "red_square_white"
    assert by_cosine.table["score"].iloc[0] == pytest.approx(1.0, abs=1e-5)
    assert by_dot.summary == "12 nearest images by the dot of the mean of the heads of 'pattern' (property set app)"
    index = app_explorer.index("toy")
    mean = (index.head_matrix(2, 0) + index.head_matrix(3, 1)) / 2
    np.testing.assert_allclose(by_dot.table.sort_values("row")["score"], (mean @ mean[2]).numpy(), rtol=1e-3,
                               atol=1e-6)  # the table rounds scores to 4 decimals


def test_the_explorer_offers_the_heads_top_textspan_texts(app_explorer, tiny_clip):
    layer = tiny_clip.vision.n_layers
    texts = app_explorer.textspan_texts("toy", f"{layer}:1")
    assert texts == [f"a {p} text {r - 1} of L{layer} H1" for r, p in ((1, "shapes"), (2, "backgrounds"),
                                                                         (3, "colours"))]
    assert PREFILL_TEXTS >= len(texts)


def test_contrastive_maps_sum_over_the_whole_model_by_default(app_explorer, tiny_clip):
    assert CONTRAST_SCOPE == MAP_SCOPES[2] == "all heads of the model" and TOPIC_SCOPE == MAP_SCOPES[0]
    assert inspect.signature(Explorer.contrastive_maps).parameters["scope"].default == CONTRAST_SCOPE
    query = app_explorer.image_from_set("toy", "0: red_circle_white")
    pair = app_explorer.contrastive_maps("toy", query, "red", "blue", f"{tiny_clip.vision.n_layers}:1")
    assert pair[0][1] == "'red' minus 'blue' (all heads of the model)"
    pytest.importorskip("gradio")
    components = {c["props"].get("elem_id"): c["props"] for c in build_app(app_explorer).config["components"]}
    assert components["contrast-scope"]["value"] == CONTRAST_SCOPE
    assert components["topic-scope"]["value"] == TOPIC_SCOPE
    assert components["similarity"]["value"] == "dot"
    assert {"property-set", "textspan-texts"} <= set(components)


def test_the_index_sums_the_labelled_properties_and_the_app_groups(tmp_path):
    from clip_interp.heads.steps import label_groups

    labels = pd.DataFrame({"layer": [11, 12, 12, 12], "head": [0, 0, 1, 2], "label": ["a", "a", "b", "a"],
                           "confidence": 1.0, "texts": [["t"]] * 4, "labeller": "taxonomy"})
    app = pd.DataFrame({"property": ["pattern", "pattern", "wildlife", "wildlife", "birds"],
                        "layer": [12, 12, 11, 12, 9], "paper_layer": [11, 11, 10, 11, 8], "head": [0, 2, 0, 0, 1]})
    labels.to_parquet(tmp_path / "labels.parquet")
    app.to_parquet(tmp_path / "app.parquet")
    groups = label_groups([tmp_path / "labels.parquet", tmp_path / "app.parquet"], [11, 12])
    # positions (index among the layers, head): the labels' "a", then the app's "pattern" and "wildlife" (by name);
    # one-head groups ("b", and "birds", whose head lies outside the layers) are left out
    assert groups == [[(0, 0), (1, 0), (1, 2)], [(1, 0), (1, 2)], [(0, 0), (1, 0)]]
