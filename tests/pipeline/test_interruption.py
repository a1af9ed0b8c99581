"""`kill -9` of `dvc repro` during capture and during patch, then `dvc repro` again:
the results equal an uninterrupted run's, and the killed sweep resumes from its
checkpoint instead of starting over."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import save_tiny_gpt2
from project import REPO, TINY_PAIRS, make_project, write_dataset

pytestmark = pytest.mark.slow

BIN = str(Path(sys.executable).parent)
ENV = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "HF_HUB_OFFLINE": "1"}
OUTPUTS = ("results/tiny/tiny/results.csv", "results/tiny/tiny/per_prompt.csv",
           "results/tiny/tiny/baselines.json")  # fmt: skip


def scratch_pipeline(root: Path, model_dir: Path) -> Path:
    shutil.copytree(model_dir, root / "data" / "models" / "tiny")
    make_project(root, Path("data/models/tiny"), sweeps=["head"])
    # Many prompts so that capture and the sweep take long enough to be interrupted.
    write_dataset(root, [TINY_PAIRS[i % 2] for i in range(400)])
    (root / "conf" / "capture" / "default.yaml").write_text(
        "components: [resid, z, attn_out, mlp_out]\nmax_rows: 2\n"
    )
    engine = root / "conf" / "engine" / "default.yaml"
    engine.write_text(
        "memory_budget_mb: 1024\nmax_batch: 8\nprogress: true\ncheckpoint_every_s: 0\n"
    )
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    del dvc_yaml["stages"]["train_organism"]
    del dvc_yaml["stages"]["plot"]  # figures are not what is checked here
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    for cmd in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "i"],
    ):
        subprocess.run(cmd, cwd=root, env=ENV, check=True, capture_output=True)
    return root


def repro(root: Path) -> str:
    done = subprocess.run(["dvc", "repro"], cwd=root, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def kill_during(root: Path, stage: str, ready) -> None:
    """Start `dvc repro`, SIGKILL its whole process group once ``ready()`` holds."""
    proc = subprocess.Popen(
        ["dvc", "repro"],
        cwd=root,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    seen = ""
    for line in proc.stdout:
        seen += line
        if f"Running stage '{stage}'" in line:
            break
    while not ready() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, f"{stage} finished before it could be killed:\n{seen}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory) -> Path:
    return save_tiny_gpt2(tmp_path_factory.mktemp("wider"), n_layer=4, n_head=4, n_embd=256)


def test_kill_during_capture_and_patch_then_rerun_equals_uninterrupted(tmp_path, slow_model):
    reference = scratch_pipeline(tmp_path / "reference", slow_model)
    repro(reference)

    killed = scratch_pipeline(tmp_path / "killed", slow_model)
    activations = killed / "data/cache/tiny/tiny/activations"
    kill_during(killed, "capture@tiny-tiny", lambda: activations.exists())
    checkpoint = killed / "data/cache/tiny/tiny/checkpoints/head.safetensors"
    kill_during(killed, "patch@tiny-tiny-head", checkpoint.exists)
    assert checkpoint.exists()
    out = repro(killed)
    assert "resuming from" in out
    assert not checkpoint.exists()
    for name in OUTPUTS:
        assert (killed / name).read_bytes() == (reference / name).read_bytes(), name
