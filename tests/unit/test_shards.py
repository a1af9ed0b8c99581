"""The shard layout of params.yaml: what it accepts, and what it refuses with a fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from patchsweep.config import SweepConfig
from patchsweep.errors import ConfigError
from patchsweep.paths import ExperimentPaths
from patchsweep.shards import (
    Shard,
    check_cover,
    check_sharded,
    parse_layout,
    read_layout,
    shard_of,
    shard_table,
    stage_name,
)

TWO = [0, 1]


def test_a_layout_gives_each_sweep_its_shards_in_order():
    layout = parse_layout(
        {"head_pos": [{"layers": [2, 0], "device": "cuda:0"}, {"layers": [1, 3]}]}, TWO
    )
    assert layout == {
        "head_pos": [Shard("head_pos", 0, (0, 2), "cuda:0"), Shard("head_pos", 1, (1, 3))]
    }


@pytest.mark.parametrize("empty", [None, {}])
def test_no_sharded_sweeps(empty, tmp_path):
    assert parse_layout(empty, None) == {}
    assert read_layout(tmp_path / "params.yaml") == {}  # no file: nothing is sharded


@pytest.mark.parametrize(
    ("sharded", "numbers", "problem", "fix"),
    [
        (["head_pos"], TWO, "not a mapping", "e.g. sharded: {head_pos:"),
        ({"s": [{"layers": [0]}]}, [1], "shard is [1]", "list the shard numbers from 0"),
        ({"s": [{"layers": [0]}]}, [], "shard is []", "list the shard numbers from 0"),
        ({"s": [{"layers": [0]}]}, ["0"], "shard is ['0']", "list the shard numbers from 0"),
        ({"s": [{"layers": [0]}]}, TWO, "has 1 shards, but shard lists 2", "one entry per"),
        ({"s": {"layers": [0]}}, TWO, "sharded.s has {'layers': [0]}", "one entry per"),
        ({"s": [{"layers": [0]}, [1]]}, TWO, "sharded.s[1] is [1]", "give each shard `layers:`"),
        ({"s": [{"layers": [0]}, {"layer": [1]}]}, TWO, "is {'layer': [1]}", "`layers:`"),
        ({"s": [{"layers": [0]}, {"layers": []}]}, TWO, "s[1].layers is []", "each once"),
        ({"s": [{"layers": [0]}, {"layers": [-1]}]}, TWO, "layers is [-1]", "numbers from 0"),
        ({"s": [{"layers": [0]}, {"layers": [1, 1]}]}, TWO, "layers is [1, 1]", "each once"),
        ({"s": [{"layers": [0]}, {"layers": [True]}]}, TWO, "layers is [True]", "each once"),
        ({"s": [{"layers": [0]}, {"layers": "1-3"}]}, TWO, "layers is '1-3'", "each once"),
        ({"s": [{"layers": [0]}, {"layers": [1], "device": ""}]}, TWO, "device is ''", "cuda:1"),
        ({"s": [{"layers": [0, 1]}, {"layers": [1, 2]}]}, TWO, "layer 1 of sweep s is in "
         "shard 0 and in shard 1", "give each layer to one shard"),
        ({"../x": [{"layers": [0]}, {"layers": [1]}]}, TWO, "not a plain name", "letters"),
    ],
)  # fmt: skip
def test_a_malformed_layout_is_refused_with_its_fix(sharded, numbers, problem, fix):
    with pytest.raises(ConfigError) as err:
        parse_layout(sharded, numbers)
    assert problem in err.value.problem
    assert fix in err.value.fix


SWEEPS = {
    "head_pos": SweepConfig(component="z", positions="auto"),
    "late": SweepConfig(component="mlp_out", layers=[2, 3]),
    "atp": SweepConfig(component="z", method="attribution"),
}


def write_params(root: Path, sharded: dict, sweep: list[str], numbers: list[int] = TWO) -> Path:
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump({"sweep": sweep, "sharded": sharded, "shard": numbers}))
    return path


def halves(a: list[int], b: list[int]) -> list[dict]:
    return [{"layers": a}, {"layers": b}]


def test_a_sharded_sweep_that_fits_its_experiment_passes(tmp_path):
    params = write_params(
        tmp_path, {"head_pos": halves([0], [1, 2, 3]), "late": halves([2], [3])}, []
    )
    check_sharded(params, SWEEPS)
    assert list(read_layout(params)) == ["head_pos", "late"]


@pytest.mark.parametrize(
    ("name", "shards", "sweep", "problem", "fix"),
    [
        ("nope", halves([0], [1]), [], "which conf/sweep does not define", "define it"),
        ("head_pos", halves([0], [1]), ["head_pos"], "listed both under sweep and under "
         "sharded", "list it once"),
        ("atp", halves([0], [1]), [], "its method is 'attribution'", "shard exact sweeps only"),
        ("late", halves([2], [4]), [], "patch layer(s) [4], which are not in "
         "sweeps.late.layers", "only layers of the sweep"),
        ("late", halves([2], [1]), [], "patch layer(s) [1]", "only layers of the sweep"),
        ("late", [{"layers": [2]}], [], "has 1 shards", "one entry per number"),
    ],
)  # fmt: skip
def test_a_layout_the_experiment_cannot_run_is_refused(tmp_path, name, shards, sweep, problem, fix):
    params = write_params(tmp_path, {name: shards}, sweep)
    with pytest.raises(ConfigError) as err:
        check_sharded(params, SWEEPS)
    assert problem in err.value.problem
    assert fix in err.value.fix


def test_shards_that_leave_a_layer_out_are_refused():
    shards = parse_layout({"s": halves([0], [2])}, TWO)["s"]
    with pytest.raises(ConfigError) as err:
        check_cover("s", shards, [0, 1, 2, 3], "the model's layers")
    assert "no shard of sweep s patches layer(s) [1, 3] of the model's layers" in err.value.problem
    assert "add them to a shard in params.yaml's sharded.s" in err.value.fix


def test_a_shard_number_beyond_the_layout_is_refused():
    layout = parse_layout({"s": halves([0], [1])}, TWO)
    assert shard_of(layout, "s", 1).layers == (1,)
    for name, index, problem in [("s", 2, "has 2 shards"), ("t", 0, "has no shards")]:
        with pytest.raises(ConfigError) as err:
            shard_of(layout, name, index)
        assert problem in err.value.problem


def test_shard_files_and_stage_names():
    exp = ExperimentPaths("organism", "ioi")
    assert shard_table(exp, "head_pos", 1) == Path(
        "data/cache/organism/ioi/patch/shards/head_pos/1.csv"
    )
    assert stage_name(exp, "head_pos", 1) == "patch_shard@organism-ioi-head_pos-1"
    with pytest.raises(ConfigError):
        shard_table(exp, "../escaped", 0)
