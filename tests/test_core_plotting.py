import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from clip_interp.plotting import (
    annotated_heatmap,
    layer_head_heatmap,
    layer_profile,
    new_figure,
    plt,
    ranked_picture_row,
    save_figure,
    symmetric_limit,
)


def test_heatmap_shows_the_matrix_with_layer_and_head_labels():
    values = np.array([[0.1, -0.2, 0.3], [0.4, np.nan, -0.6]])
    fig, ax = new_figure()
    image = layer_head_heatmap(ax, values, first_layer=1, threshold=0.25, colorbar_label="mean a")
    data = ax.images[0].get_array()
    np.testing.assert_array_equal(np.ma.getdata(data)[~np.ma.getmaskarray(data)], values[np.isfinite(values)])
    assert np.ma.getmaskarray(data).tolist() == [[False, False, False], [False, True, False]]
    assert image.get_clim() == (-0.6, 0.6)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1", "2"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2"]
    assert ax.get_ylim() == (1.5, -0.5), "first layer at the top"
    assert len(ax.patches) == 2, "cells above the threshold (0.3, 0.4) are framed"
    assert sorted(t.get_text() for t in ax.texts) == sorted(["0.10", "-0.20", "0.30", "0.40", "-0.60"])
    assert len(fig.axes) == 2, "a colour bar was added"
    fig, ax = new_figure()
    layer_head_heatmap(ax, values, first_layer=0, limit=1.0, highlight=[[True, False, False], [False, False, False]],
                       annotate=False)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1"]
    assert ax.images[0].get_clim() == (-1.0, 1.0) and len(ax.patches) == 1 and not ax.texts
    assert len(fig.axes) == 1


def test_generic_heatmap_and_symmetric_limit():
    assert symmetric_limit([[1.0, -3.0]], [2.0, np.nan]) == 3.0
    assert symmetric_limit([np.nan]) == 1.0 and symmetric_limit([0.0]) == 1.0
    fig, ax = new_figure()
    grid = np.arange(12, dtype=float).reshape(3, 4) - 6
    annotated_heatmap(ax, grid)
    np.testing.assert_array_equal(np.ma.getdata(ax.images[0].get_array()), grid)
    with pytest.raises(ValueError, match="2-D"):
        annotated_heatmap(ax, np.zeros(3))


def test_layer_profile_draws_one_line_per_group_in_layer_order():
    fig, ax = new_figure()
    handles = layer_profile(ax, {"a": ([2, 0, 1], [0.2, 0.0, 0.1]), "b": ([1, 2], [1.0, 2.0])},
                            errors={"b": [0.1, np.nan]}, colours={"a": "red"}, zero_line=True, integer_ticks=True,
                            ylabel="value")
    assert len(handles) == 2
    line_a = handles[0]
    assert line_a.get_label() == "a" and line_a.get_color() == "red"
    assert line_a.get_xdata().tolist() == [0, 1, 2] and line_a.get_ydata().tolist() == [0.0, 0.1, 0.2]
    line_b = handles[1].lines[0]
    assert line_b.get_xdata().tolist() == [1, 2] and line_b.get_ydata().tolist() == [1.0, 2.0]
    assert list(ax.get_xticks()) == [0, 1, 2]
    assert [label for label in ax.get_legend_handles_labels()[1]] == ["a", "b"]


def test_save_figure_writes_png_and_pdf_atomically(tmp_path):
    fig, ax = new_figure()
    layer_head_heatmap(ax, np.eye(3))
    paths = [tmp_path / "out" / "fig.png", tmp_path / "out" / "fig.pdf"]
    save_figure(fig, paths)
    assert paths[0].read_bytes().startswith(b"\x89PNG") and paths[1].read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["fig.pdf", "fig.png"], "no temporary files"
    fig, _ = new_figure()
    save_figure(fig, str(tmp_path / "single.png"))
    assert (tmp_path / "single.png").stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "single.png"]


def test_save_figure_leaves_no_file_when_saving_fails(tmp_path):
    fig, _ = new_figure()
    with pytest.raises(ValueError):
        save_figure(fig, tmp_path / "fig.notaformat")
    assert list(tmp_path.iterdir()) == []


def test_importing_plotting_does_not_import_torch_and_selects_agg():
    code = ("import sys, clip_interp.plotting, matplotlib; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert matplotlib.get_backend().lower() == 'agg', matplotlib.get_backend()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_ranked_picture_row_shows_each_rank_with_its_score_and_blanks_missing_ranks():
    ranked = pd.DataFrame({"rank": [2, 1], "row": [7, 3], "score": [0.25, 0.5]})
    pictures = {3: np.zeros((4, 4, 3)), 7: np.ones((4, 4, 3))}
    fig, axes = new_figure(1, 3, squeeze=False)
    ranked_picture_row(axes[0], ranked, pictures, caption="#{rank} {score:.3f}")
    assert [ax.get_xlabel() for ax in axes[0][:2]] == ["#1 0.500", "#2 0.250"]
    assert np.array_equal(axes[0][1].images[0].get_array(), pictures[7])
    assert not axes[0][2].axison and not axes[0][2].images and list(axes[0][0].get_xticks()) == []
    plt.close(fig)
