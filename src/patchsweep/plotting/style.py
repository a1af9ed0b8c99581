"""How figures look, what they say, and how they are written so that reruns are byte-identical.

DVC decides whether a stage's outputs changed by hashing them, so a figure that embeds a
timestamp, a library version or a random SVG id would look "changed" on every rerun. All
saving goes through :func:`save_figure`, which strips those, and through atomic writes, so
an interrupted run never leaves a half-written file that a later ``dvc commit`` would hash.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure

from patchsweep.io import write_bytes
from patchsweep.plotting.settings import FORMATS

# Constant metadata: the default ones carry the matplotlib version and the current time.
_SOFTWARE = "patchsweep"
_METADATA: dict[str, dict[str, str | None]] = {
    "png": {"Software": _SOFTWARE},
    "pdf": {"Creator": _SOFTWARE, "Producer": _SOFTWARE, "CreationDate": None, "ModDate": None},
    "svg": {"Creator": _SOFTWARE, "Date": None},
}
_CAPTION_KEY = {"png": "Description", "pdf": "Subject", "svg": "Description"}
TITLE_SEPARATOR = " · "
CHAR_EM = 0.6  # average DejaVu Sans glyph width, in ems: enough to size cells and labels

DIRECTION_VERBS = {"denoise": "Denoising", "noise": "Noising"}
DIRECTION_NOUNS = {"denoise": "denoising", "noise": "noising"}
DIRECTION_HOW = {
    "denoise": "clean activations patched into the corrupted run; "
    "recovery toward 1 marks a site that matters",
    "noise": "corrupted activations patched into the clean run; "
    "a drop from 1 marks a site that matters",
}


@dataclass
class PlotStyle:
    """Look of every figure; one instance is shared by all figures of an experiment.

    ``width`` and ``height`` are minimums: a panel grows with the number of positions,
    heads and layers so tick labels never overlap and annotations fit their cells.
    """

    width: float = 5.0  # minimum panel width, inches
    height: float = 3.2  # minimum panel height, inches
    dpi: int = 200  # PNG resolution; PDF and SVG are vector
    font_family: str = "DejaVu Sans"  # ships with matplotlib, so renders the same everywhere
    font_size: float = 9.0  # base size, points; titles +1, cell annotations -2
    cmap: str = "RdBu_r"  # diverging, centred at 0: white = corrupted-like, red = clean-like
    annotate: bool | str = "auto"  # write values in cells: "auto" = ≤ 400 cells that fit text
    annotate_fmt: str = ".2f"  # format spec for cell annotations and the report tables
    formats: list[str] = field(default_factory=lambda: ["png", "pdf"])  # any of png/pdf/svg
    top_k: int = 5  # sites per sweep listed in the report and top_components.json
    min_limit: float = 1.0  # colour scale spans at least ±min_limit (1 = the clean level)
    max_width: float = 18.0  # "auto" annotation is skipped when it would need a wider figure

    def __post_init__(self) -> None:
        if isinstance(self.annotate, str) and self.annotate.lower() in ("true", "false"):
            self.annotate = self.annotate.lower() == "true"
        if self.annotate not in ("auto", True, False):
            raise ValueError(f"annotate must be 'auto', true or false, got {self.annotate!r}")
        self.formats = [str(fmt).lower() for fmt in self.formats]
        unknown = sorted(set(self.formats) - set(FORMATS))
        if unknown:
            raise ValueError(f"unsupported figure formats {unknown}; choose from {FORMATS}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")


@dataclass(frozen=True)
class ExperimentInfo:
    """What was patched, named the way the figures and the report show it."""

    model: str  # e.g. "gpt2"
    dataset: str  # e.g. "ioi"
    metric: str  # e.g. "logit_diff"

    @property
    def metric_label(self) -> str:
        """The metric for humans: ``logit_diff`` → ``logit diff``."""
        return self.metric.replace("_", " ")


@contextmanager
def style_context(style: PlotStyle) -> Iterator[None]:
    """Apply ``style`` and the determinism settings for figures created and saved inside.

    Both figure creation and saving must happen inside: rc params are read at both times.
    """
    rc = {
        "font.family": [style.font_family],
        "font.size": style.font_size,
        "axes.titlesize": style.font_size,
        "figure.titlesize": style.font_size + 1,
        "axes.labelsize": style.font_size,
        "legend.fontsize": style.font_size - 1,
        "savefig.dpi": style.dpi,
        # Fixed salt → the same clip-path and glyph ids in every SVG.
        "svg.hashsalt": _SOFTWARE,
        # Text as paths: the SVG needs no installed fonts. TrueType in PDF keeps text
        # selectable and editable in the figure tools journals ask for.
        "svg.fonttype": "path",
        "pdf.fonttype": 42,
        "axes.unicode_minus": True,
    }
    with mpl.rc_context(rc):
        yield


def save_figure(
    fig: Figure, out_dir: Path, stem: str, formats: list[str], title: str = "", caption: str = ""
) -> list[Path]:
    """Write ``fig`` as ``out_dir/stem.<fmt>`` for every format, atomically and reproducibly.

    Call inside :func:`style_context` so the SVG hash salt and font settings apply. The
    figure's one-line ``title`` and its ``caption`` (what the report says under it) go into
    each file's metadata, so a figure copied out of the report still says what it shows.

    Returns:
        The written paths, in the order of ``formats``.
    """
    paths = []
    for fmt in formats:
        buffer = BytesIO()
        fig.savefig(
            buffer,
            format=fmt,
            metadata=figure_metadata(fmt, title, caption),
            bbox_inches="tight",
            pad_inches=0.08,
            facecolor="white",
        )
        path = out_dir / f"{stem}.{fmt}"
        write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


def figure_metadata(fmt: str, title: str = "", caption: str = "") -> dict[str, str | None]:
    """The constant metadata of ``fmt``, plus the title and caption under that format's keys.

    PDF's document information names the caption ``Subject``; PNG text chunks and SVG's
    Dublin Core call it ``Description``.
    """
    metadata = dict(_METADATA[fmt])
    if title:
        metadata["Title"] = title
    if caption:
        metadata[_CAPTION_KEY[fmt]] = caption
    return metadata


def symmetric_limit(values: object, floor: float) -> float:
    """Half-width of a colour scale centred at 0: ``max(floor, max |value|)``.

    With ``floor = 1`` a full effect (recovering the clean run, or falling to the corrupted
    one) always has the same colour, so figures of one experiment compare at a glance and
    a weak sweep looks weak instead of being stretched to full saturation; overshoot
    beyond ±1 widens the scale instead of clipping.
    """
    finite = np.abs(np.asarray(values, dtype=float))
    finite = finite[np.isfinite(finite)]
    peak = float(finite.max()) if finite.size else 0.0
    limit = max(floor, peak)
    return limit if limit > 0 else 1.0


def figure_title(what: str, info: ExperimentInfo) -> str:
    """The one-line title, e.g. ``head · gpt2 · ioi``; the caption says everything else.

    A title of several lines took a third of a small figure; what it said (metric,
    normalisation, direction, s.e.m.) is in the report's caption and the file's metadata.
    """
    return TITLE_SEPARATOR.join([what, info.model, info.dataset])


def shown_values(direction: str, normalized: object) -> np.ndarray:
    """What a heatmap's colour shows: the normalised effect, or for noising the drop from clean.

    Noising starts from the clean run (normalised 1), so plotting ``normalized`` itself
    would saturate every cell that does *not* matter. ``normalized − 1`` puts those at
    0 (white) and makes the sites that matter saturate, as denoising's do.
    """
    values = np.asarray(normalized, dtype=float)
    return values - 1.0 if direction == "noise" else values


def colorbar_label(info: ExperimentInfo, direction: str) -> str:
    """Two short lines: what the colour is, and what its ends mean."""
    if direction == "noise":
        return f"drop from clean\nnormalised {info.metric_label} − 1"
    return f"normalised {info.metric_label}\n0 = corrupted, 1 = clean"


def text_inches(text: str, font_size: float) -> float:
    """Rough width of the longest line of ``text`` in inches, to size a figure around it."""
    longest = max((len(line) for line in text.split("\n")), default=0)
    return longest * CHAR_EM * font_size / 72


def sem_line(sem: object, n_prompts: int) -> str:
    """Summary of the s.e.m. of the plotted means, or why there is none."""
    values = np.asarray(sem, dtype=float)
    values = values[np.isfinite(values)]
    prompts = f"mean over {n_prompts} prompt{'s' if n_prompts != 1 else ''}"
    if not values.size:
        return f"{prompts}; no s.e.m. (needs ≥ 2 prompts)"
    return f"{prompts}; s.e.m. median {np.median(values):.3f}, max {values.max():.3f}"
