"""What ``dvc exp show --json`` says of each revision, as rows for ``patchsweep exps``.

DVC lists the workspace, then each commit followed by its experiments; for each the
params files (params.yaml holds the pipeline's choices: models, datasets, sweeps,
attributed datasets) and metrics files (``results/<model>/<dataset>/baselines.json`` and
``attribution_check.json``), each as ``{"data": ...}`` or, unreadable, ``{"error": ...}``.
:func:`revisions` keeps that order and :func:`results` makes a :class:`Result` per
revision × experiment (model/dataset); :mod:`patchsweep.exps` lays them out.

The JSON comes from ``dvc exp show --json`` run by this Python's DVC, a subprocess
(:func:`dvc_exp_show`): about 4 s for the bundled project's two revisions. DVC's
Python API, ``dvc.api.exp_show``, saves about one second of those, but has no option for
every commit (``-A``) and returns DVC's flattened columns, named ``path:key`` only
where two files share a key; the JSON keeps each file's path.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchsweep.errors import PatchsweepError
from patchsweep.paths import ExperimentPaths

# the results files DVC reports as metrics, results/<model>/<dataset>/<file>
RESULTS_FILE = re.compile(r"results/([^/]+)/([^/]+)/(baselines|attribution_check)\.json")


@dataclass(frozen=True)
class Revision:
    """One revision of ``dvc exp show``: the workspace, a commit or an experiment."""

    label: str  # workspace, branch/tag/short hash, or the experiment's name
    rev: str  # "workspace" or the full commit hash
    baseline: str  # the commit an experiment derives from (a commit: itself)
    experiment: bool
    created: str | None  # ISO time
    state: str  # "" when done; else queued, running or failed
    params: dict[str, Any]  # params.yaml
    metrics: dict[str, dict[str, Any]]  # file → {"data": ...} or {"error": ...}
    error: str = ""


@dataclass(frozen=True)
class Result:
    """One row: what a revision holds for one experiment (None: not there)."""

    revision: Revision
    first: bool  # the revision's first row
    model: str
    dataset: str
    attributed: bool  # params.yaml's attributed names the dataset
    clean: float | None = None
    corrupted: float | None = None
    valid: bool | None = None
    pearson: dict[str, float | None] | None = None  # None: no attribution check
    errors: dict[str, str] = field(default_factory=dict)  # file kind → DVC's message


def rows(shown: Sequence[dict[str, Any]]) -> list[Result]:
    """Every revision's rows, in DVC's order."""
    return [row for revision in revisions(shown) for row in results(revision)]


def revisions(shown: Sequence[dict[str, Any]]) -> list[Revision]:
    """DVC's revisions in its order: the workspace, then each commit followed by its
    experiments."""
    if not isinstance(shown, list):
        raise PatchsweepError(
            "`dvc exp show --json` did not print a list of revisions",
            "check `dvc exp show --json` by hand; patchsweep reads DVC 3's format",
        )
    out = []
    for state in shown:
        workspace = state.get("rev") == "workspace"
        label = "workspace" if workspace else state.get("name") or str(state.get("rev"))[:7]
        out.append(_revision(state, label, "" if workspace else label, None))
        for run in state.get("experiments") or []:
            revs = run.get("revs") or []
            if revs:
                name = run.get("name") or revs[0].get("name") or str(revs[0].get("rev"))[:7]
                out.append(_revision(revs[0], name, label, run.get("executor") or {}))
    return out


def _revision(
    state: dict[str, Any], label: str, baseline: str, executor: dict[str, Any] | None
) -> Revision:
    data = state.get("data") or {}
    params = ((data.get("params") or {}).get("params.yaml") or {}).get("data")
    error = state.get("error") or {}
    status = (executor or {}).get("state") or ""
    return Revision(
        label=label,
        rev=str(state.get("rev")),
        baseline=baseline,
        experiment=executor is not None,
        created=data.get("timestamp"),
        state="" if status == "success" else status,
        params=params if isinstance(params, dict) else {},  # {} when DVC could not read it
        metrics=data.get("metrics") or {},
        error=str(error.get("msg") or error) if error else "",
    )


def results(revision: Revision) -> list[Result]:
    """A revision's rows: each params.yaml model × dataset, then any other experiment
    with results files; a revision with neither still gets a row."""
    params = revision.params
    pairs = [(m, d) for m in names(params.get("model")) for d in names(params.get("dataset"))]
    for path in revision.metrics:
        found = RESULTS_FILE.fullmatch(path)
        if found and (found.group(1), found.group(2)) not in pairs:
            pairs.append((found.group(1), found.group(2)))
    attributed = set(names(params.get("attributed")))
    rows = [_result(revision, m, d, d in attributed, i == 0) for i, (m, d) in enumerate(pairs)]
    return rows or [Result(revision, True, "", "", False)]


def _result(revision: Revision, model: str, dataset: str, attributed: bool, first: bool) -> Result:
    errors: dict[str, str] = {}
    base = _file(revision.metrics, _path(model, dataset, "baselines"), "baselines", errors)
    check = _file(
        revision.metrics, _path(model, dataset, "attribution_check"), "attribution_check", errors
    )
    validity = base.get("validity")
    sweeps = check.get("sweeps")
    return Result(
        revision,
        first,
        model,
        dataset,
        attributed,
        clean=_number(base.get("clean")),
        corrupted=_number(base.get("corrupted")),
        valid=validity.get("passed") if isinstance(validity, dict) else None,
        pearson=(
            {name: _number(s.get("pearson")) for name, s in sorted(sweeps.items())}
            if isinstance(sweeps, dict) and sweeps
            else None
        ),
        errors=errors,
    )


def _path(model: str, dataset: str, kind: str) -> str:
    """Where the pipeline writes an experiment's ``<kind>.json`` (paths.ExperimentPaths)."""
    try:
        return getattr(ExperimentPaths(model, dataset), kind).as_posix()
    except PatchsweepError:  # not a plain name: only ever seen in DVC's own file list
        return f"results/{model}/{dataset}/{kind}.json"


def _file(metrics: dict[str, Any], path: str, kind: str, errors: dict[str, str]) -> dict:
    """A metrics file's data; {} when absent, and its error noted when unreadable."""
    entry = metrics.get(path) or {}
    error = entry.get("error")
    if error and error.get("type") != "FileNotFoundError":
        errors[kind] = str(error.get("msg") or error.get("type"))
    data = entry.get("data")
    return data if isinstance(data, dict) else {}


def names(value: Any) -> list[str]:
    """params.yaml's choice of a group: {name: true} (DVC's Hydra mode), a list or one."""
    if isinstance(value, dict):
        return [str(k) for k in value]
    if isinstance(value, list):
        return [str(v) for v in value if isinstance(v, (str, int))]
    return [value] if isinstance(value, str) else []


def _number(value: Any) -> float | None:
    plain = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if plain and math.isfinite(value) else None


def dvc_exp_show(options: Sequence[str] = (), cwd: Path | None = None) -> list[dict[str, Any]]:
    """``dvc exp show --json`` with these options, run by this Python's DVC."""
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json", *options]
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    fix = (
        "run `patchsweep exps` in the project root (a git repository with dvc.yaml and "
        "`.dvc/`); `dvc exp show` there says more"
    )
    if done.returncode != 0:
        said = [line for line in done.stderr.splitlines() if line.strip()][-3:]
        raise PatchsweepError(
            f"`dvc exp show --json` exited {done.returncode}: {' '.join(said) or 'no message'}",
            fix,
        )
    try:
        shown = json.loads(done.stdout)
    except ValueError as exc:
        raise PatchsweepError(f"`dvc exp show --json` printed no JSON ({exc})", fix) from exc
    if done.stderr.strip():  # DVC's warnings (a revision it could not read, ...)
        sys.stderr.write(done.stderr)
    return shown
