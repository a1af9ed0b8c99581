"""The DVC pipeline end to end in a scratch git repo: `dvc repro` reruns exactly the
stages an edit affects — a plot key only plot, one sweep's layers only that sweep's patch
and its readers, one dataset's prompt only that dataset's chain, nothing when nothing
changed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from project import make_dvc_repo, sh


def repro(cwd: Path) -> set[str]:
    """Run `dvc repro`; return the names of the stages it ran."""
    out = sh(cwd, "dvc", "repro")
    return set(re.findall(r"Running stage '([^']+)'", out))


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


def test_plot_setting_reruns_only_plot(pipeline):
    edit(pipeline / "conf" / "plot" / "default.yaml", "dpi: 200", "dpi: 120")
    assert repro(pipeline) == {
        "compose@tiny-tiny",
        "compose@tiny-other",
        "plot@tiny-tiny",
        "plot@tiny-other",
    }


def test_layer_range_reruns_only_that_sweep_and_its_readers(pipeline):
    edit(
        pipeline / "conf" / "sweep" / "default.yaml",
        "head: {component: z, direction: denoise, positions: all}",
        "head: {component: z, direction: denoise, positions: all, layers: [1]}",
    )
    ran = repro(pipeline)
    expected = {
        f"{stage}@tiny-{d}" for stage in ("compose", "normalize", "plot") for d in ("tiny", "other")
    }
    expected |= {"patch@tiny-tiny-head", "patch@tiny-other-head"}
    assert ran == expected


def test_prompt_edit_reruns_only_that_datasets_chain(pipeline):
    edit(pipeline / "conf" / "dataset" / "other.yaml", "park", "store")
    ran = repro(pipeline)
    assert ran == {
        "compose@tiny-tiny",
        "compose@tiny-other",
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
