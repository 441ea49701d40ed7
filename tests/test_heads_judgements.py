"""Association by human judgement: the judging sheet, a filled one read back (equal to a hand count), malformed ones."""

import pandas as pd
import pytest

from clip_interp.errors import InputError
from clip_interp.heads.judgements import association_sheet, judgement, read_judgements, sheet_columns

N_TEXTS = 3


def label_table(labeller, labels):
    """Heads (layer, head) -> label, each with texts naming its own layer and head (so a shifted row shows)."""
    return pd.DataFrame([{"layer": layer, "head": head, "label": label, "confidence": 1.0,
                          "texts": [f"L{layer}H{head} text {i}" for i in range(1, 5)], "labeller": labeller}
                         for (layer, head), label in labels.items()])


LABELS = {
    "taxonomy": label_table("taxonomy", {(11, 0): "colours", (11, 1): "animals", (12, 0): "colours",
                                         (12, 1): "locations"}),
    "published": label_table("published", {(11, 0): "Colors", (12, 1): "Location"}),
}
# The person's judgements (1 = the text matches the label), per labeller and head, in the sheet's row order.
FILLED = {("taxonomy", 11, 0): ["1", "y", "1"], ("taxonomy", 11, 1): ["0", "n", "yes"],
          ("taxonomy", 12, 0): ["Y", "1", "no"], ("taxonomy", 12, 1): ["0", "0", "0"],
          ("published", 11, 0): ["true", "1", "1"], ("published", 12, 1): ["1", "FALSE", " 0 "]}


def filled_sheet(tmp_path, values=FILLED, name="sheet.tsv"):
    sheet = association_sheet("toy", LABELS, N_TEXTS)
    for i, row in sheet.iterrows():
        for j, value in enumerate(values[(row["labeller"], row["layer"], row["head"])], start=1):
            sheet.loc[i, f"match_{j}"] = value
    path = tmp_path / name
    sheet.to_csv(path, sep="\t", index=False)
    return path, sheet


def test_the_sheet_lists_every_head_with_both_numberings_and_its_texts():
    sheet = association_sheet("toy", LABELS, N_TEXTS)
    assert list(sheet.columns) == sheet_columns(N_TEXTS) == [
        "model", "layer", "layer_paper", "head", "label", "labeller", "text_1", "text_2", "text_3",
        "match_1", "match_2", "match_3"]
    assert len(sheet) == 6 and sheet["labeller"].tolist() == ["taxonomy"] * 4 + ["published"] * 2
    assert (sheet["layer_paper"] == sheet["layer"] - 1).all() and (sheet["model"] == "toy").all()
    for row in sheet.itertuples():
        assert [row.text_1, row.text_2, row.text_3] == [f"L{row.layer}H{row.head} text {i}" for i in (1, 2, 3)]
    assert (sheet[[f"match_{i}" for i in (1, 2, 3)]] == "").all().all()
    with pytest.raises(InputError, match=r"has 4 texts, fewer than `heads.association.n_texts` \(5\)"):
        association_sheet("toy", LABELS, 5)


@pytest.mark.parametrize("value, expected", [("1", True), ("Y", True), (" yes ", True), ("True", True),
                                             ("0", False), ("n", False), ("NO", False), ("false", False),
                                             ("", None), ("2", None), ("maybe", None)])
def test_accepted_judgements(value, expected):
    assert judgement(value) is expected


def test_a_filled_sheet_gives_the_hand_counted_association(tmp_path):
    path, _ = filled_sheet(tmp_path)
    judged = read_judgements(path, "toy", LABELS, N_TEXTS, min_matches=2)
    # by hand: taxonomy L11H0 3 matches, L11H1 1, L12H0 2, L12H1 0; published L11H0 3, L12H1 1
    assert judged["matches"].tolist() == [3, 1, 2, 0, 3, 1]
    by_labeller = judged.groupby("labeller", sort=False)["associated"].mean()
    assert by_labeller.to_dict() == {"taxonomy": 2 / 4, "published": 1 / 2}
    strict = read_judgements(path, "toy", LABELS, N_TEXTS, min_matches=3)
    assert strict.groupby("labeller", sort=False)["associated"].mean().to_dict() == {"taxonomy": 1 / 4,
                                                                                     "published": 1 / 2}
    assert judged[["labeller", "layer", "head"]].values.tolist() == [list(key) for key in FILLED]


def test_rows_of_other_models_are_ignored(tmp_path):
    path, sheet = filled_sheet(tmp_path)
    other = sheet.assign(model="other-model", label="nonsense")
    pd.concat([other, sheet]).to_csv(path, sep="\t", index=False)
    assert read_judgements(path, "toy", LABELS, N_TEXTS, 2)["matches"].tolist() == [3, 1, 2, 0, 3, 1]


@pytest.mark.parametrize("row, columns, value, message", [
    (2, ["match_3"], "maybe", r"sheet.tsv, line 4: match_3 holds 'maybe'; write one of 1, 0, y, n"),
    (1, ["match_2"], "", r"sheet.tsv, line 3: match_2 is blank"),
    (5, ["match_1", "match_2", "match_3"], "",
     r"sheet.tsv, line 7: the row is left blank; write 1/0 or y/n in each of match_1..match_3"),
    (3, ["head"], 7, r"sheet.tsv, line 5: head \(layer 12, head 7\) of labeller taxonomy is not a labelled head of "
                     r"model toy; delete the row"),
    (4, ["labeller"], "llm", r"sheet.tsv, line 6: labeller 'llm' is not one of the configured labellers"),
    (0, ["layer"], "eleven", r"sheet.tsv, line 2: layer 'eleven' and head '0' must be integers"),
    (0, ["label"], "shapes", r"sheet.tsv, line 2: the label or texts are not the head's current ones"),
    (0, ["text_2"], "edited", r"sheet.tsv, line 2: the label or texts are not the head's current ones"),
])
def test_malformed_sheets_name_the_line(tmp_path, row, columns, value, message):
    path, sheet = filled_sheet(tmp_path)
    sheet = sheet.astype(object)
    sheet.loc[row, columns] = value
    sheet.to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match=message):
        read_judgements(path, "toy", LABELS, N_TEXTS, 2)


def test_a_missing_column(tmp_path):
    path, sheet = filled_sheet(tmp_path)
    sheet.drop(columns=["match_2"]).to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match=r"judging sheet .*sheet.tsv lacks the columns \['match_2'\]"):
        read_judgements(path, "toy", LABELS, N_TEXTS, 2)


def test_partial_and_duplicated_sheets(tmp_path):
    path, sheet = filled_sheet(tmp_path)
    sheet.drop(index=[1, 4]).to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match=r"sheet.tsv has no row for head L11 H1 \(paper L10.H1\) of labeller "
                                         r"taxonomy of model toy \(2 heads missing\)"):
        read_judgements(path, "toy", LABELS, N_TEXTS, 2)
    pd.concat([sheet, sheet.iloc[[2]]]).to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match=r"sheet.tsv, line 8: repeats the head \(layer 12, head 0\) of labeller "
                                         r"taxonomy of line 4"):
        read_judgements(path, "toy", LABELS, N_TEXTS, 2)
    with pytest.raises(InputError, match=r"judging sheet .*nope.tsv does not exist"):
        read_judgements(tmp_path / "nope.tsv", "toy", LABELS, N_TEXTS, 2)


def test_automatic_association_of_taxonomy_labels_is_a_confidence_threshold():
    """README: with the taxonomy labeller and heads.n_texts == association.n_texts, the matcher's count of texts
    matching the label is confidence x n_texts (the same matcher on the same texts), so a head is associated exactly
    when its confidence is at least min_matches / n_texts."""
    import torch

    from clip_interp.heads.labels import PropertyMatcher, label_heads
    from clip_interp.heads.scores import association_per_head
    from clip_interp.heads.taxonomy import Taxonomy

    taxonomy = Taxonomy({"red": ("red",), "blue": ("blue",), "round": ("round",)})
    words = ("red", "blue", "round")

    def encode(texts):
        return torch.tensor([[float(w in t) + 0.01 * (i + 1) for i, w in enumerate(words)] for t in texts])

    generator = torch.Generator().manual_seed(0)
    rows = [{"layer": 1, "head": head, "rank": rank, "text": words[int(torch.randint(3, (1,), generator=generator))]}
            for head in range(40) for rank in range(1, 6)]
    matcher = PropertyMatcher(encode, taxonomy)
    labels = label_heads(pd.DataFrame(rows), matcher, 5)
    judged = association_per_head(labels, matcher, n_texts=5, min_matches=3)
    assert (judged["matches"] == (labels["confidence"] * 5).round().astype(int)).all()
    assert (judged["associated"] == (labels["confidence"] >= 3 / 5)).all()
    assert 0 < judged["associated"].mean() < 1  # both kinds of head occur
