"""Find text that collides with other text, or a legend that hides data, in a figure.

Layout rules of thumb (constrained layout, sizing cells by their labels) cannot promise a
readable figure for every table: a long token, a 12-head grid or a short colorbar can still
push one label into another. This checker looks at the figure as it is drawn. It renders
it with the Agg renderer and records every Text artist that is actually drawn (titles, axis
and tick labels, legend entries, annotations, colorbar labels), so a tick label outside the
view or a hidden axis never counts, then reports:

* two texts whose boxes intersect by more than ``tolerance`` pixels in both directions;
* a cell annotation of a heatmap that spills out of its own cell (one that stays inside
  cannot touch its neighbours', so those are not compared pairwise);
* a legend whose box covers a data line (one with markers or a legend entry) or a point
  of a scatter; reference lines (dotted levels, the diagonal) are not data.

Used by the tests on every figure kind; cheap enough to call on any figure while
designing one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection, QuadMesh
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.transforms import Bbox

TOLERANCE = 1.5  # pixels at CHECK_DPI: boxes of neighbouring glyphs may touch
CHECK_DPI = 100.0  # a fixed resolution, so that the tolerance means the same everywhere


@dataclass(frozen=True)
class Overlap:
    """One collision, described well enough to find it in the figure."""

    first: str
    second: str
    why: str  # "texts overlap", "spills out of its cell", "legend covers data"

    def __str__(self) -> str:
        return f"{self.first} / {self.second}: {self.why}"


def find_overlaps(fig: Figure, tolerance: float = TOLERANCE) -> list[Overlap]:
    """Every collision in ``fig``, drawn at :data:`CHECK_DPI`; empty when it reads cleanly.

    The figure is drawn (so constrained layout runs) and its resolution restored after.
    """
    dpi = fig.dpi
    fig.set_dpi(CHECK_DPI)
    try:
        canvas = FigureCanvasAgg(fig)
        with _recording_texts() as drawn:
            canvas.draw()
        renderer = canvas.get_renderer()
        texts = [(text, text.get_window_extent(renderer)) for text in _unique(drawn)]
        found, loose = _cell_spills(fig, texts, tolerance)
        found += _text_collisions(loose, tolerance)
        found += _legends_on_data(fig, renderer)
    finally:
        fig.set_dpi(dpi)
    return found


def describe(found: list[Overlap]) -> str:
    """One line per collision, for an assertion message."""
    return "\n".join(str(overlap) for overlap in found)


@contextmanager
def _recording_texts() -> Iterator[list[Text]]:
    """Collect the Text artists drawn inside, in drawing order.

    Asking the figure for its Text artists afterwards would also return tick labels of
    ticks outside the view and labels of axes that are switched off; only the drawing
    knows what is on the page.
    """
    drawn: list[Text] = []
    original = Text.draw

    def draw(self: Text, renderer: object) -> None:
        original(self, renderer)
        if self.get_visible() and self.get_text().strip():
            drawn.append(self)

    Text.draw = draw  # type: ignore[method-assign]
    try:
        yield drawn
    finally:
        Text.draw = original  # type: ignore[method-assign]


def _unique(texts: list[Text]) -> list[Text]:
    """Each text once, in drawing order (an Annotation draws through Text.draw too)."""
    return list({id(text): text for text in texts}.values())


def _cell_spills(
    fig: Figure, texts: list[tuple[Text, Bbox]], tolerance: float
) -> tuple[list[Overlap], list[tuple[Text, Bbox]]]:
    """Cell annotations outside their cell, and the texts still to compare pairwise."""
    heatmaps = {id(ax) for ax in fig.axes if any(isinstance(c, QuadMesh) for c in ax.collections)}
    found, loose = [], []
    for text, box in texts:
        ax = text.axes
        in_cell = ax is not None and id(ax) in heatmaps and text in ax.texts
        if not in_cell:
            loose.append((text, box))
            continue
        cell = _cell_box(ax, text)
        if _inside(box, cell, tolerance):
            continue
        found.append(Overlap(_name(text), "its cell", "spills out of its cell"))
        loose.append((text, box))
    return found, loose


def _cell_box(ax: Axes, text: Text) -> Bbox:
    """The heatmap cell an annotation is anchored in, in pixels (cells are 1 × 1 in data)."""
    x, y = text.get_position()
    col, row = np.floor(x), np.floor(y)
    corners = ax.transData.transform([[col, row], [col + 1, row + 1]])
    return Bbox.from_extents(*corners.min(axis=0), *corners.max(axis=0))


def _inside(box: Bbox, outer: Bbox, tolerance: float) -> bool:
    return (
        box.x0 >= outer.x0 - tolerance
        and box.y0 >= outer.y0 - tolerance
        and box.x1 <= outer.x1 + tolerance
        and box.y1 <= outer.y1 + tolerance
    )


def _text_collisions(texts: list[tuple[Text, Bbox]], tolerance: float) -> list[Overlap]:
    found = []
    for i, (first, a) in enumerate(texts):
        for second, b in texts[i + 1 :]:
            width = min(a.x1, b.x1) - max(a.x0, b.x0)
            height = min(a.y1, b.y1) - max(a.y0, b.y0)
            if width > tolerance and height > tolerance:
                found.append(Overlap(_name(first), _name(second), "texts overlap"))
    return found


def _legends_on_data(fig: Figure, renderer: object) -> list[Overlap]:
    legends: list[Legend] = list(fig.legends)
    legends += [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    found = []
    for legend in legends:
        if not legend.get_visible():
            continue
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            for artist in _data_artists(ax):
                if _covers(box, artist):
                    name = f"legend {legend.get_texts()[0].get_text()!r}…"
                    found.append(Overlap(name, _artist_name(artist), "legend covers data"))
    return found


def _data_artists(ax: Axes) -> list[Line2D | PathCollection]:
    """Lines a reader reads values off (markers or a legend entry) and scatter points."""
    lines = [
        line
        for line in ax.get_lines()
        if line.get_visible()
        and len(line.get_xdata())
        and (
            line.get_marker() not in (None, "", "None", " ") or not line.get_label().startswith("_")
        )
    ]
    points = [c for c in ax.collections if isinstance(c, PathCollection) and c.get_visible()]
    return [*lines, *points]


def _covers(box: Bbox, artist: Line2D | PathCollection) -> bool:
    if isinstance(artist, Line2D):
        path = artist.get_transform().transform_path(artist.get_path())
        return bool(path.intersects_bbox(box, filled=False)) or bool(
            box.count_contains(path.vertices)
        )
    offsets = artist.get_offset_transform().transform(artist.get_offsets())
    return bool(len(offsets) and box.count_contains(offsets))


def _name(text: Text) -> str:
    content = text.get_text().replace("\n", " ")
    shown = content if len(content) <= 40 else content[:39] + "…"
    where = f" in {text.axes.get_label() or 'axes'}" if text.axes is not None else ""
    return f"{type(text).__name__} {shown!r}{where}"


def _artist_name(artist: Line2D | PathCollection) -> str:
    return f"{type(artist).__name__} {artist.get_label()!r}"
