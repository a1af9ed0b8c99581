"""Stage plot: the results table → figures (PNG/PDF/SVG) and the report page."""

from __future__ import annotations

import logging
from dataclasses import asdict

from patchsweep.config import PlotConfig, load_config
from patchsweep.io import read_csv, read_json
from patchsweep.paths import ExperimentPaths

log = logging.getLogger(__name__)


def plot_style(cfg: PlotConfig):
    """The plotting package's style object from the config group."""
    from patchsweep.plotting import PlotStyle

    fields = asdict(cfg)
    fields["annotate"] = {"true": True, "false": False}.get(str(fields["annotate"]).lower(), "auto")
    return PlotStyle(**fields)


def run(exp: ExperimentPaths) -> None:
    """Render every figure into ``figures/`` and write report.md, report.html."""
    from patchsweep.plotting import ExperimentInfo, render_figures, write_report

    cfg = load_config(exp.config)
    table = read_csv(exp.table)
    baselines = read_json(exp.baselines)
    info = ExperimentInfo(model=cfg.model.name, dataset=cfg.dataset.name, metric=cfg.metric.name)
    style = plot_style(cfg.plot)
    figures = render_figures(table, info, style, exp.figures)
    written = write_report(table, baselines, figures, info, style, exp.results)
    log.info(
        "wrote %d figures to %s and %s",
        len(figures),
        exp.figures,
        ", ".join(str(p) for p in written),
    )
