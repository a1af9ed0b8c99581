"""Merging a sweep's shards gives the unsharded table, or refuses with a fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from patchsweep.columns import TABLE_COLUMNS
from patchsweep.errors import DataError
from patchsweep.io import FULL_PRECISION, read_csv, write_csv
from patchsweep.shard_merge import ShardPart, merge_shards

LAYERS = [0, 1, 2, 3]
INPUTS = {"model": {"model": "m"}, "tokens": "t", "sweep": {"component": "z"}, "metric": "m"}


def sweep_table(layers: list[int], prompts: int = 3) -> pd.DataFrame:
    """An exact sweep's per-prompt table as the engine orders it: layer, then position
    label, then head; prompts inner."""
    rows = [
        (layer, head, position, label, prompt)
        for layer in layers
        for position, label in enumerate(["S2", "IO", "END"])
        for head in (0, 1)
        for prompt in range(prompts)
    ]
    layer, head, position, label, prompt = map(list, zip(*rows, strict=True))
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "sweep": "head_pos",
            "component": "z",
            "direction": "denoise",
            "layer": layer,
            "head": head,
            "position": position,
            "position_label": label,
            "window": 1,
            "method": "exact",
            "prompt": prompt,
            "metric": rng.normal(size=len(rows)).astype(np.float32).astype(float),
        },
        columns=TABLE_COLUMNS,
    )


def parts_of(table: pd.DataFrame, shards: list[list[int]]) -> list[ShardPart]:
    """The shards the patch_shard stages would write for these layers."""
    parts = []
    for k, layers in enumerate(shards):
        record = {"sweep": "head_pos", "shard": k, "layers": layers, "sweep_layers": LAYERS,
                  "inputs": INPUTS}  # fmt: skip
        rows = table[table["layer"].isin(layers)].reset_index(drop=True)
        parts.append(ShardPart(record, rows, f"patch_shard@m-d-head_pos-{k}"))
    return parts


@pytest.mark.parametrize("shards", [[[0, 1], [2, 3]], [[0], [1, 2, 3]], [[1, 3], [0, 2]], [LAYERS]])
def test_merged_shards_are_the_unsharded_table_to_the_byte(tmp_path, shards):
    """Whatever layers each shard took (contiguous or interleaved), the merged rows come
    out in the unsharded order, and the CSV as the patch stage writes it is the same file."""
    whole = sweep_table(LAYERS)
    for k, part in enumerate(parts_of(whole, shards)):  # through the files, as the stages do
        write_csv(tmp_path / f"{k}.csv", part.table, digits=FULL_PRECISION)
    read = [
        ShardPart(part.record, read_csv(tmp_path / f"{k}.csv"), part.stage)
        for k, part in enumerate(parts_of(whole, shards))
    ]
    merged = merge_shards("head_pos", read)
    pd.testing.assert_frame_equal(merged, whole)
    write_csv(tmp_path / "merged.csv", merged, digits=FULL_PRECISION)
    write_csv(tmp_path / "whole.csv", whole, digits=FULL_PRECISION)
    assert (tmp_path / "merged.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()


@pytest.mark.parametrize(
    ("shards", "changes", "problem", "fix"),
    [
        ([[0], [2, 3]], {}, "no shard of sweep head_pos patched layer(s) [1]", "add them"),
        ([[0, 1], [1, 2, 3]], {}, "shards 0 and 1 of sweep head_pos both patched layer 1",
         "give each layer to one shard"),
        ([[0, 1], [2, 3]], {1: {"inputs": {**INPUTS, "tokens": "other"}}}, "shard 1 of sweep "
         "head_pos was run with other inputs than shard 0", "dvc repro patch_shard@m-d-head_pos-1"),
        ([[0, 1], [2, 3]], {1: {"sweep_layers": [0, 1, 2]}}, "other sweep_layers", "rerun both"),
        ([[0, 1], [2, 3]], {1: {"shard": 0}}, "says it is shard 0 of sweep 'head_pos'",
         "rerun the shard"),
        ([[0, 1], [2, 3]], {0: {"sweep": "head"}}, "of sweep 'head'", "rerun the shard"),
    ],
)  # fmt: skip
def test_a_partial_doubled_or_stale_set_of_shards_is_refused(shards, changes, problem, fix):
    parts = [
        ShardPart({**p.record, **changes.get(k, {})}, p.table, p.stage)
        for k, p in enumerate(parts_of(sweep_table(LAYERS), shards))
    ]
    with pytest.raises(DataError) as err:
        merge_shards("head_pos", parts)
    assert problem in err.value.problem
    assert fix in err.value.fix


def test_rows_a_shard_does_not_account_for_are_refused():
    whole = sweep_table(LAYERS)
    parts = parts_of(whole, [[0, 1], [2, 3]])
    stray = ShardPart(parts[1].record, whole[whole["layer"] >= 1], parts[1].stage)
    with pytest.raises(DataError) as err:
        merge_shards("head_pos", [parts[0], stray])
    assert "holds rows at layer(s) [1], which its record (layers [2, 3])" in err.value.problem
    renamed = ShardPart(parts[1].record, parts[1].table.assign(sweep="head"), parts[1].stage)
    with pytest.raises(DataError) as err:
        merge_shards("head_pos", [parts[0], renamed])
    assert "holds rows of sweep(s) ['head']" in err.value.problem
