"""What the plot settings may be, checked before any figure is drawn.

A bad colormap, number format, figure format or resolution would otherwise fail in the
middle of rendering, after some figures were written. This module imports matplotlib's
core only (no pandas, no torch, no figure code), so that the compose stage can check the
plot settings too at little cost.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, is_dataclass
from functools import partial
from typing import Any

import matplotlib as mpl

from patchsweep.errors import ConfigError

FORMATS = ("png", "pdf", "svg")  # the formats save_figure writes with constant metadata
# Below 10 dpi a PNG is unreadable; above 1200 a wide figure passes Agg's 65536-pixel limit.
DPI_RANGE = (10, 1200)
MAX_INCHES = 50.0  # panel width or height: 50 in × 1200 dpi still fits Agg
MAX_POINTS = 72.0  # font size


def check_style(settings: Any, key: str = "plot") -> None:
    """Refuse plot settings that would fail mid-render, after some figures were written.

    Checks the colormap, the annotation format, the figure formats, the resolution and
    the other numbers, against what matplotlib and :func:`save_figure` can do.

    Args:
        settings: The plot config group: a dataclass (``PlotConfig``, :class:`PlotStyle`)
            or a mapping; keys it lacks are not checked.
        key: The config group's name, for messages (``plot.cmap``).

    Raises:
        ConfigError: naming the first bad key, its value and the fix.
    """
    fields = asdict(settings) if is_dataclass(settings) else dict(settings)
    checks = {
        "cmap": _check_cmap,
        "annotate_fmt": _check_annotate_fmt,
        "formats": _check_formats,
        "dpi": _check_dpi,
        "annotate": _check_annotate,
        "top_k": _check_top_k,
        "width": partial(_check_size, most=MAX_INCHES),
        "height": partial(_check_size, most=MAX_INCHES),
        "font_size": partial(_check_size, most=MAX_POINTS),
    }
    for name, check in checks.items():
        if name in fields:
            check(fields[name], f"{key}.{name}")


def _check_cmap(value: object, key: str) -> None:
    if isinstance(value, str) and value in mpl.colormaps:
        return
    names = {name.lower(): name for name in mpl.colormaps}  # "rdbu_r" means RdBu_r
    close = [names[n] for n in difflib.get_close_matches(str(value).lower(), names, n=3)]
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigError(
        f"{key} is {value!r}, which is not a matplotlib colormap",
        f"{hint}use a diverging colormap centred at 0 such as RdBu_r, coolwarm or PiYG "
        "(all names: matplotlib.colormaps)",
    )


def _check_annotate_fmt(value: object, key: str) -> None:
    try:  # the values cells and report tables show: ordinary, tiny negative, missing
        for sample in (1.0, -123.456, -1e-9, math.nan):
            format_value(sample, str(value))
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{key} is {value!r}, which is not a format spec for numbers ({exc})",
            f"use a Python format spec without braces, such as .2f, .3g or .1%; set {key}",
        ) from exc


def _check_formats(value: object, key: str) -> None:
    from matplotlib.backend_bases import FigureCanvasBase

    known = FigureCanvasBase.get_supported_filetypes()
    usable = [fmt for fmt in FORMATS if fmt in known]
    formats = [value] if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    for fmt in formats:
        if str(fmt).lower() not in usable:
            why = (
                "is written without reproducible bytes"
                if str(fmt).lower() in known
                else ("is not a figure format matplotlib writes")
            )
            raise ConfigError(
                f"{key} has {fmt!r}, which {why}",
                f"list only {', '.join(usable)} in {key}",
            )


def _check_dpi(value: object, key: str) -> None:
    low, high = DPI_RANGE
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(
            f"{key} is {value!r}, outside {low}..{high}",
            f"set {key} between {low} and {high}: 200 for screens, 300-600 for print",
        )


def _check_annotate(value: object, key: str) -> None:
    if str(value).lower() not in ("auto", "true", "false"):
        raise ConfigError(f"{key} is {value!r}", f"set {key} to auto, true or false")


def _check_top_k(value: object, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} is {value!r}", f"set {key} to a whole number of at least 1")


def _check_size(value: object, key: str, most: float) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and 0 < value <= most):  # type: ignore[operator]
        raise ConfigError(f"{key} is {value!r}", f"set {key} above 0 and at most {most:g}")


def format_value(value: float, spec: str) -> str:
    """``format`` with a true minus sign and without the puzzling ``-0.00``.

    A negative value that rounds to zero prints as zero does, compared as text so that
    specs whose output is no plain number (``.1%``) work too.
    """
    text = format(value, spec)
    if text.startswith("-") and text[1:] == format(0.0, spec).lstrip("+ "):
        text = text[1:]
    return text.replace("-", "\u2212")
