"""Taxonomy files, the property matcher and the default labeller (fake encoder and a tiny random-init CLIP)."""

from pathlib import Path

import pandas as pd
import pytest
import torch

from clip_interp.errors import InputError
from clip_interp.heads.labels import LABEL_COLUMNS, PropertyMatcher, label_heads, majority, model_text_encoder
from clip_interp.heads.taxonomy import Taxonomy, load_taxonomy, normalise_label

REPO = Path(__file__).resolve().parents[1]
GENERAL = REPO / "resources" / "heads" / "taxonomy.yaml"
DEMO = REPO / "resources" / "heads" / "taxonomy_demo.yaml"

KEYWORDS = ["red", "blue", "circle", "square", "small", "big", "dog", "cat"]


def keyword_encoder(texts):
    """Bag of keywords, one axis each, plus an axis for texts with none (unnormalised: the matcher normalises)."""
    out = torch.zeros(len(texts), len(KEYWORDS) + 1)
    for i, text in enumerate(texts):
        words = text.lower().replace(".", " ").split()
        for j, keyword in enumerate(KEYWORDS):
            out[i, j] = 2.0 * words.count(keyword)
        if out[i].sum() == 0:
            out[i, -1] = 1.0
    return out


TAXONOMY = Taxonomy({"colours": ("red", "blue"), "shapes": ("circle", "square"), "sizes": ("small", "big")})


def textspan(heads: dict[tuple[int, int], list[str]]) -> pd.DataFrame:
    rows = [{"layer": layer, "head": h, "rank": r + 1, "text": t, "text_index": 0, "variance": 1.0 / (r + 1)}
            for (layer, h), texts in heads.items() for r, t in enumerate(texts)]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # the labeller must sort by rank itself


# --- taxonomy files -----------------------------------------------------------------------------------------

def test_general_taxonomy_file():
    taxonomy = load_taxonomy(GENERAL)
    assert len(taxonomy.names) >= 15
    assert all(len(seeds) >= 3 for seeds in taxonomy.properties.values())
    assert taxonomy.canonical("Geo-location") == "locations" and taxonomy.canonical(" colors ") == "colours"
    assert taxonomy.canonical("Word starting with the letter z") == "letters"
    assert taxonomy.canonical("Subject") is None and taxonomy.canonical(None) is None


def test_demo_taxonomy_covers_the_synthetic_vocabulary():
    from clip_interp.demo.decomposition_sets import POSITIONS, SIZES
    from clip_interp.demo.negation_benchmark import COLOURS, SHAPES

    taxonomy = load_taxonomy(DEMO)
    assert taxonomy.names == ("colours", "shapes", "positions", "sizes", "backgrounds")
    seeds = {name: " ".join(s).lower() for name, s in taxonomy.properties.items()}
    assert all(c in seeds["colours"] for c in COLOURS) and all(s in seeds["shapes"] for s in SHAPES)
    assert all(z in seeds["sizes"] for z in SIZES)
    assert all(p.replace("centre", "middle") in seeds["positions"] for p in POSITIONS)
    assert all(w in seeds["backgrounds"] for w in ("land", "water", "stripe", "wave"))


@pytest.mark.parametrize("text, message", [
    ("properties: [a, b]\n", "'properties' must map property names"),
    ("props: {}\n", "exactly one top-level key, 'properties'"),
    ("properties:\n  a: {seeds: [x]}\n  b: {aliases: [y]}\n", r"properties.b has keys \['aliases'\]; it needs 'seeds'"),
    ("properties:\n  a: {seeds: [x]}\n  b: {seeds: [y], colour: [z]}\n", "may have 'aliases', nothing else"),
    ("properties:\n  a: {seeds: [x]}\n  b: {seeds: []}\n", "properties.b.seeds must be a non-empty list"),
    ("properties:\n  a: {seeds: x}\n  b: {seeds: [y]}\n", "properties.a.seeds must be a list of strings"),
    ("properties:\n  a: {seeds: [x], aliases: [Same]}\n  b: {seeds: [y], aliases: [same]}\n",
     r"'same' \(properties.b\) already names property 'a'"),
    ("properties:\n  a: {seeds: [x]}\n", "at least 2 properties"),
    ("properties: {a: [\n", "is not valid YAML"),
])
def test_taxonomy_file_errors_name_file_and_key(tmp_path, text, message):
    path = tmp_path / "taxonomy.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as error:
        load_taxonomy(path)
    assert str(path) in str(error.value)


def test_missing_taxonomy_file(tmp_path):
    with pytest.raises(InputError, match="absent.yaml does not exist"):
        load_taxonomy(tmp_path / "absent.yaml")


def test_normalise_label():
    assert normalise_label("  Night-scenes ") == "night scenes" == normalise_label("night_scenes")


# --- matcher and labeller, fake encoder ---------------------------------------------------------------------

def test_matcher_nearest_property_and_ties():
    matcher = PropertyMatcher(keyword_encoder, TAXONOMY)
    assert matcher.properties(["a red dog", "square", "big", "blue circle", "nothing"]) == \
        ["colours", "shapes", "sizes", "colours", "colours"]  # ties go to the property listed first
    similarities = matcher.similarities(["red", "red circle"])
    assert similarities.shape == (2, 3)
    assert similarities[0].tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert similarities[1].tolist() == pytest.approx([2 ** -0.5, 2 ** -0.5, 0.0])


def test_matcher_max_and_mean_differ_as_documented():
    # max: the nearest seed (red); mean: the normalised mean of red and blue, farther from a text naming red only
    taxonomy = Taxonomy({"colours": ("red", "blue"), "shapes": ("circle",)})
    text = ["red circle circle"]
    by_max = PropertyMatcher(keyword_encoder, taxonomy).similarities(text)[0]
    by_mean = PropertyMatcher(keyword_encoder, taxonomy, reduce="mean").similarities(text)[0]
    assert by_max.tolist() == pytest.approx([5 ** -0.5, 2 * 5 ** -0.5])
    assert by_mean.tolist() == pytest.approx([5 ** -0.5 * 2 ** -0.5, 2 * 5 ** -0.5])
    with pytest.raises(InputError, match="unknown seed reduction 'median'"):
        PropertyMatcher(keyword_encoder, taxonomy, reduce="median")


def test_matcher_rejects_an_encoder_of_the_wrong_shape():
    matcher = PropertyMatcher(lambda texts: torch.zeros(1, 4), TAXONOMY)
    with pytest.raises(InputError, match="one embedding row per text"):
        matcher.properties(["red", "blue"])


def test_majority_and_its_tie_break():
    assert majority(["a", "b", "a"]) == ("a", pytest.approx(2 / 3))
    assert majority(["b", "a", "a", "b", "c"]) == ("b", pytest.approx(2 / 5))  # b's first text comes first
    with pytest.raises(InputError):
        majority([])


def test_label_heads_table():
    heads = {(11, 0): ["red", "square", "blue", "small", "red dog"],
             (10, 1): ["circle", "big", "square", "red", "small"],
             (10, 0): ["small", "circle", "red", "big", "square"]}   # tie at 3 texts: small first -> sizes
    labels = label_heads(textspan(heads), PropertyMatcher(keyword_encoder, TAXONOMY), n_texts=5)
    assert list(labels.columns) == LABEL_COLUMNS
    assert labels[["layer", "head"]].values.tolist() == [[10, 0], [10, 1], [11, 0]]
    assert labels["label"].tolist() == ["sizes", "shapes", "colours"]
    assert labels["confidence"].tolist() == pytest.approx([2 / 5, 2 / 5, 3 / 5])
    assert labels["texts"].tolist()[2] == heads[(11, 0)]
    assert set(labels["labeller"]) == {"taxonomy"}
    three = label_heads(textspan(heads), PropertyMatcher(keyword_encoder, TAXONOMY), n_texts=3)
    assert three["label"].tolist() == ["sizes", "shapes", "colours"] and three["texts"].map(len).eq(3).all()
    tie = label_heads(textspan({(10, 0): ["small", "circle"]}), PropertyMatcher(keyword_encoder, TAXONOMY), 2)
    assert tie["label"].tolist() == ["sizes"] and tie["confidence"].tolist() == [0.5]


def test_label_heads_errors():
    matcher = PropertyMatcher(keyword_encoder, TAXONOMY)
    with pytest.raises(InputError, match="head \\(layer 3, head 1\\) has 2 TEXTSPAN texts, fewer than the 5"):
        label_heads(textspan({(3, 1): ["red", "blue"]}), matcher, 5)
    with pytest.raises(InputError, match="lacks the columns \\['rank'\\]"):
        label_heads(textspan({(3, 1): ["red"]}).drop(columns="rank"), matcher, 1)
    with pytest.raises(InputError, match="no rows"):
        label_heads(textspan({(3, 1): ["red"]}).iloc[:0], matcher, 1)


# --- a tiny random-init open_clip text tower ----------------------------------------------------------------

def test_every_seed_is_matched_to_its_own_property_by_a_tiny_clip(tiny_clip, one_thread):
    """With ``max`` over seeds a seed's cosine to its own property is 1: it lands there under any encoder."""
    taxonomy = load_taxonomy(DEMO)
    matcher = PropertyMatcher(model_text_encoder(tiny_clip), taxonomy)
    for name, seeds in taxonomy.properties.items():
        assert matcher.properties(list(seeds)) == [name] * len(seeds)
    similarities = matcher.similarities(["There is a red thing.", "A water background."])
    assert similarities.shape == (2, 5) and bool((similarities <= 1 + 1e-5).all())


def test_label_heads_with_a_tiny_clip_is_deterministic(tiny_clip, one_thread):
    from clip_interp.demo.decomposition_sets import description_pool

    pool = description_pool()
    heads = {(layer, head): pool[4 * head + layer: 4 * head + layer + 5] for layer in (2, 3) for head in range(4)}
    matcher = PropertyMatcher(model_text_encoder(tiny_clip), load_taxonomy(DEMO))
    first = label_heads(textspan(heads), matcher, n_texts=5)
    second = label_heads(textspan(heads), PropertyMatcher(model_text_encoder(tiny_clip), load_taxonomy(DEMO)), 5)
    pd.testing.assert_frame_equal(first, second)
    assert len(first) == 8 and first["label"].isin(load_taxonomy(DEMO).names).all()
    assert first["confidence"].between(0.2, 1.0).all()
    # the confidence is the label's share of the head's texts as the matcher assigns them
    for row in first.itertuples():
        assert matcher.properties(row.texts).count(row.label) / 5 == pytest.approx(row.confidence)
