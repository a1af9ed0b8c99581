"""Stages end to end on a tiny model, in-process: what they write."""

from __future__ import annotations

import pandas as pd
import yaml
from project import EXP, TINY_PAIRS, run_and_fail, run_through_patch

import patchsweep.engine.passes as passes
from patchsweep.stages import normalize


def test_pipeline_writes_tidy_results_and_baselines(project):
    run_through_patch()
    normalize.run(EXP)
    table = pd.read_csv(EXP.table)
    assert {
        "component",
        "direction",
        "layer",
        "position",
        "position_label",
        "head",
        "metric",
        "normalized",
        "sem",
        "ci_low",
        "ci_high",
        "normalization",
    } <= set(table.columns)
    assert set(table["normalization"]) == {"per_prompt"}
    assert (table.ci_low <= table.normalized + 1e-9).all()
    assert (table.normalized <= table.ci_high + 1e-9).all()
    assert set(table["sweep"]) == {"resid_layer", "resid_layer_pos", "head"}
    # 2 layers × (14 positions) for resid_layer_pos; labels are the prompt's named slots
    by_pos = table[table.sweep == "resid_layer_pos"]
    assert len(by_pos) == 2 * 14
    assert by_pos[by_pos.position == 3].position_label.iloc[0] == "S1"
    heads = table[table.sweep == "head"]
    assert sorted(heads["head"].unique()) == [0, 1, 2, 3]
    # the whole residual stream restores the clean run: normalised ≡ 1
    whole = table[table.sweep == "resid_layer"]
    assert whole["normalized"].sub(1).abs().max() < 1e-4
    # each prompt restored to its own clean run: paired, no spread left for an interval
    assert whole[["ci_low", "ci_high"]].sub(1).abs().max().max() < 1e-4
    baselines = yaml.safe_load(EXP.baselines.read_text())
    assert baselines["n_prompts"] == 2 and baselines["clean"] != baselines["corrupted"]
    assert baselines["normalization"] == "per_prompt" and baselines["excluded_prompts"] == []
    assert (table["n_prompts"] == 2).all()
    validity = baselines["validity"]
    checks = ["resid_layer0_denoise", "resid_layer0_noise", "empty_patch_corrupted"]
    for name in [*checks, "empty_patch_clean"]:
        assert validity[name]["passed"] is True, validity
        assert 0 <= validity[name]["max_deviation"] <= validity[name]["tolerance"]
    assert validity["accuracy"]["definition"] == "logit_diff > 0"


def test_a_patch_that_writes_nothing_fails_normalize_and_keeps_its_outputs(
    project, monkeypatch, capsys
):
    run_through_patch()
    normalize.run(EXP)
    before = {path: path.read_bytes() for path in (EXP.baselines, EXP.table, EXP.per_prompt)}
    monkeypatch.setattr(passes, "write_patch", lambda act, patch, n_heads: None)
    err = run_and_fail(normalize.run, capsys, EXP)
    assert "tiny-gpt2 on tiny: validity check resid_layer0_denoise failed" in err
    assert "deviates by up to" in err and "fix:" in err
    assert {path: path.read_bytes() for path in before} == before


def test_hydra_multirun_runs_whole_experiments(project):
    """`python -m patchsweep.run -m ...`: Hydra's multirun, one experiment per job."""
    import os
    import subprocess
    import sys

    from project import write_dataset

    (project / "params.yaml").write_text(yaml.safe_dump({"sweep": ["resid_layer"]}))
    write_dataset(project, [TINY_PAIRS[1]], name="other")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "patchsweep.run", "-m", "model=tiny", "dataset=tiny,other",
         "engine.progress=false"],
        cwd=project, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for dataset in ("tiny", "other"):
        table = pd.read_csv(project / "runs" / "results" / "tiny" / dataset / "results.csv")
        assert set(table["sweep"]) == {"resid_layer"}
    # its own output root: nothing lands in DVC's results/ or data/cache/
    assert not (project / "results").exists() and not (project / "data" / "cache").exists()
