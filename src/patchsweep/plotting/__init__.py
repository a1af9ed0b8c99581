"""Figures and the report page of one experiment, from its tidy results table.

The figure type follows from which index axes a sweep varies:

==========================  ============================================  ======================
``head``                    ``position``                                  figure
==========================  ============================================  ======================
≥ 0                         −1 (all positions)                            layer × head heatmap
≥ 0                         ≥ 0                                           layer × head per position
−1 (whole component)        ≥ 0                                           layer × position heatmap
−1                          −1                                            line over layers
==========================  ============================================  ======================

For each direction with at least two of the resid / attn_out / mlp_out layer × position
sweeps, ``panels_<direction>`` puts them side by side on one colour scale.

Every sweep is drawn once (:func:`plan_figures` decides where): sweeps in a panels figure
get no figure of their own, nor does a layer sweep drawn dashed in its partner's line plot.
Titles are one line (sweep · model · dataset); what a figure shows in detail is its
caption, in the report and in the file's metadata.

An attribution sweep (rows with ``method == "attribution"``) gets none of these: it gets
``<sweep>_vs_exact`` (estimate and exact patching side by side, in the layout above) and
``<sweep>_scatter`` (estimate against exact per site); see
:mod:`patchsweep.plotting.attribution`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: stages run headless

from patchsweep.plotting.settings import check_style  # light: compose may call it

if TYPE_CHECKING:
    from patchsweep.plotting.attribution import AttributionSweep
    from patchsweep.plotting.figures import (
        FigurePlan,
        find_partner,
        plan_figures,
        render_figures,
        split_attribution,
        split_sweeps,
        sweep_kind,
        write_report,
    )
    from patchsweep.plotting.overlap import find_overlaps
    from patchsweep.plotting.report import top_components, top_sites
    from patchsweep.plotting.style import ExperimentInfo, PlotStyle

__all__ = [
    "AttributionSweep",
    "ExperimentInfo",
    "FigurePlan",
    "PlotStyle",
    "check_style",
    "find_overlaps",
    "find_partner",
    "plan_figures",
    "render_figures",
    "split_attribution",
    "split_sweeps",
    "sweep_kind",
    "top_components",
    "top_sites",
    "write_report",
]

# Where each name lives. Figure code (pandas, matplotlib's figures, and torch through
# patchsweep.io) loads on first use, so importing check_style costs matplotlib alone.
# Stage code imports from these modules directly: DVC deps are derived from imports.
_LAZY = {
    "AttributionSweep": "attribution",
    "ExperimentInfo": "style",
    "FigurePlan": "figures",
    "PlotStyle": "style",
    "find_overlaps": "overlap",
    "find_partner": "figures",
    "plan_figures": "figures",
    "render_figures": "figures",
    "split_attribution": "figures",
    "split_sweeps": "figures",
    "sweep_kind": "figures",
    "write_report": "figures",
    "top_components": "report",
    "top_sites": "report",
}


def __getattr__(name: str) -> Any:
    """Load the module that defines ``name`` when it is first asked for."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
