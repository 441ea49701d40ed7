import pandas as pd
import pytest

from clip_interp.errors import InputError, SourceError
from clip_interp.negation.cannot import (
    build_cannot_v11_from_parts,
    configured_source,
    load_cannot,
    require_pairs_left,
    select_no_some_pairs,
)

PAIR_COLUMNS = ["source_index", "negated", "non_negated", "negator_pos", "eot_pos", "n_tokens"]
STEPS = ["rows", "after_label_1", "after_contains_no", "after_no_opens_noun_chunk",
         "after_not_followed_by_punct", "after_fits_context", "after_equal_length"]


def write(path, text):
    path.write_text(text)
    return path


def test_build_from_parts(tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    write(parts / "a.tsv", 'sentence\tnegated\nThe cat sat.\tThe cat did not sit.\n"A ""quoted"" one."\tNot one.\n')
    write(parts / "b.tsv", "premise\thypothesis\tlabel\n"
                           "You are fat.\tYou are thin.\t0\n"
                           "You are fat.\tYou aren't fat.\t1\n")
    df = build_cannot_v11_from_parts(parts)
    assert list(df.columns) == ["premise", "hypothesis", "label"]
    assert df["label"].tolist() == [1, 1, 0, 1]
    assert df.loc[1, "premise"] == 'A "quoted" one.'
    assert df.loc[0, "hypothesis"] == "The cat did not sit."
    write(parts / "c.tsv", "text\tother\nx\ty\n")
    with pytest.raises(InputError, match="c.tsv"):
        build_cannot_v11_from_parts(parts)
    with pytest.raises(InputError, match="no \\*.tsv"):
        build_cannot_v11_from_parts(tmp_path / "empty")


def test_build_from_real_parts(shared_data):
    parts = shared_data / "cannot_parts"
    df = build_cannot_v11_from_parts(parts)
    expected = sum(sum(1 for _ in open(p, encoding="utf-8")) - 1 for p in parts.glob("*.tsv"))
    assert len(df) == expected
    assert set(df["label"]) == {0, 1}
    assert df["premise"].map(type).eq(str).all()


def test_load_cannot_ok_and_errors(tmp_path):
    good = write(tmp_path / "v11.tsv", "premise\thypothesis\tlabel\nA.\tNo A.\t1\nB.\tB!\t0\n")
    df = load_cannot(good)
    assert df["label"].tolist() == [1, 0] and df["label"].dtype == "int64"

    wrong = write(tmp_path / "wrong.tsv", "sentence\tnegated\nA.\tNot A.\n")
    with pytest.raises(InputError) as err:
        load_cannot(wrong)
    assert "wrong.tsv" in str(err.value) and "'sentence', 'negated'" in str(err.value)

    lfs = write(tmp_path / "lfs.tsv", "version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")
    with pytest.raises(SourceError) as err:
        load_cannot(lfs)
    assert "lfs.tsv" in str(err.value) and "LFS" in str(err.value)

    labels = write(tmp_path / "labels.tsv", "premise\thypothesis\tlabel\nA.\tNot A.\tyes\n")
    with pytest.raises(InputError, match="'yes'"):
        load_cannot(labels)

    with pytest.raises(InputError, match="does not exist"):
        load_cannot(tmp_path / "absent.tsv")


def test_select_no_some_pairs_rules(tok, nlp):
    df = pd.DataFrame({
        "premise": ["p"] * 8,
        "hypothesis": [
            "There is no dog in the park.",
            "No cats are allowed here.",
            "I have no idea what happened.",
            "No, I do not agree.",
            "Nobody came to the party.",
            "There is no dog in the park.",
            "He said no.",
            "The answer was no; we left.",
        ],
        "label": [1, 1, 1, 1, 1, 0, 1, 1],
    })
    pairs, report = select_no_some_pairs(df, tok, nlp)
    assert list(pairs.columns) == PAIR_COLUMNS
    assert pairs["source_index"].tolist() == [0, 1, 2]
    assert pairs["non_negated"].tolist() == [
        "There is some dog in the park.", "Some cats are allowed here.", "I have some idea what happened."]
    for _, row in pairs.iterrows():
        neg, non = tok.encode(row["negated"]), tok.encode(row["non_negated"])
        assert len(neg) == len(non) == row["n_tokens"] == row["eot_pos"] + 1
        assert tok.token_str(neg[row["negator_pos"]]) == "no"
        assert tok.token_str(non[row["negator_pos"]]) == "some"
        assert [i for i, (a, b) in enumerate(zip(neg, non)) if a != b] == [row["negator_pos"]]
    assert report["rows"] == 8 and report["after_label_1"] == 7
    assert report["after_contains_no"] == 6
    assert report["pairs"] == 3 == report["after_equal_length"]
    counts = [report[s] for s in STEPS]
    assert counts == sorted(counts, reverse=True)


def test_readings_of_the_no_determiner(tok, nlp):
    """"no" on the subject is kept by both readings; "no" on an object only by the default (noun-chunk) one."""
    df = pd.DataFrame({"premise": ["p"] * 6, "label": [1] * 6, "hypothesis": [
        "No dogs are allowed in the park.",                 # subject (nsubjpass)
        "There are no people on the beach.",                # noun after an existential "there are"
        "Doctors recommend no alcohol during pregnancy.",   # object: the study's own example
        "He has no idea what happened.",                    # object
        "No dogs are allowed in the park.",                 # duplicate of the first
        "The man with no hat left early.",                  # object of a preposition
    ]})
    default, default_report = select_no_some_pairs(df, tok, nlp)
    strict, strict_report = select_no_some_pairs(df, tok, nlp, reading="subject_only")
    assert default["source_index"].tolist() == [0, 1, 2, 3, 5]
    assert strict["source_index"].tolist() == [0, 1]
    assert strict["non_negated"].tolist() == ["Some dogs are allowed in the park.",
                                              "There are some people on the beach."]
    assert default_report["reading"] == "noun_chunk" and strict_report["reading"] == "subject_only"
    assert default_report["after_no_opens_noun_chunk"] == 6 and default_report["after_negator_aligned"] == 6
    assert strict_report["after_no_determines_subject"] == 3
    for report, pairs in ((default_report, default), (strict_report, strict)):
        assert report["duplicates_removed"] == 1 and report["after_duplicates_removed"] == report["pairs"] == len(pairs)
        counts = [report[step] for step in report["steps"]]
        assert counts == sorted(counts, reverse=True) and report["steps"][-1] == "after_duplicates_removed"
    with pytest.raises(InputError, match="cannot_reading is 'subject'"):
        select_no_some_pairs(df, tok, nlp, reading="subject")


def test_select_requires_columns(tok, nlp):
    with pytest.raises(InputError, match="hypothesis"):
        select_no_some_pairs(pd.DataFrame({"sentence": ["x"]}), tok, nlp)


def test_no_pair_left_is_an_error_that_names_the_file_and_the_counts(tok, nlp):
    table = pd.DataFrame({"premise": ["A dog runs."], "hypothesis": ["The dog is not running."], "label": [1]})
    pairs, report = select_no_some_pairs(table, tok, nlp)
    assert pairs.empty
    with pytest.raises(InputError, match=r"no \"no\"/\"some\" pair of cannot.tsv is left for model m .*noun_chunk"):
        require_pairs_left(pairs, report, "cannot.tsv", "m")
    require_pairs_left(pd.DataFrame({"x": [1]}), report, "cannot.tsv", "m")


def test_select_on_real_stand_in(shared_data, tok, nlp):
    df = build_cannot_v11_from_parts(shared_data / "cannot_parts")
    pairs, report = select_no_some_pairs(df, tok, nlp)
    counts = [report[s] for s in STEPS]
    assert counts == sorted(counts, reverse=True)
    assert report["pairs"] == len(pairs) > 100
    assert (df.loc[pairs["source_index"], "label"] == 1).all()
    assert (df.loc[pairs["source_index"], "hypothesis"].to_numpy() == pairs["negated"].to_numpy()).all()
    for neg, non, pos in zip(pairs["negated"], pairs["non_negated"], pairs["negator_pos"]):
        a, b = tok.encode(neg), tok.encode(non)
        assert tok.token_str(a[pos]) == "no" and tok.token_str(b[pos]) == "some"
        assert [i for i, (x, y) in enumerate(zip(a, b)) if x != y] == [pos]


def test_a_cannot_file_with_wrong_columns_is_named_as_configured(tmp_path):
    """The workflow reads its copy of the source; the message names the config key and the user's own file."""
    copy = write(tmp_path / "cannot_dataset_v1.1.tsv", "sentence\tnegated\nA.\tNot A.\n")
    source = configured_source("negation.sources.cannot", "/data/mine/cannot.tsv")
    with pytest.raises(InputError) as err:
        load_cannot(copy, source=source)
    message = str(err.value)
    assert message.startswith("CANNOT file `negation.sources.cannot` ('/data/mine/cannot.tsv') has columns")
    assert "'sentence', 'negated'" in message and "cannot_dataset_v1.1.tsv" not in message
    labels = write(tmp_path / "labels.tsv", "premise\thypothesis\tlabel\nA.\tNot A.\tyes\n")
    with pytest.raises(InputError, match=r"^`negation.sources.cannot` \('/data/mine/cannot.tsv'\): 1 labels"):
        load_cannot(labels, source=source)


@pytest.mark.parametrize("reading, other", [("noun_chunk", "subject_only"), ("subject_only", "noun_chunk")])
def test_no_pair_left_suggests_the_other_reading(reading, other):
    report = {"reading": reading, "rows": 1, "steps": ["rows"]}
    with pytest.raises(InputError) as err:
        require_pairs_left(pd.DataFrame(), report, "`negation.sources.cannot` ('mine.tsv')", "m")
    message = str(err.value)
    assert f"under the reading {reading!r}" in message
    assert message.endswith(f"choose negation.selectivity.cannot_reading: {other}")
    assert "of `negation.sources.cannot` ('mine.tsv') is left" in message
