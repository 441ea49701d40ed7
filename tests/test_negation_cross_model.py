import numpy as np
import pandas as pd
import pytest

from clip_interp.errors import InputError
from clip_interp.negation.cross_model import check_profiles, layer_profiles, plot_layer_profiles


def _localisation(n_layers, offset):
    rows = []
    for side in ("caption", "foil"):
        for segment in ("all", "correct"):
            for layer in range(n_layers + 1):
                localisation = offset + layer + (0.5 if side == "foil" else 0) + (100 if segment != "all" else 0)
                rows.append({"negation": side, "segment": segment, "layer": layer, "n": 5,
                             "localisation": localisation})
    return pd.DataFrame(rows)


def _selectivity(n_layers, scale):
    return pd.DataFrame({"layer": np.arange(1, n_layers + 1), "mean_a": scale * np.arange(1, n_layers + 1)})


def test_profiles_take_the_all_segment_and_keep_each_models_depth():
    profiles = layer_profiles({"a": _localisation(2, 0.0), "b": _localisation(4, 10.0)},
                              {"a": _selectivity(2, 0.1), "b": _selectivity(4, 0.01)})
    loc = profiles[(profiles.measure == "localisation")]
    assert (loc.value < 100).all(), "only the segment 'all' enters the comparison"
    a_foil = loc[(loc.model == "a") & (loc.negation == "foil")].sort_values("layer")
    assert a_foil.layer.tolist() == [0, 1, 2] and a_foil.value.tolist() == [0.5, 1.5, 2.5]
    sel_b = profiles[(profiles.measure == "selectivity") & (profiles.model == "b")]
    assert sel_b.layer.tolist() == [1, 2, 3, 4] and np.allclose(sel_b.value, [0.01, 0.02, 0.03, 0.04])
    assert set(profiles.groupby("model").n_layers.first().items()) == {("a", 2), ("b", 4)}
    assert check_profiles(profiles) == []
    fig = plot_layer_profiles(profiles)
    assert len(fig.axes) == 3


def test_profiles_name_the_model_and_column_that_is_missing():
    with pytest.raises(InputError, match="selectivity layer table of 'a'"):
        layer_profiles({"a": _localisation(2, 0)}, {"a": pd.DataFrame({"layer": [1, 2]})})
    with pytest.raises(InputError, match="models differ"):
        layer_profiles({"a": _localisation(2, 0)}, {"b": _selectivity(2, 1)})


def test_a_model_without_finite_values_is_reported():
    loc = _localisation(1, 0.0)
    loc["localisation"] = np.nan
    sel = _selectivity(1, 1.0)
    sel["mean_a"] = np.nan
    assert check_profiles(layer_profiles({"m": loc}, {"m": sel})) == ["m"]
