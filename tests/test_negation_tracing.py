"""Causal tracing over generic positions: instance selection, labels, weighted averages, localisation, errors."""

import logging

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from clip_interp.encoding import encode_images
from clip_interp.errors import InputError
from clip_interp.models import load_model
from clip_interp.negation import tracing as T
from clip_interp.negation.causal_tracing import causal_tracing_effects
from clip_interp.negation.positions import GENERIC_NAMES, add_positions
from clip_interp.plotting import save_figure

TOL = 1e-4
# Rephrased VALSE-like pairs: two usable instances (one without further subject tokens) and one per exclusion reason.
VIT_PAIRS = pd.DataFrame({
    "key": ["dog", "people", "cats", "late", "nothing"],
    "negation": ["foil", "caption", "foil", "foil", "caption"],
    "negated": ["There is no dog.", "There are no people in the picture.", "There are no cats.",
                "In the picture there are no people.", "There is nothing here."],
    "non_negated": ["There is a dog.", "There are some people in the picture.", "There are cats.",
                    "In the picture there are some people.", "There is something here."],
})
TOY_PAIRS = pd.DataFrame({
    "key": ["purple", "red", "blue", "green"],
    "negation": ["caption", "foil", "caption", "foil"],
    "negated": ["There are no purple squares.", "There is no red circle.", "There are no small blue triangles.",
                "There is no green square."],
    "non_negated": ["There are some purple squares.", "There is a red circle.",
                    "There are some small blue triangles.", "There is a green square."],
})


pytestmark = pytest.mark.usefixtures("one_thread")


def _traced(model, positions, seed=0):
    """Selection report, instances, token-level table (labelled) and generic table for a positions table."""
    instances, report = T.select_tracing_instances(positions, "positions.parquet")
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(len(instances), 3, model.image_size, model.image_size, generator=generator)
    effects = causal_tracing_effects(model, instances, encode_images(model, pixels), progress=False)
    labelled = T.label_generic_positions(effects, instances)
    return report, instances, labelled, T.generic_effects(labelled)


@pytest.fixture(scope="module")
def vit_run(tok, nlp):
    torch.manual_seed(0)
    model = load_model({"backend": "open_clip", "name": "ViT-B-32", "random_init": True}, "cpu")
    positions, _ = add_positions(VIT_PAIRS, tok, nlp)
    return model, positions, *_traced(model, positions)


@pytest.fixture(scope="module")
def toy_run(tok, nlp, tiny_clip):
    torch.manual_seed(1)
    model = tiny_clip
    positions, _ = add_positions(TOY_PAIRS, tok, nlp)
    return model, positions, *_traced(model, positions, seed=1)


@pytest.fixture(params=["vit_run", "toy_run"])
def run(request):
    return request.getfixturevalue(request.param)


# --------------------------------------------------------------------------- selection


def test_selection_counts_every_excluded_instance(vit_run):
    _, positions, report, instances, _, _ = vit_run
    assert instances["key"].tolist() == ["dog", "people"]
    assert report["rows"] == 5 and report["kept"] == 2
    assert report["excluded"] == {"positions_failed": 1, "unequal_length": 1, "not_generic": 1,
                                  "differs_before_negator": 0}
    assert report["excluded_keys"]["positions_failed"] == ["nothing"]
    assert report["excluded_keys"]["unequal_length"] == ["cats"]
    assert report["excluded_keys"]["not_generic"] == ["late"]
    assert report["differs_beyond_negator"] == 0
    assert instances["eot_pos"].tolist() == [len(ids) - 1 for ids in instances["negated_ids"]]


def test_selection_excludes_pairs_that_differ_before_the_negator(vit_run):
    positions = vit_run[1].copy()
    ids = list(positions.loc[0, "non_negated_ids"])
    ids[1] += 1
    positions.at[0, "non_negated_ids"] = ids
    instances, report = T.select_tracing_instances(positions)
    assert instances["key"].tolist() == ["people"]
    assert report["excluded_keys"]["differs_before_negator"] == ["dog"]


def test_reading_the_instances_logs_the_selection_and_every_exclusion(vit_run, tmp_path, caplog):
    positions = vit_run[1]
    path = tmp_path / "positions.parquet"
    positions.to_parquet(path)
    with caplog.at_level(logging.INFO, logger="read-instances"):
        instances, report = T.read_tracing_instances(path, logging.getLogger("read-instances"))
    expected, expected_report = T.select_tracing_instances(positions, path)
    assert instances["key"].tolist() == expected["key"].tolist() and report == expected_report
    assert f"{path}: 2 of 5 instances kept" in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["excluded (positions_failed): 1 instances, e.g. ['nothing']",
                        "excluded (unequal_length): 1 instances, e.g. ['cats']",
                        "excluded (not_generic): 1 instances, e.g. ['late']"]


def test_no_instance_left_names_the_file_and_counts(vit_run):
    positions = vit_run[1]
    unusable = positions[positions["key"].isin(["cats", "late", "nothing"])]
    with pytest.raises(InputError, match=r"demo_positions\.parquet.*out of 3 rows.*positions_failed 1, "
                                         r"unequal_length 1, not_generic 1"):
        T.select_tracing_instances(unusable, "demo_positions.parquet")


def test_bad_positions_tables_raise(vit_run):
    positions = vit_run[1]
    with pytest.raises(InputError, match="p.parquet: missing column.*generic_ok"):
        T.select_tracing_instances(positions.drop(columns="generic_ok"), "p.parquet")
    with pytest.raises(InputError, match="p.parquet: 1 keys occur more than once"):
        T.select_tracing_instances(pd.concat([positions, positions.iloc[:1]]), "p.parquet")


def test_image_embeddings_are_matched_by_key(tmp_path):
    path = tmp_path / "image.h5"
    with h5py.File(path, "w") as f:
        f["keys"] = np.array([b"c", b"a", b"b"])
        f["real/embedding"] = np.array([[3.0, 0], [1.0, 0], [2.0, 0]])
    assert T.image_embeddings_for_keys(path, ["a", "b", "c", "a"])[:, 0].tolist() == [1.0, 2.0, 3.0, 1.0]
    with pytest.raises(InputError, match=r"1 of 2 .*image cache .*image\.h5.*'zebra'"):
        T.image_embeddings_for_keys(path, ["a", "zebra"])


# --------------------------------------------------------------------------- effects and generic positions


def test_tracing_invariants(run):
    model, _, _, instances, labelled, generic = run
    n_layers = model.text.n_layers
    assert (labelled.groupby("key")["d"].first().abs() > 1e-2).all(), "the instances need a non-negligible d"
    for _, inst in instances.iterrows():
        rows = labelled[labelled["key"] == inst["key"]].set_index(["layer", "position"])
        assert abs(rows.loc[(0, inst["negator_pos"]), "cte"] - 1) < TOL
        assert abs(rows.loc[(n_layers, inst["eot_pos"]), "cte"] - 1) < TOL
        before = rows[rows.index.get_level_values("position") < inst["negator_pos"]]
        assert len(before) == (n_layers + 1) * inst["negator_pos"] and (before["cte"] == 0).all()
        slots = generic[generic["key"] == inst["key"]].set_index(["layer", "generic_position"])["cte"]
        assert abs(slots[(0, "negator")] - 1) < TOL and abs(slots[(n_layers, "EOT")] - 1) < TOL
        for name in ("SOT", "There", "is/are"):
            assert (slots.xs(name, level="generic_position") == 0).all()


def test_token_labels_follow_the_positions(run):
    model, _, _, instances, labelled, _ = run
    for _, inst in instances.iterrows():
        label = labelled[(labelled["key"] == inst["key"]) & (labelled["layer"] == 0)].set_index("position")[
            "generic_position"]
        assert label.index.tolist() == list(range(inst["eot_pos"] + 1))
        assert label[0] == "SOT" and label[1] == "There" and label[2] == "is/are"
        assert label[inst["negator_pos"]] == "negator" and label[inst["subject_first_pos"]] == "subject_first"
        assert label[inst["full_stop_pos"]] == "full_stop" and label[inst["eot_pos"]] == "EOT"
        assert (label == "subject_further").sum() == inst["n_further_subject"]
    assert (labelled["generic_position"] != "").all()


def test_generic_table_means_and_weights(run):
    model, _, _, instances, labelled, generic = run
    n_layers = model.text.n_layers
    assert list(generic.columns) == T.GENERIC_COLUMNS
    assert list(generic["generic_position"].cat.categories) == list(GENERIC_NAMES)
    assert len(generic) == len(instances) * (n_layers + 1) * len(GENERIC_NAMES)
    further = instances.set_index("key")["n_further_subject"]
    for (key, layer, name), row in generic.set_index(["key", "layer", "generic_position"]).iterrows():
        tokens = labelled[(labelled["key"] == key) & (labelled["layer"] == layer)
                          & (labelled["generic_position"] == name)]["cte"]
        expected_weight = further[key] if name == "subject_further" else 1
        assert row["weight"] == expected_weight == len(tokens)
        assert row["cte"] == pytest.approx(tokens.mean() if len(tokens) else 0.0, abs=1e-12)


def test_weighted_averages_equal_token_level_averages(run):
    model, _, _, instances, labelled, generic = run
    scores = pd.DataFrame({"key": instances["key"], "variant": "rephrased", "segment": "correct"})
    summary = T.summarise_effects(T.attach_segments(generic, scores, "rephrased"))
    token_means = labelled.groupby(["negation", "layer", "generic_position"])["cte"].mean()
    token_counts = labelled.groupby(["negation", "layer", "generic_position"]).size()
    for segment in ("all", "correct"):
        part = summary[summary["segment"] == segment].set_index(["negation", "layer", "generic_position"])
        present = part[part["n_tokens"] > 0]
        assert len(present) == len(token_means)
        for idx, row in present.iterrows():
            assert row["cte"] == pytest.approx(token_means[idx], abs=1e-12)
            assert row["n_tokens"] == token_counts[idx]
    assert summary[summary["segment"].isin(["ambiguous", "incorrect"])]["n"].eq(0).all()


def test_vit_pairs_include_an_empty_subject_further_slot(vit_run):
    generic = vit_run[5]
    dog = generic[(generic["key"] == "dog") & (generic["generic_position"] == "subject_further")]
    assert (dog["weight"] == 0).all() and (dog["cte"] == 0).all()
    people = generic[(generic["key"] == "people") & (generic["generic_position"] == "subject_further")]
    assert (people["weight"] == 3).all()


def test_labels_reject_rows_of_other_instances(vit_run):
    _, _, _, instances, labelled, _ = vit_run
    with pytest.raises(InputError, match="outside the instances' sentences"):
        T.label_generic_positions(labelled.drop(columns="generic_position"), instances.iloc[:1])


# --------------------------------------------------------------------------- summaries on hand-made tables


def _hand_generic(rows):
    """A generic table from (key, negation, layer, {slot: (cte, weight)}) with every other slot at (0, 1)."""
    records = []
    for key, negation, layer, slots in rows:
        for name in GENERIC_NAMES:
            cte, weight = slots.get(name, (0.0, 1))
            records.append({"key": key, "negation": negation, "layer": layer, "generic_position": name,
                            "cte": cte, "weight": weight, "d": 1.0})
    out = pd.DataFrame(records, columns=T.GENERIC_COLUMNS)
    out["generic_position"] = pd.Categorical(out["generic_position"], categories=list(GENERIC_NAMES), ordered=True)
    return out


def test_localisation_equals_a_hand_computation():
    generic = _hand_generic([
        ("a", "foil", 0, {"negator": (1.0, 1), "subject_further": (0.5, 2)}),
        ("b", "foil", 0, {"negator": (0.0, 1), "subject_further": (0.0, 0), "EOT": (0.6, 1)}),
        ("a", "foil", 1, {"EOT": (1.0, 1), "subject_further": (0.0, 2)}),
        ("b", "foil", 1, {"EOT": (1.0, 1), "subject_further": (0.0, 0)}),
    ])
    scores = pd.DataFrame({"key": ["a", "b"], "variant": "v", "segment": ["correct", "ambiguous"]})
    with_segments = T.attach_segments(generic, scores, "v")
    summary = T.summarise_effects(with_segments)
    loc = T.localisation_table(summary, with_segments).set_index(["negation", "segment", "layer"])
    assert list(loc.reset_index().columns) == T.LOCALISATION_COLUMNS
    # Layer 0, both instances: negator 0.5, subject_first 0, subject_further 0.5 (weights 2 and 0),
    # full_stop 0, EOT 0.3.
    profile = np.array([0.5, 0.0, 0.5, 0.0, 0.3])
    expected = np.sqrt(((profile - profile.mean()) ** 2).mean())
    assert loc.loc[("foil", "all", 0), "localisation"] == pytest.approx(expected)
    # Per instance: a = (1, 0, 0.5, 0, 0); b leaves out its empty slot: (0, 0, 0, 0.6).
    sd_a = np.std([1, 0, 0.5, 0, 0])
    sd_b = np.std([0, 0, 0, 0.6])
    assert loc.loc[("foil", "all", 0), "localisation_instance_mean"] == pytest.approx((sd_a + sd_b) / 2)
    assert loc.loc[("foil", "correct", 0), "localisation"] == pytest.approx(sd_a)
    assert loc.loc[("foil", "ambiguous", 0), "localisation"] == pytest.approx(sd_b)
    # Layer 1: profile (0, 0, 0, 0, 1) for both groups -> population SD 0.4.
    assert loc.loc[("foil", "all", 1), "localisation"] == pytest.approx(0.4)
    assert loc.loc[("foil", "all", 0), "n"] == 2 and loc.loc[("foil", "correct", 1), "n"] == 1
    assert np.isnan(loc.loc[("caption", "all", 0), "localisation"]) and loc.loc[("caption", "all", 0), "n"] == 0
    assert np.isnan(loc.loc[("foil", "incorrect", 1), "localisation_instance_mean"])


def test_summary_counts_instances_per_segment():
    rows = []
    plan = {"c1": "caption", "c2": "caption", "c3": "caption", "f1": "foil", "f2": "foil"}
    for key, negation in plan.items():
        for layer in (0, 1, 2):
            rows.append((key, negation, layer, {"negator": (float(layer), 1)}))
    generic = _hand_generic(rows)
    segments = {"c1": "correct", "c2": "correct", "c3": "incorrect", "f1": "ambiguous", "f2": "ambiguous"}
    scores = pd.DataFrame({"key": list(segments), "variant": "rephrased", "segment": list(segments.values())})
    scores = pd.concat([scores, scores.assign(variant="standard", segment="incorrect")], ignore_index=True)
    summary = T.summarise_effects(T.attach_segments(generic, scores, "rephrased"))
    assert list(summary.columns) == T.SUMMARY_COLUMNS
    assert len(summary) == 2 * 4 * 3 * len(GENERIC_NAMES)
    n = summary.groupby(["negation", "segment"])["n"].agg(["min", "max"])
    assert (n["min"] == n["max"]).all()
    expected = {("caption", "all"): 3, ("caption", "correct"): 2, ("caption", "ambiguous"): 0,
                ("caption", "incorrect"): 1, ("foil", "all"): 2, ("foil", "correct"): 0, ("foil", "ambiguous"): 2,
                ("foil", "incorrect"): 0}
    assert n["max"].to_dict() == expected
    empty = summary[summary["n"] == 0]
    assert empty["cte"].isna().all() and (empty["n_tokens"] == 0).all()
    negator = summary[(summary["generic_position"] == "negator") & (summary["n"] > 0)]
    assert (negator["cte"] == negator["layer"]).all()
    assert T.heatmap(summary, "caption", "all").shape == (3, len(GENERIC_NAMES))


def test_segment_and_undefined_effect_errors():
    generic = _hand_generic([("a", "foil", 0, {}), ("b", "caption", 0, {})])
    scores = pd.DataFrame({"key": ["a", "b"], "variant": "rephrased", "segment": ["correct", "incorrect"]})
    with pytest.raises(InputError, match=r"scores\.parquet: 1 of 2 .*no 'rephrased' score.*'b'"):
        T.attach_segments(generic, scores.iloc[:1], "rephrased", "scores.parquet")
    with pytest.raises(InputError, match="several 'rephrased' rows"):
        T.attach_segments(generic, pd.concat([scores, scores.iloc[:1]]), "rephrased")
    with pytest.raises(InputError, match="unknown segment"):
        T.attach_segments(generic, scores.assign(segment="maybe"), "rephrased")
    with pytest.raises(InputError, match="missing column"):
        T.attach_segments(generic, scores.drop(columns="segment"), "rephrased")
    with_segments = T.attach_segments(generic, scores, "rephrased")
    with_segments.loc[with_segments["key"] == "b", "cte"] = np.inf
    with pytest.raises(InputError, match="non-finite"):
        T.summarise_effects(with_segments)
    kept, dropped = T.drop_undefined_effects(with_segments)
    assert dropped == ["b"] and set(kept["key"]) == {"a"}
    assert T.summarise_effects(kept).query("negation == 'caption'")["n"].eq(0).all()


def test_figures_are_written(toy_run, tmp_path):
    model, _, _, instances, _, generic = toy_run
    segments = ["correct", "correct", "ambiguous", "correct"]
    scores = pd.DataFrame({"key": instances["key"], "variant": "rephrased", "segment": segments})
    with_segments = T.attach_segments(generic, scores, "rephrased")
    summary = T.summarise_effects(with_segments)
    localisation = T.localisation_table(summary, with_segments)
    main = T.plot_causal_tracing(summary, localisation, "toy", "rephrased")
    every = T.plot_causal_tracing(summary, localisation, "toy", "rephrased", segment="all")
    by_segment = T.plot_causal_tracing_by_segment(summary, localisation, "toy", "rephrased")
    assert sum(t.get_text() == "n = 0" for ax in by_segment.axes for t in ax.texts) == 3

    def titles(fig, start):
        return [ax.get_title() for ax in fig.axes if ax.get_title().startswith(start)]

    # The default figure is the study's correct segment; every version has localisation bars per panel.
    assert all("correct segment" in t for t in titles(main, "negation in"))
    assert all("all instances" in t for t in titles(every, "negation in"))
    n_correct = [int((segments[i] == "correct") & (instances["negation"].iloc[i] == side))
                 for side in ("caption", "foil") for i in range(4)]
    assert titles(main, "localisation") == [f"localisation (n = {n})" for n in
                                            (sum(n_correct[:4]), sum(n_correct[4:]))]
    assert len(titles(every, "localisation")) == 2 and len(titles(by_segment, "localisation")) == 6
    for fig in (main, every, by_segment):
        bar_axes = [ax for ax in fig.axes if ax.get_title().startswith("localisation")]
        assert all(len(ax.patches) == int(summary["layer"].max()) + 1 for ax in bar_axes)  # one bar per layer 0..L
    paths = [tmp_path / "fig8.png", tmp_path / "fig8.pdf"]
    save_figure(main, paths)
    save_figure(by_segment, tmp_path / "fig8_segments.png")
    assert all(p.stat().st_size > 1000 for p in [*paths, tmp_path / "fig8_segments.png"])
