"""Shared figure helpers: headless matplotlib, layer × head heatmaps, layer profiles, atomic saving.

Importing this module selects matplotlib's non-interactive Agg backend (before pyplot is
imported), so figure code runs on machines without a display. It imports neither torch
nor any study package: the figure rules run in an environment without torch.

* :func:`new_figure` — ``plt.subplots`` (any of its arguments) returning ``(fig, axes)``;
* :func:`layer_head_heatmap` — values indexed by layer (rows) and head (columns), diverging
  colour scale symmetric about 0, cells annotated, cells above a threshold (or given by a
  mask) framed, layer labels 1-based or 0-based as the caller says, optional colour bar;
* :func:`annotated_heatmap` — the same drawing for any rows × columns grid (no layer/head ticks);
* :func:`layer_profile` — one line per group over layers, optionally with error bars;
* :func:`ranked_picture_row` — one row of a neighbour grid: pictures in rank order, each captioned with its score;
* :func:`save_figure` — write a figure to PNG/PDF/... paths atomically and close it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after selecting the backend)
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from .io import atomic_path  # noqa: E402

__all__ = ["plt", "new_figure", "save_figure", "symmetric_limit", "annotated_heatmap", "layer_head_heatmap",
           "layer_profile", "ranked_picture_row"]


def new_figure(nrows: int = 1, ncols: int = 1, **kwargs):
    """``plt.subplots(nrows, ncols, **kwargs)``: a new figure and its axes (``squeeze`` as given)."""
    return plt.subplots(nrows, ncols, **kwargs)


# File metadata that does not change between runs: no creation date in a PDF (matplotlib writes the
# current time unless told otherwise). PNGs carry only the matplotlib version, so they need nothing.
STABLE_METADATA = {"pdf": {"CreationDate": None}}


def save_figure(fig, paths: str | os.PathLike | Sequence[str | os.PathLike], dpi: int = 150) -> None:
    """Save ``fig`` to each path (format from the suffix, e.g. ``.png``, ``.pdf``) atomically, then close it.

    Each file is written to a temporary file beside its target and renamed over it only once
    complete (:func:`clip_interp.io.atomic_path`), so an interrupted job leaves no truncated figure.
    The same figure saved twice gives byte-identical files (:data:`STABLE_METADATA`).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    try:
        for p in paths:
            fmt = Path(p).suffix.lstrip(".")
            with atomic_path(p) as tmp:
                fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata=STABLE_METADATA.get(fmt))
    finally:
        plt.close(fig)


def symmetric_limit(*arrays) -> float:
    """The largest finite absolute value over ``arrays`` (1.0 when there is none or it is 0)."""
    values = np.concatenate([np.ravel(np.asarray(a, dtype=float)) for a in arrays])
    finite = values[np.isfinite(values)]
    limit = float(np.abs(finite).max()) if finite.size else 1.0
    return limit if limit > 0 else 1.0


def _frame(col: int, row: int) -> Rectangle:
    return Rectangle((col - 0.42, row - 0.42), 0.84, 0.84, fill=False, edgecolor="black", linewidth=1.6)


def annotated_heatmap(ax, values, *, limit: float | None = None, threshold: float | None = None,
                      highlight=None, annotate: bool = True, fmt: str = "{:.2f}", cmap: str = "RdBu_r",
                      origin: str = "upper", fontsize: float | None = None):
    """Draw ``values`` (rows × columns) on ``ax`` with a diverging colour scale ``[-limit, limit]``.

    ``limit`` defaults to :func:`symmetric_limit` of ``values``. Cells above ``threshold`` (or
    where the boolean array ``highlight`` is true; both may be given) are framed and their
    annotation is bold. With ``annotate`` every finite cell shows its value in ``fmt``; NaN
    cells are left blank. Returns the image (for a colour bar).
    """
    grid = np.asarray(values, dtype=float)
    if grid.ndim != 2:
        raise ValueError(f"a heatmap needs a 2-D array, got shape {grid.shape}")
    limit = symmetric_limit(grid) if limit is None else float(limit)
    marked = np.zeros(grid.shape, dtype=bool)
    if threshold is not None:
        with np.errstate(invalid="ignore"):
            marked |= grid > threshold
    if highlight is not None:
        marked |= np.asarray(highlight, dtype=bool)
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=-limit, vmax=limit, aspect="auto",
                      origin=origin, interpolation="nearest")
    rows, cols = grid.shape
    size = fontsize if fontsize is not None else (8 if cols <= 12 else 6)
    for r in range(rows):
        for c in range(cols):
            value = grid[r, c]
            if annotate and np.isfinite(value):
                ax.text(c, r, fmt.format(value), ha="center", va="center", fontsize=size,
                        color="white" if abs(value) > 0.6 * limit else "black",
                        fontweight="bold" if marked[r, c] else "normal")
            if marked[r, c]:
                ax.add_patch(_frame(c, r))
    return image


def layer_head_heatmap(ax, values, *, first_layer: int = 1, limit: float | None = None,
                       threshold: float | None = None, highlight=None, annotate: bool = True, fmt: str = "{:.2f}",
                       cmap: str = "RdBu_r", title: str | None = None, colorbar_label: str | None = None,
                       colorbar_kw: Mapping | None = None, layer_label: str = "layer", head_label: str = "head"):
    """A layer × head heatmap: ``values[i, h]`` is the value of layer ``first_layer + i`` and head ``h``.

    Rows are layers (the first at the top, labelled from ``first_layer``: 1 for block
    numbering, 0 when row 0 is the embeddings), columns are heads labelled from 0. ``limit``,
    ``threshold``, ``highlight``, ``annotate``, ``fmt`` and ``cmap`` are as in
    :func:`annotated_heatmap`. With ``colorbar_label`` a colour bar is added beside ``ax``
    (``colorbar_kw`` goes to ``Figure.colorbar``). Returns the image.
    """
    image = annotated_heatmap(ax, values, limit=limit, threshold=threshold, highlight=highlight, annotate=annotate,
                              fmt=fmt, cmap=cmap)
    n_layers, n_heads = np.shape(values)
    ax.set_xticks(range(n_heads), [str(h) for h in range(n_heads)])
    ax.set_yticks(range(n_layers), [str(layer) for layer in range(first_layer, first_layer + n_layers)])
    ax.set_ylim(n_layers - 0.5, -0.5)
    ax.set_xlabel(head_label)
    ax.set_ylabel(layer_label)
    if title is not None:
        ax.set_title(title, fontsize=9)
    if colorbar_label is not None:
        colour_bar = ax.figure.colorbar(image, ax=ax, **dict(colorbar_kw or {}))
        colour_bar.set_label(colorbar_label, fontsize=7)
    return image


def layer_profile(ax, profiles: Mapping[str, tuple[Sequence, Sequence]], *,
                  errors: Mapping[str, Sequence] | None = None, colours: Mapping[str, str] | None = None,
                  marker: str = "o", markersize: float = 3, capsize: float = 3, title: str | None = None,
                  xlabel: str = "layer", ylabel: str | None = None, zero_line: bool = False, grid: bool = True,
                  integer_ticks: bool = False):
    """One line per group over layers: ``profiles[label] = (layers, values)``, in the mapping's order.

    Points are drawn in order of layer. ``errors[label]`` (same length; NaN counts as 0) adds
    error bars to that group's line. Colours come from ``colours[label]``, else from the
    ``tab10`` cycle by position. ``zero_line`` draws y = 0; ``integer_ticks`` puts a tick on
    every layer shown. Lines carry their label (call ``ax.legend()`` to show them). Returns
    the line handles.
    """
    cycle = plt.get_cmap("tab10")
    handles, ticks = [], set()
    for k, (label, (layers, values)) in enumerate(profiles.items()):
        layers = np.asarray(layers)
        values = np.asarray(values, dtype=float)
        order = np.argsort(layers, kind="stable")
        layers, values = layers[order], values[order]
        colour = (colours or {}).get(label, cycle(k % 10))
        if errors is not None and label in errors:
            yerr = np.nan_to_num(np.asarray(errors[label], dtype=float)[order])
            handle = ax.errorbar(layers, values, yerr=yerr, color=colour, marker=marker, ms=markersize,
                                 capsize=capsize, label=label)
        else:
            (handle,) = ax.plot(layers, values, marker=marker, ms=markersize, color=colour, label=label)
        handles.append(handle)
        ticks.update(layers.tolist())
    if zero_line:
        ax.axhline(0, color="grey", lw=0.8)
    if integer_ticks and ticks:
        ax.set_xticks(sorted(ticks))
    if title is not None:
        ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    if ylabel is not None:
        ax.set_ylabel(ylabel, fontsize=9)
    if grid:
        ax.grid(alpha=0.3)
    return handles


def ranked_picture_row(axes: Sequence, ranked, pictures: Mapping[int, np.ndarray], *,
                       caption: str = "{score:.3f}") -> None:
    """Draw the ranks 1..len(axes) of ``ranked`` (a table with ``rank``, ``row``, ``score``) on ``axes``: cell j
    shows ``pictures[row]`` of the rank-(j+1) entry, without ticks, captioned below with ``caption`` formatted
    with ``rank`` and ``score``; a cell whose rank is absent is left blank with its axis hidden."""
    for j, ax in enumerate(axes):
        ax.set_xticks([]), ax.set_yticks([])
        match = ranked[ranked["rank"] == j + 1]
        if match.empty:
            ax.axis("off")
            continue
        entry = match.iloc[0]
        ax.imshow(pictures[int(entry["row"])])
        ax.set_xlabel(caption.format(rank=j + 1, score=entry["score"]), fontsize=6)
