"""Line plots of layer sweeps: content, the partner direction, and determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from patchsweep.plotting import (
    ExperimentInfo,
    PlotStyle,
    find_partner,
    render_figures,
    split_sweeps,
)
from patchsweep.plotting.captions import line_caption
from patchsweep.plotting.lines import line_figure

LAYERS = 6
INFO = ExperimentInfo(model="pythia-70m", dataset="greater_than", metric="prob_diff")
DENOISE = [0.02, 0.1, 0.05, 0.7, 0.3, 0.1]  # deliberately not monotone


def _rows(sweep, component, direction, values, sem=0.03, window=1):
    return [
        {
            "sweep": sweep,
            "component": component,
            "direction": direction,
            "layer": layer,
            "head": -1,
            "position": -1,
            "position_label": "all",
            "window": window,
            "metric": value,
            "normalized": value,
            "sem": sem,
            "n_prompts": 30,
        }
        for layer, value in enumerate(values)
    ]


@pytest.fixture
def table() -> pd.DataFrame:
    """mlp_out in both directions, attn_out denoising only; rows in reverse layer order."""
    rows = _rows("mlp_layer", "mlp_out", "denoise", DENOISE)
    rows += _rows("noise_mlp_layer", "mlp_out", "noise", [1 - 0.8 * v for v in DENOISE])
    rows += _rows("attn_layer", "attn_out", "denoise", [0.1] * LAYERS)
    return pd.DataFrame(rows[::-1]).reset_index(drop=True)


@pytest.fixture
def style() -> PlotStyle:
    return PlotStyle(dpi=50, formats=["png", "pdf", "svg"])


def _sweep(table: pd.DataFrame, name: str) -> pd.DataFrame:
    return table[table["sweep"] == name].reset_index(drop=True)


def _data_lines(ax) -> dict:
    return {
        line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")
    }


class TestLineFigure:
    """One sweep, optionally with its other-direction partner."""

    def test_line_follows_layers_with_sem_band(self, table, style):
        fig = line_figure(_sweep(table, "attn_layer"), INFO, style)
        (ax,) = fig.axes
        (line,) = _data_lines(ax).values()
        np.testing.assert_array_equal(line.get_xdata(), np.arange(LAYERS))
        np.testing.assert_allclose(line.get_ydata(), [0.1] * LAYERS)
        (band,) = ax.collections
        ys = np.concatenate([path.vertices[:, 1] for path in band.get_paths()])
        assert ys.min() == pytest.approx(0.07) and ys.max() == pytest.approx(0.13)
        assert ax.get_xlabel() == "Layer"

    def test_partner_direction_drawn_on_same_axis(self, table, style):
        sweep, partner = _sweep(table, "mlp_layer"), _sweep(table, "noise_mlp_layer")
        (ax,) = line_figure(sweep, INFO, style, partner=partner).axes
        lines = _data_lines(ax)
        assert set(lines) == {"denoise (mlp_layer)", "noise (noise_mlp_layer)"}
        np.testing.assert_allclose(lines["denoise (mlp_layer)"].get_ydata(), DENOISE)
        assert lines["noise (noise_mlp_layer)"].get_linestyle() == "--"
        assert len(ax.collections) == 2  # one band each

    def test_clean_and_corrupted_levels_always_in_view(self, table, style):
        (ax,) = line_figure(_sweep(table, "attn_layer"), INFO, style).axes
        low, high = ax.get_ylim()
        assert low < 0 and high > 1
        levels = {
            line.get_ydata()[0] for line in ax.get_lines() if line.get_label().startswith("_")
        }
        assert {0.0, 1.0} <= levels

    def test_title_is_one_line_and_the_caption_says_the_rest(self, table, style):
        sweep, partner = _sweep(table, "mlp_layer"), _sweep(table, "noise_mlp_layer")
        title = line_figure(sweep, INFO, style, partner).get_suptitle()
        assert title == "mlp_layer, noise_mlp_layer · pythia-70m · greater_than"
        caption = line_caption(sweep, INFO, partner)
        for part in ("mlp_out", "Denoising", "prob diff", "noising", "dashed", "30 prompts"):
            assert part.lower() in caption.lower()

    def test_legend_below_the_axes(self, table, style):
        fig = line_figure(_sweep(table, "mlp_layer"), INFO, style, _sweep(table, "noise_mlp_layer"))
        (legend,) = fig.legends
        assert [t.get_text() for t in legend.get_texts()] == [
            "denoise (mlp_layer)",
            "noise (noise_mlp_layer)",
        ]
        FigureCanvasAgg(fig).draw()
        renderer = fig.canvas.get_renderer()
        box, ax = legend.get_window_extent(renderer), fig.axes[0].get_window_extent(renderer)
        assert box.y1 < ax.y0

    def test_single_prompt_has_no_band(self, style):
        sweep = pd.DataFrame(_rows("one", "attn_out", "noise", [0.9] * 3, sem=float("nan")))
        fig = line_figure(sweep.assign(n_prompts=1), INFO, style)
        assert not fig.axes[0].collections
        caption = line_caption(sweep.assign(n_prompts=1), INFO)
        assert "no s.e.m." in caption and "band" not in caption

    def test_windowed_sweep_says_so(self, style):
        sweep = pd.DataFrame(_rows("win", "mlp_out", "denoise", [0.2] * 4, window=3))
        fig = line_figure(sweep, INFO, style)
        assert "patches 3 layers" in line_caption(sweep, INFO)
        assert "3-layer window" in fig.axes[0].get_xlabel()


class TestRenderLines:
    """Through the public entry point."""

    def test_one_file_per_sweep_pair_and_format_no_panels(self, table, tmp_path):
        paths = render_figures(table, INFO, PlotStyle(dpi=30, formats=["png"]), tmp_path)
        # mlp_layer is drawn dashed in the figure of its partner, first in table order.
        assert [p.name for p in paths] == ["attn_layer.png", "noise_mlp_layer.png"]

    def test_rendering_twice_gives_identical_bytes(self, table, style, tmp_path):
        pair = table[table["component"] == "mlp_out"]
        first = render_figures(pair, INFO, style, tmp_path / "a")
        second = render_figures(pair, INFO, style, tmp_path / "b")
        assert {p.suffix for p in first} == {".png", ".pdf", ".svg"}
        for a, b in zip(first, second, strict=True):
            assert a.read_bytes() == b.read_bytes(), a.name

    def test_partner_is_same_component_other_direction(self, table):
        sweeps = split_sweeps(table)
        assert find_partner("mlp_layer", sweeps)["sweep"].iloc[0] == "noise_mlp_layer"
        assert find_partner("noise_mlp_layer", sweeps)["sweep"].iloc[0] == "mlp_layer"
        assert find_partner("attn_layer", sweeps) is None
