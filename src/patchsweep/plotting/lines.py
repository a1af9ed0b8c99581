"""Line plots of 1-D layer sweeps (all positions and heads of a component patched at once).

Each figure shows its own sweep as a solid line with a ±s.e.m. band. When the same
component was also swept in the other direction, that sweep is drawn dashed on the same
axis, and gets no figure of its own: denoising rises from 0 where noising falls from 1,
and seeing both tells whether a layer is sufficient, necessary, or both. Dotted lines
mark the corrupted (0) and clean (1) levels, which are always in view so the scale reads
without the colorbar of a heatmap. The legend sits below the axes, where it can never
cover a line; the title is one line and the caption says the rest.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from patchsweep.plotting.style import (
    ExperimentInfo,
    PlotStyle,
    figure_title,
    text_inches,
)

# Okabe–Ito colours: distinguishable with the common colour-vision deficiencies.
DIRECTION_COLOURS = {"denoise": "#D55E00", "noise": "#0072B2"}
_WINDOW_COLOURS = ("#D55E00", "#0072B2", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")


def line_figure(
    sweep: pd.DataFrame,
    info: ExperimentInfo,
    style: PlotStyle,
    partner: pd.DataFrame | None = None,
    title: str = "",
) -> Figure:
    """Normalised effect against layer for one sweep, with its opposite direction if given.

    Args:
        sweep: Rows of one layer sweep (``head == position == -1``).
        info: Model, dataset and metric, for the title and the axis label.
        style: Sizes and fonts.
        partner: The same component swept in the other direction, drawn dashed.
        title: One line; by default the sweeps' names, the model and the dataset.
    """
    first = sweep.iloc[0]
    direction = str(first["direction"])
    windows = sorted(int(w) for w in sweep["window"].unique())
    n_layers = sweep["layer"].nunique()
    names = [str(first["sweep"])] + ([] if partner is None else [str(partner["sweep"].iloc[0])])
    title = title or figure_title(", ".join(names), info)
    width = max(style.width, 0.3 * n_layers + 2.0, text_inches(title, style.font_size + 1) + 0.3)
    fig = Figure(figsize=(width, style.height + 0.8), layout="constrained")
    fig.suptitle(title)
    ax = fig.subplots()

    values = [sweep]
    if partner is not None:
        values.append(partner)
    several = len(windows) > 1
    for index, window in enumerate(windows):
        rows = sweep[sweep["window"] == window]
        colour = _WINDOW_COLOURS[index % len(_WINDOW_COLOURS)] if several else None
        label = (
            f"{direction}, {window}-layer window" if several else f"{direction} ({first['sweep']})"
        )
        _plot(ax, rows, label, colour or DIRECTION_COLOURS.get(direction, "C0"), "-", 1.0)
    if partner is not None:
        other = str(partner["direction"].iloc[0])
        label = f"{other} ({partner['sweep'].iloc[0]})"
        _plot(ax, partner, label, DIRECTION_COLOURS.get(other, "C1"), "--", 0.8)

    _reference_levels(ax, pd.concat(values)["normalized"])
    ax.set_xlabel(_layer_label(windows))
    ax.set_ylabel(f"normalised {info.metric_label}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.spines[["top", "right"]].set_visible(False)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", frameon=False, ncols=1)
    return fig


def _plot(ax: Axes, rows: pd.DataFrame, label: str, colour: str, dash: str, alpha: float) -> None:
    """One line with markers (sweeps are discrete) and its ±s.e.m. band where defined."""
    rows = rows.sort_values("layer")
    layers = rows["layer"].to_numpy(int)
    mean = rows["normalized"].to_numpy(float)
    sem = rows["sem"].to_numpy(float)
    ax.plot(
        layers,
        mean,
        dash,
        marker="o",
        markersize=3.5,
        color=colour,
        alpha=alpha,
        label=label,
        linewidth=1.5,
    )
    if np.isfinite(sem).any():
        ax.fill_between(
            layers, mean - sem, mean + sem, color=colour, alpha=0.2 * alpha, linewidth=0
        )


def _reference_levels(ax: Axes, normalized: pd.Series) -> None:
    """Dotted corrupted/clean levels, labelled just outside the right edge, always in view.

    Outside the axes, the labels can never sit on top of a line or its band.
    """
    finite = normalized[np.isfinite(normalized)]
    low = min(0.0, float(finite.min()) if len(finite) else 0.0)
    high = max(1.0, float(finite.max()) if len(finite) else 1.0)
    pad = 0.08 * (high - low)
    ax.set_ylim(low - pad, high + pad)
    for level, name in ((0.0, "corrupted"), (1.0, "clean")):
        ax.axhline(level, color="0.45", linestyle=":", linewidth=1.0, zorder=0)
        ax.annotate(
            name,
            (1.0, level),
            xycoords=("axes fraction", "data"),
            xytext=(3, 0),
            textcoords="offset points",
            ha="left",
            va="center",
            color="0.35",
            fontsize="small",
            annotation_clip=False,
        )


def _layer_label(windows: list[int]) -> str:
    if windows == [1]:
        return "Layer"
    if len(windows) == 1:
        return f"First layer of the {windows[0]}-layer window"
    return "First layer of the window"
