"""Stage merge_shards: a sharded sweep's shards → its table, as the patch stage writes it.

Writes ``patch/<sweep>.csv``, the file an unsharded sweep's patch stage writes (same rows,
same order), so normalize, verify and every reader after them need not know the sweep
was sharded. A missing shard, a shard from other inputs, or a layer in two shards or in
none stops the stage before anything is written (:mod:`patchsweep.shard_merge`).

Run by DVC as ``python -m patchsweep.stages.merge_shards MODEL DATASET SWEEP``.
"""

from __future__ import annotations

import logging

from patchsweep.cli import run_stage, stage_args
from patchsweep.errors import ConfigError, DataError
from patchsweep.io import FULL_PRECISION, read_csv, read_json, write_csv
from patchsweep.paths import ExperimentPaths
from patchsweep.shard_merge import ShardPart, merge_shards
from patchsweep.shards import read_layout, shard_folder, shard_record, shard_table, stage_name

log = logging.getLogger(__name__)


def run(exp: ExperimentPaths, sweep_name: str) -> None:
    """Merge the shards of ``sweep_name`` into ``patch/<sweep>.csv``."""
    shards = read_layout(exp.root / "params.yaml").get(sweep_name)
    if shards is None:
        raise ConfigError(
            f"sweep {sweep_name} is not sharded in params.yaml, so there are no shards to merge",
            "list it under sharded in conf/experiments/params.yaml (then `make params`), or "
            "under sweep to run it as one patch stage",
        )
    missing = [
        stage_name(exp, sweep_name, s.index)
        for s in shards
        if not shard_table(exp, sweep_name, s.index).is_file()
        or not shard_record(exp, sweep_name, s.index).is_file()
    ]
    if missing:
        raise DataError(
            f"{len(missing)} of the {len(shards)} shards of sweep {sweep_name} have not run "
            f"(no table and record in {shard_folder(exp, sweep_name)}): {missing}",
            f"run them (`dvc repro {missing[0]}`, …), or `dvc repro`, which runs them first",
        )
    expected = {p for s in shards for p in (shard_table(exp, sweep_name, s.index),
                                            shard_record(exp, sweep_name, s.index))}  # fmt: skip
    stale = sorted(p.name for p in shard_folder(exp, sweep_name).iterdir() if p not in expected)
    stale = [name for name in stale if not name.startswith(".")]  # DVC's .gitignore
    if stale:
        log.warning(
            "ignoring %s in %s: no shard of params.yaml's layout writes them (left by an "
            "earlier layout; delete them)",
            ", ".join(stale),
            shard_folder(exp, sweep_name),
        )
    parts = [
        ShardPart(
            record=read_json(shard_record(exp, sweep_name, s.index)),
            table=read_csv(shard_table(exp, sweep_name, s.index)),
            stage=stage_name(exp, sweep_name, s.index),
        )
        for s in shards
    ]
    for shard, part in zip(shards, parts, strict=True):
        if [int(v) for v in part.record.get("layers", [])] != list(shard.layers):
            raise DataError(
                f"shard {shard.index} of sweep {sweep_name} patched layers "
                f"{part.record.get('layers')}, but params.yaml gives it {list(shard.layers)}",
                f"rerun it: `dvc repro {part.stage}`",
            )
    table = merge_shards(sweep_name, parts)
    write_csv(exp.patch(sweep_name), table, digits=FULL_PRECISION)
    log.info("wrote %s from %d shards (%d rows)", exp.patch(sweep_name), len(parts), len(table))


def main(argv: list[str]) -> None:
    """The DVC entry point: the experiment and sweep named on the command line."""
    model, dataset, sweep = stage_args(argv, "merge_shards", "MODEL DATASET SWEEP", 3)
    run(ExperimentPaths(model, dataset), sweep)


if __name__ == "__main__":
    run_stage(main)
