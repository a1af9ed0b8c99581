"""Stage plot: the results table → figures (PNG/PDF/SVG) and the report page.

Run by DVC as ``python -m patchsweep.stages.plot MODEL DATASET``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from patchsweep.cli import run_stage, stage_args
from patchsweep.config import PlotConfig, load_config
from patchsweep.io import publish_together, read_csv, read_json
from patchsweep.paths import ExperimentPaths

log = logging.getLogger(__name__)


def plot_style(cfg: PlotConfig):
    """The plotting package's style object from the config group."""
    from patchsweep.plotting.style import PlotStyle

    fields = asdict(cfg)
    fields["annotate"] = {"true": True, "false": False}.get(str(fields["annotate"]).lower(), "auto")
    return PlotStyle(**fields)


def attribution_checks(exp: ExperimentPaths) -> dict[str, dict]:
    """The ``sweeps`` of ``attribution_check.json`` beside the results table.

    Normalize writes the file for every experiment; a missing one (a results folder from
    before attribution patching) means there are no attribution sweeps.
    """
    from patchsweep.plotting.attribution import ATTRIBUTION_CHECK

    path = exp.table.parent / ATTRIBUTION_CHECK
    return dict(read_json(path).get("sweeps") or {}) if path.is_file() else {}


def run(exp: ExperimentPaths) -> None:
    """Render every figure into ``figures/`` and write report.md, report.html.

    The plot settings are checked before anything is drawn, and every file is published
    together at the end: a bad setting or a full disk leaves the previous figures and
    report as they were, not half of a new set.
    """
    # From the defining modules, not the package's lazy names: DVC deps follow imports.
    from patchsweep.plotting.figures import render_figures, write_report
    from patchsweep.plotting.report import REPORT_HTML, REPORT_MD, TOP_COMPONENTS
    from patchsweep.plotting.settings import check_style
    from patchsweep.plotting.style import ExperimentInfo

    cfg = load_config(exp.config)
    check_style(cfg.plot)
    table = read_csv(exp.table)
    baselines = read_json(exp.baselines)
    checks = attribution_checks(exp)
    info = ExperimentInfo(model=cfg.model.name, dataset=cfg.dataset.name, metric=cfg.metric.name)
    style = plot_style(cfg.plot)
    reports = [exp.results / name for name in (REPORT_MD, REPORT_HTML, TOP_COMPONENTS)]
    with publish_together(exp.figures, *reports):
        figures = render_figures(table, info, style, exp.figures, checks)
        written = write_report(table, baselines, figures, info, style, exp.results, checks)
    log.info(
        "wrote %d figures to %s and %s",
        len(figures),
        exp.figures,
        ", ".join(str(p) for p in written),
    )


def main(argv: list[str]) -> None:
    """The DVC entry point: the experiment named on the command line."""
    model, dataset = stage_args(argv, "plot", "MODEL DATASET", 2)
    run(ExperimentPaths(model, dataset))


if __name__ == "__main__":
    run_stage(main)
