import numpy as np
import pandas as pd
import pytest

from clip_interp.negation.scores import (
    accuracy_table,
    classification_scores,
    segment_of,
    segment_table,
    threshold_aligned_bins,
)


def test_segments_use_strict_and_inclusive_thresholds():
    assert list(segment_of([1.0001, 1.0, -0.99, -1.0, -3], 1.0, -1.0)) == [
        "correct", "ambiguous", "ambiguous", "incorrect", "incorrect"]
    with pytest.raises(ValueError):
        segment_of([0], correct=-1, incorrect=1)


def test_scores_are_scaled_cosines():
    image = np.array([[1.0, 0.0], [0.0, 2.0]])
    caption = np.array([[3.0, 0.0], [1.0, 1.0]])
    foil = np.array([[0.0, 1.0], [0.0, 5.0]])
    s = classification_scores(["a", "b"], ["caption", "foil"], caption, foil, image, logit_scale=100.0)
    np.testing.assert_allclose(s.S_caption, [100.0, 100 / np.sqrt(2)])
    np.testing.assert_allclose(s.S_foil, [0.0, 100.0])
    assert list(s.correct) == [True, False]
    assert list(s.segment) == ["correct", "incorrect"]


def test_tables_count_every_instance():
    scores = pd.DataFrame({"variant": ["standard"] * 4 + ["rephrased"] * 4,
                           "negation": ["caption", "caption", "foil", "foil"] * 2,
                           "d": [2, -2, 0.5, 3, 2, 2, -2, 3]})
    scores["correct"] = scores.d > 0
    scores["segment"] = segment_of(scores.d)
    t1 = accuracy_table(scores).set_index(["variant", "negation"])["accuracy"]
    assert t1[("standard", "caption")] == 0.5 and t1[("rephrased", "caption")] == 1.0
    # The study's sign: standard − rephrased (caption .676 − .668 = .008); here 0.5 − 1.0.
    assert t1[("standard_minus_rephrased", "caption")] == -0.5
    assert t1[("standard_minus_rephrased", "foil")] == t1[("standard", "foil")] - t1[("rephrased", "foil")] == 0.5
    assert ("rephrased_minus_standard", "caption") not in t1.index
    t2 = segment_table(scores)
    assert t2.n.sum() == len(scores)
    assert t2.set_index(["variant", "negation", "segment"]).n[("standard", "foil", "ambiguous")] == 1


@pytest.mark.parametrize("correct, incorrect", [(1.0, -1.0), (0.5, -2.0), (3.0, 2.5)])
def test_histogram_bins_never_straddle_a_threshold(correct, incorrect):
    rng = np.random.default_rng(0)
    d = rng.normal(0.0, 4.0, 300)
    edges = threshold_aligned_bins(d, correct, incorrect)
    width = np.diff(edges)
    assert np.allclose(width, width[0])
    assert edges[0] <= d.min() and edges[-1] >= d.max()
    for t in (correct, incorrect):
        assert np.isclose(edges, t, atol=1e-9).any(), f"threshold {t} is not a bin edge"
    assert len(edges) - 1 <= 80


def test_histogram_bins_coarsen_for_a_wide_range():
    edges = threshold_aligned_bins(np.array([-200.0, 200.0]), 1.0, -1.0)
    assert np.isclose(edges, 1.0).any() and np.isclose(edges, -1.0).any()
    assert np.isclose(np.diff(edges)[0], 2.0)
