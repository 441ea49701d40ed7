"""Negator selectivity follows its definition: only later positions, 1-based layers, generic positions, caches."""

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from clip_interp.errors import InputError
from clip_interp.negation import selectivity as S
from clip_interp.negation.caches import write_text_cache
from clip_interp.negation.positions import add_positions

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 3},
}
PAIRS = pd.DataFrame({
    "key": ["dog", "people", "cat"],
    "negation": ["foil", "caption", "caption"],
    "negated": ["There is no dog.", "There are no big brown dogs.", "There is no cat on the sofa."],
    "non_negated": ["There is a dog.", "There are some big brown dogs.", "There is a cat on the sofa."],
})


def _patterns(n, n_layers, n_heads, t, seed=0):
    """A random attention baseline shared by both sentences, so every difference is zero."""
    rng = np.random.default_rng(seed)
    base = rng.random((n, n_layers, n_heads, t, t))
    base /= base.sum(-1, keepdims=True)
    return base.copy(), base.copy()


def _row(key, negator, n_further, negation="caption"):
    """A positions-table row of the generic shape SOT There is no <subject...> . EOT."""
    first = negator + 1
    stop = first + 1 + n_further
    eot = stop + 1
    ids = list(range(100, 101 + eot))
    return {
        "key": key, "negation": negation, "negator_pos": negator, "subject_first_pos": first,
        "n_further_subject": n_further, "full_stop_pos": stop, "eot_pos_negated": eot, "eot_pos_non_negated": eot,
        "generic_ok": True, "equal_length": True, "positions_ok": True, "negated_ids": ids, "non_negated_ids": ids,
    }


# --------------------------------------------------------------------------- the definition


def test_only_positions_after_the_negator_up_to_eot_count():
    neg, non = _patterns(1, 2, 3, 8)
    negator, eot = 2, 5
    neg[0, 1, 2, 4, negator] += 0.5
    neg[0, 1, 2, 1, negator] += 0.9  # before the negator
    neg[0, 1, 2, 2, negator] += 0.95  # the negator itself
    neg[0, 1, 2, 6, negator] += 0.99  # padding after EOT
    neg[0, 1, 2, 7, negator] += 0.99
    s = S.negator_attention_difference(neg, non, [negator], [eot])
    assert s.shape == (1, 2, 3, 8)
    assert np.isnan(s[0, :, :, :negator + 1]).all() and np.isnan(s[0, :, :, eot + 1:]).all()
    np.testing.assert_allclose(s[0, 1, 2, 3:6], [0.0, 0.5, 0.0], atol=1e-12)
    a, argmax = S.head_selectivity(s)
    assert a[0, 1, 2] == pytest.approx(0.5) and argmax[0, 1, 2] == 4
    assert np.count_nonzero(a) == 1


def test_selectivity_is_the_difference_to_the_non_negated_sentence_and_can_be_negative():
    neg, non = _patterns(1, 1, 2, 6)
    non[0, 0, 0, 3:6, 2] += [0.3, 0.2, 0.4]
    neg[0, 0, 0, 3:6, 2] += [0.1, 0.15, 0.2]
    s = S.negator_attention_difference(neg, non, [2], [5])
    a, argmax = S.head_selectivity(s)
    assert a[0, 0, 0] == pytest.approx(-0.05) and argmax[0, 0, 0] == 4
    assert a[0, 0, 1] == pytest.approx(0.0)


def test_signal_comes_out_at_its_layer_one_based_and_head():
    rows = pd.DataFrame([_row("x", 3, 1), _row("y", 3, 2, negation="foil")])
    neg, non = _patterns(2, 3, 4, 9)
    neg[1, 1, 3, 7, 3] += 0.6  # instance y, pattern index 1 = layer 2, head 3, the full stop of y
    s = S.negator_attention_difference(neg, non, rows["negator_pos"], rows["eot_pos_negated"])
    selectivity, _ = S.valse_selectivity(s, rows)
    assert len(selectivity) == 2 * 3 * 4 and list(selectivity.columns) == S.SELECTIVITY_COLUMNS
    hit = selectivity[selectivity["a"] > 1e-9]
    assert hit[["key", "negation", "layer", "head", "argmax_position", "argmax_generic"]].values.tolist() == [
        ["y", "foil", 2, 3, 7, "full_stop"]]
    assert hit["a"].item() == pytest.approx(0.6)
    assert sorted(selectivity["layer"].unique()) == [1, 2, 3] and sorted(selectivity["head"].unique()) == [0, 1, 2, 3]


def test_generic_positions_average_further_subject_tokens_with_their_count_as_weight():
    rows = pd.DataFrame([_row("two_further", 3, 2), _row("none_further", 3, 0), _row("one_further", 3, 1)])
    t = 9
    neg, non = _patterns(3, 1, 1, t)
    deltas = {
        0: {4: 0.1, 5: 0.2, 6: 0.4, 7: -0.1, 8: 0.3},
        1: {4: 0.05, 5: 0.0, 6: 0.2},
        2: {4: 0.0, 5: 0.6, 6: 0.1, 7: 0.7},
    }
    for i, by_q in deltas.items():
        for q, value in by_q.items():
            neg[i, 0, 0, q, 3] += value
    s = S.negator_attention_difference(neg, non, rows["negator_pos"], rows["eot_pos_negated"])
    selectivity, by_position = S.valse_selectivity(s, rows)
    got = {(k, p): (v, w) for k, p, v, w in by_position[["key", "position", "s", "weight"]].itertuples(index=False)}
    expected = {
        ("two_further", "subject_first"): (0.1, 1), ("two_further", "subject_further"): (0.3, 2),
        ("two_further", "full_stop"): (-0.1, 1), ("two_further", "EOT"): (0.3, 1),
        ("none_further", "subject_first"): (0.05, 1), ("none_further", "full_stop"): (0.0, 1),
        ("none_further", "EOT"): (0.2, 1),
        ("one_further", "subject_first"): (0.0, 1), ("one_further", "subject_further"): (0.6, 1),
        ("one_further", "full_stop"): (0.1, 1), ("one_further", "EOT"): (0.7, 1),
    }
    assert set(got) == set(expected)
    for name, (value, weight) in expected.items():
        assert got[name][0] == pytest.approx(value, abs=1e-12) and got[name][1] == weight, name
    assert selectivity.set_index("key")["argmax_generic"].to_dict() == {
        "two_further": "subject_further", "none_further": "EOT", "one_further": "EOT"}
    mean_s = S.position_summary(by_position, 1)
    assert list(mean_s.columns) == list(S.LATER_GENERIC)
    assert mean_s.loc[0, "subject_further"] == pytest.approx((0.3 * 2 + 0.6) / 3)
    assert mean_s.loc[0, "EOT"] == pytest.approx((0.3 + 0.2 + 0.7) / 3)


def test_head_summary_correlates_a_with_d_and_counts_shares():
    keys = [f"k{i}" for i in range(5)]
    d = pd.Series([-2.0, -1.0, 0.5, 1.0, 3.0], index=keys)
    a0 = 0.1 * d.to_numpy() + 0.05
    selectivity = pd.DataFrame({
        "key": keys * 2, "layer": [1] * 10, "head": [0] * 5 + [1] * 5, "a": list(a0) + [0.2] * 5,
    })
    heads = S.head_summary(selectivity, d, threshold=0.1)
    assert list(heads.columns) == S.HEAD_COLUMNS
    h0, h1 = heads.iloc[0], heads.iloc[1]
    assert h0["pearson_r"] == pytest.approx(1.0) and h0["pearson_p"] < 1e-3
    assert np.isnan(h1["pearson_r"]) and np.isnan(h1["pearson_p"])
    assert h0["mean_a"] == pytest.approx(a0.mean()) and h0["median_a"] == pytest.approx(0.1)
    assert h0["share_above_threshold"] == pytest.approx(2 / 5) and not h0["selective"]
    assert h1["share_above_threshold"] == 1.0 and h1["selective"] and h1["n"] == 5
    layers = S.layer_summary(selectivity, heads)
    assert layers.to_dict("records") == [{
        "layer": 1, "mean_a": pytest.approx((a0.sum() + 1.0) / 10), "max_head": 1,
        "max_head_mean_a": pytest.approx(0.2), "share_selective": 0.5, "n_heads": 2}]
    with pytest.raises(InputError, match="no score d"):
        S.head_summary(selectivity, d.drop("k3"), threshold=0.1)


def test_figures_9_and_10_split_by_negation_side(tmp_path):
    from clip_interp.plotting import save_figure

    keys = [f"k{i}" for i in range(6)]
    side = ["caption", "foil"] * 3
    rows = [{"key": k, "negation": sd, "layer": layer, "head": h, "a": (0.3 if sd == "foil" else 0.0) + 0.01 * h}
            for k, sd in zip(keys, side) for layer in (1, 2) for h in (0, 1)]
    selectivity = pd.DataFrame(rows)
    by_position = pd.DataFrame([{**r, "position": p, "s": r["a"], "weight": 1} for r in rows
                                for p in S.LATER_GENERIC])
    d = pd.Series(np.linspace(-1, 1, 6), index=keys)
    panels = S.side_panels(selectivity, by_position, d, threshold=0.1, layer=2)
    assert [(p["label"], p["n"]) for p in panels] == [("negation in the caption", 3), ("negation in the foil", 3)]
    assert not panels[0]["heads"]["selective"].any() and panels[1]["heads"]["selective"].all()
    assert panels[1]["position"].loc[1, "EOT"] == pytest.approx(0.31)
    fig9 = S.plot_selectivity_heads(panels, 0.1, "tiny", "rephrased")
    titles = [ax.get_title() for ax in fig9.axes if "mean a per head" in ax.get_title()]
    assert titles[0].startswith("negation in the caption (n = 3)") and "0 of 4 heads" in titles[0]
    assert titles[1].startswith("negation in the foil (n = 3)") and "4 of 4 heads" in titles[1]
    fig10 = S.plot_selectivity_by_position(panels, 2, "tiny")
    assert [ax.get_title() for ax in fig10.axes[:2]] == ["negation in the caption (n = 3)",
                                                         "negation in the foil (n = 3)"]
    save_figure(fig9, tmp_path / "fig9.png")
    save_figure(fig10, tmp_path / "fig10.png")


def test_cannot_summary_correlates_heads_across_datasets():
    valse = pd.DataFrame({"layer": [1, 1, 2, 2], "head": [0, 1, 0, 1], "mean_a": [0.0, 0.1, 0.3, 0.2]})
    s = np.full((2, 2, 2, 4), np.nan)
    s[:, :, :, 3] = np.array([[0.05, 0.15], [0.35, 0.25]]) + np.array([0.01, -0.01])[:, None, None]
    table = S.cannot_selectivity(s, [7, 9])
    assert table["key"].tolist()[:4] == ["7"] * 4 and set(table["argmax_position"]) == {3}
    heads, correlation = S.cannot_head_summary(table, valse, threshold=0.1)
    assert heads["mean_a"].tolist() == pytest.approx([0.05, 0.15, 0.35, 0.25])
    assert heads["valse_mean_a"].tolist() == [0.0, 0.1, 0.3, 0.2]
    assert heads["selective"].tolist() == [False, True, True, True]
    assert correlation["pearson_r"] == pytest.approx(1.0) and correlation["heads_compared"] == 4
    with pytest.raises(InputError, match="same model"):
        S.cannot_head_summary(table, valse[valse["layer"] == 1], threshold=0.1)


def test_select_instances_counts_each_filter():
    df = pd.DataFrame({
        "key": list("abcde"), "negation": ["caption"] * 5,
        "positions_ok": [True, False, True, True, True], "equal_length": [True, True, False, True, True],
        "generic_ok": [True, True, True, False, True],
    })
    kept, counts = S.select_instances(df)
    assert kept["key"].tolist() == ["a", "e"]
    assert counts == {"positions_rows": 5, "dropped_positions_not_ok": 1, "dropped_unequal_length": 1,
                      "dropped_not_generic": 1, "instances": 2}
    with pytest.raises(InputError, match="lacks columns"):
        S.select_instances(df.drop(columns="generic_ok"))


# --------------------------------------------------------------------------- error paths


@pytest.mark.parametrize("layer", [0, 4, -1, True, 2.0])
def test_a_layer_outside_the_model_names_the_config_key(layer):
    with pytest.raises(InputError, match=r"negation\.selectivity\.layer.*1\.\.3"):
        S.check_layer(layer, 3)


def test_check_layer_accepts_one_based_layers():
    assert S.check_layer(1, 3) == 1 and S.check_layer(np.int64(3), 3) == 3


def test_patterns_of_unequal_length_or_bad_positions_are_rejected():
    neg, _ = _patterns(1, 1, 1, 6)
    _, non = _patterns(1, 1, 1, 7)
    with pytest.raises(InputError, match="equal token length"):
        S.negator_attention_difference(neg, non, [2], [5])
    neg, non = _patterns(2, 1, 1, 6)
    with pytest.raises(InputError, match="negator 3 and EOT 3"):
        S.negator_attention_difference(neg, non, [1, 3], [4, 3])
    with pytest.raises(InputError, match="padded length"):
        S.negator_attention_difference(neg, non, [1, 1], [4, 6])
    with pytest.raises(InputError, match="2 patterns but 1 negator"):
        S.negator_attention_difference(neg, non, [1], [4, 4])


def _fake_cache(path, keys, lengths, non_lengths=None, t=8, n_layers=2, n_heads=2, seed=0, ids=None):
    neg, non = _patterns(len(keys), n_layers, n_heads, t, seed)
    for i in range(len(keys)):
        neg[i, :, :, :, 2] += 0.01 * (i + 1)
    with h5py.File(path, "w") as f:
        f.create_dataset("keys", data=np.asarray(keys, dtype=object), dtype=h5py.string_dtype())
        for group, pattern, length in (("negated", neg, lengths), ("non_negated", non, non_lengths or lengths)):
            g = f.create_group(group)
            g.create_dataset("pattern", data=pattern.astype(np.float32))
            g.create_dataset("length", data=np.asarray(length, dtype=np.int32))
            cached_ids = ids if ids is not None else np.zeros((len(keys), t))
            g.create_dataset("ids", data=np.asarray(cached_ids, dtype=np.int64))
    return neg.astype(np.float32), non.astype(np.float32)


def test_reading_the_cache_in_batches_keeps_the_requested_order(tmp_path):
    path = tmp_path / "text.h5"
    keys = [f"k{i}" for i in range(5)]
    neg, non = _fake_cache(path, keys, [6, 7, 8, 6, 7])
    wanted = ["k4", "k0", "k3", "k1"]
    rows = [4, 0, 3, 1]
    eot = np.asarray([6, 5, 5, 6])
    s, info = S.read_negator_differences(path, wanted, [2, 2, 2, 2], eot, batch_size=2)
    assert info == {"n_layers": 2, "n_heads": 2}
    np.testing.assert_allclose(s, S.negator_attention_difference(neg[rows], non[rows], [2] * 4, eot))
    a, _ = S.head_selectivity(s)
    np.testing.assert_allclose(a, np.broadcast_to(0.01 * (np.asarray(rows) + 1)[:, None, None], a.shape), atol=1e-6)


def test_cache_errors_name_the_problem(tmp_path):
    path = tmp_path / "text.h5"
    _fake_cache(path, ["a", "b"], [6, 7], non_lengths=[6, 8], ids=[[1, 2, 3, 4, 5, 6, 0, 0], [1] * 8])
    with pytest.raises(InputError, match=r"not in the text cache.*'zzz'"):
        S.read_negator_differences(path, ["a", "zzz"], [2, 2], [5, 5])
    with pytest.raises(InputError, match=r"unequal token length.*'b' \(7 vs 8"):
        S.read_negator_differences(path, ["a", "b"], [2, 2], [5, 6])
    with pytest.raises(InputError, match=r"other than EOT \+ 1.*'a'"):
        S.read_negator_differences(path, ["a"], [2], [4])
    with pytest.raises(InputError, match="differ from its table"):
        S.read_negator_differences(path, ["a"], [2], [5], negated_ids=[[1, 2, 3, 9, 5, 6]])
    with pytest.raises(InputError, match="unique"):
        S.read_negator_differences(path, ["a", "a"], [2, 2], [5, 5])
    s, _ = S.read_negator_differences(path, ["a"], [2], [5], negated_ids=[[1, 2, 3, 4, 5, 6]])
    assert s.shape == (1, 2, 2, 8)


# --------------------------------------------------------------------------- the real path


@pytest.fixture(scope="module")
def tiny(tiny_clip_factory):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield tiny_clip_factory(TINY_CONFIG)
    torch.set_num_threads(previous)


def test_cached_selectivity_equals_patterns_computed_directly(tiny, tok, nlp, tmp_path):
    rows, _ = add_positions(PAIRS, tok, nlp)
    assert rows["generic_ok"].all() and rows["equal_length"].all()
    assert rows["eot_pos_negated"].nunique() == 3  # padding in the cache differs per pair
    path = tmp_path / "text_pattern.h5"
    write_text_cache(tiny, rows["key"].tolist(),
                     {"negated": [list(x) for x in rows["negated_ids"]],
                      "non_negated": [list(x) for x in rows["non_negated_ids"]]},
                     path, model_id="tiny", batch_size=2, progress=False, sites=("pattern",))
    with h5py.File(path, "r") as f:
        assert "resid" not in f["negated"] and f["negated/embedding"].shape == (3, 32)
    s, info = S.read_negator_differences(path, rows["key"].tolist(), rows["negator_pos"], rows["eot_pos_negated"],
                                         negated_ids=rows["negated_ids"].tolist(), batch_size=2)
    assert info == {"n_layers": 3, "n_heads": 2}
    selectivity, by_position = S.valse_selectivity(s, rows)
    with torch.no_grad():
        for i, row in rows.iterrows():
            patterns = {}
            for sentence in ("negated", "non_negated"):
                ids = torch.tensor([list(row[f"{sentence}_ids"])])
                patterns[sentence] = tiny.encode_text(ids, cache=["pattern"]).cache.stack("pattern")[0].numpy()
            negator, eot = row["negator_pos"], row["eot_pos_negated"]
            for layer in range(3):
                for head in range(2):
                    neg, non = patterns["negated"][layer, head], patterns["non_negated"][layer, head]
                    direct = [neg[q, negator] - non[q, negator] for q in range(negator + 1, eot + 1)]
                    got = selectivity[(selectivity["key"] == row["key"]) & (selectivity["layer"] == layer + 1)
                                      & (selectivity["head"] == head)]
                    assert got["a"].item() == pytest.approx(max(direct), abs=1e-5)
                    assert got["argmax_position"].item() == negator + 1 + int(np.argmax(direct))
                    eot_s = by_position[(by_position["key"] == row["key"]) & (by_position["layer"] == layer + 1)
                                        & (by_position["head"] == head) & (by_position["position"] == "EOT")]
                    assert eot_s["s"].item() == pytest.approx(direct[-1], abs=1e-5)


def test_write_text_cache_rejects_unknown_sites(tiny, tmp_path):
    with pytest.raises(ValueError, match="mlp_out"):
        write_text_cache(tiny, ["a"], {"negated": [[49406, 49407]]}, tmp_path / "x.h5", model_id="tiny",
                         progress=False, sites=("pattern", "mlp_out"))
