"""Stage patch: one sweep over cached activations, raw metric per site × prompt.

Run by DVC as ``python -m patchsweep.stages.patch MODEL DATASET SWEEP``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from patchsweep.checkpoint import Checkpoint, checkpoint_key
from patchsweep.cli import run_stage, stage_args
from patchsweep.config import load_config
from patchsweep.engine.inputs import source_and_target
from patchsweep.engine.sweep import run_sweep
from patchsweep.errors import ConfigError
from patchsweep.io import FULL_PRECISION, write_csv
from patchsweep.models import load_model
from patchsweep.paths import ExperimentPaths
from patchsweep.stored import load_tokenized
from patchsweep.sweep_runs import load_sweep_runs

log = logging.getLogger(__name__)


def run(exp: ExperimentPaths, sweep_name: str) -> None:
    """Run the sweep ``sweep_name`` and write its tidy per-prompt table."""
    cfg = load_config(exp.config)
    if sweep_name not in cfg.sweeps:
        raise ConfigError(
            f"sweep {sweep_name!r} is not in {exp.config} (has: {sorted(cfg.sweeps)})",
            "define it under sweeps: in conf/sweep/ and list it in params.yaml",
        )
    sweep = cfg.sweeps[sweep_name]
    pairs, token_hash = load_tokenized(exp)
    model = load_model(cfg.model)
    runs = load_sweep_runs(exp, cfg, sweep_name, model.identity(), token_hash)
    source_run, target_run = source_and_target(sweep.direction)
    log.info(
        "sweep %s: %s %s over %d prompts (%s into the %s run)",
        sweep_name,
        sweep.direction,
        sweep.component,
        pairs.n_pairs,
        source_run,
        target_run,
    )
    checkpoint = Checkpoint(
        exp.checkpoint(sweep_name),
        checkpoint_key(
            model=model.identity(), tokens=token_hash, sweep=asdict(sweep), metric=cfg.metric.name
        ),
        every_s=cfg.engine.checkpoint_every_s,
    )
    table = run_sweep(
        model, pairs, sweep_name, sweep, runs, cfg.metric.name, cfg.engine, checkpoint
    )
    write_csv(exp.patch(sweep_name), table, digits=FULL_PRECISION)
    checkpoint.remove()
    log.info("wrote %s (%d sites)", exp.patch(sweep_name), len(table) // max(pairs.n_pairs, 1))


def main(argv: list[str]) -> None:
    """The DVC entry point: the experiment named on the command line."""
    model, dataset, sweep = stage_args(argv, "patch", "MODEL DATASET SWEEP", 3)
    run(ExperimentPaths(model, dataset), sweep)


if __name__ == "__main__":
    run_stage(main)
