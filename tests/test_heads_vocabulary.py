"""Open-vocabulary head labels: normalisation, the answer reader, the mapping onto a taxonomy, the open LLM labeller
against the local chat server of the LLM tests, and how the scores read open labels."""

import pandas as pd
import pytest
import torch
from test_heads_llm import EXAMPLES, chat_server, endpoint, textspan  # noqa: F401 (chat_server is a fixture)

from clip_interp.errors import InputError
from clip_interp.heads.labels import LABEL_COLUMNS, PropertyMatcher
from clip_interp.heads.llm import AnswerCache, LabellerError, label_heads_llm, prompt_messages
from clip_interp.heads.scores import entanglement_readings
from clip_interp.heads.steps import label_readings
from clip_interp.heads.taxonomy import Taxonomy
from clip_interp.heads.vocabulary import (
    MAPPING_COLUMNS,
    label_mapping,
    mapped_labels,
    normalise_free_label,
    parse_open_answer,
    singular,
)

# Three properties whose seeds are the three axes of a hand-made embedding (see `encode`).
TAXONOMY = Taxonomy({"time": ("clock",), "night": ("dark",), "colours": ("red",)}, {"colours": ("Colors",)})
AXES = {"time": ("clock", "timepiece", "watch"), "night": ("dark", "night"), "colours": ("red", "color")}


def encode(texts):
    """Counts of each axis's words in each text, plus a small constant (so no text embeds to zero)."""
    return torch.tensor([[sum(word in text for word in AXES[axis]) + 0.01 for axis in ("time", "night", "colours")]
                         for text in texts], dtype=torch.float32)


MATCHER = PropertyMatcher(encode, TAXONOMY)


@pytest.mark.parametrize("label, expected", [
    ("Timepieces", "timepiece"), ("timepiece.", "timepiece"), ("Night-scenes", "night scene"),
    ("night scene", "night scene"), ("  Colors!! ", "color"), ("Body_parts", "body part"), ("Cities", "city"),
    ("Watches", "watch"), ("Boxes", "box"), ("Glasses", "glass"), ("glass", "glass"), ("Species", "species"),
    ("Sizes", "size"), ("Children's toys", "children toy"), ("Bus", "bus"), ("Analysis", "analysis"),
    ("Ｃｏｌｏｒｓ", "color"), ("???", ""), ("Word starting with the letter z", "word starting with the letter z"),
])
def test_normalise_free_label_known_values(label, expected):
    assert normalise_free_label(label) == expected


def test_normalisation_folds_the_published_plural_pairs():
    assert normalise_free_label("Timepieces") == normalise_free_label("timepiece.") == normalise_free_label("Timepiece")
    assert normalise_free_label("Night-scenes") == normalise_free_label("night scene")
    assert normalise_free_label("Animals") == normalise_free_label("Animal") != normalise_free_label("Anatomy")
    assert normalise_free_label("Photography") != normalise_free_label("Photographs")  # no stemming beyond plurals


@pytest.mark.parametrize("word, expected", [("gas", "gas"), ("classes", "class"), ("dishes", "dish"), ("ies", "ies"),
                                            ("lies", "lie"), ("stories", "story"), ("shapes", "shape"),
                                            ("news", "news"), ("virus", "virus")])
def test_singular_rules(word, expected):
    assert singular(word) == expected  # "lies": the -ies rule needs 2 letters before it, so the final s goes


@pytest.mark.parametrize("answer, expected", [
    ("Label: Timepieces", "Timepieces"), ("label = Night-scenes.", "Night-scenes"), ('{"label": "Colours"}', "Colours"),
    ("**Label:** Wildlife", "Wildlife"), ("Timepieces", "Timepieces"), ('"Night scenes"', "Night scenes"),
    ("Label: Timepieces\nThese texts are all about clocks.", "Timepieces"),
    ("", None), ("Label:", None), ("Label: ...", None), ("The texts are\nabout many different things", None),
    ("These texts all describe different kinds of clocks and watches", None), ('{"label": 3}', None),
])
def test_parse_open_answer(answer, expected):
    assert parse_open_answer(answer) == expected


def test_label_mapping_by_text_embedding():
    mapping = label_mapping(["Timepieces", "timepiece.", "Night-scenes", "Colors", None, "Timepieces"], MATCHER)
    assert list(mapping.columns) == MAPPING_COLUMNS
    assert mapping["label"].tolist() == ["Colors", "Night-scenes", "Timepieces", "timepiece."]  # distinct, sorted
    assert mapping["normalised"].tolist() == ["color", "night scene", "timepiece", "timepiece"]
    assert mapping["property"].tolist() == ["colours", "night", "time", "time"]
    # "timepiece" embeds as (1.01, 0.01, 0.01); the seed "clock" as (1.01, 0.01, 0.01): cosine 1
    assert mapping["similarity"].tolist()[2:] == pytest.approx([1.0, 1.0], abs=1e-6)
    colour = torch.nn.functional.normalize(torch.tensor([0.01, 0.01, 1.01]), dim=0)  # "color" and the seed "red"
    assert mapping["similarity"].iloc[0] == pytest.approx(float(colour @ colour), abs=1e-6)
    assert mapped_labels(pd.Series(["timepiece.", None, "Colors"]), mapping).tolist() == ["time", None, "colours"]
    with pytest.raises(InputError, match=r"has no row for the labels \['Birds'\]; it is older than the label table"):
        mapped_labels(pd.Series(["Birds"]), mapping)
    with pytest.raises(InputError, match="have no letter or digit"):
        label_mapping(["--"], MATCHER)


HEADS = {(3, 0): ["a clock", "a watch", "red paint"], (3, 1): ["dark", "night sky", "red"],
         (3, 2): ["a timepiece", "clock tower", "dark"]}


def test_open_llm_labeller_against_the_local_chat_server(chat_server, tmp_path):  # noqa: F811
    server = chat_server([("answer", "Label: Timepieces"), ("answer", '{"label": "Night-scenes"}'),
                          ("answer", "label: timepiece.")])
    cache = tmp_path / "answers.json"
    table = label_heads_llm(textspan(HEADS), endpoint(server), EXAMPLES, 3, cache, TAXONOMY, matcher=MATCHER)
    assert list(table.columns) == LABEL_COLUMNS and (table["labeller"] == "llm").all()
    assert table["label"].tolist() == ["Timepieces", "Night-scenes", "timepiece"]  # as written, end "." stripped
    assert table["confidence"].tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3])  # texts matched to the mapped property
    system = server.requests[0]["body"]["messages"][0]["content"]
    assert "short name of at most 6 words" in system and "time, night, colours" not in system
    assert server.requests[0]["body"]["messages"] == prompt_messages(HEADS[(3, 0)], EXAMPLES, TAXONOMY, "open")
    assert prompt_messages(HEADS[(3, 0)], EXAMPLES, TAXONOMY) != prompt_messages(HEADS[(3, 0)], EXAMPLES, TAXONOMY,
                                                                                  "closed")  # other cache keys
    again = label_heads_llm(textspan(HEADS), endpoint(server), EXAMPLES, 3, cache, TAXONOMY, matcher=MATCHER)
    assert len(server.requests) == 3 and again.equals(table)  # all from the cache
    # the two readings of the scores: normalised free labels, and labels mapped onto the taxonomy
    mapping = label_mapping(table["label"], MATCHER)
    read, mapped, how = label_readings("llm", table, TAXONOMY, "open", mapping)
    assert how == "text embedding"
    assert read["label"].tolist() == ["timepiece", "night scene", "timepiece"]
    assert mapped["label"].tolist() == ["time", "night", "time"]
    assert entanglement_readings(read)["n_labels"] == 2 and entanglement_readings(table)["n_labels"] == 3


def test_open_llm_invalid_answer_is_an_error_and_not_cached(chat_server, tmp_path):  # noqa: F811
    server = chat_server([("answer", "Label: Timepieces"), ("answer", "The texts are about\nnight and darkness")])
    cache = tmp_path / "answers.json"
    with pytest.raises(LabellerError, match=r"for head \(layer 3, head 1\) is not a short one-line property name .*"
                                            r"'The texts are about\\nnight and darkness'"):
        label_heads_llm(textspan(HEADS), endpoint(server), EXAMPLES, 3, cache, TAXONOMY)
    assert len(AnswerCache(cache).entries) == 1  # the good answer is kept, the bad one is asked again next time


def test_closed_readings_are_the_labels_and_published_ones_map_by_alias():
    table = pd.DataFrame({"layer": [1, 1, 2], "head": [0, 1, 0], "label": ["Colors", "colors", "Timepieces"]})
    read, mapped, how = label_readings("taxonomy", table, TAXONOMY, "closed", None)
    assert how == "identity" and read is table and mapped is table
    read, mapped, how = label_readings("published", table, TAXONOMY, "open", None)
    assert how == "taxonomy aliases"
    assert read["label"].tolist() == ["color", "color", "timepiece"]
    assert mapped["label"].tolist()[:2] == ["colours", "colours"] and pd.isna(mapped["label"].iloc[2])  # no alias
    assert entanglement_readings(mapped)["n_unlabelled"] == 1
