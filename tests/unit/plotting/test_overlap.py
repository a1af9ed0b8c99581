"""The overlap checker sees every kind of collision, and passes a clean figure."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from patchsweep.plotting.overlap import find_overlaps


class TestCheckerCanFail:
    """Deliberately broken figures: the checker must see each kind of collision."""

    def test_text_on_text(self):
        fig = Figure(figsize=(3, 2), layout="constrained")
        ax = fig.subplots()
        ax.set_title("a title")
        ax.text(0.5, 1.02, "sits on the title", transform=ax.transAxes, ha="center")
        (found,) = find_overlaps(fig)
        assert found.why == "texts overlap"
        assert "'a title'" in str(found) and "'sits on the title'" in str(found)

    def test_legend_on_a_line(self):
        fig = Figure(figsize=(4, 3), layout="constrained")
        ax = fig.subplots()
        ax.plot([0, 1], [0, 1], marker="o", label="rising")
        ax.plot([0, 1], [1, 0], "--", label="falling")
        ax.axhline(0.5, linestyle=":")  # a reference line is not data
        ax.legend(loc="center")
        found = find_overlaps(fig)
        assert {o.why for o in found} == {"legend covers data"}
        assert {o.second for o in found} == {"Line2D 'rising'", "Line2D 'falling'"}

    def test_legend_on_scatter_points(self):
        fig = Figure(figsize=(3, 3), layout="constrained")
        ax = fig.subplots()
        ax.scatter([0.5], [0.5])
        ax.legend(["points"], loc="center")
        assert [o.why for o in find_overlaps(fig)] == ["legend covers data"]

    def test_cell_annotation_spilling_out(self):
        fig = Figure(figsize=(2, 2), layout="constrained")
        ax = fig.subplots()
        ax.pcolormesh(np.zeros((2, 6)))
        for col in range(6):
            ax.text(col + 0.5, 0.5, "0.123456", ha="center", va="center")
        found = find_overlaps(fig)
        assert "spills out of its cell" in {o.why for o in found}
        assert "texts overlap" in {o.why for o in found}  # and into its neighbours

    def test_tick_labels_crowding(self):
        fig = Figure(figsize=(2, 2), layout="constrained")
        ax = fig.subplots()
        ax.set_xticks(range(12), [f"label{i}" for i in range(12)])
        assert find_overlaps(fig)

    def test_clean_figure_and_hidden_texts_pass(self):
        fig = Figure(figsize=(4, 3), layout="constrained")
        ax, off = fig.subplots(1, 2)
        ax.set_xticks([0, 0.5, 1, 1.01, 1.02])  # would collide, if drawn
        ax.set_xlim(0, 1)  # after the ticks: those outside the view are not drawn
        ax.set_title("fine")
        off.set_title("hidden, and long enough to collide with the neighbour's title")
        off.set_axis_off()
        off.set_visible(False)
        assert find_overlaps(fig) == []

    def test_figure_resolution_is_restored(self):
        fig = Figure(dpi=37)
        fig.subplots()
        find_overlaps(fig)
        assert fig.dpi == 37
