"""The report's "Attribution patching" section: how far each gradient estimate holds up.

Built from ``attribution_check.json`` (one entry per attribution sweep) and the two figures
of each sweep. The table puts the estimate's agreement with exact patching (Pearson r,
Spearman ρ, recall@k) next to what it cost (model passes), because that trade is the only
reason to run attribution patching; the false negatives are listed by site, since a site
the ranking missed is the error that a reader acting on the top-k cannot see.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from patchsweep.plotting.attribution import figure_stems
from patchsweep.plotting.markup import (
    escape_md,
    format_number,
    html_figures,
    html_table,
    md_figures,
)

TITLE = "Attribution patching"
HEADER = (
    "sweep", "component", "direction", "compared with", "k", "verified / sites",
    "Pearson r", "Spearman ρ", "recall@k",
    "passes: attribution", "passes: verification", "passes: exact sweep",
)  # fmt: skip
_NUMERIC = (4, 5, 6, 7, 8)
INTRO = (
    "Attribution patching (AtP) estimates every site's patching effect at once from one "
    "forward and one backward pass, instead of one forward pass per site: effect ≈ (source "
    "− target activation) · ∂metric/∂activation, the first-order term of the metric around "
    "the run being patched, shown on the same normalised scale as exact patching. Being "
    "first-order, it can miss sites where the metric is far from linear in the activation "
    "(saturated attention, for instance). The top k sites of its ranking and a random "
    "control sample are verified by exact patching; Pearson r and Spearman ρ compare the "
    "estimate with exact patching on those sites. recall@k is the share of the exact "
    "sweep's top k sites that the estimate's top k finds (n/a without an exact sweep over "
    "the same sites). Passes count model runs over the prompts."
)
COMPARISON_CAPTION = (
    "Left: the AtP estimate at every site. Right: exact activation patching, the ground "
    "truth: {what}. One colour scale for both: a site whose colours differ is mis-estimated."
)
NOISE_NOTE = (
    " Noising: both panels show normalised − 1, the drop from clean (0, white = no effect)."
)
SCATTER_CAPTION = (
    "Each point is one site: AtP estimate (x) against exact patching (y, ground truth). On "
    "the dotted diagonal the estimate is exact; below it the estimate exceeds the exact "
    "effect, above it falls short."
)


def markdown_section(
    checks: Mapping[str, Mapping[str, Any]],
    figures: Mapping[str, list[Path]],
    spec: str,
    out_dir: Path,
    shown_captions: Mapping[str, str] | None = None,
) -> list[str]:
    """The section as Markdown lines; none when there are no attribution sweeps.

    Args:
        checks: Sweep name → its ``attribution_check.json`` entry, in report order.
        figures: Figure files by stem (``<sweep>_vs_exact``, ``<sweep>_scatter``).
        spec: Number format of the tables.
        out_dir: Folder of the report, for relative figure links.
        shown_captions: Caption by figure stem, as the figures' metadata has it; a
            figure missing from it gets :func:`captions`.
    """
    if not checks:
        return []
    out = [f"## {TITLE}", "", escape_md(INTRO), ""]
    out += ["| " + " | ".join(escape_md(h) for h in HEADER) + " |"]
    out += ["|" + "|".join("---:" if i in _NUMERIC else "---" for i in range(len(HEADER))) + "|"]
    out += ["| " + " | ".join(escape_md(c) for c in summary_row(name, check, spec)) + " |"
            for name, check in checks.items()]  # fmt: skip
    out.append("")
    for name, check in checks.items():
        out += [f"### {escape_md(name)}", "", escape_md(false_negative_text(check)), ""]
        out += [f"- {escape_md(item)}" for item in false_negatives(check, spec)]
        out += [""] if check.get("false_negatives") else []
        for stem, caption in zip(figure_stems(name), captions(check), strict=True):
            caption = (shown_captions or {}).get(stem, caption)
            shown = md_figures(stem, figures.get(stem, []), out_dir)
            out += [*shown, escape_md(caption), ""] if shown else []
    return out


def html_section(
    checks: Mapping[str, Mapping[str, Any]],
    figures: Mapping[str, list[Path]],
    spec: str,
    out_dir: Path,
    shown_captions: Mapping[str, str] | None = None,
) -> list[str]:
    """The section as HTML lines; none when there are no attribution sweeps.

    Args: as :func:`markdown_section`.
    """
    if not checks:
        return []
    esc = html.escape
    out = [f'<h2 id="attribution-patching">{TITLE}</h2>', f"<p>{esc(INTRO)}</p>"]
    rows = [summary_row(name, check, spec) for name, check in checks.items()]
    out.append(html_table(HEADER, rows, numeric=_NUMERIC))
    for name, check in checks.items():
        out += [
            f'<h3 id="{esc(name)}">{esc(name)}</h3>',
            f"<p>{esc(false_negative_text(check))}</p>",
        ]
        items = false_negatives(check, spec)
        if items:
            out.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in items) + "</ul>")
        for stem, caption in zip(figure_stems(name), captions(check), strict=True):
            caption = (shown_captions or {}).get(stem, caption)
            shown = html_figures(stem, figures.get(stem, []), out_dir)
            out += [*shown, f'<p class="note">{esc(caption)}</p>'] if shown else []
    return out


def summary_row(name: str, check: Mapping[str, Any], spec: str) -> tuple[str, ...]:
    """One row of the table: what was estimated, how well, and at what cost."""
    passes = check.get("passes") or {}
    verified = f"{_count(check.get('n_verified'))} / {_count(check.get('n_sites'))}"
    if check.get("n_control"):
        verified += f" (incl. {_count(check['n_control'])} control)"
    return (
        name,
        str(check.get("component", "n/a")),
        str(check.get("direction", "n/a")),
        str(check.get("compared_with") or "none"),
        _count(check.get("k")),
        verified,
        format_number(check.get("pearson"), spec),
        format_number(check.get("spearman"), spec),
        format_number(check.get("recall_at_k"), spec),
        *(pass_text(passes.get(key)) for key in ("attribution", "verification", "exact_sweep")),
    )


def pass_text(passes: Mapping[str, int] | None) -> str:
    """``1 forward + 1 backward``; ``n/a`` where the check has no count."""
    if not passes:
        return "n/a"
    parts = [f"{passes[kind]} {kind}" for kind in ("forward", "backward") if passes.get(kind)]
    return " + ".join(parts) or "0"


def false_negative_text(check: Mapping[str, Any]) -> str:
    """The sentence that introduces the false negatives, or says why there are none."""
    found, k = check.get("false_negatives") or [], _count(check.get("k"))
    if found:
        return f"False negatives: sites in the exact top {k} that the estimate's top {k} missed:"
    if check.get("compared_with"):
        return f"No false negatives: the estimate's top {k} holds every site of the exact top {k}."
    return "No exact sweep over the same sites, so false negatives were not measured."


def false_negatives(check: Mapping[str, Any], spec: str) -> list[str]:
    """``L1 H2: exact 0.31, estimate 0.02`` per false negative, in the check's order."""
    return [
        f"{_site(entry)}: exact {format_number(entry.get('exact'), spec)}, "
        f"estimate {format_number(entry.get('estimate'), spec)}"
        for entry in check.get("false_negatives") or []
    ]


def captions(check: Mapping[str, Any]) -> tuple[str, str]:
    """Captions of the comparison figure and the scatter, in :func:`figure_stems` order."""
    other = check.get("compared_with")
    what = (
        f"every site, from the exact sweep {other}"
        if other
        else "the verified sites only; grey cells were not verified"
    )
    comparison = COMPARISON_CAPTION.format(what=what)
    if check.get("direction") == "noise":
        comparison += NOISE_NOTE
    return comparison, SCATTER_CAPTION


def _site(entry: Mapping[str, Any]) -> str:
    """``L1 H2 (S2)``: false negatives carry layer, head and position label."""
    layer, window = int(entry.get("layer", -1)), int(entry.get("window", 1))
    parts = [f"L{layer}" if window == 1 else f"L{layer}–{layer + window - 1}"]
    if int(entry.get("head", -1)) >= 0:
        parts.append(f"H{int(entry['head'])}")
    label = str(entry.get("position_label", ""))
    if int(entry.get("position", -1)) >= 0:
        parts.append(f"pos {int(entry['position'])}")
    if label.strip() and label not in ("all", str(entry.get("position"))):
        parts.append(f"({label})")
    return " ".join(parts)


def _count(value: object) -> str:
    return "n/a" if value is None else str(value)
