"""Prompt pairs from the user's own CSV or JSONL file (``dataset.generator: file``).

Columns (CSV header or JSON keys): ``clean``, ``corrupted``, ``correct``, ``incorrect``,
optional ``labels`` and ``template``. Several answers go in one cell separated by ``|``
(CSV) or as a JSON list. Labels name words of the clean prompt: in CSV as
``IO=John;S1=Mary;S2=Mary#2``, in JSONL as an object ``{"IO": "John", "S2": "Mary#2"}``.
Files are UTF-8, with or without a byte-order mark. Every problem is reported with the
file, the physical line (where a row starts) and what to change.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
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
    text = _read_text(path)
    rows = _read_csv(path, text) if path.suffix == ".csv" else _read_jsonl(path, text)
    if not rows:
        raise DataError(f"{path} has no prompt rows", "add at least one row below the header")
    return pairs_from_config(rows, source=str(path))


def _read_text(path: Path) -> str:
    """The file's text. ``utf-8-sig`` drops the byte-order mark that Excel and Notepad
    write, which would otherwise stick to the first column name ("\\ufeffclean")."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        body = exc.object  # the bytes after any byte-order mark
        offset = len(data) - len(body) + exc.start
        line = body.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}, line {line}: byte {body[exc.start]:#04x} at byte offset {offset} is "
            "not UTF-8 (the file was probably saved as Latin-1 or Windows-1252)",
            "save it as UTF-8 (your editor's 'Save with encoding', or "
            f"`iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}`)",
        ) from exc


def _read_csv(path: Path, text: str) -> list[dict[str, Any]]:
    records = _csv_records(path, text)
    first = next(records, None)
    header = first[2] if first else []
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise DataError(
            f"{path}: the header lacks column(s) {', '.join(missing)}",
            f"the first line must name the columns {', '.join(REQUIRED)} "
            "(labels and template optional)",
        )
    return [_csv_row(header, cells, path, start, end) for start, end, cells in records]


def _csv_records(path: Path, text: str) -> Iterator[tuple[int, int, list[str]]]:
    """Each non-blank CSV record with the physical lines it starts and ends on.

    Counting records would misnumber every line after a blank line (which csv skips)
    or a quoted cell that spans lines; the reader's own line count does not.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    end = 0
    while True:
        start = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(
                f"{path}, line {start}: not readable as CSV ({exc})",
                "give each row the header's columns, separated by commas; quote cells "
                'that hold commas or line breaks ("...")',
            ) from exc
        end = reader.line_num
        if cells:
            yield start, end, cells


def _csv_row(
    header: list[str], cells: list[str], path: Path, start: int, end: int
) -> dict[str, Any]:
    """One record as the mapping :func:`pairs_from_config` reads, named by its first line."""
    row = dict(zip(header, cells, strict=False))
    if len(cells) > len(header) or any(not row.get(c) for c in REQUIRED):
        runs_on = f"; it runs on to line {end}: is a quote left open?" if end > start else ""
        raise DataError(
            f"{path}, line {start}: malformed row (a missing value or an extra comma)" + runs_on,
            "give each row exactly the header's columns; quote cells with commas",
        )
    return {
        "clean": row["clean"],
        "corrupted": row["corrupted"],
        "correct": row["correct"].split("|"),
        "incorrect": row["incorrect"].split("|"),
        "labels": _csv_labels(row.get("labels") or "", path, start),
        "template": row.get("template") or "",
        "origin": f"{path}, line {start}",
    }


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


def _read_jsonl(path: Path, text: str) -> list[dict[str, Any]]:
    rows = []
    # JSON Lines ends lines with "\n" only; str.splitlines() would also split at
    # characters JSON strings may hold raw (U+2028), and misnumber the lines after.
    for number, line in enumerate(text.split("\n"), start=1):
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
