"""Two runs of the pipeline on the same inputs give byte-identical tables, metrics and
figures, so DVC sees no change when nothing changed."""

from __future__ import annotations

import shutil

from project import EXP, files_under, run_through_patch

from patchsweep.stages import normalize, plot

SWEEPS = ("resid_layer", "resid_layer_pos", "head")


def snapshot() -> dict[str, bytes]:
    outputs = files_under(EXP.results) + files_under(EXP.patch_dir)
    return {str(p): p.read_bytes() for p in outputs if p.name != "config.yaml"}


def test_two_runs_write_identical_bytes(project):
    runs = []
    for _ in range(2):
        shutil.rmtree("results", ignore_errors=True)
        shutil.rmtree("data", ignore_errors=True)
        run_through_patch(sweeps=SWEEPS)
        normalize.run(EXP)
        plot.run(EXP)
        runs.append(snapshot())
    first, second = runs
    assert sorted(first) == sorted(second)
    assert any(name.endswith(".png") for name in first)
    assert any(name.endswith(".pdf") for name in first)
    different = [name for name in first if first[name] != second[name]]
    assert different == []
