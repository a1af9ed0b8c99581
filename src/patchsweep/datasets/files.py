"""Prompt pairs from the user's own CSV or JSONL file (``dataset.generator: file``).

Columns (CSV header or JSON keys): ``clean``, ``corrupted``, ``correct``, ``incorrect``,
optional ``labels`` and ``template``. Several answers go in one cell separated by ``|``
(CSV) or as a JSON list. Labels name words of the clean prompt: in CSV as
``IO=John;S1=Mary;S2=Mary#2``, in JSONL as an object ``{"IO": "John", "S2": "Mary#2"}``.
Every problem is reported with the file, the row and what to change.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from patchsweep.datasets.base import PromptPair
from patchsweep.datasets.explicit import REQUIRED, pairs_from_config
from patchsweep.errors import DataError

SUFFIXES = (".csv", ".jsonl")


def pairs_from_file(path: str | Path) -> list[PromptPair]:
    """Read and check every row of a CSV or JSONL prompt file."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise DataError(
            f"{path}: unknown prompt file type {path.suffix!r}",
            f"use a {' or '.join(SUFFIXES)} file",
        )
    if not path.is_file():
        raise DataError(f"{path} does not exist", "set dataset.options.path to your file")
    rows = _read_csv(path) if path.suffix == ".csv" else _read_jsonl(path)
    if not rows:
        raise DataError(f"{path} has no prompt rows", "add at least one row below the header")
    return pairs_from_config(rows, source=str(path))


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"{path}: the header lacks column(s) {', '.join(missing)}",
                f"the first line must name the columns {', '.join(REQUIRED)} "
                "(labels and template optional)",
            )
        rows = []
        for number, row in enumerate(reader, start=2):
            if None in row or any(row.get(c) in (None, "") for c in REQUIRED):
                raise DataError(
                    f"{path}, line {number}: malformed row (a missing value or an extra comma)",
                    "give each row exactly the header's columns; quote cells with commas",
                )
            rows.append(
                {
                    "clean": row["clean"],
                    "corrupted": row["corrupted"],
                    "correct": row["correct"].split("|"),
                    "incorrect": row["incorrect"].split("|"),
                    "labels": _csv_labels(row.get("labels") or "", path, number),
                    "template": row.get("template") or "",
                    "origin": f"{path}, line {number}",
                }
            )
    return rows


def _csv_labels(cell: str, path: Path, number: int) -> dict[str, str]:
    labels = {}
    for item in filter(None, (part.strip() for part in cell.split(";"))):
        name, sep, word = item.partition("=")
        if not sep or not name or not word:
            raise DataError(
                f"{path}, line {number}: label {item!r} is not NAME=word",
                "write labels as IO=John;S1=Mary;S2=Mary#2",
            )
        labels[name.strip()] = word.strip()
    return labels


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}, line {number}: not valid JSON ({exc.msg})",
                "write one JSON object per line",
            ) from exc
        if not isinstance(row, dict):
            raise DataError(f"{path}, line {number}: not a JSON object", "write {...} per line")
        missing = [c for c in REQUIRED if c not in row]
        if missing:
            raise DataError(
                f"{path}, line {number}: lacks {', '.join(missing)}",
                f"give every row {', '.join(REQUIRED)} (labels and template optional)",
            )
        rows.append({**row, "origin": f"{path}, line {number}"})
    return rows
