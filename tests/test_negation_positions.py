import pandas as pd
import pytest

from clip_interp.errors import InputError
from clip_interp.io import write_parquet
from clip_interp.negation.positions import (
    GENERIC_NAMES,
    POSITION_COLUMNS,
    add_positions,
    generic_position_map,
    sentence_positions,
)
from clip_interp.negation.valse import prepare_variant


def word(tok, ids, pos):
    return tok.token_str(ids[pos])


def test_people_in_the_picture(tok, nlp):
    p = sentence_positions("There are no people in the picture.", "There are some people in the picture.", tok, nlp)
    ids = p["negated_ids"]
    assert set(POSITION_COLUMNS) == set(p)
    assert ids[0] == tok.sot_id and ids[-1] == tok.eot_id
    assert p["negator_pos"] == 3 and word(tok, ids, p["negator_pos"]) == "no"
    assert word(tok, ids, p["subject_first_pos"]) == "people"
    assert word(tok, ids, p["full_stop_pos"]) == "."
    assert p["full_stop_pos"] == p["eot_pos_negated"] - 1 == 8
    assert p["n_further_subject"] == 3
    assert p["subject"] == "people" and p["subject_source"] == "noun_chunk"
    assert p["equal_length"] and p["generic_ok"]
    assert word(tok, p["non_negated_ids"], p["quantifier_pos"]) == "some"
    assert p["eot_pos_non_negated"] == p["eot_pos_negated"]


def test_unequal_length_has_no_quantifier(tok, nlp):
    p = sentence_positions("There are no people in the picture.", "There are people in the picture.", tok, nlp)
    assert not p["equal_length"] and p["quantifier_pos"] == -1
    assert p["eot_pos_non_negated"] == p["eot_pos_negated"] - 1
    assert p["generic_ok"]


def test_multiword_subject_and_no_full_stop(tok, nlp):
    p = sentence_positions("There is no black horses in the scene.", "There is a black horses in the scene.", tok, nlp)
    assert p["subject"] == "black horses"
    assert word(tok, p["negated_ids"], p["subject_first_pos"]) == "black"
    assert word(tok, p["non_negated_ids"], p["quantifier_pos"]) == "a"
    q = sentence_positions("There are no dogs", "There are some dogs", tok, nlp)
    assert q["full_stop_pos"] == -1 and not q["generic_ok"]
    assert q["n_further_subject"] == 0


def test_dependency_fallback_subject(tok, nlp):
    p = sentence_positions("There are no floor grates visible.", "There are some floor grates visible.", tok, nlp)
    assert word(tok, p["negated_ids"], p["negator_pos"]) == "no"
    assert p["subject_source"] == "dependency" and p["subject"] == "floor grates"
    assert p["generic_ok"] and p["n_further_subject"] == len(tok.encode("grates visible")) - 2


def test_dependency_fallback_stops_at_head(tok, nlp):
    p = sentence_positions("There is no sliced.", "There is a sliced.", tok, nlp)
    assert p["subject_source"] == "dependency" and p["subject"] == "sliced"


def test_non_generic_shapes(tok, nlp):
    p = sentence_positions("You see no people .", "You see people .", tok, nlp)
    assert word(tok, p["negated_ids"], p["negator_pos"]) == "no"
    assert word(tok, p["negated_ids"], p["full_stop_pos"]) == "."
    assert not p["generic_ok"]
    q = sentence_positions("No apples can be seen.", "Some apples can be seen.", tok, nlp)
    assert q["negator_pos"] == 1 and not q["generic_ok"]


def test_missing_negator_raises(tok, nlp):
    with pytest.raises(InputError, match="There are 4."):
        sentence_positions("There are 4.", "There are 4.", tok, nlp)


def test_add_positions_flags_failures(tok, nlp):
    df = pd.DataFrame({
        "key": ["good", "bad"],
        "negated": ["There are no cats.", "There are 4."],
        "non_negated": ["There are some cats.", "There are 4."],
        "negation": ["caption", "foil"],
    })
    out, report = add_positions(df, tok, nlp)
    assert len(out) == 2 and out["positions_ok"].tolist() == [True, False]
    assert report["positions_failed"] == 1 and report["failed_entries"][0]["key"] == "bad"
    assert "There are 4." in out.loc[1, "positions_error"]
    assert out.loc[1, "negator_pos"] == -1 and not out.loc[1, "generic_ok"]
    assert out.loc[0, "caption_ids"] == out.loc[0, "negated_ids"]
    assert out.loc[1, "foil_ids"] == out.loc[1, "negated_ids"]
    with pytest.raises(InputError, match="non_negated"):
        add_positions(df.drop(columns="non_negated"), tok, nlp)


def test_positions_table_round_trips_through_parquet(tok, nlp, tmp_path):
    df = pd.DataFrame({"key": ["a", "b"], "negated": ["There is no cat.", "There are 4."],
                       "non_negated": ["There is a cat.", "There are 4."]})
    out, _ = add_positions(df, tok, nlp)
    write_parquet(out, tmp_path / "p.parquet", {"model": "test"})
    back = pd.read_parquet(tmp_path / "p.parquet")
    assert [list(x) for x in back["negated_ids"]] == out["negated_ids"].tolist()
    assert back["negator_pos"].tolist() == out["negator_pos"].tolist()
    assert back["positions_ok"].tolist() == [True, False]


def test_generic_position_map(tok, nlp):
    row = sentence_positions("There are no people in the picture.", "There are some people in the picture.", tok, nlp)
    mapping = generic_position_map(row)
    assert [name for name, _ in mapping] == list(GENERIC_NAMES)
    assert dict(mapping) == {"SOT": [0], "There": [1], "is/are": [2], "negator": [3], "subject_first": [4],
                             "subject_further": [5, 6, 7], "full_stop": [8], "EOT": [9]}
    short = sentence_positions("There is no cat.", "There is a cat.", tok, nlp)
    assert dict(generic_position_map(short))["subject_further"] == []


def test_generic_map_non_negated_shift(tok, nlp):
    row = sentence_positions("There are no people in the picture.", "There are people in the picture.", tok, nlp)
    mapping = dict(generic_position_map(row, sentence="non_negated"))
    ids = row["non_negated_ids"]
    assert mapping["negator"] == []
    assert word(tok, ids, mapping["subject_first"][0]) == "people"
    assert word(tok, ids, mapping["full_stop"][0]) == "."
    assert mapping["EOT"] == [len(ids) - 1]
    with pytest.raises(InputError, match="generic"):
        generic_position_map({**row, "generic_ok": False, "key": "k1"})


def _check_partition(mapping, n_tokens):
    flat = [p for _, positions in mapping for p in positions]
    assert sorted(flat) == list(range(n_tokens))


def test_real_rephrased_rows(shared_data, tok, nlp):
    df, _ = prepare_variant(shared_data / "valse" / "existence.json", "rephrased")
    out, report = add_positions(df, tok, nlp)
    assert report["positions_ok"] == len(out) == 490
    generic = out[out["generic_ok"]]
    assert len(generic) == 490
    assert out.loc[out["subject"] == "", "negated"].tolist() == ["There are no of his feet touching the ground."]
    for _, row in generic.iterrows():
        cap, foil = row["caption_ids"], row["foil_ids"]
        assert len(cap) == len(foil)
        assert [i for i, (a, b) in enumerate(zip(cap, foil)) if a != b] == [row["negator_pos"]]
        assert word(tok, row["negated_ids"], row["negator_pos"]) == "no"
        assert word(tok, row["non_negated_ids"], row["quantifier_pos"]) in ("some", "a")
        assert word(tok, row["negated_ids"], row["full_stop_pos"]) == "."
        if row["subject"]:
            assert row["subject"].split()[0].lower().startswith(word(tok, row["negated_ids"], row["subject_first_pos"]))
        _check_partition(generic_position_map(row), len(row["negated_ids"]))
        _check_partition(generic_position_map(row, "non_negated"), len(row["non_negated_ids"]))


def test_real_standard_rows(shared_data, tok, nlp):
    df, _ = prepare_variant(shared_data / "valse" / "existence.json", "standard")
    out, report = add_positions(df, tok, nlp)
    assert report["positions_ok"] == 505 and report["generic_ok"] == 490
    for _, row in out[out["generic_ok"]].iterrows():
        _check_partition(generic_position_map(row, "non_negated"), len(row["non_negated_ids"]))
