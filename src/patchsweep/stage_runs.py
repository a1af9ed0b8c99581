"""Which stages of ``dvc.yaml`` a ``dvc repro`` ran, which failed, which it skipped.

DVC keeps no log of a repro; every stage's entry point (:func:`patchsweep.cli.run_stage`)
leaves a record under ``logs/stages/`` of how it ended, named after its command. A
stage of ``dvc.yaml`` (matrices expanded over ``params.yaml`` by DVC's own parser) whose
record finished at or after a start time **ran** (or **failed**: a user error, or a
crash, an exception the stage did not expect) since then; without one
it is **up to date** when ``dvc.lock`` holds it (DVC skipped it: unchanged inputs, or
outputs restored from its run cache), else it has **never completed**. Read by
:mod:`patchsweep.summary`.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from patchsweep.cli import CRASHED, STAGE_RECORDS, stage_record_path

STAGE_MODULE = "patchsweep.stages."  # dvc.yaml's commands: python -m patchsweep.stages.X
ROUNDING = 0.0005  # cli.record_stage rounds "finished" to 3 decimals
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: dvc.lock in 0.2 s, not 1


@dataclass(frozen=True)
class StageState:
    """One stage instance and how it fared in this run.

    Attributes:
        name: DVC's name (``patch@organism-ioi-head``), or the record's for a record
            no stage of dvc.yaml matches.
        experiment: ``(model, dataset)`` from its command's arguments, or None.
        state: ``ran``, ``failed``, ``up to date`` or ``never completed``.
        seconds: Its wall time this run (0 if it did not run).
        problem: A failure's message.
        record: Its file under ``logs/stages/`` (None when its command is not a stage's).
        frozen: ``frozen: true`` in dvc.yaml (DVC never runs it).
        crashed: A failure by an exception the stage did not expect (a bug, out of
            memory, Ctrl-C; its traceback is in the stage's output), not a user error.
    """

    name: str
    experiment: tuple[str, str] | None
    state: str
    seconds: float = 0.0
    problem: str = ""
    record: Path | None = None
    frozen: bool = False
    crashed: bool = False

    @property
    def kind(self) -> str:
        """The dvc.yaml stage a matrix entry belongs to (``patch`` of ``patch@…``)."""
        return self.name.partition("@")[0]


def read_records(root: Path) -> dict[Path, dict[str, Any]]:
    """Every stage record, by its path relative to ``root`` (unreadable ones skipped:
    a record is written atomically, so only a foreign file is)."""
    records = {}
    for path in sorted((root / STAGE_RECORDS).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict):
            records[path.relative_to(root)] = record
    return records


def pipeline_stages(root: Path) -> dict[str, dict[str, Any]]:
    """dvc.yaml's stages with matrices expanded over params.yaml, as DVC names them.

    DVC's own parser, without opening the repository (``dvc.repo.Repo`` builds every
    stage's outputs and takes two seconds for this pipeline; this takes a quarter).
    """
    from dvc.fs import LocalFileSystem
    from dvc.parsing import DataResolver

    dvc_yaml = yaml.load((root / "dvc.yaml").read_text(), Loader=LOADER) or {}
    repo = SimpleNamespace(fs=LocalFileSystem(), config={})
    return DataResolver(repo, str(root.resolve()), dvc_yaml).resolve()["stages"]


def locked_stages(root: Path) -> set[str]:
    """The stages dvc.lock records: each completed at least once with these outputs."""
    path = root / "dvc.lock"
    if not path.is_file():
        return set()
    lock = yaml.load(path.read_text(), Loader=LOADER)
    stages = lock.get("stages") if isinstance(lock, dict) else None
    return set(stages) if isinstance(stages, dict) else set()


def command_record(cmd: Any) -> tuple[Path, list[str]] | None:
    """The record a stage's command writes, and the command's arguments (None when no
    command of the stage runs a ``patchsweep.stages`` module)."""
    for line in cmd if isinstance(cmd, list) else [cmd]:
        try:
            words = shlex.split(str(line))
        except ValueError:  # unbalanced quotes: DVC would not run it either
            continue
        at = words.index("-m") if "-m" in words[:-1] else -1
        if at >= 0 and words[at + 1].startswith(STAGE_MODULE):
            stage, args = words[at + 1].removeprefix(STAGE_MODULE), words[at + 2 :]
            return stage_record_path(stage, args), args
    return None


def stage_states(
    stages: dict[str, dict[str, Any]],
    records: dict[Path, dict[str, Any]],
    locked: set[str],
    since: float,
    experiments: Sequence[tuple[str, str]],
) -> list[StageState]:
    """Each stage's state, in dvc.yaml's order; then records since ``since`` that match no
    stage (a dvc.yaml that did not parse, or a stage run by hand)."""
    known = set(experiments)
    since -= ROUNDING  # a record's time is rounded to the millisecond
    recent = {p: r for p, r in records.items() if number(r.get("finished")) >= since}
    states = []
    for name, stage in stages.items():
        found = command_record(stage.get("cmd", ""))
        path, args = found if found else (None, [])
        record = recent.pop(path, None) if path else None
        experiment = (args[0], args[1]) if tuple(args[:2]) in known else None
        if record is not None:
            states.append(_from_record(name, experiment, record, path))
        else:
            state = "up to date" if name in locked else "never completed"
            frozen = bool(stage.get("frozen"))
            states.append(StageState(name, experiment, state, record=path, frozen=frozen))
    for path, record in recent.items():
        listed = record.get("args")
        args = [str(a) for a in listed] if isinstance(listed, list) else []
        experiment = (args[0], args[1]) if tuple(args[:2]) in known else None
        name = " ".join([str(record.get("stage", path.stem)), *args])
        states.append(_from_record(name, experiment, record, path))
    return states


def _from_record(
    name: str, experiment: tuple[str, str] | None, record: dict[str, Any], path: Path | None
) -> StageState:
    status = record.get("status")
    failed = status != "done"
    return StageState(
        name,
        experiment,
        "failed" if failed else "ran",
        seconds=number(record.get("seconds")),
        problem=str(record.get("problem") or ("" if not failed else status)),
        record=path,
        crashed=status == CRASHED,
    )


def experiments_of(root: Path) -> list[tuple[str, str]]:
    """Every (model, dataset) of ``params.yaml``, as dvc.yaml's matrices pair them."""
    path = root / "params.yaml"
    params = yaml.load(path.read_text(), Loader=LOADER) if path.is_file() else None
    params = params if isinstance(params, dict) else {}
    return [(m, d) for m in params.get("model") or {} for d in params.get("dataset") or {}]


def number(value: Any, default: float = 0.0) -> float:
    """A JSON number as a float; ``default`` for anything else (null, text, true)."""
    plain = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if plain else default
