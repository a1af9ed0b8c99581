"""A sweep run in shards by two DVC processes at once, as on two GPUs, gives the table of
the same sweep run whole: in a scratch git + DVC repo around the bundled organism.

The rows, their order and every site column are identical. The raw metric agrees to
float32 rounding, not always to the bit: the engine batches a shard's rows without the
other shard's, and which rows share a pass (and the layer a pass starts from) moves the
last bits, exactly as ``engine.memory_budget_mb`` does
(tests/integration/test_patching.py allows 1e-5 there)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from project import BIN, make_organism_repo, sh, write_params

pytestmark = pytest.mark.slow

SWEEP = "resid_layer_pos"
LAYOUT = {SWEEP: [{"layers": [0]}, {"layers": [1, 2, 3]}]}
SHARDS = [f"patch_shard@organism-few-{SWEEP}-{k}" for k in (0, 1)]
ULPS = 2.0**-20  # 8 float32 ulps (2**-23 each) of the metric's largest magnitude


def repro(root: Path, *args: str) -> set[str]:
    """`dvc repro ARGS`; the stages it ran, besides compose (which always runs)."""
    out = sh(root, "dvc", "repro", *args)
    return set(re.findall(r"Running stage '([^']+)'", out)) - {"compose@organism-few"}


def tables(root: Path) -> dict[str, pd.DataFrame]:
    cache, results = root / "data/cache/organism/few", root / "results/organism/few"
    return {
        "patch": pd.read_csv(cache / "patch" / f"{SWEEP}.csv"),
        "per_prompt": pd.read_csv(results / "per_prompt.csv"),
        "results": pd.read_csv(results / "results.csv"),
    }


def run_at_once(root: Path, stages: list[str]) -> list[tuple[float, float]]:
    """Each stage by its own `dvc repro -s` process, all started together (two workers);
    the (start, end) of each stage's own run, from its record under logs/stages/."""
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "HF_HUB_OFFLINE": "1"}
    workers = [
        subprocess.Popen(
            ["dvc", "--wait-for-lock", "repro", "-s", stage],
            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for stage in stages
    ]  # fmt: skip
    for stage, worker in zip(stages, workers, strict=True):
        out, _ = worker.communicate(timeout=600)
        assert worker.returncode == 0, f"dvc repro -s {stage} failed:\n{out}"
        assert f"Running stage '{stage}'" in out, out
    spans = []
    for k in range(len(stages)):
        record = json.loads(
            (root / "logs/stages" / f"patch_shard+organism+few+{SWEEP}+{k}.json").read_text()
        )
        spans.append((record["finished"] - record["seconds"], record["finished"]))
    return spans


def test_two_workers_give_the_unsharded_tables(tmp_path):
    root = make_organism_repo(tmp_path / "repo", [], LAYOUT)
    repro(root, "capture@organism-few")  # the shards' inputs, once

    spans = run_at_once(root, SHARDS)
    assert max(start for start, _ in spans) < min(end for _, end in spans), spans  # overlap
    locked = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert set(SHARDS) <= set(locked)  # each worker's entry kept
    ran = repro(root, "normalize@organism-few")
    assert ran == {f"merge_shards@organism-few-{SWEEP}", "normalize@organism-few"}
    sharded = tables(root)

    # one shard's entry (here its device) reruns that shard and the merge only
    layout = {SWEEP: [LAYOUT[SWEEP][0], {**LAYOUT[SWEEP][1], "device": "cpu"}]}
    write_params(root, ["organism"], ["few"], [], layout)
    ran = repro(root, "normalize@organism-few")
    assert {SHARDS[1], f"merge_shards@organism-few-{SWEEP}"} <= ran and SHARDS[0] not in ran

    write_params(root, ["organism"], ["few"], [SWEEP])  # the same sweep, whole
    ran = repro(root, "normalize@organism-few")
    assert ran == {f"patch@organism-few-{SWEEP}", "normalize@organism-few"}
    whole = tables(root)

    for name, table in sharded.items():
        other = whole[name]
        assert list(table.columns) == list(other.columns) and len(table) == len(other), name
        numbers = [c for c in ("metric", "normalized", "sem", "ci_low", "ci_high") if c in table]
        pd.testing.assert_frame_equal(table.drop(columns=numbers), other.drop(columns=numbers))
        scale = float(np.abs(other["metric"]).max())
        for column in numbers:
            size = scale if column == "metric" else 1.0  # normalised values are fractions
            np.testing.assert_allclose(table[column], other[column], rtol=0, atol=ULPS * size)


def queue_states(root: Path) -> list[str]:
    """The Status column of `dvc queue status`, one entry per experiment."""
    out = sh(root, "dvc", "queue", "status", stdout_only=True)
    rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
    return [row[-1] for row in rows if not row[0].startswith("Worker")]


def test_queued_shards_run_by_two_workers_come_back_from_the_run_cache(tmp_path):
    """Each shard a queued experiment, two queue workers; the workspace's `dvc repro`
    then restores both shards from DVC's run cache and only merges and normalizes."""
    root = make_organism_repo(tmp_path / "repo", [], LAYOUT)
    try:
        repro(root, "capture@organism-few")
        for stage in SHARDS:
            sh(root, "dvc", "exp", "run", "--queue", stage)
        sh(root, "dvc", "queue", "start", "-j", "2")
        deadline = time.monotonic() + 600
        while set(states := queue_states(root)) & {"Queued", "Running"}:
            assert time.monotonic() < deadline, states
            time.sleep(2)
        assert states == ["Success", "Success"], states
        out = sh(root, "dvc", "repro", "normalize@organism-few")
    finally:
        subprocess.run([f"{BIN}/dvc", "queue", "stop"], cwd=root, capture_output=True)
    for stage in SHARDS:
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in out, out
    assert f"Running stage 'merge_shards@organism-few-{SWEEP}'" in out
    merged = pd.read_csv(root / "data/cache/organism/few/patch" / f"{SWEEP}.csv")
    assert sorted(set(merged["layer"])) == [0, 1, 2, 3]
