"""The shard stages in-process on the tiny model: compose keeps a sharded sweep, the
shards and their merge give the patch stage's table, and what would be a partial table
stops a stage with a fix and nothing written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from project import EXP, run_and_fail, run_through_patch, write_params

from patchsweep.shards import shard_record, shard_table
from patchsweep.stages import compose, merge_shards, patch, patch_shard

HALVES = [{"layers": [0]}, {"layers": [1]}]  # the tiny model has 2 layers


def shard(project, sharded: dict, sweeps: list[str] | None = None) -> None:
    write_params(project, ["tiny"], ["tiny"], sweeps or [], sharded)


def test_compose_keeps_sharded_sweeps_and_refuses_one_listed_twice(project, capsys):
    shard(project, {"head": HALVES}, ["resid_layer"])
    compose.run(EXP)
    assert list(yaml.safe_load(EXP.config.read_text())["sweeps"]) == ["resid_layer", "head"]
    shard(project, {"head": HALVES}, ["head"])
    err = run_and_fail(compose.run, capsys, EXP)
    assert "sweep head is listed both under sweep and under sharded" in err
    assert "fix: list it once" in err


@pytest.mark.parametrize("sweep", ["head", "resid_layer_pos"])
def test_merged_shards_give_the_patch_stages_table(project, sweep):
    shard(project, {sweep: HALVES})
    run_through_patch(sweeps=())
    for k in (0, 1):
        patch_shard.run(EXP, sweep, k)
    merge_shards.run(EXP, sweep)
    merged = pd.read_csv(EXP.patch(sweep))
    record = yaml.safe_load(shard_record(EXP, sweep, 1).read_text())
    assert (record["layers"], record["sweep_layers"]) == ([1], [0, 1])
    patch.run(EXP, sweep)  # the same sweep, whole (compose kept its config)
    whole = pd.read_csv(EXP.patch(sweep))
    pd.testing.assert_frame_equal(merged.drop(columns="metric"), whole.drop(columns="metric"))
    # float32 rounding: see tests/pipeline/test_shards_in_dvc.py
    scale = float(np.abs(whole["metric"]).max())
    np.testing.assert_allclose(merged["metric"], whole["metric"], rtol=0, atol=2**-20 * scale)


def test_a_missing_shard_stops_the_merge_before_it_writes(project, capsys):
    shard(project, {"head": HALVES})
    run_through_patch(sweeps=())
    patch_shard.run(EXP, "head", 0)
    err = run_and_fail(merge_shards.run, capsys, EXP, "head")
    assert "1 of the 2 shards of sweep head have not run" in err
    assert "patch_shard@tiny-tiny-head-1" in err
    assert not EXP.patch("head").exists()


def test_shards_that_leave_a_model_layer_out_stop_before_any_pass(project, capsys):
    """compose cannot tell (the sweep names no layers, and it loads no model); the first
    shard stage to run checks the whole layout against the model."""
    params = project / "params.yaml"
    shard(project, {"head": HALVES})
    run_through_patch(sweeps=())
    layout = yaml.safe_load(params.read_text())
    params.write_text(yaml.safe_dump({**layout, "sharded": {"head": [{"layers": [0]}]},
                                      "shard": [0]}))  # fmt: skip
    err = run_and_fail(patch_shard.run, capsys, EXP, "head", 0)
    assert "no shard of sweep head patches layer(s) [1] of the model's layers" in err
    assert not shard_table(EXP, "head", 0).exists()
