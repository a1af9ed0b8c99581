"""A saved ``dvc exp show --json``, for the tests of patchsweep.dvc_exp and .exps.

``data/exp_show.json`` is ``dvc exp show --json -n 2`` of a clone of this project,
trimmed (deps, outs, config.yaml params and top_components.json dropped; baselines.json
and attribution_check.json cut to the keys patchsweep reads and a few more). Its
revisions: the workspace (one baselines.json deleted, one attribution_check.json not
JSON), ``main`` (validity checks in two baselines.json) with experiments saved by
``dvc exp save`` (``two-datasets``: two datasets, one corrupted baseline changed;
``three-sweeps``: three sweeps, a clean baseline and an attribution r changed) and one
queued (``queued-ioi``), then the commit before, ``h-exps``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SAMPLE: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "data" / "exp_show.json").read_text()
)


def dvc_revisions(shown: list[dict[str, Any]] = SAMPLE) -> Iterator[dict[str, Any]]:
    """DVC's revision objects in its order: each commit, then its experiments."""
    for state in shown:
        yield state
        for run in state["experiments"] or []:
            yield run["revs"][0]


def label(state: dict[str, Any]) -> str:
    return state["name"] or "workspace"


def params_of(state: dict[str, Any]) -> dict[str, Any]:
    return state["data"]["params"]["params.yaml"]["data"]


def metric(state: dict[str, Any], model: str, dataset: str, kind: str) -> dict[str, Any]:
    """A results file's data in that revision ({} when missing or unreadable)."""
    entry = state["data"]["metrics"].get(f"results/{model}/{dataset}/{kind}.json", {})
    return entry.get("data", {})
