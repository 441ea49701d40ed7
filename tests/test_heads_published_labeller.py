"""The `published` labeller (CLIP-InterpreT's labels as a label table) and the score table's new columns."""

import math

import pandas as pd
import pytest
import torch

from clip_interp.errors import InputError
from clip_interp.heads import published
from clip_interp.heads.judgements import association_sheet
from clip_interp.heads.labels import LABEL_COLUMNS, PropertyMatcher, model_text_encoder
from clip_interp.heads.scores import entanglement_readings
from clip_interp.heads.steps import label_readings, score_table
from clip_interp.heads.taxonomy import load_taxonomy
from clip_interp.heads.vocabulary import label_mapping

TAXONOMY = load_taxonomy(published.DEFAULT_TAXONOMY)
SIX = {f"m{i}": {"backend": "open_clip", "name": name, "pretrained": tag}
       for i, (name, tag) in enumerate(published.PAPER_SCORES)}


def first_word_encoder(texts):
    """A text embeds as a one-hot of the first letter of its first word (enough for a deterministic matcher)."""
    return torch.tensor([[float(t.strip().lower()[:1] == chr(97 + i)) + 0.01 for i in range(26)] for t in texts])


def textspan(layers, n_heads, n_texts=5):
    return pd.DataFrame([{"layer": layer, "head": head, "rank": rank, "text": f"L{layer}H{head} text {rank}"}
                         for layer in layers for head in range(n_heads) for rank in range(1, n_texts + 1)])


@pytest.fixture(scope="module")
def head_labels(shared_data):
    return published.read_head_labels(shared_data / "clip_interpret" / "head_labels.tsv")


def test_published_labels_become_a_label_table_in_our_layers(head_labels):
    matcher = PropertyMatcher(first_word_encoder, TAXONOMY)
    table, left_out = published.label_heads_published(head_labels, ("ViT-B-16", "openai"), textspan(range(9, 13), 12),
                                                      5, matcher)
    assert list(table.columns) == LABEL_COLUMNS and left_out == 0 and len(table) == 48
    assert (table["labeller"] == "published").all() and sorted(set(table["layer"])) == [9, 10, 11, 12]
    source = head_labels[(head_labels["model"] == "ViT-B-16") & (head_labels["pretrained"] == "openai")]
    by_paper_layer = {(int(r.layer_published), int(r.head)): r.label for r in source.itertuples()}
    for row in table.itertuples():  # our layer L is the paper's L - 1, and the texts are that head's own
        assert row.label == by_paper_layer[(row.layer - 1, row.head)], (row.layer, row.head)
        assert list(row.texts) == [f"L{row.layer}H{row.head} text {r}" for r in range(1, 6)]
    mapped = table["label"].map(TAXONOMY.canonical)
    assert table["confidence"][mapped.isna()].isna().all() and table["confidence"][mapped.notna()].between(0, 1).all()
    # only the analysed layers (heads.n_layers = 2): the paper's layers 10 and 11
    two, left_out = published.label_heads_published(head_labels, ("ViT-B-16", "openai"), textspan([11, 12], 12), 5,
                                                    matcher)
    assert len(two) == 24 and left_out == 0 and two.equals(table[table["layer"] >= 11].reset_index(drop=True))
    # a model with more analysed layers than the paper labelled: the unlabelled heads are left out and counted
    five, left_out = published.label_heads_published(head_labels, ("ViT-B-16", "openai"), textspan(range(8, 13), 12),
                                                     5, matcher)
    assert len(five) == 48 and left_out == 12


def test_published_labeller_errors(head_labels):
    matcher = PropertyMatcher(first_word_encoder, TAXONOMY)
    with pytest.raises(InputError, match=r"name head 8 of layer 8 \(0-based; our L9\), which the model's TEXTSPAN "
                                         r"table does not have \(heads 0..7\)"):
        published.label_heads_published(head_labels, ("ViT-B-16", "openai"), textspan(range(9, 13), 8), 5, matcher)
    with pytest.raises(InputError, match=r"label no head of the analysed layers \[3, 4\]"):
        published.label_heads_published(head_labels, ("ViT-B-16", "openai"), textspan([3, 4], 12), 5, matcher)


def test_published_labeller_covers_the_six_models_only():
    assert published.published_labeller_problems(SIX) == []
    assert all(published.published_identity(spec) for spec in SIX.values())
    others = {"toy": {"backend": "open_clip", "name": "ToyCLIP", "config": "x.json"},
              "untrained": {**SIX["m0"], "random_init": True},
              "huge": {"backend": "open_clip", "name": "ViT-H-14", "pretrained": "laion2b_s32b_b79k"}}
    problems = published.published_labeller_problems({**SIX, **others})
    assert len(problems) == 3
    assert problems[0].startswith("`heads.labellers` lists published, but model 'toy' (open_clip ToyCLIP None)")
    assert "'untrained' (open_clip ViT-B-32 openai, random_init)" in problems[1]
    assert all("ViT-B-32 openai; ViT-B-32 datacomp_m_s128m_b4k; ViT-B-16 openai; ViT-B-16 laion2b_s34b_b88k; "
               "ViT-L-14 openai; ViT-L-14 laion2b_s32b_b82k" in line for line in problems)


def test_published_mapped_readings_are_those_of_published_scores(head_labels):
    """The scores' mapped reading of the `published` labeller is published.py's alias mapping (one mapping)."""
    expected = published.published_scores(head_labels, TAXONOMY).set_index(["model", "pretrained"])
    for (name, pretrained), row in expected.iterrows():
        table = published.model_labels(head_labels, name, pretrained)
        read, mapped, how = label_readings("published", table, TAXONOMY, "open", None)
        readings = entanglement_readings(mapped)
        assert how == "taxonomy aliases" and readings["n_unlabelled"] == row["n_unmapped"]
        assert readings["entanglement"] == pytest.approx(row["mapped_entanglement"])
        assert entanglement_readings(read)["n_labels"] <= row["raw_n_labels"]  # normalising only merges labels


def test_score_table_columns_and_judged_association(tiny_clip, one_thread, tmp_path):
    taxonomy_path = published.DEFAULT_TAXONOMY.parent / "taxonomy_demo.yaml"
    heads = textspan([2, 3], 4)
    properties = list(load_taxonomy(taxonomy_path).names)
    closed = pd.DataFrame([{"layer": layer, "head": head, "label": properties[head % 2], "confidence": 1.0,
                            "texts": [f"L{layer}H{head} text {r}" for r in range(1, 6)], "labeller": "taxonomy"}
                           for layer, head in heads[["layer", "head"]].drop_duplicates().itertuples(index=False)])
    llm = closed.assign(labeller="llm", label=["Colors", "color.", "Shapes", "shape", "Colors", "Sizes", "size",
                                               "Colors"])
    mapping = label_mapping(llm["label"], PropertyMatcher(model_text_encoder(tiny_clip), load_taxonomy(taxonomy_path)))
    labels = {"taxonomy": closed, "llm": llm}
    settings = dict(taxonomy_path=taxonomy_path, published_path=None, batch_size=8, llm_mapping=mapping,
                    model_id="toy", association={"n_texts": 3, "min_matches": 2})
    spec = {"backend": "open_clip", "name": "ToyCLIP", "random_init": True}
    automatic = score_table(labels, tiny_clip, spec, **settings).set_index("labeller")
    assert automatic["label_vocabulary"].to_dict() == {"taxonomy": "closed", "llm": "open"}
    assert automatic["mapped_by"].to_dict() == {"taxonomy": "identity", "llm": "text embedding"}
    assert (automatic["association_method"] == "matcher").all() and (automatic["association_judgements"] == "").all()
    assert automatic.loc["taxonomy", "entanglement"] == automatic.loc["taxonomy", "mapped_entanglement"] == 6 / 8
    assert automatic.loc["llm", "n_labels"] == 3  # color, shape, size once normalised
    assert automatic.loc["llm", "mapped_n_labels"] == mapping["property"].nunique()
    assert math.isnan(automatic.loc["llm", "agreement"]) and automatic.loc["llm", "n_agreement_heads"] == 0
    sheet = association_sheet("toy", labels, 3)
    sheet[["match_1", "match_2", "match_3"]] = [["1", "1", "0"] if i % 3 == 0 else ["0", "1", "0"]
                                                for i in range(len(sheet))]
    sheet.to_csv(tmp_path / "toy.tsv", sep="\t", index=False)
    judged = score_table(labels, tiny_clip, spec, **settings, judgements=tmp_path / "toy.tsv").set_index("labeller")
    # by hand: rows 0, 3, 6 of taxonomy (of 8) and rows 9, 12, 15 (llm rows 1, 4, 7) have 2 matches
    assert judged["association"].to_dict() == {"taxonomy": 3 / 8, "llm": 3 / 8}
    assert (judged["association_method"] == "judgements").all()
    assert judged["association_judgements"].str.endswith("toy.tsv").all()
    unchanged = [c for c in automatic.columns if not c.startswith("association")]
    pd.testing.assert_frame_equal(judged[unchanged], automatic[unchanged])


def test_the_labels_step_of_the_published_labeller(tiny_clip_factory, one_thread, shared_data, tmp_path):
    """What the `heads_labels` rule runs for `published`: a model of ViT-B/32's shape (12 layers of 12 heads; a
    small random one, named as the paper's model by its spec), its analysed layers, the published labels there."""
    from clip_interp.demo.toy_clip import toy_clip_config
    from clip_interp.heads.steps import label_table

    model = tiny_clip_factory(toy_clip_config(vision_cfg={"layers": 12, "width": 96, "head_width": 8}))
    spec = {"backend": "open_clip", "name": "ViT-B-32", "pretrained": "openai"}
    settings = dict(taxonomy_path=published.DEFAULT_TAXONOMY, n_texts=5, batch_size=64,
                    published_path=shared_data / "clip_interpret" / "head_labels.tsv")
    table, layers = label_table("published", textspan(range(1, 13), 12), model, spec=spec, n_layers=4, **settings)
    assert layers == [9, 10, 11, 12] and list(table.columns) == LABEL_COLUMNS and len(table) == 48
    source = published.read_head_labels(settings["published_path"])
    source = source[(source["model"] == "ViT-B-32") & (source["pretrained"] == "openai")]
    assert table.merge(source, left_on=["layer", "head", "label"], right_on=["layer", "head", "label"]).shape[0] == 48
    assert (source["layer_published"] == source["layer"] - 1).all()
    with pytest.raises(InputError, match=r"cover six models only .* remove published from `heads.labellers`"):
        label_table("published", textspan(range(1, 13), 12), model, spec={"backend": "open_clip", "name": "ToyCLIP"},
                    n_layers=4, **settings)
