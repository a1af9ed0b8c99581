"""Join the shards of a sweep into the table the unsharded sweep gives.

An unsharded sweep's table is site-major in layer order (every site of its first layer,
then the next layer's, …; prompts inner), and a shard's table is the same for its own
layers. Concatenated and stably sorted by layer, the shards' rows therefore come out in
the unsharded order, whatever layers each shard took.

The merge refuses rather than writes a partial or doubled table: every shard must be
there, made from the same inputs (model, tokens, sweep settings, metric), no layer may be
in two shards, and together they must patch every layer of the sweep, as recorded by the
shard stages from the model itself.

Tables only: pandas, no model code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from patchsweep.errors import DataError


@dataclass(frozen=True)
class ShardPart:
    """One finished shard: its stage's record and its rows."""

    record: dict[str, Any]  # sweep, shard, layers, sweep_layers, inputs (patch_shard's)
    table: pd.DataFrame
    stage: str  # its DVC stage, named in the fixes


def merge_shards(sweep: str, parts: Sequence[ShardPart]) -> pd.DataFrame:
    """The sweep's per-prompt table from its shards, in shard order.

    Raises:
        DataError: a shard is another sweep's or was run from other inputs, two shards
            patched the same layer, a layer of the sweep is in no shard, or a table holds
            rows its record does not account for.
    """
    if not parts:
        raise DataError(f"sweep {sweep} has no shards to merge", "list its shards in params.yaml")
    first = parts[0]
    owner: dict[int, int] = {}
    for k, part in enumerate(parts):
        record = part.record
        if record.get("sweep") != sweep or record.get("shard") != k:
            raise DataError(
                f"the record of shard {k} of sweep {sweep} says it is shard "
                f"{record.get('shard')!r} of sweep {record.get('sweep')!r}",
                f"rerun the shard: `dvc repro {part.stage}`",
            )
        for key in ("inputs", "sweep_layers"):
            if record.get(key) != first.record.get(key):
                raise DataError(
                    f"shard {k} of sweep {sweep} was run with other {key} than shard 0 "
                    f"({record.get(key)} against {first.record.get(key)})",
                    f"rerun both from the current inputs: `dvc repro {part.stage}` and "
                    f"`dvc repro {first.stage}` (or `dvc repro`)",
                )
        layers = [int(v) for v in record.get("layers", [])]
        for layer in layers:
            if layer in owner:
                raise DataError(
                    f"shards {owner[layer]} and {k} of sweep {sweep} both patched layer {layer}",
                    "give each layer to one shard in params.yaml's sharded, then `dvc repro`",
                )
            owner[layer] = k
        _check_rows(sweep, k, part, set(layers))
    wanted = {int(v) for v in first.record.get("sweep_layers", [])}
    missing = sorted(wanted - set(owner))
    if missing:
        raise DataError(
            f"no shard of sweep {sweep} patched layer(s) {missing} of its layers "
            f"{sorted(wanted)}: the merged table would lack them",
            f"add them to a shard in params.yaml's sharded.{sweep}, then `dvc repro`",
        )
    columns = list(first.table.columns)
    for k, part in enumerate(parts):
        if list(part.table.columns) != columns:
            raise DataError(
                f"shard {k} of sweep {sweep} has columns {list(part.table.columns)}, shard 0 "
                f"{columns}",
                f"rerun the shards from the same code: `dvc repro {part.stage}`",
            )
    merged = pd.concat([part.table for part in parts], ignore_index=True)
    return merged.sort_values("layer", kind="stable", ignore_index=True)


def _check_rows(sweep: str, k: int, part: ShardPart, layers: set[int]) -> None:
    """A shard's rows are its sweep's, at its layers only."""
    table = part.table
    names = set(table["sweep"].astype(str)) if len(table) else set()
    stray = sorted(set(table["layer"].astype(int)) - layers) if len(table) else []
    if names - {sweep} or stray:
        what = f"rows of sweep(s) {sorted(names - {sweep})}" if names - {sweep} else ""
        what += (" and " if what and stray else "") + (f"rows at layer(s) {stray}" if stray else "")
        raise DataError(
            f"the table of shard {k} of sweep {sweep} holds {what}, which its record "
            f"(layers {sorted(layers)}) does not account for",
            f"rerun the shard: `dvc repro {part.stage}`",
        )
