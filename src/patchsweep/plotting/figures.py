"""Render every sweep of a results table into figures, and write the report page.

See :mod:`patchsweep.plotting` for which figure each kind of sweep gets. Every sweep is
drawn once: :func:`plan_figures` decides, before anything is drawn, which figure shows
which sweeps, so that the report can show each figure once, in the section of the first
sweep it draws. The layer × position sweeps of a ``panels_<direction>`` figure get no
figure of their own, and a layer sweep drawn dashed in its other-direction partner's line
plot gets none either.

A sweep with ``method == "attribution"`` rows is an attribution sweep: its exact rows are
only the verified sites, so it never goes through the ordinary per-sweep figures (that
would draw the verified sites' exact values into the estimate's grid as duplicates). It
gets the figures of :mod:`patchsweep.plotting.attribution` instead.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from patchsweep.plotting.attribution import (
    METHODS,
    AttributionSweep,
    attribution_title,
    comparison_figure,
    figure_stems,
    scatter_figure,
)
from patchsweep.plotting.attribution_report import captions
from patchsweep.plotting.captions import heatmap_caption, line_caption, scale_text
from patchsweep.plotting.heatmaps import (
    head_pos_figure,
    layer_head_figure,
    layer_pos_figure,
    panels_figure,
    select_panel_sweeps,
)
from patchsweep.plotting.labels import last_layers, roles_only
from patchsweep.plotting.lines import line_figure
from patchsweep.plotting.overlap import find_overlaps
from patchsweep.plotting.report import write_report_files
from patchsweep.plotting.style import (
    ExperimentInfo,
    PlotStyle,
    figure_title,
    save_figure,
    style_context,
)

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = (
    "sweep", "component", "direction", "layer", "head", "position", "position_label",
    "window", "metric", "normalized", "sem", "n_prompts",
)  # fmt: skip
DIRECTIONS = ("denoise", "noise")
ATTRIBUTION_KINDS = ("vs_exact", "scatter")  # in figure_stems order
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_AXES = {"layer_pos": "layer × position", "layer_head": "layer × head",
         "head_pos": "layer × head at each position", "panels": "layer × position"}  # fmt: skip


@dataclass(frozen=True)
class FigurePlan:
    """One figure to draw: its file stem, the sweeps it shows, its title and caption."""

    stem: str  # file name without the format
    kind: str  # layer_pos, layer_head, head_pos, line, panels, vs_exact or scatter
    sweeps: tuple[str, ...]  # drawn, in drawing order (a line's partner second)
    title: str  # one line
    caption: str  # under the figure in the report, and in the file's metadata


def plan_figures(
    table: pd.DataFrame,
    info: ExperimentInfo,
    checks: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[FigurePlan]:
    """Which figures the table gets: exact sweeps' own figures in table order (a line
    plot with its partner), then the panels figures, then attribution sweeps' figures.

    Raises:
        ValueError: As :func:`split_sweeps` and :func:`split_attribution`.
    """
    sweeps = split_sweeps(table)
    grids = {name: s for name, s in sweeps.items() if sweep_kind(s) == "layer_pos"}
    panels = {d: select_panel_sweeps(grids, d) for d in DIRECTIONS}
    panels = {d: chosen for d, chosen in panels.items() if len(chosen) >= 2}
    in_panels = {_name(s) for chosen in panels.values() for s in chosen}
    plans, drawn = [], set(in_panels)
    for name, sweep in sweeps.items():
        if name in drawn:
            continue
        kind = sweep_kind(sweep)
        partner = find_partner(name, sweeps) if kind == "line" else None
        if partner is not None and _name(partner) in drawn:
            partner = None  # drawn already, in a figure of its own
        shown = [sweep] if partner is None else [sweep, partner]
        drawn.update(_name(s) for s in shown)
        caption = (
            line_caption(sweep, info, partner)
            if kind == "line"
            else heatmap_caption([sweep], info, _AXES[kind])
        )
        plans.append(_plan(name, kind, shown, figure_title(_names(shown), info), caption))
    for direction, chosen in panels.items():
        title = figure_title(_names(chosen), info)
        caption = heatmap_caption(chosen, info, _AXES["panels"])
        plans.append(_plan(f"panels_{direction}", "panels", chosen, title, caption))
    for name, attributed in split_attribution(table, checks).items():
        title = attribution_title(attributed, info)
        scale = scale_text(attributed.estimate, info)
        for stem, kind, caption in zip(
            figure_stems(name), ATTRIBUTION_KINDS, captions(attributed.facts), strict=True
        ):
            plans.append(FigurePlan(stem, kind, (name,), title, f"{caption} {scale}"))
    return plans


def render_figures(
    table: pd.DataFrame,
    info: ExperimentInfo,
    style: PlotStyle,
    out_dir: Path,
    checks: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Path]:
    """Render every figure of :func:`plan_figures` in every format of ``style``.

    Args:
        table: The tidy results table, one row per patch site (read it with
            ``keep_default_na=False`` so tokens such as ``"NA"`` survive as labels). A
            table without a ``method`` column is all exact patching.
        info: Model, dataset and metric, for titles and captions.
        style: Sizes, fonts, colours and output formats.
        out_dir: Created if missing; files are ``<sweep>.<fmt>``,
            ``panels_<direction>.<fmt>``, and ``<sweep>_vs_exact.<fmt>`` and
            ``<sweep>_scatter.<fmt>`` for each attribution sweep.
        checks: The ``sweeps`` mapping of ``attribution_check.json`` (sweep name → its
            check); it names the exact sweep an attribution sweep is compared with and
            gives the correlations the scatter shows. None: no such file.

    Returns:
        The written files, in plan order, each figure in ``style.formats`` order.

    Raises:
        ValueError: On a malformed table (missing columns, a sweep mixing components,
            directions or figure types, duplicate sites, an unusable sweep name).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sweeps = split_sweeps(table)
    attributed = split_attribution(table, checks)
    paths: list[Path] = []
    with style_context(style):
        for plan in plan_figures(table, info, checks):
            fig = draw_figure(plan, sweeps, attributed, info, style)
            _warn_on_overlaps(plan.stem, fig)
            paths += save_figure(fig, out_dir, plan.stem, style.formats, plan.title, plan.caption)
    return paths


def _warn_on_overlaps(stem: str, fig: Figure) -> None:
    """Say so when a figure's text collides: the tests keep every figure kind clean on
    tables of the usual shapes, but a table unlike theirs (a far larger model, very long
    tokens) could still crowd one, and that should not be published silently."""
    found = find_overlaps(fig)
    if found:
        shown = "; ".join(str(overlap) for overlap in found[:5])
        more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
        log.warning("figure %s has overlapping text: %s%s", stem, shown, more)


def draw_figure(
    plan: FigurePlan,
    sweeps: Mapping[str, pd.DataFrame],
    attributed: Mapping[str, AttributionSweep],
    info: ExperimentInfo,
    style: PlotStyle,
) -> Figure:
    """The figure of one plan, from the sweeps :func:`split_sweeps` and
    :func:`split_attribution` return."""
    if plan.kind in ATTRIBUTION_KINDS:
        draw = comparison_figure if plan.kind == "vs_exact" else scatter_figure
        return draw(attributed[plan.sweeps[0]], info, style)
    shown = [sweeps[name] for name in plan.sweeps]
    if plan.kind == "panels":
        return panels_figure(shown, info, style, plan.title)
    if plan.kind == "line":
        partner = shown[1] if len(shown) > 1 else None
        return line_figure(shown[0], info, style, partner, plan.title)
    draw = {"layer_pos": layer_pos_figure, "layer_head": layer_head_figure}.get(
        plan.kind, head_pos_figure
    )
    return draw(shown[0], info, style, plan.title)


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
            other formats linked by relative path, each figure once, with its caption.
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
        plans=plan_figures(table, info, checks),
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
    # How figures and the report name layers and positions: see patchsweep.plotting.labels.
    table = roles_only(table.assign(last_layer=last_layers(table)))
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


def _plan(stem: str, kind: str, shown: list[pd.DataFrame], title: str, caption: str) -> FigurePlan:
    return FigurePlan(stem, kind, tuple(_name(s) for s in shown), title, caption)


def _name(sweep: pd.DataFrame) -> str:
    return str(sweep["sweep"].iloc[0])


def _names(shown: list[pd.DataFrame]) -> str:
    return ", ".join(_name(s) for s in shown)
