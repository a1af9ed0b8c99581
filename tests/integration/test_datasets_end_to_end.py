"""Every bundled dataset, end to end on the model organism (a few pairs, two sweeps):
it tokenizes, patches, normalises and plots, and the organism shows the behaviour —
the clean metric beats the corrupted one."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import yaml
from project import REPO

from patchsweep.paths import ExperimentPaths
from patchsweep.stages import capture, compose, normalize, patch, plot, tokenize

ORGANISM = REPO / "data" / "models" / "ioi-gpt2"
DATASETS = sorted(p.stem for p in (REPO / "conf" / "dataset").glob("*.yaml"))
SWEEPS = ["resid_layer_pos", "head"]


@pytest.fixture
def organism_project(tmp_path, monkeypatch):
    if not ORGANISM.is_dir():
        pytest.skip(f"no model organism at {ORGANISM} (run `dvc repro train_organism`)")
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    shutil.copytree(REPO / "data" / "prompts", tmp_path / "data" / "prompts")  # ioi_file's
    model = yaml.safe_load((REPO / "conf" / "model" / "organism.yaml").read_text())
    model["path"] = str(ORGANISM)
    (tmp_path / "conf" / "model" / "organism.yaml").write_text(yaml.safe_dump(model))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"sweep": SWEEPS}))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("dataset", DATASETS)
def test_dataset_runs_end_to_end_and_shows_the_behaviour(organism_project, dataset):
    exp = ExperimentPaths("organism", dataset)
    compose.run(exp, ["dataset.n_pairs=4", "plot.formats=[png]", "plot.dpi=60"])
    tokenize.run(exp)
    capture.run(exp)
    for sweep in SWEEPS:
        patch.run(exp, sweep)
    normalize.run(exp)
    plot.run(exp)
    baselines = json.loads(exp.baselines.read_text())
    assert baselines["clean"] > baselines["corrupted"], baselines
    table = pd.read_csv(exp.table)
    assert set(table["sweep"]) == set(SWEEPS)
    assert table["normalized"].notna().all()
    assert {f"{s}.png" for s in SWEEPS} <= {p.name for p in exp.figures.iterdir()}
    assert (exp.results / "report.html").is_file()
    # the engine reproduces both runs (for factual: with the embedding noise)
    validity = baselines["validity"]
    for check in ("resid_layer0_denoise", "resid_layer0_noise", "empty_patch_clean"):
        assert validity[check]["max_deviation"] <= validity[check]["tolerance"], validity
    assert validity["empty_patch_corrupted"]["passed"] is True, validity
    assert "Validity checks" in (exp.results / "report.md").read_text()
