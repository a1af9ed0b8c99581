"""No text runs into other text and no legend hides data, in every figure the code makes."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from matplotlib.figure import Figure

from patchsweep.plotting import (
    PlotStyle,
    find_overlaps,
    plan_figures,
    render_figures,
    split_sweeps,
)
from patchsweep.plotting.figures import draw_figure
from patchsweep.plotting.overlap import Overlap, describe
from patchsweep.plotting.style import style_context

KINDS = {"line", "layer_pos", "layer_head", "head_pos", "panels", "vs_exact", "scatter"}


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


class TestEveryFigureKind:
    """Every figure of every synthetic experiment reads without collisions."""

    def test_no_overlap(self, drawn, layout_style):
        assert {plan.kind for plan, _ in drawn} == KINDS
        with style_context(layout_style):  # the fonts the figures were drawn with
            problems = [f"{plan.stem}: {o}" for plan, fig in drawn for o in find_overlaps(fig)]
        assert not problems, "\n".join(problems)

    @pytest.mark.parametrize("annotate", [True, False])
    def test_forced_annotation_either_way(self, induction, layout_style, annotate):
        """Annotations forced on (cells grow) or off (cells shrink, labels rotate)."""
        style = type(layout_style)(dpi=40, formats=["png"], annotate=annotate)
        sweeps = split_sweeps(induction.table)
        plans = [
            p
            for p in plan_figures(induction.table, induction.info)
            if p.kind in ("layer_pos", "panels")
        ]
        with style_context(style):
            for plan in plans:
                found = find_overlaps(draw_figure(plan, sweeps, {}, induction.info, style))
                assert not found, f"{plan.stem}:\n" + describe(found)


class TestRenderWarns:
    """The pipeline says so when a figure it publishes has colliding text."""

    def test_warning_names_the_figure(self, ioi, monkeypatch, caplog, tmp_path):
        import patchsweep.plotting.figures as figures

        clash = Overlap("Text 'a'", "Text 'b'", "texts overlap")
        monkeypatch.setattr(figures, "find_overlaps", lambda fig: [clash])
        head = ioi.table[ioi.table["sweep"] == "head"]
        with caplog.at_level(logging.WARNING, logger=figures.__name__):
            figures.render_figures(head, ioi.info, PlotStyle(dpi=20, formats=["png"]), tmp_path)
        assert "figure head has overlapping text: Text 'a' / Text 'b'" in caplog.text

    def test_clean_figures_log_nothing(self, ioi, caplog, tmp_path):
        head = ioi.table[ioi.table["sweep"] == "head"]
        with caplog.at_level(logging.WARNING):
            render_figures(head, ioi.info, PlotStyle(dpi=20, formats=["png"]), tmp_path)
        assert "overlapping" not in caplog.text
