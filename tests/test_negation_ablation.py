"""Image ablation from the activation caches: row matching by key, the summary's counts and means, errors."""

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clip_interp.errors import InputError
from clip_interp.images import load_images
from clip_interp.negation import image_ablation_summary as A
from clip_interp.negation.caches import caption_foil_embeddings, write_image_cache, write_text_cache
from clip_interp.negation.image_ablation import (
    IMAGE_ABLATION_COLUMNS,
    check_components,
    image_ablation_effects,
    image_ablation_from_caches,
)
from clip_interp.store import SelectedRows

TOL = 1e-4
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
INSTANCES = pd.DataFrame({
    "key": [f"inst_{i}" for i in range(6)],
    "negation": ["caption", "foil", "foil", "caption", "foil", "caption"],
    "negated": ["There is no dog.", "There are no cats.", "There is no bird.", "There are no people.",
                "There is no car.", "There are no trees."],
    "non_negated": ["There is a dog.", "There are some cats.", "There is a bird.", "There are some people.",
                    "There is a car.", "There are some trees."],
})


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def case(tmp_path_factory, tiny_clip_factory):
    """A random-init tiny open_clip model, random PNG images and the image cache of all instances (key order)."""
    root = tmp_path_factory.mktemp("ablation")
    torch.manual_seed(0)
    model = tiny_clip_factory(TINY_CONFIG)
    rng = np.random.default_rng(0)
    paths = []
    for key in INSTANCES["key"]:
        path = root / f"{key}.png"
        Image.fromarray(rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    image_cache = root / "image.h5"
    write_image_cache(model, INSTANCES["key"].tolist(), paths, image_cache, model_id="tiny", batch_size=4,
                      progress=False)
    return model, paths, image_cache, root


def _text_cache(model, instances, path):
    ids = {group: [model.tokenizer.encode(s) for s in instances[column]]
           for group, column in (("negated", "negated"), ("non_negated", "non_negated"))}
    write_text_cache(model, instances["key"].tolist(), ids, path, model_id="tiny", progress=False)
    return path


def _negation():
    return INSTANCES.set_index("key")["negation"]


def _from_pixels(model, paths, instances):
    """The ablation table computed from the images themselves (no cache)."""
    in_caption = instances["negation"] == "caption"
    captions = instances["negated"].where(in_caption, instances["non_negated"]).tolist()
    foils = instances["non_negated"].where(in_caption, instances["negated"]).tolist()
    by_key = dict(zip(INSTANCES["key"], paths))
    pixels = load_images([by_key[k] for k in instances["key"]], model.preprocess)
    return image_ablation_effects(model, pixels, captions, foils, keys=instances["key"].tolist(),
                                  negation=instances["negation"].tolist(), batch_size=4, progress=False)


def _assert_same_per_key(a, b, columns=("S_caption", "S_foil", "d", "S_caption_patched", "S_foil_patched",
                                        "d_star", "iae")):
    both = a.merge(b, on=["key", "layer", "component"], suffixes=("", "_other"), validate="one_to_one")
    assert len(both) == len(a) == len(b)
    assert (both["negation"] == both["negation_other"]).all()
    for col in columns:
        assert (both[col] - both[f"{col}_other"]).abs().max() < TOL, col


def test_cached_table_equals_the_computation_from_pixels(case):
    model, paths, image_cache, root = case
    text_cache = _text_cache(model, INSTANCES, root / "text_same_order.h5")
    table, counts = image_ablation_from_caches(model, image_cache, text_cache, _negation(), batch_size=4,
                                               progress=False)
    assert list(table.columns) == IMAGE_ABLATION_COLUMNS
    assert len(table) == len(INSTANCES) * model.vision.n_layers * 2
    assert table["key"].drop_duplicates().tolist() == INSTANCES["key"].tolist()
    assert sorted(table["layer"].unique()) == list(range(1, model.vision.n_layers + 1))
    assert counts["image_rows_in_text_order"] and counts["n_image_cache_rows_unused"] == 0
    _assert_same_per_key(table, _from_pixels(model, paths, INSTANCES))
    np.testing.assert_allclose(table["iae"], table["d"] - table["d_star"], atol=1e-9)
    np.testing.assert_allclose(table["d"], table["S_caption"] - table["S_foil"], atol=1e-9)
    np.testing.assert_allclose(table["d_star"], table["S_caption_patched"] - table["S_foil_patched"], atol=1e-9)


def test_rows_are_matched_by_key_when_the_orders_differ(case):
    """A shuffled subset of the instances (non-consecutive image rows) gives the same rows per key."""
    model, paths, image_cache, root = case
    subset = INSTANCES.iloc[[4, 0, 5, 2]].reset_index(drop=True)
    text_cache = _text_cache(model, subset, root / "text_shuffled.h5")
    table, counts = image_ablation_from_caches(model, image_cache, text_cache, _negation(), batch_size=2,
                                               progress=False)
    assert table["key"].drop_duplicates().tolist() == subset["key"].tolist()
    assert counts["n_instances"] == 4 and counts["n_image_cache_rows_unused"] == 2
    assert not counts["image_rows_in_text_order"]
    _assert_same_per_key(table, _from_pixels(model, paths, subset))
    full, _ = image_ablation_from_caches(model, image_cache, _text_cache(model, INSTANCES, root / "text_all.h5"),
                                         _negation(), batch_size=3, progress=False)
    _assert_same_per_key(table, full[full["key"].isin(subset["key"])])


def test_caption_and_foil_follow_the_negation_side(case):
    model, _, _, root = case
    text_cache = _text_cache(model, INSTANCES, root / "text_sides.h5")
    keys, negation, caption, foil = caption_foil_embeddings(text_cache, _negation())
    with h5py.File(text_cache, "r") as f:
        negated, non_negated = f["negated/embedding"][:], f["non_negated/embedding"][:]
    assert keys == INSTANCES["key"].tolist() and negation.tolist() == INSTANCES["negation"].tolist()
    for i, side in enumerate(negation):
        np.testing.assert_array_equal(caption[i], negated[i] if side == "caption" else non_negated[i])
        np.testing.assert_array_equal(foil[i], non_negated[i] if side == "caption" else negated[i])


def test_selected_rows_reads_the_requested_rows_in_order():
    data = np.arange(7 * 2 * 3, dtype=np.float32).reshape(7, 2, 3)
    view = SelectedRows(data, np.array([5, 1, 1, 2, 3, 6]))
    assert view.shape == (6, 2, 3) and len(view) == 6
    np.testing.assert_array_equal(view[0:6], data[[5, 1, 1, 2, 3, 6]])
    np.testing.assert_array_equal(view[3:5], data[[2, 3]])
    np.testing.assert_array_equal(view[1:3], data[[1, 1]])
    assert view[6:6].shape == (0, 2, 3)
    with pytest.raises(InputError, match="outside"):
        SelectedRows(data, np.array([0, 7]))


def test_text_instances_missing_from_the_image_cache(case):
    model, _, image_cache, root = case
    extra = pd.concat([INSTANCES.iloc[:2], INSTANCES.iloc[:1].assign(key="not_in_image_cache")], ignore_index=True)
    text_cache = _text_cache(model, extra, root / "text_extra.h5")
    negation = pd.concat([_negation(), pd.Series({"not_in_image_cache": "caption"})])
    with pytest.raises(InputError, match=r"1 of 3 instances .* absent from image cache .*not_in_image_cache"):
        image_ablation_from_caches(model, image_cache, text_cache, negation, progress=False)


def test_text_instances_missing_from_the_positions_table(case):
    model, _, image_cache, root = case
    text_cache = _text_cache(model, INSTANCES, root / "text_positions.h5")
    with pytest.raises(InputError, match=r"2 of 6 .* absent from the positions table"):
        image_ablation_from_caches(model, image_cache, text_cache, _negation().iloc[2:], progress=False)
    with pytest.raises(InputError, match="not 'caption' or 'foil'"):
        caption_foil_embeddings(text_cache, _negation().replace("foil", "both"))


def test_unknown_or_repeated_component(case):
    model, _, image_cache, root = case
    with pytest.raises(InputError, match="unknown or no component"):
        image_ablation_from_caches(model, image_cache, root / "never_read.h5", _negation(), components=["ffn"])
    with pytest.raises(InputError, match="unknown or no component"):
        check_components([])
    with pytest.raises(InputError, match="twice"):
        check_components(["mha", "mha"])
    assert check_components(["mlp"]) == ["mlp"]


def test_cache_without_the_needed_datasets(case, tmp_path):
    model, _, image_cache, root = case
    text_cache = _text_cache(model, INSTANCES, root / "text_for_bad_image.h5")
    bad = tmp_path / "image.h5"
    with h5py.File(bad, "w") as f:
        f.create_dataset("keys", data=np.asarray(INSTANCES["key"].tolist(), dtype=object), dtype=h5py.string_dtype())
    with pytest.raises(InputError, match="lacks"):
        image_ablation_from_caches(model, bad, text_cache, _negation(), progress=False)
    with pytest.raises(InputError, match="no dataset 'negated/embedding'"):
        caption_foil_embeddings(bad, _negation())


def _hand_table():
    """Two instances per side, layers 1-2, both components; d and d* chosen by hand."""
    rows = [
        # key, negation, layer, component, d, d_star
        ("a", "caption", 1, "mha", 2.0, 3.0),    # improved, ends correct
        ("b", "caption", 1, "mha", -2.0, -0.5),  # improved, ends incorrect
        ("a", "caption", 2, "mha", 2.0, -1.0),   # worsened, ends incorrect
        ("b", "caption", 2, "mha", -2.0, -2.0),  # unchanged
        ("c", "foil", 1, "mha", 0.5, 0.2),       # worsened, ends correct
        ("d", "foil", 1, "mha", 1.5, 4.0),       # improved, ends correct
        ("c", "foil", 2, "mha", 0.5, 0.5),       # unchanged
        ("d", "foil", 2, "mha", 1.5, 0.0),       # worsened, ends incorrect (d* = 0 is not correct)
    ]
    df = pd.DataFrame(rows, columns=["key", "negation", "layer", "component", "d", "d_star"])
    df = pd.concat([df, df.assign(component="mlp", d_star=df["d"] + 1.0)], ignore_index=True)
    # Scores consistent with d and d*: S(f) = 1 and S*(f) = 1.5, so ΔS(f) = 0.5 and ΔS(c) = d* − d + 0.5.
    return df.assign(iae=df["d"] - df["d_star"], S_caption=df["d"] + 1.0, S_foil=1.0,
                     S_caption_patched=df["d_star"] + 1.5, S_foil_patched=1.5)


def test_summary_shows_each_score_move():
    table = _hand_table()
    summary = A.ablation_summary(table).set_index(["component", "negation", "segment", "layer"])
    row = summary.loc[("mha", "caption", "all", 1)]
    assert row["mean_delta_S_foil"] == pytest.approx(0.5)
    assert row["mean_delta_S_caption"] == pytest.approx(((3 - 2) + (-0.5 + 2)) / 2 + 0.5)
    np.testing.assert_allclose(summary["mean_delta_S_foil"] - summary["mean_delta_S_caption"],
                               summary["mean_iae"])  # IAE = ΔS(f) − ΔS(c)


def test_iae_averages_pool_both_sides_then_average_layers():
    table = _hand_table()
    averages = A.iae_averages(table).set_index(["component", "segment", "negation"])
    assert list(averages.reset_index().columns) == A.IAE_AVERAGE_COLUMNS
    mha = table[table.component == "mha"]
    expected = mha.groupby("layer")["iae"].mean().mean()  # four instances of both sides per layer
    assert averages.loc[("mha", "all", "both"), "mean_iae_over_layers"] == pytest.approx(expected)
    assert averages.loc[("mha", "all", "both"), ["n", "n_layers"]].tolist() == [4, 2]
    caption = mha[mha.negation == "caption"].groupby("layer")["iae"].mean().mean()
    assert averages.loc[("mha", "all", "caption"), "mean_iae_over_layers"] == pytest.approx(caption)
    assert averages.loc[("mlp", "all", "both"), "mean_iae_over_layers"] == pytest.approx(-1.0)
    correct = averages.loc[("mha", "correct", "both")]  # a (d = 2) and d (d = 1.5)
    assert correct["n"] == 2 and correct["mean_iae_over_layers"] == pytest.approx(
        mha[mha.key.isin(["a", "d"])].groupby("layer")["iae"].mean().mean())
    empty = averages.loc[("mha", "ambiguous", "caption")]
    assert empty["n"] == 0 and np.isnan(empty["mean_iae_over_layers"])


def test_summary_counts_and_means_by_hand():
    summary = A.ablation_summary(_hand_table(), correct=1.0, incorrect=-1.0)
    assert list(summary.columns) == A.SUMMARY_COLUMNS
    assert len(summary) == 2 * 2 * len(A.SUMMARY_SEGMENTS) * 2
    outcome_total = summary[list(A.OUTCOMES)].sum(axis=1) + summary["unchanged"]
    assert (outcome_total == summary["n"]).all()
    overall = summary[summary["segment"] == "all"].set_index(["component", "negation", "layer"])
    assert (overall["n"] == 2).all()
    row = overall.loc[("mha", "caption", 1)]
    assert row["mean_iae"] == pytest.approx(((2 - 3) + (-2 + 0.5)) / 2)
    assert row["sem_iae"] == pytest.approx(np.std([-1.0, -1.5], ddof=1) / np.sqrt(2))
    assert (row["improved_correct"], row["improved_incorrect"]) == (1, 1)
    assert (row["accuracy_before"], row["accuracy_after"]) == (0.5, 0.5)
    row = overall.loc[("mha", "caption", 2)]
    assert (row["worsened_incorrect"], row["unchanged"], row["improved_correct"]) == (1, 1, 0)
    assert row["mean_iae"] == pytest.approx((3.0 + 0.0) / 2) and row["accuracy_after"] == 0.0
    row = overall.loc[("mha", "foil", 1)]
    assert (row["worsened_correct"], row["improved_correct"]) == (1, 1)
    assert row["mean_iae"] == pytest.approx((0.3 - 2.5) / 2)
    row = overall.loc[("mha", "foil", 2)]
    assert (row["unchanged"], row["worsened_incorrect"]) == (1, 1) and row["accuracy_after"] == 0.5
    mlp = overall.xs("mlp", level="component")
    assert (mlp["mean_iae"] == -1.0).all() and (mlp["improved_correct"] + mlp["improved_incorrect"] == 2).all()
    assert (mlp["sem_iae"] == 0).all()


def test_summary_segments_split_the_instances():
    table = _hand_table()
    summary = A.ablation_summary(table, correct=1.0, incorrect=-1.0)
    per_segment = summary[summary["segment"] != "all"].groupby(["component", "negation", "layer"])["n"].sum()
    overall = summary[summary["segment"] == "all"].set_index(["component", "negation", "layer"])["n"]
    pd.testing.assert_series_equal(per_segment.sort_index(), overall.sort_index(), check_names=False)
    cells = summary.set_index(["component", "negation", "segment", "layer"])
    assert cells.loc[("mha", "caption", "correct", 1), "n"] == 1       # a: d = 2 > 1
    assert cells.loc[("mha", "caption", "incorrect", 1), "n"] == 1     # b: d = -2 <= -1
    assert cells.loc[("mha", "foil", "ambiguous", 1), "n"] == 1        # c: d = 0.5
    empty = cells.loc[("mha", "caption", "ambiguous", 1)]
    assert empty["n"] == 0 and np.isnan(empty["mean_iae"]) and empty["improved_correct"] == 0
    single = cells.loc[("mha", "foil", "correct", 1)]
    assert single["n"] == 1 and np.isnan(single["sem_iae"])


def test_summary_errors():
    table = _hand_table()
    with pytest.raises(InputError, match="lacks column"):
        A.ablation_summary(table.drop(columns="d_star"))
    with pytest.raises(InputError, match="incorrect .* must be below correct"):
        A.ablation_summary(table, correct=-1.0, incorrect=1.0)
    with pytest.raises(InputError, match="unknown component"):
        A.ablation_summary(table.replace({"component": {"mlp": "ffn"}}))
    with pytest.raises(InputError, match="negation values"):
        A.ablation_summary(table.replace({"negation": {"foil": "none"}}))


def test_figures_with_both_and_with_one_component(tmp_path):
    from clip_interp.plotting import save_figure

    both = A.ablation_summary(_hand_table())
    only_mha = A.ablation_summary(_hand_table().query("component == 'mha'"))
    assert set(only_mha["component"]) == {"mha"}
    default = A.plot_component_ablation(both, "mha", "tiny")
    titles = [ax.get_title() for ax in default.axes if ax.get_title()]
    assert titles and all("correct segment (n=1" in t for t in titles)  # the study's segment by default
    every = A.plot_mha_vs_mlp(both, "tiny", "all")
    assert all("all instances (n=2)" in ax.get_title() for ax in every.axes)
    by_segment = A.plot_ablation_by_segment(both, "tiny", ["mha", "mlp"])
    # empty: caption ambiguous, foil incorrect
    assert sum(t.get_text() == "n = 0" for ax in by_segment.axes for t in ax.texts) == 2
    scores = A.plot_caption_foil_scores(only_mha, "tiny", "all")
    assert sum("not configured" in t.get_text() for ax in scores.axes for t in ax.texts) == 2
    for name, fig in [
        ("fig12", default), ("fig14_all", every), ("by_segment", by_segment), ("scores", scores),
        ("fig12", A.plot_component_ablation(both, "mha", "tiny")),
        ("fig13", A.plot_component_ablation(both, "mlp", "tiny")),
        ("fig14", A.plot_mha_vs_mlp(both, "tiny")),
        ("fig13_absent", A.plot_component_ablation(only_mha, "mlp", "tiny")),
        ("fig14_one", A.plot_mha_vs_mlp(only_mha, "tiny")),
    ]:
        texts = [t.get_text() for ax in fig.axes for t in ax.texts] + [fig.get_suptitle()]
        if name == "fig13_absent":
            assert any("not configured" in t for t in texts)
        if name == "fig14_one":
            assert any("not configured: MLP" in t for t in texts)
        save_figure(fig, [tmp_path / f"{name}.png"])
        assert (tmp_path / f"{name}.png").stat().st_size > 0
