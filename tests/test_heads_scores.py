"""Interpretability scores on hand-made label tables with known values, and the published-label readers."""

import math

import pandas as pd
import pytest
import torch

from clip_interp.errors import InputError
from clip_interp.heads import published
from clip_interp.heads.labels import PropertyMatcher
from clip_interp.heads.scores import (
    association,
    association_per_head,
    entanglement,
    entanglement_readings,
    label_agreement,
)
from clip_interp.heads.taxonomy import Taxonomy

KEYWORDS = ["red", "blue", "circle", "square", "small", "big"]


def keyword_encoder(texts):
    """Bag of keywords: one axis per keyword of KEYWORDS, plus an axis for texts with none."""
    out = torch.zeros(len(texts), len(KEYWORDS) + 1)
    for i, text in enumerate(texts):
        words = text.lower().replace(".", " ").split()
        for j, keyword in enumerate(KEYWORDS):
            out[i, j] = float(words.count(keyword))
        if out[i].sum() == 0:
            out[i, -1] = 1.0
    return out


TAXONOMY = Taxonomy({"colours": ("red", "blue"), "shapes": ("circle", "square"), "sizes": ("small", "big")},
                    {"colours": ("Colors", "Color"), "shapes": ("Shape",)})


def table(labels):
    return pd.DataFrame({"layer": [9 + i // 4 for i in range(len(labels))], "head": [i % 4 for i in range(len(labels))],
                         "label": labels})


@pytest.mark.parametrize("labels, expected", [
    (["a", "b", "c", "d"], (0.0, 0.0, 0.0, 4)),
    (["a", "a", "a", "a"], (3 / 4, 1.0, 1.0, 1)),
    (["a", "a", "b", "c"], (1 / 4, 2 / 4, 2 / 12, 3)),
    (["a", "a", "a", "b", "b", "c"], (3 / 6, 5 / 6, (3 * 2 + 2 * 1) / 30, 3)),
    (["a"], (0.0, 0.0, 0.0, 1)),
])
def test_entanglement_readings_known_values(labels, expected):
    readings = entanglement_readings(table(labels))
    got = (readings["entanglement"], readings["shared_share"], readings["pairwise_share"], readings["n_labels"])
    assert got == pytest.approx(expected)
    assert entanglement(table(labels)) == pytest.approx(expected[0])
    assert readings["n_heads"] == len(labels) and readings["n_unlabelled"] == 0


def test_entanglement_counts_and_leaves_out_unlabelled_heads():
    readings = entanglement_readings(table(["a", "a", None, "b"]))
    assert readings["n_heads"] == 3 and readings["n_unlabelled"] == 1
    assert readings["entanglement"] == pytest.approx(1 / 3)
    assert readings["pairwise_share"] == pytest.approx(2 / 6)


def test_entanglement_errors():
    with pytest.raises(InputError, match="lacks the columns \\['label'\\]"):
        entanglement(table(["a"]).drop(columns="label"))
    with pytest.raises(InputError, match="more than once"):
        entanglement(pd.concat([table(["a", "b"]), table(["a"])]))
    with pytest.raises(InputError, match="no labelled heads"):
        entanglement(table([None, None]))


def labelled(rows):
    return pd.DataFrame([{"layer": 9, "head": h, "label": label, "texts": texts}
                         for h, (label, texts) in enumerate(rows)])


def test_association_known_values():
    matcher = PropertyMatcher(keyword_encoder, TAXONOMY)
    labels = labelled([
        ("colours", ["red", "blue thing", "circle", "a red one", "small"]),     # 3 colour texts of 5
        ("shapes", ["circle", "red", "blue", "small", "big"]),                   # 1 shape text
        ("sizes", ["small", "big", "tiny small", "big big", "square"]),          # 4 size texts
        (None, ["red", "red", "red", "red", "red"]),                            # unlabelled: matches nothing
    ])
    per_head = association_per_head(labels, matcher)
    assert per_head["matches"].tolist() == [3, 1, 4, 0]
    assert per_head["associated"].tolist() == [True, False, True, False]
    assert association(labels, matcher) == pytest.approx(2 / 4)
    assert association(labels, matcher, n_texts=5, min_matches=1) == pytest.approx(3 / 4)
    assert association(labels, matcher, n_texts=3, min_matches=3) == pytest.approx(1 / 4)
    assert association(labels, matcher, n_texts=3, min_matches=2) == pytest.approx(2 / 4)


def test_association_errors():
    matcher = PropertyMatcher(keyword_encoder, TAXONOMY)
    labels = labelled([("colours", ["red", "blue"])])
    with pytest.raises(InputError, match="has 2 texts .* fewer than n_texts=5"):
        association(labels, matcher)
    with pytest.raises(InputError, match="min_matches <= n_texts"):
        association(labels, matcher, n_texts=2, min_matches=3)


def test_label_agreement_maps_both_tables_and_counts_unmapped():
    ours = table(["colours", "shapes", "sizes", "colours", "shapes"])
    theirs = table(["Colors", "Shape", "Subject", "Shape", "shapes", "Color"])  # head (10, 1) only theirs
    result = label_agreement(ours, theirs, TAXONOMY)
    assert result["n_heads"] == 5 and result["n_same"] == 3
    assert result["agreement"] == pytest.approx(3 / 5)
    assert result["n_both_mapped"] == 4 and result["agreement_mapped"] == pytest.approx(3 / 4)
    assert result["n_published_unmapped"] == 1 and result["published_unmapped_labels"] == ["Subject"]
    assert result["n_only_published"] == 1 and result["n_only_ours"] == 0
    raw = label_agreement(ours, theirs)
    assert raw["n_same"] == 1  # only "shapes" == "shapes" without a taxonomy


def test_label_agreement_errors():
    with pytest.raises(InputError, match="share no \\(layer, head\\)"):
        label_agreement(table(["a"]), table(["a"]).assign(layer=99), TAXONOMY)
    with pytest.raises(InputError, match="published label table lacks the columns \\['label'\\]"):
        label_agreement(table(["a"]), table(["a"]).drop(columns="label"))


def test_read_published_tables_from_shared_data(shared_data):
    folder = shared_data / "clip_interpret"
    labels = published.read_head_labels(folder / "head_labels.tsv")
    assert len(labels) == 320
    models = set(zip(labels["model"], labels["pretrained"]))
    assert models == set(published.PAPER_SCORES)
    layers = labels.groupby("model")["layer"].agg(["min", "max"])
    assert layers.loc["ViT-B-32"].tolist() == [9, 12] and layers.loc["ViT-L-14"].tolist() == [21, 24]
    assert (labels["layer"] == labels["layer_published"] + 1).all()
    groups = published.read_property_heads(folder / "property_heads.tsv")
    assert len(groups) == 115 and groups["layer"].min() >= 9
    one = published.model_labels(labels, "ViT-B-32", "openai")
    assert len(one) == 48 and list(one.columns) == ["layer", "head", "label"]
    with pytest.raises(InputError, match="no published labels for model 'ViT-H-14'"):
        published.model_labels(labels, "ViT-H-14", "openai")


def test_published_scores_on_shared_data(shared_data, capsys):
    from clip_interp.heads.taxonomy import load_taxonomy

    labels = published.read_head_labels(shared_data / "clip_interpret" / "head_labels.tsv")
    scores = published.published_scores(labels, load_taxonomy(published.DEFAULT_TAXONOMY))
    assert len(scores) == 6 and scores["n_heads"].tolist() == [48, 48, 48, 48, 64, 64]
    for reading in ("entanglement", "shared_share", "pairwise_share"):
        assert scores[f"raw_{reading}"].between(0, 1).all() and scores[f"mapped_{reading}"].between(0, 1).all()
    # mapping merges labels, so the mapped readings are never below the raw ones on the heads both keep
    assert (scores["mapped_n_labels"] <= scores["raw_n_labels"]).all()
    assert not scores["paper_entanglement"].isna().any()
    b32 = scores.set_index(["model", "pretrained"]).loc[("ViT-B-32", "openai")]
    assert b32["raw_n_labels"] == 29 and b32["raw_entanglement"] == pytest.approx((48 - 29) / 48)
    assert b32["n_unmapped"] == 2 and b32["mapped_entanglement"] == pytest.approx((46 - 16) / 46)
    assert published.main([str(shared_data / "clip_interpret")]) == 0
    out = capsys.readouterr().out
    assert "raw_entanglement" in out and "map to no property" in out


def write(path, text):
    path.write_text(text)
    return path


def test_published_reader_errors(tmp_path):
    missing = write(tmp_path / "labels.tsv", "model\tpretrained\tlayer\tlabel\nViT-B-32\topenai\t8\tColors\n")
    with pytest.raises(InputError, match=r"labels.tsv lacks the columns \['head'\] .* needs the tab-separated"):
        published.read_head_labels(missing)
    with pytest.raises(InputError, match=r"lacks the columns \['property', 'head'\]"):
        published.read_property_heads(missing)
    bad_layer = write(tmp_path / "bad.tsv", "model\tpretrained\tlayer\thead\tlabel\n"
                                            "ViT-B-32\topenai\teight\t0\tColors\n")
    with pytest.raises(InputError, match="column 'layer' holds 'eight' on line 2"):
        published.read_head_labels(bad_layer)
    twice = write(tmp_path / "twice.tsv", "model\tpretrained\tlayer\thead\tlabel\n"
                  "ViT-B-32\topenai\t8\t0\tColors\nViT-B-32\topenai\t8\t0\tShape\n")
    with pytest.raises(InputError, match="labels head 0 of layer 8 \\(0-based\\) of ViT-B-32 openai more than once"):
        published.read_head_labels(twice)
    blank = write(tmp_path / "blank.tsv", "model\tpretrained\tlayer\thead\tlabel\nViT-B-32\topenai\t8\t0\t\n")
    with pytest.raises(InputError, match="column 'label' is empty on line 2"):
        published.read_head_labels(blank)
    short = write(tmp_path / "short.tsv", "model\tpretrained\tlayer\thead\tlabel\nViT-B-32\topenai\t8\t0\n")
    with pytest.raises(InputError, match="column 'label' is empty on line 2"):
        published.read_head_labels(short)
    with pytest.raises(InputError, match="does not exist"):
        published.read_head_labels(tmp_path / "absent.tsv")
    assert math.isclose(published.PAPER_SCORES[("ViT-L-14", "openai")]["entanglement"], 0.359)
