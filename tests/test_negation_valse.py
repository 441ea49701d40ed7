import json

import pandas as pd
import pytest

from clip_interp.errors import InputError
from clip_interp.io import write_parquet
from clip_interp.negation.valse import load_valse, prepare_variant, read_valse_entries, rephrase

REQUIRED = {"key", "caption", "foil", "negation", "image_file", "negated", "non_negated"}


def entry(caption, foil, provenance="zero_to_something", votes=3, image="v7w_1.jpg"):
    return {
        "dataset": "visual7w", "image_file": image, "caption": caption, "foil": foil,
        "provenance_of_foils": provenance, "mturk": {"caption": votes, "foil": 0, "other": 3 - votes},
    }


@pytest.fixture
def small(tmp_path):
    data = {
        "are_cap": entry("There are no people in the picture.", "There are people in the picture."),
        "are_foil": entry("There are dogs.", "There are no dogs.", provenance="something_to_zero"),
        "is_foil": entry("There is a cat.", "There is no cat.", provenance="something_to_zero", votes=2),
        "other": entry("You see no people.", "You see people."),
        "low_votes": entry("There are no cars.", "There are cars.", votes=1),
        "missing_caption": {k: v for k, v in entry("x", "y").items() if k != "caption"},
        "int_foil": entry("There are no cars.", 7),
        "no_mturk": {k: v for k, v in entry("There are no cars.", "There are cars.").items() if k != "mturk"},
        "str_votes": {**entry("There are no cars.", "There are cars."), "mturk": {"caption": "3"}},
        "bool_votes": {**entry("There are no cars.", "There are cars."), "mturk": {"caption": True}},
        "not_an_object": ["There are no cars."],
        "empty_caption": entry("  ", "There are cars."),
    }
    path = tmp_path / "existence.json"
    path.write_text(json.dumps(data))
    return path


def test_load_reports_malformed_entries(small):
    df, skipped = load_valse(small)
    reasons = {s["key"]: s["reason"] for s in skipped}
    assert set(reasons) == {"missing_caption", "int_foil", "no_mturk", "str_votes", "bool_votes",
                            "not_an_object", "empty_caption"}
    assert "caption" in reasons["missing_caption"]
    assert "foil" in reasons["int_foil"] and "int" in reasons["int_foil"]
    assert "mturk" in reasons["no_mturk"]
    assert "mturk.caption" in reasons["str_votes"]
    assert df["key"].tolist() == ["are_cap", "are_foil", "is_foil", "other", "low_votes"]
    assert REQUIRED <= set(df.columns)


def test_negation_side_from_provenance(small):
    df, _ = load_valse(small)
    row = df.set_index("key")
    assert row.loc["are_cap", "negation"] == "caption"
    assert row.loc["are_cap", "negated"] == "There are no people in the picture."
    assert row.loc["are_foil", "negation"] == "foil"
    assert row.loc["are_foil", "negated"] == "There are no dogs."
    assert row.loc["are_foil", "non_negated"] == "There are dogs."


def test_standard_variant_counts(small):
    df, report = prepare_variant(small, "standard")
    assert df["key"].tolist() == ["are_cap", "are_foil", "is_foil", "other"]
    assert report["total_entries"] == 12 and report["malformed"] == 7
    assert report["below_vote_threshold"] == 1 and report["below_vote_threshold_keys"] == ["low_votes"]
    assert report["dropped_by_shape"] == 0 and report["kept"] == 4
    assert report["kept_negation_caption"] == 2 and report["kept_negation_foil"] == 2
    assert (df["caption"] == df["caption_original"]).all()


def test_rephrased_variant(small):
    df, report = prepare_variant(small, "rephrased")
    rows = df.set_index("key")
    assert list(rows.index) == ["are_cap", "are_foil", "is_foil"]
    assert rows.loc["are_cap", "foil"] == "There are some people in the picture."
    assert rows.loc["are_cap", "caption"] == "There are no people in the picture."
    assert rows.loc["are_foil", "caption"] == "There are some dogs."
    assert rows.loc["are_foil", "foil"] == "There are no dogs."
    assert rows.loc["is_foil", "caption"] == "There is a cat."
    assert report["dropped_by_shape"] == 1
    assert report["dropped_by_shape_entries"][0]["key"] == "other"
    assert "You see no people." in report["dropped_by_shape_entries"][0]["reason"]


def test_vote_threshold_parameter(small):
    df, report = prepare_variant(small, "standard", min_caption_votes=3)
    assert "is_foil" not in set(df["key"]) and report["below_vote_threshold"] == 2
    with pytest.raises(InputError, match="min_caption_votes"):
        prepare_variant(small, "standard", min_caption_votes=4)


def test_rephrase_rules():
    assert rephrase("There are no cars.", "There are cars.") == ("there_are", "There are some cars.", None)
    assert rephrase("There is no cat.", "There is a cat.") == ("there_is", "There is a cat.", None)
    shape, _, reason = rephrase("There are no cars.", "Cars are there.")
    assert shape == "other" and "Cars are there." in reason
    assert rephrase("no slices of pizza.", "Slices of pizza.")[0] == "other"


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_valse(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(InputError, match="bad.json"):
        load_valse(bad)
    listy = tmp_path / "list.json"
    listy.write_text("[1, 2]")
    with pytest.raises(InputError, match="list"):
        load_valse(listy)
    with pytest.raises(InputError, match="'paraphrased'"):
        prepare_variant(listy, "paraphrased")


def test_empty_file_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "e.json"
    path.write_text("{}")
    with pytest.raises(InputError, match=r"e\.json.*empty JSON object"):
        prepare_variant(path, "rephrased")


def test_list_instead_of_object_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "l.json"
    path.write_text(json.dumps([{"caption": "There is a dog."}]))
    with pytest.raises(InputError, match=r"l\.json.*holds a JSON list, expected an object"):
        read_valse_entries(path)


def test_nothing_left_after_filtering_names_the_filter_counts(tmp_path):
    path = tmp_path / "low.json"
    entry = {"caption": "There is no dog.", "foil": "There is a dog.", "image_file": "a.jpg",
             "provenance_of_foils": "zero_to_something", "mturk": {"caption": 1, "foil": 2, "other": 0}}
    path.write_text(json.dumps({"k1": entry, "k2": {"caption": 5}}))
    with pytest.raises(InputError, match=r"low\.json.*2 entries, 1 malformed, 1 below min_caption_votes=2, "
                                         r"0 dropped by sentence shape"):
        prepare_variant(path, "standard")


def test_real_existence_counts(shared_data, tmp_path):
    path = shared_data / "valse" / "existence.json"
    std, rep_std = prepare_variant(path, "standard")
    assert len(std) == 505 and rep_std["kept"] == 505
    assert rep_std["total_entries"] == 534 and rep_std["malformed"] == 0
    assert rep_std["below_vote_threshold"] == 29
    assert (std["mturk_caption"] >= 2).all()

    rph, rep = prepare_variant(path, "rephrased")
    assert len(rph) == 490
    assert rep["kept_negation_caption"] == 250 and rep["kept_negation_foil"] == 240
    assert rep["dropped_by_shape"] == 15 == len(rep["dropped_by_shape_entries"])
    assert set(rph["key"]) <= set(std["key"])
    assert rph["key"].is_unique and REQUIRED <= set(rph.columns)

    are = rph[rph["shape"] == "there_are"]
    assert len(are) == 410
    for neg, non in zip(are["negated"], are["non_negated"]):
        assert non.split() == ["some" if w == "no" else w for w in neg.split()]
    is_ = rph[rph["shape"] == "there_is"]
    assert len(is_) == 80
    assert (is_["caption"] == is_["caption_original"]).all() and (is_["foil"] == is_["foil_original"]).all()
    in_caption = rph["negation"] == "caption"
    assert (rph.loc[in_caption, "caption"] == rph.loc[in_caption, "negated"]).all()
    assert (rph.loc[~in_caption, "foil"] == rph.loc[~in_caption, "negated"]).all()

    write_parquet(rph, tmp_path / "r.parquet", {"variant": "rephrased"})
    back = pd.read_parquet(tmp_path / "r.parquet")
    assert back["key"].tolist() == rph["key"].tolist()
