"""Per-experiment report: ``report.md``, a self-contained ``report.html`` and a metrics JSON.

Sites are ranked by the size of their *effect*, which depends on the direction: denoising
starts from the corrupted run, so the effect is ``normalized`` itself; noising starts from
the clean run, so the effect is the drop ``1 - normalized``. Ranking a noising sweep by
``|normalized|`` would list the sites that changed nothing.

``top_components.json`` is meant for DVC's ``metrics:``. Leaves are numbers where possible
(``dvc metrics diff`` only diffs numbers): the top sites' ``layer``/``head``/``position``
are numeric so a diff shows when the most important site moves, not only when its value
changes; the human-readable ``site`` string is shown by ``dvc metrics show``. A missing
s.e.m. (one prompt) is written as ``null`` because JSON has no NaN. Attribution sweeps
follow the exact ones, marked ``"method": "attribution"``: their ranking is the estimate's.
The report's attribution section is built in :mod:`patchsweep.plotting.attribution_report`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from patchsweep.io import json_text, write_text
from patchsweep.plotting.attribution import AttributionSweep, figure_stems
from patchsweep.plotting.attribution_report import html_section, markdown_section
from patchsweep.plotting.captions import normalisation_text
from patchsweep.plotting.labels import layer_span
from patchsweep.plotting.markup import (
    escape_md,
    format_number,
    html_figures,
    html_table,
    md_figures,
)
from patchsweep.plotting.style import (
    DIRECTION_VERBS,
    ExperimentInfo,
    PlotStyle,
)
from patchsweep.plotting.validity_report import html_section as validity_html
from patchsweep.plotting.validity_report import markdown_section as validity_markdown

if TYPE_CHECKING:  # figures imports this module: only the type, to avoid a cycle
    from patchsweep.plotting.figures import FigurePlan

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
TOP_COMPONENTS = "top_components.json"

_CSS = """
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.5em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #ccc;padding:.25em .6em}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #eee}p.note{color:#555;font-size:.92em}
code{background:#f4f4f4;padding:0 .2em}
""".strip()


def effect(direction: str, normalized: pd.Series) -> pd.Series:
    """Signed effect of patching: recovery from 0 (denoise) or drop from 1 (noise)."""
    return 1.0 - normalized if direction == "noise" else normalized


def top_sites(sweep: pd.DataFrame, k: int) -> pd.DataFrame:
    """The ``k`` sites of one sweep with the largest |effect|, largest first.

    Ties (and NaN effects, which go last) are broken by layer, head, position, so the
    order never depends on the row order of the input.
    """
    direction = str(sweep["direction"].iloc[0])
    ranked = sweep.assign(effect=effect(direction, sweep["normalized"]))
    ranked = ranked.assign(_size=ranked["effect"].abs().fillna(-1.0))
    ranked = ranked.sort_values(
        ["_size", "layer", "head", "position"],
        ascending=[False, True, True, True],
        kind="mergesort",
    )
    return ranked.drop(columns="_size").head(k).reset_index(drop=True)


def site_label(row: pd.Series) -> str:
    """Short site name such as ``L3 pos 5 (S2)``, ``L3 H7``, or ``L3–5`` for a window.

    A window is named by the layers it patches: ``last_layer`` where the row has it.
    """
    layer, window = int(row["layer"]), int(row["window"])
    last = int(row["last_layer"]) if "last_layer" in row.index else layer + window - 1
    parts = [f"L{layer_span(layer, last)}"]
    if int(row["head"]) >= 0:
        parts.append(f"H{int(row['head'])}")
    if int(row["position"]) >= 0:
        label = str(row["position_label"])
        shown = label.strip() or repr(label)
        parts.append(
            f"pos {int(row['position'])}" + ("" if label == str(row["position"]) else f" ({shown})")
        )
    return " ".join(parts)


def top_components(
    sweeps: Mapping[str, pd.DataFrame],
    k: int,
    estimates: Mapping[str, pd.DataFrame] | None = None,
) -> dict[str, dict]:
    """Per sweep, the top-``k`` sites as a DVC-metrics-friendly nested dict.

    Args:
        sweeps: Exact sweeps by name: ``{name: {component, direction, max_abs_effect,
            top1: {site, layer, head, position, normalized, sem, effect}, top2: …}}``.
        k: Sites per sweep.
        estimates: Attribution sweeps' estimates by name, listed after the exact sweeps
            in the same layout with ``"method": "attribution"`` first: their ``top<i>``
            are the estimate's ranking, not exact effects. Their verified exact values
            are in the report, not here, so a metrics diff never mixes the two.
    """
    result: dict[str, dict] = {}
    marked = [(name, sweep, {}) for name, sweep in sweeps.items()]
    marked += [
        (name, sweep, {"method": "attribution"}) for name, sweep in (estimates or {}).items()
    ]
    for name, sweep, marker in marked:
        entry: dict[str, object] = {
            **marker,
            "component": str(sweep["component"].iloc[0]),
            "direction": str(sweep["direction"].iloc[0]),
            "max_abs_effect": _number(
                effect(str(sweep["direction"].iloc[0]), sweep["normalized"]).abs().max()
            ),
        }
        for rank, row in top_sites(sweep, k).iterrows():
            entry[f"top{rank + 1}"] = {
                "site": site_label(row),
                "layer": int(row["layer"]),
                "head": int(row["head"]),
                "position": int(row["position"]),
                "normalized": _number(row["normalized"]),
                "sem": _number(row["sem"]),
                "effect": _number(row["effect"]),
            }
        result[name] = entry
    return result


def write_report_files(
    sweeps: dict[str, pd.DataFrame],
    baselines: dict,
    figures: list[Path],
    info: ExperimentInfo,
    style: PlotStyle,
    out_dir: Path,
    attribution: Mapping[str, AttributionSweep] | None = None,
    checks: Mapping[str, Mapping[str, Any]] | None = None,
    plans: list[FigurePlan] | None = None,
) -> list[Path]:
    """Write the three report files; see :func:`patchsweep.plotting.write_report`.

    ``attribution`` holds the table's attribution sweeps, ``checks`` the ``sweeps`` of
    ``attribution_check.json``; a sweep in either is listed in the attribution section.
    ``plans`` (from :func:`~patchsweep.plotting.figures.plan_figures`) say which figure
    draws which sweeps: each is shown once, with its caption, in the section of the first
    sweep it draws; the sections of the others point there. None: a figure per sweep,
    matched by file name, without captions.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    attribution, checks = attribution or {}, checks or {}
    by_stem: dict[str, list[Path]] = {}
    for figure in figures:
        by_stem.setdefault(Path(figure).stem, []).append(Path(figure))
    sections = _sections(sweeps, by_stem, plans, info, style)
    attributed = {**checks, **{n: a.facts for n, a in attribution.items()}}
    attributed_figures = {
        stem: by_stem.pop(stem, []) for name in attributed for stem in figure_stems(name)
    }
    extra = sorted(by_stem.items())
    spec = style.annotate_fmt
    shown_captions = {plan.stem: plan.caption for plan in plans or []}
    md_attribution = markdown_section(attributed, attributed_figures, spec, out_dir, shown_captions)
    html_attribution = html_section(attributed, attributed_figures, spec, out_dir, shown_captions)
    sweep_rows = pd.concat(sweeps.values(), ignore_index=True) if sweeps else pd.DataFrame()

    md_path, html_path, json_path = (
        out_dir / REPORT_MD,
        out_dir / REPORT_HTML,
        out_dir / TOP_COMPONENTS,
    )
    page = (sections, extra, baselines, info, style, out_dir, normalisation_text(sweep_rows))
    write_text(md_path, _markdown(md_attribution, *page))
    write_text(html_path, _html(html_attribution, *page))
    estimates = {name: sweep.estimate for name, sweep in attribution.items()}
    metrics = top_components(sweeps, style.top_k, estimates)
    write_text(json_path, json_text(metrics, sort_keys=False))
    return [md_path, html_path, json_path]


def _sections(
    sweeps: dict[str, pd.DataFrame],
    by_stem: dict[str, list[Path]],
    plans: list[FigurePlan] | None,
    info: ExperimentInfo,
    style: PlotStyle,
) -> list[tuple]:
    """Per exact sweep: name, description, top sites, figures shown here, a pointer note.

    Figures are ``(stem, caption, paths)``; the paths are taken out of ``by_stem``.
    """
    home: dict[str, str] = {}  # figure stem → the sweep whose section shows it
    for name in sweeps:
        for plan in plans or []:
            if name in plan.sweeps:
                home.setdefault(plan.stem, name)
    sections = []
    for name, sweep in sweeps.items():
        if plans is None:
            shown = [(name, "", by_stem.pop(name, []))]
        else:
            shown = [(p.stem, p.caption, by_stem.pop(p.stem, [])) for p in plans
                     if home.get(p.stem) == name]  # fmt: skip
        elsewhere = [
            f"{name} is drawn in the figure {p.stem}, under {home[p.stem]}."
            for p in plans or []
            if name in p.sweeps and home.get(p.stem) != name
        ]
        top = top_sites(sweep, style.top_k)
        sections.append((name, _describe(sweep, info), top, shown, " ".join(elsewhere)))
    return sections


def _describe(sweep: pd.DataFrame, info: ExperimentInfo) -> str:
    first = sweep.iloc[0]
    verb = DIRECTION_VERBS.get(str(first["direction"]), str(first["direction"]))
    by_head, by_position = bool((sweep["head"] >= 0).any()), bool((sweep["position"] >= 0).any())
    axes = ["layer", "head" if by_head else "", "position" if by_position else ""]
    what = " × ".join(a for a in axes if a)
    window = int(sweep["window"].max())
    windowed = f" ({window}-layer windows)" if window > 1 else ""
    return (
        f"{verb} {first['component']} by {what}{windowed}: {len(sweep)} sites, {info.metric_label}"
    )


def _number(value: object) -> float | None:
    # 4 decimals: float32 sweeps vary around the 6th decimal between processes on CPU
    number = float(value)  # type: ignore[arg-type]
    return round(number, 4) if math.isfinite(number) else None


def _accuracy(value: object) -> str:
    if value is None or not math.isfinite(float(value)):  # type: ignore[arg-type]
        return "n/a"
    return f"{float(value):.1%}"  # type: ignore[arg-type]


def _baseline_rows(baselines: dict, spec: str) -> list[tuple[str, str, str]]:
    rows = []
    for run in ("clean", "corrupted"):
        mean = format_number(baselines.get(run, math.nan), spec)
        sem = format_number(baselines.get(f"{run}_sem", math.nan), spec)
        value = mean + ("" if sem == "n/a" else f" ± {sem}")
        rows.append((run, value, _accuracy(baselines.get(f"{run}_accuracy"))))
    return rows


def _gap(baselines: dict, spec: str) -> str:
    gap = float(baselines.get("clean", math.nan)) - float(baselines.get("corrupted", math.nan))
    n = baselines.get("n_prompts", "n/a")
    unit = "the unit of the normalised scale"
    return f"Prompts: {n}. Clean − corrupted gap ({unit}): {format_number(gap, spec)}."


def _top_rows(top: pd.DataFrame, spec: str) -> list[tuple[str, str, str, str]]:
    rows = []
    for rank, row in top.iterrows():
        sem = format_number(row["sem"], spec)
        value = format_number(row["normalized"], spec) + ("" if sem == "n/a" else f" ± {sem}")
        rows.append((str(rank + 1), site_label(row), value, format_number(row["metric"], spec)))
    return rows


def _intro(baselines: dict, info: ExperimentInfo, normalisation: str) -> str:
    n = baselines.get("n_prompts", "n/a")
    return (
        f"Metric: {info.metric_label}, averaged over {n} prompts, {normalisation}: "
        "0 = corrupted, 1 = clean. Sites are ranked by |normalised| for denoising and by "
        "|1 − normalised| (the drop) for noising; noising heatmaps show normalised − 1, so "
        "that in both directions white is a site that does not matter."
    )


def _markdown(attribution, sections, extra, baselines, info, style, out_dir, normalisation) -> str:
    spec = style.annotate_fmt
    out = [
        f"# Activation patching — {escape_md(info.model)} on {escape_md(info.dataset)}",
        "",
        escape_md(_intro(baselines, info, normalisation)),
        "",
    ]
    out += [
        "## Baselines",
        "",
        f"| run | {escape_md(info.metric_label)} (mean ± s.e.m.) | top-1 accuracy |",
        "|---|---:|---:|",
    ]
    out += [f"| {run} | {value} | {acc} |" for run, value, acc in _baseline_rows(baselines, spec)]
    out += ["", escape_md(_gap(baselines, spec)), ""]
    out += validity_markdown(baselines)
    for name, description, top, shown, note in sections:
        out += [f"## {escape_md(name)}", "", escape_md(description) + ".", ""]
        out += [
            f"Top {len(top)} sites:",
            "",
            f"| rank | site | normalised ± s.e.m. | {escape_md(info.metric_label)} |",
            "|---:|---|---:|---:|",
        ]
        out += [f"| {r} | {escape_md(s)} | {v} | {m} |" for r, s, v, m in _top_rows(top, spec)]
        out.append("")
        for stem, caption, figures in shown:
            lines = md_figures(stem, figures, out_dir)
            out += [*lines, escape_md(caption), ""] if lines and caption else lines
        out += [escape_md(note), ""] if note else []
    out += attribution
    for stem, figures in extra:
        out += [f"## {escape_md(stem)}", "", *md_figures(stem, figures, out_dir)]
    return "\n".join(out).rstrip() + "\n"


def _html(attribution, sections, extra, baselines, info, style, out_dir, normalisation) -> str:
    spec, esc = style.annotate_fmt, html.escape
    title = f"Activation patching — {info.model} on {info.dataset}"
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">']
    out += [f"<title>{esc(title)}</title>", f"<style>\n{_CSS}\n</style>", "</head>", "<body>"]
    out += [
        f"<h1>{esc(title)}</h1>",
        f"<p>{esc(_intro(baselines, info, normalisation))}</p>",
        "<h2>Baselines</h2>",
    ]
    header = ("run", f"{info.metric_label} (mean ± s.e.m.)", "top-1 accuracy")
    out.append(html_table(header, _baseline_rows(baselines, spec), numeric=(1, 2)))
    out.append(f"<p>{esc(_gap(baselines, spec))}</p>")
    out += validity_html(baselines)
    for name, description, top, shown, note in sections:
        out += [f'<h2 id="{esc(name)}">{esc(name)}</h2>', f"<p>{esc(description)}.</p>"]
        header = ("rank", "site", "normalised ± s.e.m.", info.metric_label)
        out.append(html_table(header, _top_rows(top, spec), numeric=(0, 2, 3)))
        for stem, caption, figures in shown:
            lines = html_figures(stem, figures, out_dir)
            out += [*lines, f'<p class="note">{esc(caption)}</p>'] if lines and caption else lines
        out += [f'<p class="note">{esc(note)}</p>'] if note else []
    out += attribution
    for stem, figures in extra:
        out += [f'<h2 id="{esc(stem)}">{esc(stem)}</h2>', *html_figures(stem, figures, out_dir)]
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"
