"""The report's validity section: ``baselines.json``'s ``validity`` as a short table.

A reader trusts the figures only as far as the engine reproduces the unpatched runs, so
the page shows each check's largest deviation beside its tolerance, and each run's
answer accuracy (see :mod:`patchsweep.validity` for the checks and definitions).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

from patchsweep.plotting.markup import escape_md, html_table

TITLE = "Validity checks"
HEADER = ("check", "must reproduce", "max deviation", "tolerance", "result")
# baselines.json key → what was patched, in the order the table lists them
CHECKS = {
    "resid_layer0_denoise": "whole residual stream at layer 0, denoise",
    "resid_layer0_noise": "whole residual stream at layer 0, noise",
    "empty_patch_corrupted": "empty patch of the corrupted run",
    "empty_patch_clean": "empty patch of the clean run",
}
NOT_RECORDED = "Not recorded in baselines.json: rerun the normalize stage to run them."


def validity_rows(validity: Mapping[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """One row per check found: what, which run, deviation, tolerance, pass or FAIL."""
    rows = []
    for key, what in CHECKS.items():
        check = validity.get(key)
        if not isinstance(check, Mapping):
            continue
        result = "pass" if check.get("passed") else "FAIL"
        run = f"{check.get('expected', '?')} run"
        rows.append(
            (what, run, _small(check.get("max_deviation")), _small(check.get("tolerance")), result)
        )
    return rows


def accuracy_text(validity: Mapping[str, Any]) -> str:
    """``Answer accuracy (logit_diff > 0): clean 100.0%, corrupted 0.0%.``, or why none."""
    accuracy = validity.get("accuracy")
    if not isinstance(accuracy, Mapping):
        return ""
    definition = str(accuracy.get("definition", ""))
    if accuracy.get("clean") is None:
        return f"Answer accuracy: {definition}."
    runs = ", ".join(f"{run} {_share(accuracy.get(run))}" for run in ("clean", "corrupted"))
    return f"Answer accuracy ({definition}): {runs}."


def markdown_section(baselines: Mapping[str, Any]) -> list[str]:
    """The section's Markdown lines."""
    validity = baselines.get("validity")
    out = [f"## {TITLE}", ""]
    if not isinstance(validity, Mapping):
        return [*out, NOT_RECORDED, ""]
    out += ["| " + " | ".join(HEADER) + " |", "|---|---|---:|---:|---|"]
    out += ["| " + " | ".join(escape_md(c) for c in row) + " |" for row in validity_rows(validity)]
    text = accuracy_text(validity)
    return [*out, "", *([escape_md(text), ""] if text else [])]


def html_section(baselines: Mapping[str, Any]) -> list[str]:
    """The section's HTML lines."""
    validity = baselines.get("validity")
    out = [f"<h2>{TITLE}</h2>"]
    if not isinstance(validity, Mapping):
        return [*out, f"<p>{html.escape(NOT_RECORDED)}</p>"]
    out.append(html_table(HEADER, validity_rows(validity), numeric=(2, 3)))
    text = accuracy_text(validity)
    return [*out, *([f"<p>{html.escape(text)}</p>"] if text else [])]


def _small(value: object) -> str:
    if value is None or not math.isfinite(float(value)):  # type: ignore[arg-type]
        return "n/a" if value is None else str(value)
    return f"{float(value):.2g}"  # type: ignore[arg-type]


def _share(value: object) -> str:
    if value is None or not math.isfinite(float(value)):  # type: ignore[arg-type]
        return "n/a"
    return f"{float(value):.1%}"  # type: ignore[arg-type]
