"""Refuse a workspace ``dvc exp run`` that would delete other experiments' results.

Run in the workspace (not ``--queue``d, not ``--temp``), ``dvc exp run`` rebuilds the
pipeline from the composed ``params.yaml`` and then records and checks out only the
outputs of the stages still in it: with ``-S dataset=x`` every other experiment's
figures, tables and reports vanish from the workspace, before any stage runs.

DVC composes ``params.yaml`` with Hydra first, and Hydra imports every module of the
``hydra_plugins`` package it finds (``src/hydra_plugins/`` here) before it composes; the
plugin there calls :func:`check_dvc_command`. An exception raised at that point stops
DVC before it has changed anything (it puts the workspace back as it was).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product
from pathlib import Path

import yaml

from patchsweep.errors import PatchsweepError

EXPERIMENTS = Path("conf") / "experiments" / "params.yaml"
SAFE_FLAGS = ("--queue", "--temp", "--dry", "--run-all")  # a copy of the repo, or no run
AXES = ("model", "dataset")


class WorkspaceExperimentError(PatchsweepError):
    """A workspace experiment would remove other experiments' results."""


def check_dvc_command(argv: Sequence[str], root: Path) -> None:
    """Raise when ``argv`` is a workspace ``dvc exp run`` that drops experiments.

    Raises:
        WorkspaceExperimentError: naming the experiments it would remove and what to
            run instead.
    """
    if len(argv) < 3 or Path(argv[0]).name != "dvc" or list(argv[1:3]) != ["exp", "run"]:
        return
    if any(arg in SAFE_FLAGS or arg.startswith("--queue=") for arg in argv):
        return
    if not (root / EXPERIMENTS).is_file():
        return
    chosen = default_choices(root / EXPERIMENTS)
    for override in set_params(argv):
        key, sep, value = override.partition("=")
        if sep and key in AXES:
            chosen[key] = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
    listed = set(product(chosen["model"], chosen["dataset"]))
    present = {
        (config.parent.parent.name, config.parent.name)
        for config in (root / "results").glob("*/*/config.yaml")
    }
    dropped = sorted(present - listed)
    if dropped:
        raise WorkspaceExperimentError(
            f"this `dvc exp run` in the workspace leaves out "
            f"{', '.join(f'{m}/{d}' for m, d in dropped)}: DVC would delete their results "
            "from the workspace (nothing was changed)",
            "queue it, which runs in a copy of the repository and leaves the workspace "
            "alone: `dvc exp run --queue -S ...` then `dvc queue start` (and `dvc exp apply` "
            "to bring one into the workspace); or run it outside DVC with `python -m "
            "patchsweep.run ...` (writes under runs/). To drop an experiment for good, "
            "`git rm -r` its results/<model>/<dataset>/ folder first",
        )


def default_choices(experiments_file: Path) -> dict[str, list[str]]:
    """The models and datasets ``conf/experiments/params.yaml`` lists in its defaults."""
    chosen: dict[str, list[str]] = {axis: [] for axis in AXES}
    for entry in (yaml.safe_load(experiments_file.read_text()) or {}).get("defaults", []):
        if isinstance(entry, dict):
            for axis in AXES:
                if axis in entry:
                    value = entry[axis]
                    chosen[axis] = [str(v) for v in (value if isinstance(value, list) else [value])]
    return chosen


def set_params(argv: Sequence[str]) -> list[str]:
    """The Hydra overrides given with ``-S``/``--set-param``, for params.yaml."""
    found = []
    args = list(argv)
    for i, arg in enumerate(args):
        if arg in ("-S", "--set-param") and i + 1 < len(args):
            found.append(args[i + 1])
        elif arg.startswith("--set-param="):
            found.append(arg.partition("=")[2])
        elif arg.startswith("-S") and len(arg) > 2:
            found.append(arg[2:].lstrip("="))
    prefix = "params.yaml:"
    return [o[len(prefix) :] if o.startswith(prefix) else o for o in found]
