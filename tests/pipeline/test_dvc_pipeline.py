"""The DVC pipeline end to end in a scratch git repo: `dvc repro` reruns exactly the
stages an edit affects — a plot key only plot, a stats key normalize and plot, one sweep's
layers only that sweep's patch and its readers, one dataset's prompt only that dataset's
chain, nothing when nothing changed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from project import REPO, make_dvc_repo, sh


def repro(cwd: Path) -> set[str]:
    """Run `dvc repro`; return the names of the stages it ran, besides compose.

    compose runs on every repro (it hashes the inputs outside conf/); an unchanged
    config.yaml then stops everything downstream of it.
    """
    out = sh(cwd, "dvc", "repro")
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert {"compose@tiny-tiny", "compose@tiny-other"} <= ran, out
    return {name for name in ran if not name.startswith("compose@")}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_gpt2_dir) -> Path:
    root = make_dvc_repo(
        tmp_path_factory.mktemp("pipeline"), tiny_gpt2_dir, ["resid_layer_pos", "head"]
    )
    ran = repro(root)
    assert {"capture@tiny-tiny", "patch@tiny-tiny-head", "plot@tiny-other"} <= ran
    return root


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def test_first_run_writes_results(pipeline):
    for dataset in ("tiny", "other"):
        results = pipeline / "results" / "tiny" / dataset
        assert (results / "results.csv").is_file()
        assert (results / "baselines.json").is_file()
        assert (results / "figures" / "head.png").is_file()


def test_nothing_changed_runs_nothing(pipeline):
    assert repro(pipeline) == set()


def test_make_repro_ends_with_the_summary(pipeline):
    """`make repro`: dvc repro, then the summary; only the compose stages ran."""
    make = ("make", "-s", "-f", str(REPO / "Makefile"), "repro", "STAMP=", "PLOTS_TEMPLATE=")
    lines = sh(pipeline, *make, stdout_only=True).splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.startswith("dvc repro: ")]
    summary = lines[start:]
    assert re.fullmatch(r"dvc repro: 2 stages ran, 0 failed, \d+ up to date", summary[0]), lines
    assert summary[1].endswith("; dvc repro exited 0")
    for dataset in ("tiny", "other"):
        (row,) = [line.split() for line in summary if line.startswith(f"tiny/{dataset} ")]
        assert row[1].startswith("1/") and row[5] == "2" and row[7] == "ok", summary
    assert summary[-1].startswith("tiny/") and "needs attention:" not in summary


def test_plot_setting_reruns_only_plot(pipeline):
    edit(pipeline / "conf" / "plot" / "default.yaml", "dpi: 200", "dpi: 120")
    assert repro(pipeline) == {"plot@tiny-tiny", "plot@tiny-other"}


def test_stats_setting_reruns_normalize_and_plot(pipeline):
    stats = pipeline / "conf" / "stats" / "default.yaml"
    edit(stats, "\nnormalization: per_prompt\n", "\nnormalization: dataset\n")
    ran = repro(pipeline)
    assert ran == {f"{s}@tiny-{d}" for s in ("normalize", "plot") for d in ("tiny", "other")}
    edit(stats, "\nnormalization: dataset\n", "\nnormalization: per_prompt\n")
    sh(pipeline, "dvc", "repro")  # back to the default, for the tests after this one


def test_layer_range_reruns_only_that_sweep_and_its_readers(pipeline):
    edit(
        pipeline / "conf" / "sweep" / "default.yaml",
        "head: {component: z, direction: denoise, positions: all}",
        "head: {component: z, direction: denoise, positions: all, layers: [1]}",
    )
    ran = repro(pipeline)
    expected = {f"{stage}@tiny-{d}" for stage in ("normalize", "plot") for d in ("tiny", "other")}
    expected |= {"patch@tiny-tiny-head", "patch@tiny-other-head"}
    assert ran == expected


def test_prompt_edit_reruns_only_that_datasets_chain(pipeline):
    edit(pipeline / "conf" / "dataset" / "other.yaml", "park", "store")
    ran = repro(pipeline)
    assert ran == {
        "tokenize@tiny-other",
        "capture@tiny-other",
        "patch@tiny-other-resid_layer_pos",
        "patch@tiny-other-head",
        "normalize@tiny-other",
        "plot@tiny-other",
    }


def test_setting_a_value_back_restores_from_the_run_cache(pipeline):
    edit(pipeline / "conf" / "dataset" / "other.yaml", "store", "park")
    out = sh(pipeline, "dvc", "repro")
    assert "Stage 'capture@tiny-other' is cached - skipping run, checking out outputs" in out


def outputs_of(root: Path, dataset: str) -> dict[str, bytes]:
    folder = root / "results" / "tiny" / dataset
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_workspace_experiment_on_a_subset_is_refused_and_changes_nothing(pipeline):
    """DVC would remove the left-out experiments' outputs while it prepares a workspace
    `dvc exp run -S dataset=…`; the Hydra plugin refuses it before DVC changes a file."""
    import os
    import subprocess

    from project import BIN

    sh(pipeline, "git", "add", "-A")
    sh(pipeline, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "results")
    before = outputs_of(pipeline, "other")
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        ["dvc", "exp", "run", "-S", "dataset=tiny"],
        cwd=pipeline, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode != 0
    assert "leaves out tiny/other" in done.stderr and "--queue" in done.stderr
    assert "nothing was changed" in done.stderr
    assert outputs_of(pipeline, "other") == before
    assert sh(pipeline, "git", "status", "--porcelain", stdout_only=True) == ""
    assert repro(pipeline) == set()


@pytest.mark.slow
def test_run_outside_dvc_leaves_dvc_outputs_alone(pipeline):
    import sys

    before = {d: outputs_of(pipeline, d) for d in ("tiny", "other")}
    sh(pipeline, sys.executable, "-m", "patchsweep.run", "model=tiny", "dataset=other",
       "engine.progress=false")  # fmt: skip
    assert (pipeline / "runs" / "results" / "tiny" / "other" / "results.csv").is_file()
    assert {d: outputs_of(pipeline, d) for d in ("tiny", "other")} == before
    assert repro(pipeline) == set()
