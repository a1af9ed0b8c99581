"""A throwaway project folder (conf/, params.yaml) around a tiny model, for stage tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from patchsweep.paths import ExperimentPaths

REPO = Path(__file__).resolve().parents[1]

TINY_PAIRS = [
    {
        "clean": "When John and Mary went to the store , Mary gave a book to",
        "corrupted": "When Mary and John went to the store , John gave a book to",
        "correct": [" John"],
        "incorrect": [" Mary"],
        "labels": {"IO": "John", "S1": "Mary", "S2": "Mary#2"},
        "template": "a",
    },
    {
        "clean": "When Tom and Ann went to the park , Ann gave a ball to",
        "corrupted": "When Ann and Tom went to the park , Tom gave a ball to",
        "correct": [" Tom"],
        "incorrect": [" Ann"],
        "labels": {"IO": "Tom", "S1": "Ann", "S2": "Ann#2"},
        "template": "a",
    },
]

SWEEPS = ["resid_layer", "resid_layer_pos", "head"]


def make_project(
    root: Path, model_dir: Path, pairs: list[dict] | None = None, sweeps: list[str] | None = None
) -> Path:
    """Copy conf/ into ``root`` and add a ``tiny`` model and dataset."""
    shutil.copytree(REPO / "conf", root / "conf")
    (root / "conf" / "model" / "tiny.yaml").write_text(
        yaml.safe_dump(
            {"name": "tiny-gpt2", "path": str(model_dir), "dtype": "float32", "device": "cpu"}
        )
    )
    write_dataset(root, pairs if pairs is not None else TINY_PAIRS)
    (root / "params.yaml").write_text(
        yaml.safe_dump({"model": ["tiny"], "dataset": ["tiny"], "sweep": sweeps or SWEEPS})
    )
    return root


def write_dataset(root: Path, pairs: list[dict], name: str = "tiny") -> None:
    (root / "conf" / "dataset" / f"{name}.yaml").write_text(
        yaml.safe_dump({"name": name, "generator": "pairs", "pairs": pairs})
    )


def files_under(folder: Path) -> list[Path]:
    """Every file below ``folder`` (nothing if it does not exist)."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


EXP = ExperimentPaths("tiny", "tiny")  # the experiment every stage test runs


def run_through_patch(sweeps=("resid_layer", "resid_layer_pos", "head")) -> None:
    """compose → tokenize → capture → the given patch stages, in-process."""
    from patchsweep.steps import capture, compose, patch, tokenize

    compose.run(EXP)
    tokenize.run(EXP)
    capture.run(EXP)
    for name in sweeps:
        patch.run(EXP, name)


def run_and_fail(step, capsys, *args) -> str:
    """Run a step as its stage entry point does; return stderr, asserting exit status 2."""
    import pytest

    from patchsweep.cli import EXIT_USER_ERROR, run_stage

    with pytest.raises(SystemExit) as exited:
        run_stage(lambda argv: step(*args), argv=[])
    assert exited.value.code == EXIT_USER_ERROR
    return capsys.readouterr().err
