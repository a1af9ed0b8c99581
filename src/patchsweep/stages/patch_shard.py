"""Stage patch_shard: one shard of a sharded sweep, its layers only, on its own device.

The patch stage's work restricted to the layers ``params.yaml`` gives the shard (see
:mod:`patchsweep.shards`), so shards can run at the same time in separate processes, on
separate GPUs or nodes. Besides its rows it writes a record of what it patched and from
which inputs, which the merge stage checks before it joins the shards.

Run by DVC as ``python -m patchsweep.stages.patch_shard MODEL DATASET SWEEP SHARD``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace

from patchsweep.checkpoint import Checkpoint, checkpoint_key
from patchsweep.cli import run_stage, stage_args
from patchsweep.config import load_config
from patchsweep.engine.sites import checked_indices
from patchsweep.engine.sweep import run_sweep
from patchsweep.errors import ConfigError
from patchsweep.io import (
    FULL_PRECISION,
    publish_together,
    write_csv,
    write_json,
)
from patchsweep.models import load_model
from patchsweep.paths import ExperimentPaths
from patchsweep.shards import (
    check_cover,
    read_layout,
    shard_checkpoint,
    shard_of,
    shard_record,
    shard_table,
)
from patchsweep.stored import load_tokenized
from patchsweep.sweep_runs import load_sweep_runs

log = logging.getLogger(__name__)


def run(exp: ExperimentPaths, sweep_name: str, index: int) -> None:
    """Run shard ``index`` of sweep ``sweep_name``; write its rows and its record."""
    cfg = load_config(exp.config)
    layout = read_layout(exp.root / "params.yaml")
    shard = shard_of(layout, sweep_name, index)
    if sweep_name not in cfg.sweeps:
        raise ConfigError(
            f"sweep {sweep_name!r} is not in {exp.config} (has: {sorted(cfg.sweeps)})",
            "define it under sweeps: in conf/sweep/, then `dvc repro` (compose keeps it)",
        )
    sweep = cfg.sweeps[sweep_name]
    pairs, token_hash = load_tokenized(exp)
    model = load_model(replace(cfg.model, device=shard.device or cfg.model.device))
    # every shard checks the whole layout against the model, before any pass runs
    sweep_layers = checked_indices(
        sweep_name, "layers", sweep.layers, model.dims.n_layers, "layers"
    )
    what = f"sweeps.{sweep_name}.layers" if sweep.layers is not None else "the model's layers"
    check_cover(sweep_name, layout[sweep_name], sweep_layers, what)
    part = replace(sweep, layers=list(shard.layers))
    runs = load_sweep_runs(exp, cfg, sweep_name, model.identity(), token_hash)
    # what the numbers depend on, but the layers: equal in every shard of one sweep
    inputs = {
        "model": model.identity(),
        "tokens": token_hash,
        "sweep": {k: v for k, v in asdict(sweep).items() if k != "layers"},
        "metric": cfg.metric.name,
    }
    log.info(
        "sweep %s shard %d: layers %s of %s, %s %s over %d prompts on %s",
        sweep_name,
        index,
        list(shard.layers),
        sweep_layers,
        sweep.direction,
        sweep.component,
        pairs.n_pairs,
        model.device,
    )
    checkpoint = Checkpoint(
        shard_checkpoint(exp, sweep_name, index),
        checkpoint_key(**inputs, layers=list(shard.layers)),
        every_s=cfg.engine.checkpoint_every_s,
    )
    desc = f"patch {sweep_name} shard {index}"
    table = run_sweep(
        model, pairs, sweep_name, part, runs, cfg.metric.name, cfg.engine, checkpoint, desc
    )
    record = {
        "sweep": sweep_name,
        "shard": index,
        "layers": list(shard.layers),
        "sweep_layers": sweep_layers,
        "inputs": inputs,
        "rows": len(table),
    }
    table_path, record_path = (
        shard_table(exp, sweep_name, index),
        shard_record(exp, sweep_name, index),
    )
    with publish_together(table_path, record_path):
        write_csv(table_path, table, digits=FULL_PRECISION)  # as the patch stage writes it
        write_json(record_path, record)
    checkpoint.remove()
    log.info("wrote %s (%d sites)", table_path, len(table) // max(pairs.n_pairs, 1))


def main(argv: list[str]) -> None:
    """The DVC entry point: the experiment, sweep and shard named on the command line."""
    model, dataset, sweep, shard = stage_args(argv, "patch_shard", "MODEL DATASET SWEEP SHARD", 4)
    if not shard.isdigit():
        raise ConfigError(
            f"stage patch_shard's SHARD is {shard!r}, not a shard number",
            "run `python -m patchsweep.stages.patch_shard MODEL DATASET SWEEP SHARD` with "
            "SHARD one of params.yaml's shard numbers (dvc.yaml does)",
        )
    run(ExperimentPaths(model, dataset), sweep, int(shard))


if __name__ == "__main__":
    run_stage(main)
