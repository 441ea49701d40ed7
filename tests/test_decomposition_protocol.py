"""The protocol report: store variants, and each experiment's value under the paper's protocol beside each
alternative's, from hand-made tables."""

import pandas as pd
import pytest

from clip_interp.decomposition.protocol import (
    REPORT_COLUMNS,
    compare_tables,
    largest_differences,
    protocol_report,
    store_variants,
)
from clip_interp.errors import InputError


def test_store_variants_change_one_setting_each():
    assert store_variants("uniform", "float32") == {
        "convention_per_component": {"convention": "per_component", "dtype": "float32"},
        "dtype_float16": {"convention": "uniform", "dtype": "float16"}}
    assert store_variants("per_component", "float16", ["dtype"]) == {
        "dtype_float32": {"convention": "per_component", "dtype": "float32"}}
    assert store_variants("uniform", "float32", []) == {}
    with pytest.raises(InputError, match="store_variants"):
        store_variants("uniform", "float32", ["precision"])


def zero_shot(accuracies):
    return pd.DataFrame({"ablation": ["none", "mlp_group"], "accuracy": accuracies, "n_images": 10})


def segmentation(rows):
    return pd.DataFrame(rows, columns=["protocol", "configured", "method", "pixel_accuracy", "miou", "map"])


def test_report_puts_each_alternative_beside_the_paper():
    paper = {"zero_shot_ablation": zero_shot([0.8, 0.5]),
             "segmentation": segmentation([("paper", True, "decomposition", 0.9, 0.6, 0.95),
                                           ("aligned_masks", False, "decomposition", 0.85, 0.55, 0.9),
                                           ("unclipped", False, "decomposition", 0.9, 0.6, 0.94)])}
    variants = {"zero_shot_ablation": {"convention_per_component": zero_shot([0.8, 0.4]),
                                       "dtype_float16": zero_shot([0.8, 0.5])},
                "segmentation": {"convention_per_component": segmentation(
                    [("paper", True, "decomposition", 0.7, 0.5, 0.9),
                     ("unclipped", False, "decomposition", 0.1, 0.1, 0.1)])}}
    report = protocol_report(paper, variants)
    assert list(report.columns) == list(REPORT_COLUMNS)
    row = report[(report["experiment"] == "zero_shot_ablation") & (report["setting"] == "mlp_group")
                 & (report["alternative"] == "convention_per_component")].iloc[0]
    assert (row["paper"], row["value"]) == (0.5, 0.4) and row["difference"] == pytest.approx(-0.1)
    seg = report[report["experiment"] == "segmentation"].set_index(["alternative", "metric"])
    assert set(seg.index.get_level_values(0)) == {"convention_per_component", "aligned_masks", "unclipped"}
    assert seg.loc[("convention_per_component", "pixel_accuracy"), "value"] == 0.7  # the variant's configured rows
    assert seg.loc[("aligned_masks", "miou"), "difference"] == pytest.approx(-0.05)
    assert seg.loc[("unclipped", "map"), "difference"] == pytest.approx(-0.01)
    top = largest_differences(report).set_index(["experiment", "alternative"])
    assert top.loc[("zero_shot_ablation", "dtype_float16"), "abs_difference"] == 0
    assert top.loc[("segmentation", "convention_per_component"), "abs_difference"] == pytest.approx(0.2)


def test_an_alternative_missing_a_row_is_an_error():
    with pytest.raises(InputError, match="'dtype_float16' has no row"):
        compare_tables("zero_shot_ablation", ["ablation"], ["accuracy"], zero_shot([0.8, 0.5]),
                       {"dtype_float16": zero_shot([0.8, 0.5]).iloc[:1]})


def test_neighbour_overlap_is_read_once_per_head_and_query():
    rows = [(3, 1, "a dog", similarity, rank, shared, similarity == "dot")
            for similarity, shared in (("dot", 1.0), ("cosine", 0.6)) for rank in (1, 2, 3)]
    table = pd.DataFrame(rows, columns=["layer", "head", "query", "similarity", "rank", "shared_with_paper",
                                        "configured"])
    report = protocol_report({"neighbours": table}, {})
    assert len(report) == 1
    row = report.iloc[0]
    assert (row["alternative"], row["setting"], row["paper"], row["value"]) == ("cosine", "3/1/a dog", 1.0, 0.6)


def test_waterbirds_heads_only_beside_the_paper_ablation_and_the_baseline_left_out():
    table = pd.DataFrame({"condition": ["baseline", "ablated", "ablated"],
                          "ablation_mode": ["none", "paper", "heads_only"],
                          "configured": [False, True, False], "worst_group": [0.1, 0.3, 0.25],
                          "average": [0.6, 0.7, 0.65]})
    report = protocol_report({"waterbirds": table}, {}).set_index("metric")
    assert set(report["alternative"]) == {"heads_only"}
    assert report.loc["worst_group", "difference"] == pytest.approx(-0.05)
