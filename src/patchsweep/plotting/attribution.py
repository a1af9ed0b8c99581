"""Figures of attribution sweeps: the gradient estimate beside exact patching.

Attribution patching (AtP) estimates every site's patching effect from one forward and
one backward pass, as ``(source − target activation) · ∂metric/∂activation``. It is a
first-order approximation, so it is only worth reading next to the ground truth: exact
patching of the verified sites (the top-k of the ranking plus a random control sample),
or of every site when the experiment also ran an exact sweep over the same sites.

An attribution sweep arrives in ``results.csv`` as rows of one sweep name with
``method == "attribution"`` (every site) and ``method == "exact"`` (the verified sites),
and as one entry of ``attribution_check.json`` (correlations, recall, pass counts). Each
sweep gets two figures:

* ``<sweep>_vs_exact``: estimate and exact side by side on one colour scale, in the
  layout the ordinary heatmaps use for that sweep's shape; sites without an exact value
  are grey, and the exact panel's title says so.
* ``<sweep>_scatter``: estimate (x) against exact (y) per site, with the diagonal on
  square axes, so over- and underestimates read as distance from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from patchsweep.plotting.heatmaps import paired_figure
from patchsweep.plotting.settings import format_value
from patchsweep.plotting.style import (
    ExperimentInfo,
    PlotStyle,
    figure_title,
    text_inches,
)

ATTRIBUTION_CHECK = "attribution_check.json"  # beside results.csv
METHODS = ("exact", "attribution")
# A site is the same site in the estimate and in an exact sweep when these agree.
SITE_KEYS = ["layer", "head", "position", "position_label", "window"]
FIGURE_SUFFIXES = ("vs_exact", "scatter")  # figure file stems: <sweep>_<suffix>
ESTIMATE_TITLE = "attribution estimate"
EXACT_TITLE = "exact patching"
UNVERIFIED_NOTE = "(grey: not verified)"
# Okabe–Ito vermillion, as the denoising lines; the full exact sweep is drawn light grey.
_VERIFIED_COLOUR = "#D55E00"
_REFERENCE_COLOUR = "0.7"


@dataclass(frozen=True)
class AttributionSweep:
    """One attribution sweep: its rows split by what they measure, and its check entry."""

    name: str
    estimate: pd.DataFrame  # method == "attribution": every site of the sweep
    verified: pd.DataFrame  # method == "exact", same name: the verified sites only
    reference: pd.DataFrame | None  # the compared_with exact sweep (all sites), if any
    check: Mapping[str, Any] = field(default_factory=dict)  # attribution_check.json entry

    @property
    def exact(self) -> pd.DataFrame:
        """The best ground truth there is: the whole exact sweep, else the verified sites."""
        return self.reference if self.reference is not None else self.verified

    @property
    def facts(self) -> dict[str, Any]:
        """What the table says of the sweep, under its check entry's own values."""
        first = self.estimate.iloc[0]
        found = {"component": str(first["component"]), "direction": str(first["direction"])}
        found |= {"n_sites": len(self.estimate), "n_verified": len(self.verified)}
        return {**found, **self.check}


def figure_stems(name: str) -> list[str]:
    """File stems of an attribution sweep's figures, in the order they are written."""
    return [f"{name}_{suffix}" for suffix in FIGURE_SUFFIXES]


def exact_on_sites(estimate: pd.DataFrame, exact: pd.DataFrame) -> pd.DataFrame:
    """``estimate`` with its values replaced by ``exact``'s at the same sites (NaN if none).

    The result has the estimate's sites exactly, so both panels of the comparison are
    grids of one shape; an exact row of a site the estimate lacks is dropped.
    """
    values = ["normalized", "sem", "metric"]
    measured = exact[[*SITE_KEYS, *values]]
    return estimate.drop(columns=values).merge(measured, on=SITE_KEYS, how="left")


def comparison_figure(sweep: AttributionSweep, info: ExperimentInfo, style: PlotStyle) -> Figure:
    """Estimate (left) and exact patching (right) on one colour scale and one colorbar."""
    right = exact_on_sites(sweep.estimate, sweep.exact)
    exact_title = EXACT_TITLE
    if right["normalized"].isna().any():
        exact_title += " " + UNVERIFIED_NOTE
    return paired_figure(
        sweep.estimate,
        right,
        (ESTIMATE_TITLE, exact_title),
        attribution_title(sweep, info),
        info,
        style,
    )


def scatter_figure(sweep: AttributionSweep, info: ExperimentInfo, style: PlotStyle) -> Figure:
    """Estimate (x) against exact (y) per site, on square axes with the diagonal y = x.

    Verified sites are the points the check's correlations are computed on; the whole
    exact sweep, when there is one, is drawn lighter behind them. The legend (with r and
    ρ) sits below the axes, where it can never hide a point.
    """
    verified = _pairs(sweep.estimate, sweep.verified)
    reference = _pairs(sweep.estimate, sweep.reference) if sweep.reference is not None else None
    size = max(style.height, 3.2)
    title = attribution_title(sweep, info)
    legend_title = correlation_text(sweep.check, style.annotate_fmt)
    fs = style.font_size
    width = max(size + 0.6, text_inches(title, fs + 1) + 0.3, text_inches(legend_title, fs) + 0.3)
    fig = Figure(figsize=(width, size + 1.4), layout="constrained")
    fig.suptitle(title)
    ax = fig.subplots()
    handles = []
    if reference is not None:
        name = sweep.check.get("compared_with") or "exact sweep"
        ax.scatter(*reference, s=12, color=_REFERENCE_COLOUR, linewidths=0, zorder=1)
        handles.append(_marker(_REFERENCE_COLOUR, f"every site, exact sweep {name}"))
    ax.scatter(*verified, s=22, color=_VERIFIED_COLOUR, linewidths=0, zorder=2)
    handles.append(_marker(_VERIFIED_COLOUR, f"verified sites ({verified.shape[1]})"))
    low, high = _limits(verified if reference is None else np.hstack([verified, reference]))
    ax.plot([low, high], [low, high], ":", color="0.35", linewidth=1.0, zorder=0)
    handles.append(Line2D([], [], linestyle=":", color="0.35", label="y = x: estimate = exact"))
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(ESTIMATE_TITLE)
    ax.set_ylabel(EXACT_TITLE)
    ax.spines[["top", "right"]].set_visible(False)
    fig.legend(
        handles=handles,
        loc="outside lower center",
        frameon=False,
        title=legend_title,
    )
    return fig


def attribution_title(sweep: AttributionSweep, info: ExperimentInfo) -> str:
    """One line for both figures: ``atp_head vs exact · gpt2 · ioi``."""
    return figure_title(f"{sweep.name} vs exact", info)


def correlation_text(check: Mapping[str, Any], spec: str) -> str:
    """``Pearson r = 0.97, Spearman ρ = 0.93`` from the check entry (n/a where missing)."""
    r, rho = (_stat(check.get(key), spec) for key in ("pearson", "spearman"))
    return f"Pearson r = {r}, Spearman ρ = {rho} (verified sites)"


def _pairs(estimate: pd.DataFrame, exact: pd.DataFrame) -> np.ndarray:
    """(2, n_sites) estimate and exact values at the sites both have a finite value for."""
    guess = estimate[[*SITE_KEYS, "normalized"]].rename(columns={"normalized": "estimate"})
    truth = exact[[*SITE_KEYS, "normalized"]].rename(columns={"normalized": "exact"})
    both = guess.merge(truth, on=SITE_KEYS, how="inner")
    finite = np.isfinite(both["estimate"]) & np.isfinite(both["exact"])
    return both.loc[finite, ["estimate", "exact"]].to_numpy(float).T


def _limits(points: np.ndarray) -> tuple[float, float]:
    """One range for both axes: every point, and 0 (the corrupted level), with a margin."""
    values = np.append(points.ravel(), 0.0)
    low, high = float(values.min()), float(values.max())
    pad = 0.06 * (high - low) if high > low else 0.5
    return low - pad, high + pad


def _marker(colour: str, label: str) -> Line2D:
    return Line2D([], [], linestyle="", marker="o", markersize=5, color=colour, label=label)


def _stat(value: object, spec: str) -> str:
    if value is None or not np.isfinite(float(value)):  # type: ignore[arg-type]
        return "n/a"
    return format_value(float(value), spec)  # type: ignore[arg-type]
