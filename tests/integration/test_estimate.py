"""The cost estimate plans exactly the passes the engine runs, and the command prints a
line for every model stage of the pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from patchsweep.components import architecture_for, dimensions_of
from patchsweep.config import Config, DatasetConfig, EngineConfig, ModelConfig, SweepConfig
from patchsweep.engine import run_sweep
from patchsweep.engine.accounting import recording_passes
from patchsweep.estimate import forward_equivalents, plan_sweep
from patchsweep.stages.compose import listed_sweeps

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "data" / "models" / "ioi-gpt2"

SWEEPS = {
    "resid_labels": SweepConfig(component="resid_pre", positions="labels"),  # some skipped
    "resid_noise": SweepConfig(component="resid_pre", direction="noise", positions="labels"),
    "heads": SweepConfig(component="z", positions="all"),
    "heads_labels": SweepConfig(component="z", positions="labels"),
    "mlp_window": SweepConfig(component="mlp_out", positions="labels", window=2),
    "pattern": SweepConfig(component="pattern", positions="labels", layers=[1]),  # padded
    "atp_heads": SweepConfig(component="z", positions="labels", method="attribution"),
    "atp_drop": SweepConfig(
        component="mlp_out", positions="labels", method="attribution", grad_drop=True
    ),
}


@pytest.fixture(scope="module")
def setup():
    import patchsweep as ps

    model = ps.load_model(MODEL, name="organism")
    # several templates and lengths: labels sweeps, two length groups
    prompts = ps.load_prompts("ioi", model, n_pairs=12, seed=3, corruption="swap")
    runs = ps.capture_runs(model, prompts, ["z", "mlp_out", "pattern"], progress=False)
    engine = EngineConfig(memory_budget_mb=2, max_batch=16, progress=False)  # many passes
    cfg = Config(
        model=ModelConfig(name="organism", path=str(MODEL)),
        dataset=DatasetConfig(name="ioi"),
        sweeps=SWEEPS,
        engine=engine,
    )
    return model, prompts, runs, cfg


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_planned_passes_are_the_passes_the_engine_runs(setup, name):
    model, prompts, runs, cfg = setup
    config = model.hf.config
    _, planned = plan_sweep(
        name, cfg, prompts.tokens, dimensions_of(config), architecture_for(config), config
    )
    with recording_passes() as ran:
        run_sweep(model, prompts.tokens, name, SWEEPS[name], runs, "logit_diff", cfg.engine)
    assert len(ran) > 1
    key = lambda s: (s.layout, s.rows, s.tokens, s.layers)  # noqa: E731
    assert Counter(map(key, planned)) == Counter(map(key, ran))
    dims = model.dims
    assert forward_equivalents(planned, dims, prompts.tokens) == pytest.approx(
        forward_equivalents(ran, dims, prompts.tokens)
    )


def test_estimate_command_covers_every_model_stage(tmp_path):
    out = tmp_path / "estimate.json"
    result = subprocess.run(
        [sys.executable, "-m", "patchsweep.command", "estimate", "-e", "organism/ioi",
         "-e", "organism/induction", "--json", str(out)],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    for experiment in report["experiments"]:
        stages = [s["stage"] for s in experiment["stages"]]
        assert stages[0] == "capture"
        listed = listed_sweeps(REPO / "params.yaml", experiment["dataset"])
        assert stages[1:] == [
            f"{'attribute' if name.startswith('atp_') else 'patch'} {name}" for name in listed
        ]
        assert all(s["seconds"] > 0 and s["passes"] > 0 for s in experiment["stages"])
    assert "organism/induction: 64 prompts" in result.stdout


def test_estimate_refuses_a_bad_experiment_name():
    result = subprocess.run(
        [sys.executable, "-m", "patchsweep.command", "estimate", "-e", "organism"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 2 and "MODEL/DATASET" in result.stderr


@pytest.mark.parametrize("storage", [None, "float16", "bfloat16"])
def test_disk_estimate_is_the_bytes_capture_stores(setup, tmp_path, storage):
    """capture.storage_dtype halves the activations' bytes, not the float32 logits'."""
    from dataclasses import replace

    from patchsweep.capture import capture_pairs, plan_capture
    from patchsweep.config import CaptureConfig
    from patchsweep.estimate import Calibration, _capture_cost
    from patchsweep.io import read_tensors
    from patchsweep.models import torch_dtype

    model, prompts, _, cfg = setup
    cfg = replace(cfg, capture=CaptureConfig(storage_dtype=storage))
    pairs, components = prompts.tokens, cfg.capture.components
    cost = _capture_cost(cfg, pairs, model.dims, Calibration(0.0, 0.0, 10, 0.0))
    width = pairs.clean_ids.shape[1]
    plan = plan_capture(model.dims, components, width, model.dtype, 512, 64)
    files = {run: tmp_path / f"{run}.safetensors" for run in ("clean", "corrupted")}
    stored = torch_dtype(storage) if storage else None
    logits = tmp_path / "logits.safetensors"
    capture_pairs(model, pairs, plan, files, logits, {}, progress=False, storage=stored)
    tensors = [*read_tensors(files["clean"]).values(), *read_tensors(files["corrupted"]).values()]
    tensors += read_tensors(logits).values()
    assert cost.disk_mb * 2**20 == sum(t.nbytes for t in tensors)
