"""The reproduction report: the published values file, our value of each, and the comparison."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clip_interp.errors import InputError
from clip_interp.negation import reproduction as R
from clip_interp.negation.preliminary import pairwise_correlation_table, size_accuracy
from clip_interp.negation.scores import accuracy_table, segment_of, segment_table

PUBLISHED = Path(__file__).resolve().parents[1] / "resources" / "negation_published.yaml"


def test_every_published_value_has_a_definition_and_every_definition_a_value():
    published = R.load_published(PUBLISHED)
    assert set(published) == set(R.OUR_VALUES)
    assert len(published) == 40  # 6 counts, 9 of Table 1, 6 of Table 2, 5 + 3 of Figures 6-7, 6 of Table 3, 2 + 2 + 1
    assert published["table1.caption_difference"]["value"] == 0.008  # standard − rephrased, .676 − .668
    assert published["cannot.pairs"]["value"] == 554 and published["counts.rephrased_foil"]["value"] == 240
    R.check_coverage(published)
    with pytest.raises(InputError, match=r"without a definition of ours \['extra.value'\]"):
        R.check_coverage({**published, "extra.value": {}})
    with pytest.raises(InputError, match=r"without a published value \['cannot.pairs'\]"):
        R.check_coverage({k: v for k, v in published.items() if k != "cannot.pairs"})


def _sources(seed=0):
    """Tables of a run with the study's counts: 256/249 standard and 250/240 rephrased instances."""
    rng = np.random.default_rng(seed)
    parts = []
    for variant, n_caption, n_foil in (("standard", 256, 249), ("rephrased", 250, 240)):
        negation = ["caption"] * n_caption + ["foil"] * n_foil
        d = rng.normal(0.5, 2.0, len(negation))
        parts.append(pd.DataFrame({"key": [f"k{i}" for i in range(len(negation))], "variant": variant,
                                   "negation": negation, "d": d, "correct": d > 0, "segment": segment_of(d)}))
    scores = pd.concat(parts, ignore_index=True)
    rephrased = scores[scores.variant == "rephrased"].reset_index(drop=True)
    n = len(rephrased)
    caption = np.where(np.arange(n) < 44, "There are no people.", "There is no dog.")
    preliminary = rephrased.assign(
        caption=caption, cosine_similarity=rng.uniform(0.7, 0.95, n), negator_pos=rng.integers(3, 9, n),
        relative_size=np.where(rephrased.negation == "foil", rng.uniform(0, 0.4, n), np.nan))
    preliminary["binary_size"] = preliminary["relative_size"]
    heads = pd.DataFrame({"layer": np.repeat(np.arange(1, 13), 8), "head": np.tile(np.arange(8), 12),
                          "selective": np.arange(96) < 8})
    averages = pd.DataFrame({"component": ["mlp", "mha"], "segment": "correct", "negation": "both",
                             "n": 10, "n_layers": 12, "mean_iae_over_layers": [0.7, 0.4]})
    return R.Sources(scores=scores, table1=accuracy_table(scores), table2=segment_table(scores),
                     preliminary=preliminary,
                     table3=pairwise_correlation_table(preliminary, list(R.TABLE3_NAMES.values())),
                     size_accuracy=size_accuracy(preliminary, 0.1), selectivity_heads=heads, iae_averages=averages,
                     cannot_report={"reading": "noun_chunk", "pairs": 560})


def test_report_compares_every_published_value():
    published = R.load_published(PUBLISHED)
    sources = _sources()
    table = R.reproduction_table(published, sources).set_index("key")
    assert list(table.reset_index().columns) == R.REPRODUCTION_COLUMNS
    assert list(table.index) == list(published)
    assert table["note"].eq("").all() and table["ours"].notna().all()  # every value computed
    counts = table.loc[[k for k in table.index if k.startswith("counts.")]]
    assert counts["within_tolerance"].all() and (counts["difference"] == 0).all()
    t1 = sources.table1.set_index(["variant", "negation"])["accuracy"]
    assert table.loc["table1.all_difference", "ours"] == pytest.approx(
        t1[("standard", "all")] - t1[("rephrased", "all")])
    assert table.loc["table2.caption_correct", "ours"] == (
        (sources.scores.variant == "rephrased") & (sources.scores.negation == "caption")
        & (sources.scores.segment == "correct")).sum()
    assert table.loc["figure6.repeated_caption_instances", "ours"] == 44
    assert table.loc["selectivity.share_selective_heads", "within_tolerance"]
    cannot = table.loc["cannot.pairs"]
    assert (cannot.ours, cannot.difference, cannot.within_tolerance) == (560, 6, False)
    mlp = table.loc["image_ablation.iae_average_mlp"]
    assert mlp.difference == pytest.approx(-0.03) and not mlp.within_tolerance
    assert table.loc["image_ablation.iae_average_mha", "within_tolerance"]  # 0.02 from 0.38, at the tolerance


def test_values_that_cannot_be_computed_are_missing_with_a_reason():
    published = R.load_published(PUBLISHED)
    sources = _sources()
    sources.scores = sources.scores[sources.scores.variant == "rephrased"]
    sources.table1 = accuracy_table(sources.scores)
    sources.cannot_report = {"reading": "subject_only", "pairs": 200}
    sources.iae_averages = sources.iae_averages[sources.iae_averages.component == "mha"]
    table = R.reproduction_table(published, sources).set_index("key")
    assert "no standard scores" in table.loc["counts.standard_all", "note"]
    assert pd.isna(table.loc["table1.caption_difference", "within_tolerance"])
    assert "reading subject_only" in table.loc["cannot.pairs", "note"]
    assert "not in negation.image_ablation.components" in table.loc["image_ablation.iae_average_mlp", "note"]
    assert table.loc["counts.rephrased_all", "within_tolerance"]


def test_setup_differences_name_what_is_not_the_study():
    assert R.setup_differences({"backend": "open_clip", "name": "ViT-B-32", "pretrained": "openai"}, "valse") == []
    toy = R.setup_differences({"backend": "open_clip", "name": "ToyCLIP", "path": "toy.pt"}, "synthetic")
    assert any("ToyCLIP" in d for d in toy) and any("synthetic" in d for d in toy)
    assert any("random weights" in d for d in R.setup_differences(
        {"backend": "open_clip", "name": "ViT-B-32", "random_init": True}, "valse"))


def test_published_values_file_errors(tmp_path):
    bad = tmp_path / "published.yaml"
    bad.write_text("counts:\n  all: {value: 505, what: x}\n")
    with pytest.raises(InputError, match="counts.all must have exactly value, tolerance and what"):
        R.load_published(bad)
    bad.write_text("counts:\n  all: {value: '505', tolerance: 0, what: x}\n")
    with pytest.raises(InputError, match="counts.all.value is '505'"):
        R.load_published(bad)
    with pytest.raises(InputError, match="does not exist"):
        R.load_published(tmp_path / "absent.yaml")


def test_report_figure_says_when_the_set_up_is_not_the_study(tmp_path):
    from clip_interp.plotting import save_figure

    table = R.reproduction_table(R.load_published(PUBLISHED), _sources())
    fig = R.plot_reproduction(table, "toy-clip", ["the benchmark is 'synthetic'"])
    assert "NOT THE STUDY'S SET-UP" in fig.get_suptitle()
    save_figure(fig, tmp_path / "reproduction.png")
    assert "NOT" not in R.plot_reproduction(table, "openai-ViT-B-32", []).get_suptitle()
