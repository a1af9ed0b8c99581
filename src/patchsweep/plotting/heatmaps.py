"""Heatmaps of 2-D sweeps: layer × position, layer × head, and their small multiples.

Every heatmap is on a diverging colour scale centred at 0 with symmetric limits
``±max(style.min_limit, max |value|)``, so that white always means "this site does not
matter" and full colour "it matters fully", in both directions: denoising shows the
``normalized`` effect (0 = corrupted, 1 = clean: the recovery), noising shows
``normalized − 1`` (the drop from clean, 0 = no effect, −1 = as corrupted). Layer 0 is
the top row, as in TransformerLens and most papers.

The title is one line (sweep · model · dataset); the caption (see
:mod:`patchsweep.plotting.captions`) says the rest. Each cell's s.e.m. is shown as a
``±`` second line under its value when cells are annotated (a companion s.e.m. heatmap
would double the figure for a number readers only check). Sizes follow from the labels:
a panel is as wide as its cells or its title, the figure as wide as its title, and as
tall as its colorbar label, so that no text runs into another (checked by
:mod:`patchsweep.plotting.overlap` in the tests).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure

from patchsweep.component_types import COMPONENT_TYPES
from patchsweep.plotting.labels import layer_span
from patchsweep.plotting.settings import format_value
from patchsweep.plotting.style import (
    CHAR_EM,
    ExperimentInfo,
    PlotStyle,
    colorbar_label,
    figure_title,
    shown_values,
    symmetric_limit,
    text_inches,
)

# The components of the combined figure: the whole (not per-head) ones, in table order.
PANEL_COMPONENTS = tuple(c.name for c in COMPONENT_TYPES.values() if not c.headed)
MAX_ANNOTATED_CELLS = 400


@dataclass
class _Panel:
    """One heatmap: values and s.e.m. as (n_rows, n_cols) arrays, rows = layers."""

    values: np.ndarray  # (layer, column)
    sem: np.ndarray  # (layer, column)
    row_labels: list[str]
    col_labels: list[str]
    title: str = ""


@dataclass
class _Geometry:
    """Cell size and labelling decisions shared by all panels of a figure."""

    annotate: bool
    show_sem: bool
    col_w: float  # inches
    row_h: float  # inches
    rotate: bool  # column tick labels vertical


def layer_pos_figure(
    sweep: pd.DataFrame, info: ExperimentInfo, style: PlotStyle, title: str = ""
) -> Figure:
    """Layer × position heatmap of one sweep; x tick labels are the prompt's tokens/labels."""
    panel = _grid(sweep, "position")
    title = title or _title(sweep, info)
    return _figure([panel], title, sweep, info, style, ncols=1, xlabel="Position")


def layer_head_figure(
    sweep: pd.DataFrame, info: ExperimentInfo, style: PlotStyle, title: str = ""
) -> Figure:
    """Layer × head heatmap of a sweep that patches each head at all positions at once."""
    panel = _grid(sweep, "head")
    title = title or _title(sweep, info)
    return _figure([panel], title, sweep, info, style, ncols=1, xlabel="Head")


def head_pos_figure(
    sweep: pd.DataFrame, info: ExperimentInfo, style: PlotStyle, title: str = ""
) -> Figure:
    """One layer × head panel per position (small multiples) on one shared colour scale.

    Small multiples keep each panel a familiar layer × head grid; interleaving heads and
    positions on one axis would make neither readable.
    """
    panels = []
    for position, rows in sweep.groupby("position", sort=True):
        panel = _grid(rows, "head")
        panel.title = position_title(int(position), str(rows["position_label"].iloc[0]))
        panels.append(panel)
    title = title or _title(sweep, info)
    return _figure(panels, title, sweep, info, style, ncols=min(4, len(panels)), xlabel="Head")


def panels_figure(
    sweeps: list[pd.DataFrame], info: ExperimentInfo, style: PlotStyle, title: str = ""
) -> Figure:
    """resid / attn_out / mlp_out layer × position sweeps of one direction, side by side.

    One colour scale and one colorbar for all panels, so a colour means the same effect in
    each: that is the point of putting them together. The default title names the sweeps.
    """
    panels = []
    for sweep in sweeps:
        panel = _grid(sweep, "position")
        panel.title = _describe(sweep)[0]
        panels.append(panel)
    names = ", ".join(str(sweep["sweep"].iloc[0]) for sweep in sweeps)
    combined = pd.concat(sweeps, ignore_index=True)
    title = title or figure_title(names, info)
    return _figure(panels, title, combined, info, style, ncols=len(panels), xlabel="Position")


def paired_figure(
    left: pd.DataFrame,
    right: pd.DataFrame,
    titles: tuple[str, str],
    title: str,
    info: ExperimentInfo,
    style: PlotStyle,
) -> Figure:
    """Two tables of the same sites side by side, on one colour scale with one colorbar.

    Each side keeps the layout its sweep's kind gets alone (layer × position, layer × head,
    or layer over one "all positions" column), so the pair reads like the ordinary figure;
    per-position head grids come as (left, right) pairs for each position, titled
    ``<side>, pos <i>: <label>``. A NaN in ``right`` is drawn grey: a site that was not
    measured, not an effect of 0.

    Args:
        left: Rows of one sweep (e.g. the attribution estimate).
        right: The same sites, in any order (e.g. exact patching); same columns.
        titles: Panel titles of the left and right side, one line each.
        title: The figure's title, one line.
        info: Model, dataset and metric, for the colorbar.
        style: Sizes, fonts and colours.
    """
    by_head = bool((left["head"] >= 0).any())
    column = "head" if by_head else "position"
    if by_head and bool((left["position"] >= 0).any()):
        panels = []
        for (position, a), (_, b) in zip(
            left.groupby("position", sort=True), right.groupby("position", sort=True), strict=True
        ):
            where = position_title(int(position), str(a["position_label"].iloc[0]))
            pair = [_grid(a, "head"), _grid(b, "head")]
            pair[0].title, pair[1].title = f"{titles[0]}, {where}", f"{titles[1]}, {where}"
            panels += pair
        ncols = min(4, len(panels))
    else:
        panels = [_grid(left, column), _grid(right, column)]
        panels[0].title, panels[1].title = titles
        ncols = 2
    xlabel = "Head" if by_head else ("Position" if (left["position"] >= 0).any() else "")
    both = pd.concat([left, right], ignore_index=True)
    return _figure(panels, title, both, info, style, ncols=ncols, xlabel=xlabel)


def select_panel_sweeps(grids: dict[str, pd.DataFrame], direction: str) -> list[pd.DataFrame]:
    """The layer × position sweeps of ``direction`` for the combined figure, one per component.

    When a component was swept more than once (several windows), the smallest window wins,
    then the first sweep in table order.

    Args:
        grids: Layer × position sweeps by name, in table order.
        direction: ``denoise`` or ``noise``.
    """
    chosen: dict[str, tuple[int, pd.DataFrame]] = {}
    for sweep in grids.values():
        component, sweep_direction, window = _describe(sweep)
        if sweep_direction != direction or component not in PANEL_COMPONENTS:
            continue
        if component not in chosen or window < chosen[component][0]:
            chosen[component] = (window, sweep)
    return [chosen[c][1] for c in PANEL_COMPONENTS if c in chosen]


def _describe(sweep: pd.DataFrame) -> tuple[str, str, int]:
    first = sweep.iloc[0]
    return str(first["component"]), str(first["direction"]), int(sweep["window"].max())


def _title(sweep: pd.DataFrame, info: ExperimentInfo) -> str:
    return figure_title(str(sweep["sweep"].iloc[0]), info)


def _grid(sweep: pd.DataFrame, column: str) -> _Panel:
    """Pivot one sweep to a (layer, ``column``) grid; duplicate sites are an input error.

    Rows are labelled by the layers each row patches: ``last_layer`` when the table has it
    (see :func:`patchsweep.plotting.labels.last_layers`), else the whole window.
    """
    keys = ["layer", column]
    duplicated = sweep.duplicated(keys)
    if duplicated.any():
        site = sweep.loc[duplicated, keys].iloc[0].to_dict()
        raise ValueError(
            f"sweep {sweep['sweep'].iloc[0]!r} has several rows for {site}; "
            "split windows or directions into separate sweeps"
        )
    values = sweep.pivot(index="layer", columns=column, values="normalized").sort_index()
    values = values.sort_index(axis=1)
    sem = sweep.pivot(index="layer", columns=column, values="sem").loc[values.index]
    sem = sem[values.columns]
    if "last_layer" not in sweep.columns:
        sweep = sweep.assign(last_layer=sweep["layer"] + sweep["window"] - 1)
    last = sweep.groupby("layer")["last_layer"].max()
    rows = [layer_span(int(layer), int(last[layer])) for layer in values.index]
    if column == "position":
        labels = sweep.drop_duplicates("position").set_index("position")["position_label"]
        cols = [str(labels[p]) for p in values.columns]
    else:
        cols = [str(c) for c in values.columns]
    return _Panel(values.to_numpy(float), sem.to_numpy(float), rows, cols)


def position_title(position: int, label: str) -> str:
    """``pos 3: S2``, or ``pos 3`` where the label is the index or empty."""
    return f"pos {position}" if label in ("", str(position)) else f"pos {position}: {label}"


def _geometry(panels: list[_Panel], style: PlotStyle, ncols: int) -> _Geometry:
    """Size cells so annotations fit and tick labels never overlap; decide "auto" here."""
    fs = style.font_size
    cell_fs = fs - 2
    n_cells = sum(p.values.size for p in panels)
    shown = [v for p in panels for v in p.values.ravel() if np.isfinite(v)] or [-0.99]
    widest = max(len(format_value(v, style.annotate_fmt)) for v in shown)
    annotated_w = widest * CHAR_EM * cell_fs / 72 + 0.12
    cols_per_row = sum(len(p.col_labels) for p in panels[:ncols])
    if style.annotate == "auto":
        fits = cols_per_row * annotated_w + 2.0 <= style.max_width
        annotate = n_cells <= MAX_ANNOTATED_CELLS and fits
    else:
        annotate = bool(style.annotate)
    show_sem = annotate and any(np.isfinite(p.sem).any() for p in panels)
    line_h = 1.25 * cell_fs / 72
    col_w = annotated_w if annotate else 1.5 * fs / 72
    row_h = (2 * line_h + 0.08 if show_sem else line_h + 0.1) if annotate else 1.5 * fs / 72
    longest = max(len(label) for p in panels for label in p.col_labels)
    rotate = longest * CHAR_EM * fs / 72 > 0.95 * col_w
    return _Geometry(annotate, show_sem, col_w, row_h, rotate)


def _figure(
    panels: list[_Panel],
    title: str,
    sweep: pd.DataFrame,
    info: ExperimentInfo,
    style: PlotStyle,
    ncols: int,
    xlabel: str,
) -> Figure:
    """Lay out the panels, one shared symmetric colour scale and one labelled colorbar.

    ``sweep`` holds every row drawn: it sets the colour scale and the direction, whose
    :func:`~patchsweep.plotting.style.shown_values` the cells show.
    """
    direction = str(sweep["direction"].iloc[0])
    panels = [replace(p, values=shown_values(direction, p.values)) for p in panels]
    geo = _geometry(panels, style, ncols)
    nrows = -(-len(panels) // ncols)
    fs = style.font_size
    longest = max(len(label) for p in panels for label in p.col_labels)
    tick_h = longest * CHAR_EM * fs / 72 if geo.rotate else fs / 72
    # A panel is as wide as its cells, or as its title; in a grid of several rows every
    # column is as wide as the widest panel.
    needed = [max(len(p.col_labels) * geo.col_w, text_inches(p.title, fs) + 0.2) for p in panels]
    widths = needed[:ncols] if nrows == 1 else [max(needed)] * ncols
    panel_h = len(panels[0].row_labels) * geo.row_h
    label = colorbar_label(info, direction)
    title_w = text_inches(title, fs + 1) + 0.3
    width = max(style.width, sum(widths) + 0.45 * ncols + 1.6, title_w)
    title_h = 1.35 * (fs + 1) / 72
    panel_titles = 0.25 if any(p.title for p in panels) else 0.0
    grid_h = nrows * (panel_h + tick_h + 0.5 + panel_titles) + title_h + 0.2
    # The colorbar label runs along the colorbar: the figure must be at least that tall.
    height = max(style.height, grid_h, text_inches(label, fs) + title_h + 0.6)

    fig = Figure(figsize=(width, height), layout="constrained")
    fig.get_layout_engine().set(wspace=0.03, hspace=0.04)  # gutters between panels
    fig.suptitle(title)
    limit = symmetric_limit(shown_values(direction, sweep["normalized"]), style.min_limit)
    norm = Normalize(vmin=-limit, vmax=limit)
    cmap = mpl.colormaps[style.cmap].with_extremes(bad="#d9d9d9")
    ratios = widths if nrows == 1 else None
    axes = fig.subplots(nrows, ncols, squeeze=False, gridspec_kw={"width_ratios": ratios})
    mesh = None
    for index, ax in enumerate(axes.flat):
        if index >= len(panels):
            ax.set_axis_off()
            continue
        mesh = _draw(ax, panels[index], norm, cmap, geo, style)
        first_col = index % ncols == 0
        ax.set_ylabel("Layer" if first_col else "")
        ax.tick_params(labelleft=first_col)
        ax.set_xlabel(xlabel)
    colorbar = fig.colorbar(mesh, ax=axes.ravel().tolist(), shrink=min(1.0, 2.5 / height + 0.5))
    colorbar.set_label(label)
    return fig


def _draw(
    ax: Axes, panel: _Panel, norm: Normalize, cmap: Colormap, geo: _Geometry, style: PlotStyle
) -> object:
    """One heatmap as vector cells (crisp in PDF/SVG, unlike an upscaled raster image)."""
    n_rows, n_cols = panel.values.shape
    mesh = ax.pcolormesh(
        np.ma.masked_invalid(panel.values), cmap=cmap, norm=norm, edgecolors="face", linewidth=0
    )
    ax.set_xlim(0, n_cols)
    ax.set_ylim(n_rows, 0)
    ax.set_xticks(np.arange(n_cols) + 0.5, [_tick_text(t) for t in panel.col_labels])
    ax.set_yticks(np.arange(n_rows) + 0.5, panel.row_labels)
    ax.tick_params(length=0)
    if geo.rotate:
        ax.tick_params(axis="x", labelrotation=90)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if panel.title:
        ax.set_title(panel.title)
    if geo.annotate:
        _annotate(ax, panel, norm, cmap, geo, style)
    return mesh


def _annotate(
    ax: Axes, panel: _Panel, norm: Normalize, cmap: Colormap, geo: _Geometry, style: PlotStyle
) -> None:
    """Write each value (and ``±sem`` beneath it) in a colour readable on its cell."""
    size = style.font_size - 2
    for (row, col), value in np.ndenumerate(panel.values):
        if not np.isfinite(value):
            continue
        red, green, blue, _ = cmap(norm(value))
        colour = "white" if 0.299 * red + 0.587 * green + 0.114 * blue < 0.5 else "black"
        text = format_value(value, style.annotate_fmt)
        sem = panel.sem[row, col]
        if geo.show_sem and np.isfinite(sem):
            text += "\n±" + format_value(sem, style.annotate_fmt)
        ax.text(
            col + 0.5,
            row + 0.5,
            text,
            ha="center",
            va="center",
            color=colour,
            fontsize=size,
            linespacing=1.0,
        )


def _tick_text(label: str) -> str:
    """Tokens are shown as they are, except ``$`` (would start mathtext) and newlines."""
    return label.replace("$", r"\$").replace("\n", "\\n")
