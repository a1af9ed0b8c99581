"""Render every sweep of a results table into figures, and write the report page.

See :mod:`patchsweep.plotting` for which figure each kind of sweep gets. A sweep with
``method == "attribution"`` rows is an attribution sweep: its exact rows are only the
verified sites, so it never goes through the ordinary per-sweep figures (that would draw
the verified sites' exact values into the estimate's grid as duplicates). It gets the
figures of :mod:`patchsweep.plotting.attribution` instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from patchsweep.plotting.attribution import (
    METHODS,
    AttributionSweep,
    comparison_figure,
    figure_stems,
    scatter_figure,
)
from patchsweep.plotting.heatmaps import (
    head_pos_figure,
    layer_head_figure,
    layer_pos_figure,
    panels_figure,
    select_panel_sweeps,
)
from patchsweep.plotting.lines import line_figure
from patchsweep.plotting.report import write_report_files
from patchsweep.plotting.style import (
    ExperimentInfo,
    PlotStyle,
    save_figure,
    style_context,
)

REQUIRED_COLUMNS = (
    "sweep", "component", "direction", "layer", "head", "position", "position_label",
    "window", "metric", "normalized", "sem", "n_prompts",
)  # fmt: skip
DIRECTIONS = ("denoise", "noise")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def render_figures(
    table: pd.DataFrame,
    info: ExperimentInfo,
    style: PlotStyle,
    out_dir: Path,
    checks: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Path]:
    """Render every sweep's figure, and the combined panels, in every format of ``style``.

    Args:
        table: The tidy results table, one row per patch site (read it with
            ``keep_default_na=False`` so tokens such as ``"NA"`` survive as labels). A
            table without a ``method`` column is all exact patching.
        info: Model, dataset and metric, for titles.
        style: Sizes, fonts, colours and output formats.
        out_dir: Created if missing; files are ``<sweep>.<fmt>``,
            ``panels_<direction>.<fmt>``, and ``<sweep>_vs_exact.<fmt>`` and
            ``<sweep>_scatter.<fmt>`` for each attribution sweep.
        checks: The ``sweeps`` mapping of ``attribution_check.json`` (sweep name → its
            check); it names the exact sweep an attribution sweep is compared with and
            gives the correlations the scatter shows. None: no such file.

    Returns:
        The written files: exact sweeps in table order, each in ``style.formats`` order,
        then the combined figures, then the attribution sweeps' figures in table order.

    Raises:
        ValueError: On a malformed table (missing columns, a sweep mixing components,
            directions or figure types, duplicate sites, an unusable sweep name).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sweeps = split_sweeps(table)
    paths: list[Path] = []
    with style_context(style):
        grids = {}
        for name, sweep in sweeps.items():
            kind = sweep_kind(sweep)
            if kind == "layer_pos":
                grids[name] = sweep
                fig = layer_pos_figure(sweep, info, style)
            elif kind == "layer_head":
                fig = layer_head_figure(sweep, info, style)
            elif kind == "head_pos":
                fig = head_pos_figure(sweep, info, style)
            else:
                fig = line_figure(sweep, info, style, partner=find_partner(name, sweeps))
            paths += save_figure(fig, out_dir, name, style.formats)
        for direction in DIRECTIONS:
            chosen = select_panel_sweeps(grids, direction)
            if len(chosen) >= 2:
                fig = panels_figure(chosen, info, style)
                paths += save_figure(fig, out_dir, f"panels_{direction}", style.formats)
        for name, attributed in split_attribution(table, checks).items():
            stems = figure_stems(name)
            for stem, draw in zip(stems, (comparison_figure, scatter_figure), strict=True):
                paths += save_figure(draw(attributed, info, style), out_dir, stem, style.formats)
    return paths


def write_report(
    table: pd.DataFrame,
    baselines: dict,
    figures: list[Path],
    info: ExperimentInfo,
    style: PlotStyle,
    out_dir: Path,
    checks: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Path]:
    """Write ``report.md``, a self-contained ``report.html`` and ``top_components.json``.

    Args:
        table: The tidy results table.
        baselines: ``clean``/``corrupted`` metric with ``_sem`` and ``_accuracy``, and
            ``n_prompts`` (missing keys are shown as n/a).
        figures: Paths returned by :func:`render_figures`; PNGs are embedded in the HTML,
            other formats linked by relative path.
        info: Model, dataset and metric.
        style: ``top_k`` and the number format.
        out_dir: Created if missing.
        checks: The ``sweeps`` mapping of ``attribution_check.json``; when it has sweeps,
            the report gains an "Attribution patching" section. None: no such file.

    Returns:
        The paths of ``report.md``, ``report.html`` and ``top_components.json``.
    """
    return write_report_files(
        split_sweeps(table),
        baselines,
        figures,
        info,
        style,
        Path(out_dir),
        attribution=split_attribution(table, checks),
        checks=checks or {},
    )


def split_sweeps(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Validate the table and split its exact sweeps by name, in order of first appearance.

    Attribution sweeps are left out (see :func:`split_attribution`): every figure and
    ranking drawn from these sweeps may treat each row as an exactly patched site.
    """
    return {name: rows for name, rows in _by_name(table).items() if not _attributed(rows)}


def split_attribution(
    table: pd.DataFrame, checks: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, AttributionSweep]:
    """The attribution sweeps of the table, with their ground truth, in table order.

    Args:
        table: The tidy results table.
        checks: The ``sweeps`` mapping of ``attribution_check.json``; a sweep's
            ``compared_with`` names the exact sweep over the same sites. An attribution
            sweep missing from it gets an empty check (its statistics show as n/a).

    Raises:
        ValueError: As :func:`split_sweeps`, and when a figure of an attribution sweep
            would have the file name of another sweep's figure.
    """
    groups, checks = _by_name(table), checks or {}
    found = {}
    for name, rows in groups.items():
        if not _attributed(rows):
            continue
        clash = [stem for stem in figure_stems(name) if stem in groups]
        if clash:
            raise ValueError(
                f"sweep {clash[0]!r} has the file name of a figure of attribution sweep "
                f"{name!r}; rename one of them"
            )
        estimate = rows[rows["method"] == "attribution"].reset_index(drop=True)
        sweep_kind(estimate)  # refuses a mix of per-head and whole-component sites
        check = checks.get(name, {})
        other = groups.get(check["compared_with"]) if check.get("compared_with") else None
        reference = other if other is not None and not _attributed(other) else None
        verified = rows[rows["method"] == "exact"].reset_index(drop=True)
        found[name] = AttributionSweep(name, estimate, verified, reference, check)
    return found


def _by_name(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Validate the table and split it by sweep name (all methods), in table order."""
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"results table lacks columns {missing}")
    if "method" not in table.columns:  # tables from before attribution patching
        table = table.assign(method="exact")
    unknown = sorted(set(table["method"].astype(str)) - set(METHODS))
    if unknown:
        raise ValueError(f"results table has methods {unknown}; expected only {list(METHODS)}")
    table = table.assign(
        position_label=table["position_label"].fillna("").astype(str),
        **{c: table[c].astype(int) for c in ("layer", "head", "position", "window")},
    )
    sweeps = {}
    for name in pd.unique(table["sweep"]):
        sweep = table[table["sweep"] == name].reset_index(drop=True)
        if not _SAFE_NAME.match(str(name)) or str(name).startswith("panels_"):
            raise ValueError(f"sweep name {name!r} cannot be a file name here")
        for column in ("component", "direction"):
            if sweep[column].nunique() != 1:
                raise ValueError(f"sweep {name!r} mixes several values of {column!r}")
        if sweep["direction"].iloc[0] not in DIRECTIONS:
            raise ValueError(f"sweep {name!r} has direction {sweep['direction'].iloc[0]!r}")
        sweeps[str(name)] = sweep
    return sweeps


def _attributed(sweep: pd.DataFrame) -> bool:
    return bool((sweep["method"] == "attribution").any())


def sweep_kind(sweep: pd.DataFrame) -> str:
    """``layer_head``, ``head_pos``, ``layer_pos`` or ``line``, from the index axes used."""
    heads, positions = sweep["head"] >= 0, sweep["position"] >= 0
    if heads.nunique() > 1 or positions.nunique() > 1:
        raise ValueError(
            f"sweep {sweep['sweep'].iloc[0]!r} mixes per-head/whole-component or "
            "per-position/all-position rows; split it into separate sweeps"
        )
    by_head, by_position = bool(heads.iloc[0]), bool(positions.iloc[0])
    if by_head:
        return "head_pos" if by_position else "layer_head"
    return "layer_pos" if by_position else "line"


def find_partner(name: str, sweeps: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    """The line sweep of the same component and windows in the other direction, if any."""
    mine = sweeps[name]
    for other_name, other in sweeps.items():
        if other_name == name or sweep_kind(other) != "line":
            continue
        same = (other["component"].iloc[0] == mine["component"].iloc[0]) and set(
            other["window"]
        ) == set(mine["window"])
        if same and other["direction"].iloc[0] != mine["direction"].iloc[0]:
            return other
    return None
