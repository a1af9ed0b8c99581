"""Markdown and HTML pieces the report pages share: escaping, tables, figures, numbers.

Every page is self-contained: PNGs are embedded as data URIs and vector versions linked
by relative path, never by URL, so a report opens the same from any folder or archive.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
from pathlib import Path

from patchsweep.io import staged


def format_number(value: object, spec: str) -> str:
    """A number for a report table; ``n/a`` for a missing (None) or non-finite one."""
    if value is None:  # JSON's stand-in for NaN (an s.e.m. over one prompt)
        return "n/a"
    number = float(value)  # type: ignore[arg-type]
    return format(number, spec) if math.isfinite(number) else "n/a"


def escape_md(text: str) -> str:
    """Escape Markdown syntax in tokens and names; ``_`` inside a word needs none."""
    text = re.sub(r"([\\`*\[\]<>|#])", r"\\\1", text)
    return re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", text)


def md_figures(name: str, figures: list[Path], out_dir: Path) -> list[str]:
    """PNGs as Markdown images, other formats as links, all by relative path."""
    pngs = [f for f in figures if f.suffix == ".png"]
    lines = [f"![{escape_md(name)}]({relative_path(f, out_dir)})" for f in pngs]
    others = [
        f"[{f.suffix[1:].upper()}]({relative_path(f, out_dir)})"
        for f in figures
        if f.suffix != ".png"
    ]
    if others:
        lines.append(("Also as: " if pngs else "Figure: ") + ", ".join(others))
    return [*lines, ""] if lines else []


def html_table(
    header: tuple[str, ...], rows: list[tuple[str, ...]], numeric: tuple[int, ...]
) -> str:
    """An escaped HTML table; the ``numeric`` columns are right-aligned, tabular figures."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{html.escape(c)}</td>'
            if i in numeric
            else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table>\n<tr>{head}</tr>\n" + "\n".join(body) + "\n</table>"


def html_figures(name: str, figures: list[Path], out_dir: Path) -> list[str]:
    """PNGs embedded as data URIs; vector versions linked by relative path, never by URL."""
    out = []
    for figure in figures:
        if figure.suffix == ".png":
            # staged: inside publish_together the new PNG is still a temporary
            data = base64.b64encode(staged(figure).read_bytes()).decode("ascii")
            out.append(f'<p><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"></p>')
    links = [
        f'<a href="{html.escape(relative_path(f, out_dir))}">{f.suffix[1:].upper()}</a>'
        for f in figures
        if f.suffix != ".png"
    ]
    if links:
        out.append(f'<p class="note">Vector versions beside this report: {", ".join(links)}</p>')
    return out


def relative_path(path: Path, out_dir: Path) -> str:
    """``path`` relative to the report's folder, with ``/`` on every platform."""
    return Path(os.path.relpath(path, out_dir)).as_posix()
