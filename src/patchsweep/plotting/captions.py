"""What each figure shows, in words: the caption under it in the report and in its metadata.

Titles are one line (sweep · model · dataset). Everything else a reader needs to read a
figure on its own goes here: what was patched in which direction, the metric and how it
was normalised, what the colour or the lines mean, over how many prompts and how noisy.
"""

from __future__ import annotations

import pandas as pd

from patchsweep.plotting.labels import shows_indices
from patchsweep.plotting.style import (
    DIRECTION_HOW,
    DIRECTION_NOUNS,
    DIRECTION_VERBS,
    ExperimentInfo,
    sem_line,
)

# The ``normalization`` column of results.csv; a table without one is normalised with
# the dataset's mean clean and corrupted metric.
NORMALISATIONS = {
    "dataset": "normalised with dataset means: (patched − mean corrupted) / "
    "(mean clean − mean corrupted), means over the prompts",
    "per_prompt": "normalised per prompt: (patched − corrupted) / (clean − corrupted) with "
    "each prompt's own clean and corrupted metric, then averaged over the prompts",
}
DEFAULT_NORMALISATION = "dataset"
COLOUR = {
    "denoise": "colour and cell values: the normalised effect, 0 (white) = as the corrupted "
    "run, 1 = as the clean run",
    "noise": "colour and cell values: normalised − 1, the drop from clean: 0 (white) = no "
    "effect, −1 = as the corrupted run",
}
INDEX_NOTE = (
    "Positions without a role label are shown by their index: their tokens differ between prompts"
)


def normalisation_text(table: pd.DataFrame) -> str:
    """How ``table``'s ``normalized`` was computed, from its ``normalization`` column."""
    if "normalization" in table.columns and len(table):
        kinds = sorted({str(kind) for kind in table["normalization"]})
    else:
        kinds = [DEFAULT_NORMALISATION]
    return "; ".join(NORMALISATIONS.get(kind, f"normalised as {kind!r}") for kind in kinds)


def heatmap_caption(sweeps: list[pd.DataFrame], info: ExperimentInfo, axes: str) -> str:
    """Caption of a heatmap of one sweep, or of several side by side on one colour scale.

    Args:
        sweeps: The sweeps drawn, in panel order; one direction.
        info: Model, dataset and metric.
        axes: What the grid's axes are, e.g. ``layer × position``.
    """
    both = pd.concat(sweeps, ignore_index=True)
    direction = str(both["direction"].iloc[0])
    window = int(both["window"].max())
    if len(sweeps) == 1:
        what = f"{_component(sweeps[0])} (sweep {_name(sweeps[0])}) by {axes}"
    else:
        what = _join([f"{_component(s)} ({_name(s)})" for s in sweeps])
        what += f" by {axes}, side by side on one colour scale"
    sentences = [
        f"{DIRECTION_VERBS.get(direction, direction)} {what}"
        + (f", {window}-layer windows" if window > 1 else ""),
        DIRECTION_HOW.get(direction, direction),
        f"{info.metric_label}, {normalisation_text(both)}",
        COLOUR.get(direction, COLOUR["denoise"]),
        _sem_text(both, "± under a cell's value: its s.e.m."),
    ]
    if window > 1:
        sentences.append("rows name the layers each window patches")
    if shows_indices(both):
        sentences.append(INDEX_NOTE)
    return _sentences(sentences)


def scale_text(rows: pd.DataFrame, info: ExperimentInfo) -> str:
    """One sentence on the scale: the metric and its normalisation."""
    return _sentences(
        [f"{info.metric_label}, {normalisation_text(rows)}: 0 = corrupted, 1 = clean"]
    )


def line_caption(
    sweep: pd.DataFrame, info: ExperimentInfo, partner: pd.DataFrame | None = None
) -> str:
    """Caption of a line plot of one layer sweep, and its other-direction partner (dashed)."""
    drawn = [sweep] if partner is None else [sweep, partner]
    both = pd.concat(drawn, ignore_index=True)
    direction = str(sweep["direction"].iloc[0])
    what = f"{DIRECTION_VERBS.get(direction, direction)} {_component(sweep)} by layer"
    what += f", sweep {_name(sweep)} (solid)"
    if partner is not None:
        other = str(partner["direction"].iloc[0])
        what += f", and {DIRECTION_NOUNS.get(other, other)}, sweep {_name(partner)} (dashed)"
    sentences = [what]
    for frame in drawn:
        frame_direction = str(frame["direction"].iloc[0])
        verb = DIRECTION_VERBS.get(frame_direction, frame_direction)
        sentences.append(f"{verb}: {DIRECTION_HOW.get(frame_direction, frame_direction)}")
    sentences += [
        f"{info.metric_label}, {normalisation_text(both)}; dotted lines: the corrupted (0) "
        "and clean (1) levels",
        _sem_text(both, "band = ±1 s.e.m."),
    ]
    if sweep["window"].nunique() > 1:
        sentences.append("one line per window size, at the first layer of each window")
    elif int(sweep["window"].max()) > 1:
        window = int(sweep["window"].max())
        sentences.append(f"each point patches {window} layers from there on, or up to the last")
    return _sentences(sentences)


def _component(sweep: pd.DataFrame) -> str:
    return str(sweep["component"].iloc[0])


def _name(sweep: pd.DataFrame) -> str:
    return str(sweep["sweep"].iloc[0])


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _sem_text(rows: pd.DataFrame, shown: str) -> str:
    """Prompts and s.e.m., and how the figure shows the s.e.m. where there is one."""
    text = sem_line(rows["sem"], int(rows["n_prompts"].max()))
    return text + f"; {shown}" if rows["sem"].notna().any() else text


def _sentences(parts: list[str]) -> str:
    """Clauses as sentences: capitalised, each ending in a full stop."""
    return " ".join(
        part[0].upper() + part[1:] + ("" if part.endswith(".") else ".") for part in parts if part
    )
