"""What a ``dvc repro`` did, on one screen: ``python -m patchsweep.summary --since EPOCH``.

DVC prints a line per stage as it goes and no totals at the end; with about a hundred
stages the one failure, the prompts left out of the statistics and the stages that never
ran scroll out of sight. ``make repro`` runs this after ``dvc repro``, whether or not it
succeeded, with the time it started. Three parts:

* the stages that ran, failed, were up to date or never completed
  (:mod:`patchsweep.stage_runs`), and the seconds they took;
* one line per experiment from its ``results/<model>/<dataset>/`` files: prompts, prompts
  left out, sweeps, sites (rows of results.csv), the seconds its stages took this time,
  the validity checks, and the lowest Pearson r of its attribution sweeps against exact
  patching (with their number);
* only what needs attention: failed stages with their message (a stage that crashed,
  on an exception it did not expect, is named like a failed one, with the exception and
  a pointer to its traceback in the output above), stages that never
  completed (and frozen ones), missing results files, results older than a failed
  normalize, prompts left out and why.

The summary only reads, and a missing or unreadable file is reported, never raised. Its
exit status is 0 whatever it finds (``make repro`` exits with ``dvc repro``'s), 2 for
bad arguments.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import shutil
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from patchsweep.cli import EXIT_USER_ERROR
from patchsweep.stage_runs import (
    StageState,
    experiments_of,
    locked_stages,
    number,
    pipeline_stages,
    read_records,
    stage_states,
)

ATTENTION_LINES = 24  # the most lines of the "needs attention" part; the rest is counted
PROBLEM_LINES = 3  # a failure's message, wrapped; its record holds all of it
LISTED = 6  # excluded prompts (or experiments, stages) named on one line before "..."


@dataclass
class Experiment:
    """One experiment's line: what its results files say (None: file missing)."""

    model: str
    dataset: str
    stages: list[StageState] = field(default_factory=list)
    baselines: dict[str, Any] | None = None
    sweeps: int | None = None
    sites: int | None = None
    attribution: dict[str, Any] | None = None
    missing: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.model}/{self.dataset}"


# --- what the experiments hold --------------------------------------------------------


def read_experiment(root: Path, model: str, dataset: str) -> Experiment:
    """An experiment's results files; a missing or unreadable one is listed, not raised."""
    exp = Experiment(model, dataset)
    folder = root / "results" / model / dataset
    try:
        with (folder / "results.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        exp.sites, exp.sweeps = len(rows), len({row.get("sweep") for row in rows})
    except (OSError, csv.Error):
        exp.missing.append("results.csv")
    exp.baselines = _json_object(folder / "baselines.json", exp.missing)
    if (folder / "attribution_check.json").exists():
        exp.attribution = _json_object(folder / "attribution_check.json", exp.missing)
    return exp


def _json_object(path: Path, missing: list[str]) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict):
        missing.append(path.name)
        return None
    return data


# --- the screen ----------------------------------------------------------------------


def render(
    states: list[StageState],
    experiments: list[Experiment],
    since: float,
    dvc_status: int | None = None,
    notes: Sequence[str] = (),
    width: int = 100,
    now: float | None = None,
) -> list[str]:
    """The summary's lines: header, one line per experiment, what needs attention."""
    count = Counter(s.state for s in states)
    failed = count["failed"] > 0 or bool(dvc_status)
    skipped = "not run (up to date or not reached)" if failed else "up to date"
    tally = f"dvc repro: {count['ran']} stage{'' if count['ran'] == 1 else 's'} ran, "
    crashed = sum(s.crashed for s in states if s.state == "failed")
    tally += f"{count['failed']} failed" + (f" ({crashed} crashed), " if crashed else ", ")
    tally += f"{count['up to date']} {skipped}"
    if count["never completed"]:
        tally += f", {count['never completed']} never completed"
    took = f"  {sum(s.seconds for s in states):.0f} s in the stages that ran"
    if since > 0:
        took += f", {(time.time() if now is None else now) - since:.0f} s in all"
    if dvc_status is not None:
        took += f"; dvc repro exited {dvc_status}"
    lines = [tally, took, "", *_table(experiments)]
    attention = [*notes, *_attention(states, experiments, dvc_status, width)]
    if attention:
        lines += ["", "needs attention:"]
        if len(attention) > ATTENTION_LINES:
            more = len(attention) - ATTENTION_LINES + 1
            attention = [*attention[: ATTENTION_LINES - 1], f"  ... and {more} more lines"]
        lines += attention
    return lines


def _table(experiments: list[Experiment]) -> list[str]:
    head = ("experiment", "ran", "seconds", "prompts", "excluded", "sweeps", "sites",
            "validity", "atp r (n)")  # fmt: skip
    rows = [head, *(_row(exp) for exp in experiments)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return ["  ".join(_aligned(row, widths)).rstrip() for row in rows]


def _aligned(row: tuple[str, ...], widths: list[int]) -> list[str]:
    """The experiment's name to the left, numbers to the right."""
    return [
        row[0].ljust(widths[0]),
        *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)),
    ]


def _row(exp: Experiment) -> tuple[str, ...]:
    ran = [s for s in exp.stages if s.state in ("ran", "failed")]
    base = exp.baselines or {}
    excluded = base.get("excluded_prompts")
    return (
        exp.name,
        f"{len(ran)}/{len(exp.stages)}",
        f"{sum(s.seconds for s in ran):.1f}",
        _text(base.get("n_prompts")),
        str(len(excluded)) if isinstance(excluded, list) else "-",
        _text(exp.sweeps),
        _text(exp.sites),
        _validity(exp),
        _agreement(exp.attribution),
    )


def _validity(exp: Experiment) -> str:
    """``FAILED`` when this run's normalize stopped on a check; else what baselines.json
    records (``-``: not there, or written before the checks existed)."""
    failed = [s.problem for s in exp.stages if s.kind == "normalize" and s.state == "failed"]
    if any("validity check" in problem for problem in failed):  # ValidityError's message
        return "FAILED"
    validity = (exp.baselines or {}).get("validity")
    if not isinstance(validity, dict) or "passed" not in validity:
        return "-"
    return "ok" if validity["passed"] else "FAILED"


def _agreement(check: dict[str, Any] | None) -> str:
    """The lowest Pearson r of the attribution sweeps against exact patching, and how
    many sweeps there are."""
    sweeps = (check or {}).get("sweeps")
    if not isinstance(sweeps, dict) or not sweeps:
        return "-"
    rs = [number(s.get("pearson"), math.nan) for s in sweeps.values() if isinstance(s, dict)]
    finite = [r for r in rs if math.isfinite(r)]
    return f"{min(finite):.3f} ({len(sweeps)})" if finite else f"n/a ({len(sweeps)})"


def _attention(
    states: list[StageState], experiments: list[Experiment], dvc_status: int | None, width: int
) -> list[str]:
    out: list[str] = []
    failed = [s for s in states if s.state == "failed"]
    for stage in failed:
        how = "CRASHED" if stage.crashed else "FAILED"
        out += _wrap(f"{how} {stage.name} after {stage.seconds:.1f} s: {stage.problem}", width)
        where = f"full message: {stage.record}; " if stage.record else ""
        out.append(f"    {where}rerun: dvc repro {stage.name}")
    if dvc_status and not failed:
        out += _wrap(
            f"dvc repro exited {dvc_status}, but no stage recorded a failure: DVC stopped "
            "before running one, or a stage was killed before it could record (out of memory, "
            "SIGKILL); the error is above",
            width,
        )
    out += _never_completed(states, bool(failed or dvc_status), width)
    out += _missing(experiments, width)
    for exp in experiments:
        out += _experiment_attention(exp, width)
    return out


def _missing(experiments: list[Experiment], width: int) -> list[str]:
    """Missing results files, one line per kind of absence (often all experiments')."""
    groups: dict[tuple[str, str], list[str]] = {}
    for exp in experiments:
        if not exp.missing:
            continue
        normalize = next((s for s in exp.stages if s.kind == "normalize"), None)
        done = normalize is not None and normalize.state in ("ran", "up to date")
        why = (
            "`dvc checkout` or `dvc repro` restores them" if done else "normalize has not completed"
        )
        groups.setdefault((", ".join(exp.missing), why), []).append(exp.name)
    return [
        line
        for (files, why), names in groups.items()
        for line in _wrap(f"no {files} ({why}): {_listed(names)}", width)
    ]


def _never_completed(states: list[StageState], failed: bool, width: int) -> list[str]:
    """Stages without a result, grouped by experiment: ``patch x13`` for a matrix."""
    groups: dict[str, Counter[str]] = {}
    frozen = [s.name for s in states if s.frozen]
    for s in states:
        if s.state == "never completed" and not s.frozen:
            where = "/".join(s.experiment) if s.experiment else "pipeline"
            groups.setdefault(where, Counter())[s.kind] += 1
    why = "dvc repro stopped at the failure above" if failed else "not run yet: `dvc repro`"
    out = []
    for where, kinds in groups.items():
        names = ", ".join(k if n == 1 else f"{k} x{n}" for k, n in kinds.items())
        out += _wrap(f"{where}: never completed (not in dvc.lock; {why}): {names}", width)
    if frozen:
        out += _wrap(f"frozen in dvc.yaml, DVC never runs them: {_listed(frozen)}", width)
    return out


def _experiment_attention(exp: Experiment, width: int) -> list[str]:
    out = []
    normalize_failed = any(s.kind == "normalize" and s.state == "failed" for s in exp.stages)
    if normalize_failed and (exp.sites is not None or exp.baselines is not None):
        out += _wrap(f"{exp.name}: normalize failed: its results are from an earlier run", width)
    base = exp.baselines or {}
    excluded = base.get("excluded_prompts")
    if isinstance(excluded, list) and excluded:
        gaps = base.get("excluded_gaps")
        gaps = gaps[: len(excluded)] if isinstance(gaps, list) else []
        shown = [
            f"{p} (gap {g:.3g})" if isinstance(g, (int, float)) else str(p)
            for p, g in itertools.zip_longest(excluded, gaps)
        ]
        threshold = base.get("exclusion_threshold")
        rule = (
            f"|clean - corrupted| under {threshold:.3g}"
            if isinstance(threshold, (int, float))
            else "gap too small"
        )
        out += _wrap(
            f"{exp.name}: {len(excluded)} of {_text(base.get('n_prompts'))} prompts left out "
            f"of the statistics ({rule}; see exclusion_rule in baselines.json): "
            f"{_listed(shown)}",
            width,
        )
    return out


def _wrap(text: str, width: int, lines: int = PROBLEM_LINES) -> list[str]:
    """``text`` over at most ``lines`` lines, the later ones indented."""
    return textwrap.wrap(
        " ".join(text.split()),
        width=max(width, 40),
        initial_indent="  ",
        subsequent_indent="    ",
        max_lines=lines,
        placeholder=" ...",
    )


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:LISTED])
    return shown + (f", ... ({len(items)} in all)" if len(items) > LISTED else "")


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _colour(line: str) -> str:
    """FAILED and CRASHED in red and the attention heading in bold, for a terminal."""
    if line == "needs attention:":
        return f"\033[1m{line}\033[0m"
    for word in ("FAILED", "CRASHED"):
        line = line.replace(word, f"\033[31m{word}\033[0m")
    return line


def _use_colour() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


# --- the command ---------------------------------------------------------------------


def summarize(root: Path, since: float, dvc_status: int | None = None) -> list[str]:
    """Read ``root``'s pipeline, records and results; return the summary's lines."""
    width = min(shutil.get_terminal_size((100, 40)).columns, 120) - 1
    notes = []
    experiments = experiments_of(root)
    try:
        stages = pipeline_stages(root)
    except Exception as exc:  # a broken dvc.yaml is what dvc repro just failed on
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        notes += _wrap(f"dvc.yaml: its stages could not be listed ({first}); "
                       "only stages that left a record are counted", width)  # fmt: skip
        stages = {}
    try:
        locked = locked_stages(root)
    except (OSError, yaml.YAMLError) as exc:
        notes += _wrap(f"dvc.lock could not be read ({exc}): stages without a record this "
                       "run are counted as never completed", width)  # fmt: skip
        locked = set()
    states = stage_states(stages, read_records(root), locked, since, experiments)
    rows = []
    for model, dataset in experiments:
        exp = read_experiment(root, model, dataset)
        exp.stages = [s for s in states if s.experiment == (model, dataset)]
        rows.append(exp)
    return render(states, rows, since, dvc_status, notes, width)


def parser() -> argparse.ArgumentParser:
    """The options of ``python -m patchsweep.summary`` and ``patchsweep summary``."""
    p = argparse.ArgumentParser(
        prog="python -m patchsweep.summary",
        description="One screen on the last `dvc repro`: stages ran, up to date and failed, "
        "one line per experiment, then what needs attention. Run in the project root.",
    )
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--since",
        type=_epoch,
        required=True,
        metavar="EPOCH_SECONDS",
        help="when dvc repro started (`date +%%s`): stages recorded since then ran this time; "
        "0 counts every stage's last recorded run",
    )
    p.add_argument(
        "--dvc-status",
        type=int,
        metavar="N",
        help="dvc repro's exit status, to say when it failed without a stage's record",
    )
    p.add_argument("--root", type=Path, default=Path("."), help="the project root (default: .)")


def _epoch(text: str) -> float:
    """A time in seconds since 1970 (``date +%s``), refused unless finite and >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not seconds since 1970 (date +%s)")
    return value


def run(since: float, dvc_status: int | None, root: Path) -> int:
    """Print the summary; 0, or 2 when ``root`` is not a project folder."""
    if not (root / "dvc.yaml").is_file() and not (root / "params.yaml").is_file():
        print(
            f"error: no dvc.yaml or params.yaml in {root.resolve()}\n"
            "  fix: run the summary in the project root (or pass --root)",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    lines = summarize(root, since, dvc_status)
    if _use_colour():
        lines = [_colour(line) for line in lines]
    if hasattr(sys.stdout, "reconfigure"):  # a stage's message in an ASCII-only locale
        sys.stdout.reconfigure(errors="replace")
    try:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - else the exit flush fails again
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m patchsweep.summary``; returns the exit status."""
    ns = parser().parse_args(argv)
    return run(ns.since, ns.dvc_status, ns.root)


if __name__ == "__main__":
    sys.exit(main())
