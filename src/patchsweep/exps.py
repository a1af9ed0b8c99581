"""``patchsweep exps``: ``dvc exp show`` as a table that fits a terminal (``make exps``).

``dvc exp show`` has a column per value of every params and metrics file it reads: about
3,700 for the bundled pipeline (each experiment's config.yaml is a params file of its
stages). ``--drop``/``--keep`` cut that to 27 columns, still far too wide: DVC prefixes a
column with its file where two files share a name (``results/organism/ioi/baselines.json:
clean``), and with one row per revision every dataset's numbers sit side by side; six
datasets × (clean, corrupted, validity, agreement) would be 24 columns, over 200
characters even with short names.

So the table is **long**: one row per revision × experiment (model × dataset), the
revisions in DVC's order: the workspace, then each commit followed by its DVC
experiments, indented. A revision's own columns are filled on its first row only. With
the six default datasets a line is 98 characters (here two datasets' rows)::

    revision        created      sweeps  experiment            clean  corrupted  valid  atp r (n)
    workspace                        13  organism/ioi          12.66     -12.85  ok     0.742 (4)
                                         organism/ioi_single   6.753     -8.779  ok     -
    main            12-02 14:54      13  organism/ioi          12.66     -12.85  ok     0.742 (4)
                                         organism/ioi_single   6.753     -8.779  ok     -
      three-sweeps  12-02 14:54       3  organism/ioi           12.5     -12.85  ok     0.742 (4)
                                         organism/ioi_single   6.753     -8.779  ok     -
      queued-ioi    queued           13  organism/ioi              -          -  -      -

revision
    ``workspace``, a commit (its branch or tag, else its short hash) or a DVC experiment
    (its name, indented under the commit it derives from).
created
    the commit's or experiment's time as DVC gives it, ``MM-DD HH:MM`` this year and
    ``YYYY-MM-DD`` before (as DVC's own table); ``queued``, ``running`` or ``failed`` for
    an experiment not done.
sweeps
    how many exact sweeps params.yaml's ``sweep`` lists.
experiment
    each params.yaml model × dataset (the pipeline's experiments: what dvc.yaml's
    matrices run), then any other with results files in that revision.
clean, corrupted
    ``baselines.json``'s mean metric of the clean and the corrupted runs (4 digits).
valid
    ``baselines.json``'s validity checks (:mod:`patchsweep.validity`): ``ok``, ``FAIL``,
    or ``-`` where the file predates the checks.
atp r (n)
    the lowest Pearson r of the experiment's attribution sweeps against exact patching
    (``attribution_check.json``), and how many sweeps; ``-`` where params.yaml's
    ``attributed`` does not name the dataset, ``missing`` where it does but no check is
    recorded.

Elsewhere ``-`` is a value the revision does not have (a queued experiment, a commit from
before the file existed) and ``err`` a file DVC could not read (``--csv`` says why).

``--csv`` writes the same rows in full: every column on every row, DVC's precision, the
params.yaml choices spelled out (models, datasets, attributed datasets, sweep and
attribution sweep names), each attribution sweep's r in a column of its own
(``r.<sweep>``) and the read errors. ``--only-changed`` drops the result columns whose
value is the same in every revision that has one, for each experiment: DVC's
``--only-changed``, compared per model × dataset. ``--all`` passes ``-A`` to dvc: every
commit, which DVC reads one by one (about two minutes for 80 commits).

The rows come from :mod:`patchsweep.dvc_exp` (``dvc exp show --json``).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from patchsweep import dvc_exp
from patchsweep.dvc_exp import Result

MISSING = "-"
UNREADABLE = "err"
NAME_WIDTH = 16  # a longer revision name is cut to this many characters (with "...")
ERROR_WIDTH = 48  # a revision's error, cut in the table (--csv has all of it)


# --- columns ------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A column: its header, its text in a row, and how it is laid out."""

    header: str
    text: Callable[[Result], str]
    right: bool = False  # numbers to the right
    per_revision: bool = False  # the revision's own: shown on its first row only
    result: bool = False  # a result --only-changed may drop


def _label(row: Result) -> str:
    name = "  " + row.revision.label if row.revision.experiment else row.revision.label
    return name if len(name) <= NAME_WIDTH else name[: NAME_WIDTH - 3] + "..."


def _created(row: Result, now: datetime | None = None) -> str:
    """An unfinished experiment's state, else its time: ``MM-DD HH:MM`` this year,
    ``YYYY-MM-DD`` before (as DVC's table drops the time of older ones)."""
    if row.revision.state:
        return row.revision.state
    try:
        created = datetime.fromisoformat(row.revision.created or "")
    except ValueError:
        return row.revision.created or ""
    this_year = created.year == (now or datetime.now()).year
    return created.strftime("%m-%d %H:%M" if this_year else "%Y-%m-%d")


def _sweeps(row: Result) -> str:
    sweep = row.revision.params.get("sweep")
    return str(len(sweep)) if isinstance(sweep, list) else MISSING


def _model_dataset(row: Result) -> str:
    if row.revision.error:
        return f"error: {row.revision.error}"[:ERROR_WIDTH]
    return f"{row.model}/{row.dataset}" if row.model else MISSING


def _baseline(key: str, row: Result) -> str:
    if "baselines" in row.errors:
        return UNREADABLE
    value = getattr(row, key)
    return MISSING if value is None else f"{value:.4g}"


def _valid(row: Result) -> str:
    if "baselines" in row.errors:
        return UNREADABLE
    return {True: "ok", False: "FAIL", None: MISSING}[row.valid]


def _agreement(row: Result) -> str:
    if "attribution_check" in row.errors:
        return UNREADABLE
    if row.pearson is None:
        return "missing" if row.attributed and not row.revision.state else MISSING
    finite = [r for r in row.pearson.values() if r is not None]
    n = len(row.pearson)
    return f"{min(finite):.3f} ({n})" if finite else f"n/a ({n})"


TABLE = [
    Column("revision", _label, per_revision=True),
    Column("created", _created, per_revision=True),
    Column("sweeps", _sweeps, right=True, per_revision=True, result=True),
    Column("experiment", _model_dataset),
    Column("clean", lambda r: _baseline("clean", r), right=True, result=True),
    Column("corrupted", lambda r: _baseline("corrupted", r), right=True, result=True),
    Column("valid", _valid, result=True),
    Column("atp r (n)", _agreement, result=True),
]


def _full(value: Any) -> str:
    """A CSV cell: numbers as DVC gave them, lists space-separated, None empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " ".join(str(v.get("name", v)) if isinstance(v, dict) else str(v) for v in value)
    return str(value)


def csv_columns(rows: Sequence[Result]) -> list[Column]:
    """Every column of ``--csv``, with an ``r.<sweep>`` column per attribution sweep."""

    def param(key: str, choice: bool = False) -> Callable[[Result], str]:
        def text(r: Result) -> str:
            value = r.revision.params.get(key)
            return _full(dvc_exp.names(value) if choice else value)

        return text

    sweeps = sorted({name for r in rows for name in (r.pearson or {})})
    return [
        Column("revision", lambda r: r.revision.label),
        Column("rev", lambda r: r.revision.rev),
        Column("baseline", lambda r: r.revision.baseline),
        Column("created", lambda r: r.revision.created or ""),
        Column("state", lambda r: r.revision.state),
        Column("models", param("model", choice=True), result=True),
        Column("datasets", param("dataset", choice=True), result=True),
        Column("attributed", param("attributed", choice=True), result=True),
        Column("sweeps", lambda r: "" if _sweeps(r) == MISSING else _sweeps(r), result=True),
        Column("sweep", param("sweep"), result=True),
        Column("attribution_sweep", param("attribution_sweep"), result=True),
        Column("model", lambda r: r.model),
        Column("dataset", lambda r: r.dataset),
        Column("clean", lambda r: _full(r.clean), result=True),
        Column("corrupted", lambda r: _full(r.corrupted), result=True),
        Column("valid", lambda r: _full(r.valid), result=True),
        Column("atp_r_min", lambda r: _full(_lowest(r.pearson)), result=True),
        *(Column(f"r.{name}", _sweep_r(name), result=True) for name in sweeps),
        Column("error", lambda r: "; ".join(filter(None, [r.revision.error, *_errors(r)]))),
    ]


def _sweep_r(name: str) -> Callable[[Result], str]:
    """One attribution sweep's Pearson r, in full."""
    return lambda r: _full((r.pearson or {}).get(name))


def _lowest(pearson: dict[str, float | None] | None) -> float | None:
    finite = [r for r in (pearson or {}).values() if r is not None]
    return min(finite) if finite else None


def _errors(row: Result) -> list[str]:
    return [f"{kind}.json: {message}" for kind, message in row.errors.items()]


def changed(columns: Sequence[Column], rows: Sequence[Result]) -> list[Column]:
    """The columns to keep under ``--only-changed``: every column that is not a result,
    and each result that differs between revisions for some model/dataset."""

    def varies(column: Column) -> bool:
        seen: dict[tuple[str, str], set[str]] = {}
        for row in rows:
            value = column.text(row)
            if value not in ("", MISSING):
                seen.setdefault((row.model, row.dataset), set()).add(value)
        return any(len(values) > 1 for values in seen.values())

    return [c for c in columns if not c.result or varies(c)]


# --- output -------------------------------------------------------------------------


def table_lines(rows: Sequence[Result], only_changed: bool = False) -> list[str]:
    """The aligned table: a header line, then a line per row."""
    columns = changed(TABLE, rows) if only_changed else TABLE
    cells = [[c.header for c in columns]] + [
        ["" if c.per_revision and not row.first else c.text(row) for c in columns] for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return [
        "  ".join(
            cell.rjust(w) if c.right else cell.ljust(w)
            for c, cell, w in zip(columns, line, widths, strict=True)
        ).rstrip()
        for line in cells
    ]


def csv_text(rows: Sequence[Result], only_changed: bool = False) -> str:
    """Every row with every column in full, as CSV."""
    columns = csv_columns(rows)
    columns = changed(columns, rows) if only_changed else columns
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c.header for c in columns])
    writer.writerows([c.text(row) for c in columns] for row in rows)
    return out.getvalue()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv", action="store_true", help="every column in full, as CSV")
    p.add_argument(
        "-A",
        "--all",
        action="store_true",
        help="every commit, not just HEAD (dvc exp show -A; DVC reads each: minutes)",
    )
    p.add_argument("-n", "--num", type=int, metavar="N", help="the last N commits (dvc -n)")
    p.add_argument(
        "--only-changed",
        action="store_true",
        help="drop the result columns that are the same in every revision",
    )


def run(ns: argparse.Namespace) -> int:
    """Print the table (or CSV) of ``dvc exp show`` in the current folder."""
    options = ["-A"] if ns.all else []
    options += ["-n", str(ns.num)] if ns.num is not None else []
    rows = dvc_exp.rows(dvc_exp.dvc_exp_show(options))
    text = (
        csv_text(rows, ns.only_changed)
        if ns.csv
        else "\n".join(table_lines(rows, ns.only_changed)) + "\n"
    )
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - else the exit flush fails again
    return 0
