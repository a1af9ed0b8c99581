"""A throwaway project folder (conf/, params.yaml) around a tiny model, for stage tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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
EXPERIMENTS = Path("conf/experiments")  # DVC's Hydra config: what params.yaml lists
BIN = str(Path(sys.executable).parent)


def make_project(
    root: Path, model_dir: Path, pairs: list[dict] | None = None, sweeps: list[str] | None = None
) -> Path:
    """Copy conf/ into ``root`` and add a ``tiny`` model and dataset; params.yaml runs
    tiny × tiny."""
    shutil.copytree(REPO / "conf", root / "conf")
    (root / "conf" / "model" / "tiny.yaml").write_text(
        yaml.safe_dump(
            {"name": "tiny-gpt2", "path": str(model_dir), "dtype": "float32", "device": "cpu"}
        )
    )
    (root / EXPERIMENTS / "model" / "tiny.yaml").write_text("tiny: true\n")
    write_dataset(root, pairs if pairs is not None else TINY_PAIRS)
    write_params(root, ["tiny"], ["tiny"], sweeps or SWEEPS)
    return root


def write_dataset(root: Path, pairs: list[dict], name: str = "tiny") -> None:
    """A pairs dataset ``conf/dataset/<name>.yaml`` and its one-line experiments stub."""
    (root / "conf" / "dataset" / f"{name}.yaml").write_text(
        yaml.safe_dump({"name": name, "generator": "pairs", "pairs": pairs})
    )
    (root / EXPERIMENTS / "dataset" / f"{name}.yaml").write_text(f"{name}: true\n")


def write_params(
    root: Path,
    models: list[str],
    datasets: list[str],
    sweeps: list[str],
    sharded: dict[str, list[dict]] | None = None,
) -> None:
    """Point conf/experiments/params.yaml at these models × datasets × sweeps and write
    params.yaml as DVC's Hydra mode composes it (``model``/``dataset``: one key each).

    ``sharded``: sweeps run in shards, each with its list of shards (``{layers: […]}``).
    """
    defaults = [{"model": models}, {"dataset": datasets}, "_self_"]
    # no attribution sweeps: dvc.yaml's attribute and verify matrices are empty
    own = {"sweep": sweeps, "attributed": {}, "attribution_sweep": []}
    count = max((len(shards) for shards in (sharded or {}).values()), default=2)
    own |= {"sharded": sharded or {}, "shard": list(range(count))}
    (root / EXPERIMENTS / "params.yaml").write_text(
        yaml.safe_dump({"defaults": defaults, **own}, sort_keys=False)
    )
    composed = {
        "model": dict.fromkeys(models, True),
        "dataset": dict.fromkeys(datasets, True),
        **own,
    }
    (root / "params.yaml").write_text(yaml.safe_dump(composed, sort_keys=False))


def sh(cwd: Path, *cmd: str, stdout_only: bool = False) -> str:
    """Run a command (the venv's dvc first on PATH), assert it succeeds, return its output
    (stdout and stderr, or stdout only)."""
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout if stdout_only else done.stdout + done.stderr


def init_repo(root: Path) -> None:
    """git + DVC repo at ``root`` with the project's DVC settings (Hydra, and the cache's
    link types: outputs linked to DVC's cache, not copied); commit all."""
    from configobj import ConfigObj

    sh(root, "git", "init", "-q")
    sh(root, "dvc", "init", "-q")
    config = ConfigObj(str(root / ".dvc" / "config"))
    project = ConfigObj(str(REPO / ".dvc" / "config"))
    for section in ("hydra", "cache"):
        config[section] = dict(project[section])
    config.write()
    sh(root, "git", "add", "-A")
    sh(root, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")


def files_under(folder: Path) -> list[Path]:
    """Every file below ``folder`` (nothing if it does not exist)."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


EXP = ExperimentPaths("tiny", "tiny")  # the experiment every stage test runs


def run_through_patch(sweeps=("resid_layer", "resid_layer_pos", "head")) -> None:
    """compose → tokenize → capture → the given patch stages, in-process."""
    from patchsweep.stages import capture, compose, patch, tokenize

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


def make_dvc_repo(
    root: Path,
    model_dir: Path,
    sweeps: list[str],
    stages: list[str] | None = None,
    formats: list[str] | None = None,
) -> Path:
    """A git + DVC repo at ``root`` (created): the project's dvc.yaml (only ``stages``, if
    given), src/ and DVC Hydra settings around a copy of the tiny model, with
    datasets ``tiny`` and ``other``; everything committed. ``formats``: the figure formats
    of conf/plot/default.yaml, if not the project's (PNG and PDF)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(model_dir, root / "data" / "models" / "tiny")
    make_project(root, Path("data/models/tiny"))
    if formats is not None:
        plot = root / "conf" / "plot" / "default.yaml"
        text = plot.read_text()
        assert "\nformats: [png, pdf]\n" in text, f"no figure formats line in {plot}"
        plot.write_text(
            text.replace("\nformats: [png, pdf]\n", f"\nformats: [{', '.join(formats)}]\n")
        )
    write_dataset(root, [TINY_PAIRS[1]], name="other")
    write_params(root, ["tiny"], ["tiny", "other"], sweeps)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    del dvc_yaml["stages"]["train_organism"]  # the tiny model is not trained here
    if stages is not None:
        keep = {"code", *stages}  # every stage depends on the code stage's fingerprints
        dvc_yaml["stages"] = {k: v for k, v in dvc_yaml["stages"].items() if k in keep}
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    init_repo(root)
    return root


ORGANISM = REPO / "data" / "models" / "ioi-gpt2"  # the bundled model (conf/model/organism.yaml)


def make_organism_repo(
    root: Path, sweeps: list[str], sharded: dict[str, list[dict]] | None = None, n_pairs: int = 6
) -> Path:
    """A git + DVC repo at ``root`` (created) like :func:`make_dvc_repo`, around a copy of
    the bundled 4-layer organism with one dataset, ``few``: ``n_pairs`` IOI prompts."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ORGANISM, root / "data" / "models" / ORGANISM.name)
    shutil.copytree(REPO / "conf", root / "conf")
    few = {"name": "few", "generator": "ioi", "n_pairs": n_pairs, "seed": 0,
           "options": {"corruption": "swap", "split": "test"}}  # fmt: skip
    (root / "conf" / "dataset" / "few.yaml").write_text(yaml.safe_dump(few))
    (root / EXPERIMENTS / "dataset" / "few.yaml").write_text("few: true\n")
    write_params(root, ["organism"], ["few"], sweeps, sharded)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    del dvc_yaml["stages"]["train_organism"]  # the organism's files are copied as they are
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    init_repo(root)
    return root
