"""Attribution sweeps: their two figures, their report section, and the ordinary figures
left as they were."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection, QuadMesh

from patchsweep.paths import ExperimentPaths
from patchsweep.plotting import (
    ExperimentInfo,
    PlotStyle,
    render_figures,
    split_attribution,
    split_sweeps,
    write_report,
)
from patchsweep.plotting.attribution import comparison_figure, scatter_figure
from patchsweep.stages.plot import attribution_checks

INFO = ExperimentInfo(model="gpt2", dataset="ioi", metric="logit_diff")
LAYERS, HEADS = 3, 4
LABELS = ["S1", "S2", "END"]
VERIFIED_HEADS = [(2, 3), (1, 0), (0, 1)]  # top of the ranking, and one control
VERIFIED_POSITIONS = [(0, 2), (2, 1)]
BASELINES = {"clean": 3.0, "corrupted": -1.0, "n_prompts": 20}


def _row(sweep, component, layer, head, position, value, method="exact", sem=0.02):
    return {
        "sweep": sweep,
        "component": component,
        "direction": "denoise",
        "layer": layer,
        "head": head,
        "position": position,
        "position_label": LABELS[position] if position >= 0 else "all",
        "window": 1,
        "method": method,
        "metric": 4.0 * value - 1.0,
        "normalized": value,
        "sem": sem,
        "n_prompts": 20,
    }


def _exact_head(layer: int, head: int) -> float:
    return 0.05 * layer + 0.1 * head - 0.1


def _estimate_head(layer: int, head: int) -> float:
    return 0.8 * _exact_head(layer, head) + 0.01 * (layer - head)


def _exact_pos(layer: int, position: int) -> float:
    return 0.3 * position - 0.1 * layer


@pytest.fixture(scope="module")
def exact_only() -> pd.DataFrame:
    """An exact head sweep and an exact layer × position sweep: the table before AtP."""
    rows = [_row("head", "z", lay, h, -1, _exact_head(lay, h))
            for lay in range(LAYERS) for h in range(HEADS)]  # fmt: skip
    rows += [_row("attn_pos", "attn_out", lay, -1, p, _exact_pos(lay, p))
             for lay in range(LAYERS) for p in range(len(LABELS))]  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def table(exact_only) -> pd.DataFrame:
    """Plus ``atp_head`` (compared with ``head``) and ``atp_resid`` (verified sites only).

    Attribution rows come interleaved with the exact ones, as a concatenation would not.
    """
    rows = []
    for lay in range(LAYERS):
        for h in range(HEADS):
            value = _estimate_head(lay, h)
            rows.append(_row("atp_head", "z", lay, h, -1, value, "attribution", float("nan")))
        for p in range(len(LABELS)):
            rows.append(_row("atp_resid", "resid_pre", lay, -1, p, 0.5 * p, "attribution"))
    rows += [_row("atp_head", "z", lay, h, -1, _exact_head(lay, h)) for lay, h in VERIFIED_HEADS]
    rows += [_row("atp_resid", "resid_pre", lay, -1, p, 0.4 * p + 0.1)
             for lay, p in VERIFIED_POSITIONS]  # fmt: skip
    attribution = pd.DataFrame(rows)
    return pd.concat([exact_only.iloc[:5], attribution, exact_only.iloc[5:]], ignore_index=True)


@pytest.fixture(scope="module")
def checks() -> dict[str, dict]:
    """``sweeps`` of attribution_check.json, in the shape normalize writes."""
    passes = {"attribution": {"forward": 1, "backward": 1}, "verification": {"forward": 3}}
    false_negative = {"layer": 1, "head": 2, "position_label": "all", "exact": 0.31}
    return {
        "atp_head": {
            "component": "z", "direction": "denoise", "positions": "all",
            "compared_with": "head", "k": 2, "n_sites": 12, "n_verified": 3, "n_control": 1,
            "pearson": 0.97, "spearman": 0.93, "recall_at_k": 0.5,
            "false_negatives": [{**false_negative, "estimate": 0.02}],
            "passes": {**passes, "exact_sweep": {"forward": 12}},
        },
        "atp_resid": {
            "component": "resid_pre", "direction": "denoise", "positions": "each",
            "compared_with": None, "k": 1, "n_sites": 9, "n_verified": 2, "n_control": 1,
            "pearson": 0.81, "spearman": 0.64, "recall_at_k": None, "false_negatives": [],
            "passes": {**passes, "verification": {"forward": 2}},
        },
    }  # fmt: skip


@pytest.fixture(scope="module")
def style() -> PlotStyle:
    return PlotStyle(dpi=30, formats=["png", "pdf"], top_k=3)


@pytest.fixture(scope="module")
def rendered(table, checks, style, tmp_path_factory):
    """Figures and report of the full table, rendered once: the tests only read them."""
    root = tmp_path_factory.mktemp("attribution")
    figures = render_figures(table, INFO, style, root / "figures", checks)
    paths = write_report(table, BASELINES, figures, INFO, style, root, checks)
    return figures, dict(zip(["md", "html", "json"], paths, strict=True))


@pytest.fixture(scope="module")
def sweeps(table, checks):
    return split_attribution(table, checks)


def _panels(fig) -> list:
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.collections]


def _grid(fig, index: int) -> np.ndarray:
    """The values of panel ``index``, NaN where the cell is masked."""
    (mesh,) = [c for c in _panels(fig)[index].collections if isinstance(c, QuadMesh)]
    values = mesh.get_array()
    return np.ma.filled(values.astype(float), np.nan).reshape(LAYERS, -1)


class TestSplit:
    """Which rows are an attribution sweep, and what is its ground truth."""

    def test_ordinary_sweeps_leave_attribution_sweeps_out(self, table):
        assert list(split_sweeps(table)) == ["head", "attn_pos"]

    def test_estimate_verified_and_reference_rows(self, sweeps, table):
        atp = sweeps["atp_head"]
        assert len(atp.estimate) == LAYERS * HEADS and set(atp.estimate["method"]) == {
            "attribution"
        }
        assert sorted(zip(atp.verified["layer"], atp.verified["head"], strict=True)) == sorted(
            VERIFIED_HEADS
        )
        assert atp.reference is not None and set(atp.reference["sweep"]) == {"head"}
        assert sweeps["atp_resid"].reference is None
        assert sweeps["atp_resid"].exact is sweeps["atp_resid"].verified

    def test_unknown_method_is_refused(self, table):
        with pytest.raises(ValueError, match="methods"):
            split_sweeps(table.assign(method="gradient"))

    def test_figure_name_clash_is_refused(self, exact_only, table):
        clash = exact_only[exact_only["sweep"] == "head"].assign(sweep="atp_head_scatter")
        with pytest.raises(ValueError, match="file name"):
            split_attribution(pd.concat([table, clash], ignore_index=True))


class TestComparisonFigure:
    """Estimate and exact side by side, on one colour scale."""

    def test_two_panels_one_norm_one_colorbar(self, sweeps, style):
        fig = comparison_figure(sweeps["atp_head"], INFO, style)
        panels = _panels(fig)
        assert [ax.get_title() for ax in panels] == ["attribution estimate", "exact patching"]
        meshes = [c for ax in panels for c in ax.collections if isinstance(c, QuadMesh)]
        assert len(meshes) == 2 and meshes[0].norm is meshes[1].norm
        assert meshes[0].get_clim() == meshes[1].get_clim() == (-1.0, 1.0)
        assert sum(ax.get_label() == "<colorbar>" for ax in fig.axes) == 1
        title = fig.get_suptitle()
        assert "\n" not in title and all(part in title for part in ("atp_head", "gpt2", "ioi"))

    def test_panels_hold_estimate_and_the_compared_sweep(self, sweeps, style):
        fig = comparison_figure(sweeps["atp_head"], INFO, style)
        expected = np.array([[_exact_head(lay, h) for h in range(HEADS)] for lay in range(LAYERS)])
        np.testing.assert_allclose(_grid(fig, 1), expected)
        np.testing.assert_allclose(_grid(fig, 0), 0.8 * expected + np.array(
            [[0.01 * (lay - h) for h in range(HEADS)] for lay in range(LAYERS)]
        ))  # fmt: skip

    def test_without_exact_sweep_unverified_cells_are_masked(self, sweeps, style):
        fig = comparison_figure(sweeps["atp_resid"], INFO, style)
        right = _grid(fig, 1)
        assert np.isfinite(right).sum() == len(VERIFIED_POSITIONS)
        for lay, p in VERIFIED_POSITIONS:
            assert right[lay, p] == pytest.approx(0.4 * p + 0.1)
        assert "not verified" in _panels(fig)[1].get_title()
        assert np.isfinite(_grid(fig, 0)).all()

    def test_scale_covers_both_panels(self, sweeps, style):
        atp = sweeps["atp_head"]
        big = atp.reference.assign(normalized=atp.reference["normalized"] * 10)
        fig = comparison_figure(type(atp)(atp.name, atp.estimate, atp.verified, big), INFO, style)
        clims = {c.get_clim() for ax in _panels(fig) for c in ax.collections}
        assert clims == {(-big["normalized"].abs().max(), big["normalized"].abs().max())}

    def test_head_by_position_comes_in_pairs(self, table, style):
        rows = [_row("atp_hp", "z", lay, h, p, 0.1 * h, "attribution")
                for lay in range(LAYERS) for h in range(HEADS) for p in (0, 2)]  # fmt: skip
        rows.append(_row("atp_hp", "z", 0, 1, 2, 0.3))
        (atp,) = split_attribution(pd.DataFrame(rows)).values()
        titles = [ax.get_title() for ax in _panels(comparison_figure(atp, INFO, style))]
        sides = ["attribution estimate", "exact patching (grey: not verified)"]
        assert titles == [
            f"{side}, {where}" for where in ("pos 0: S1", "pos 2: END") for side in sides
        ]


class TestScatter:
    """Estimate (x) against exact (y) on square axes with the diagonal."""

    def _axes(self, fig):
        (ax,) = fig.axes
        return ax

    def test_square_axes_and_diagonal(self, sweeps, style):
        ax = self._axes(scatter_figure(sweeps["atp_head"], INFO, style))
        assert ax.get_xlim() == ax.get_ylim()
        assert ax.get_aspect() == 1.0
        diagonals = [
            line for line in ax.lines if np.array_equal(line.get_xdata(), line.get_ydata())
        ]
        assert len(diagonals) == 1
        assert tuple(diagonals[0].get_xdata()) == ax.get_xlim()

    def test_points_are_verified_sites_and_the_whole_exact_sweep(self, sweeps, style):
        ax = self._axes(scatter_figure(sweeps["atp_head"], INFO, style))
        every, verified = (c.get_offsets() for c in ax.collections if isinstance(c, PathCollection))
        assert len(every) == LAYERS * HEADS
        expected = sorted(
            (_estimate_head(lay, h), _exact_head(lay, h)) for lay, h in VERIFIED_HEADS
        )
        np.testing.assert_allclose(sorted(map(tuple, verified)), expected)
        low, high = ax.get_xlim()
        assert low < np.min(every) and np.max(every) < high

    def test_only_verified_points_without_exact_sweep(self, sweeps, style):
        ax = self._axes(scatter_figure(sweeps["atp_resid"], INFO, style))
        (points,) = (c.get_offsets() for c in ax.collections if isinstance(c, PathCollection))
        assert len(points) == len(VERIFIED_POSITIONS)

    def test_correlations_in_a_legend_outside_the_axes(self, sweeps, style):
        fig = scatter_figure(sweeps["atp_head"], INFO, style)
        (legend,) = fig.legends
        assert "r = 0.97" in legend.get_title().get_text()
        assert "ρ = 0.93" in legend.get_title().get_text()
        FigureCanvasAgg(fig).draw()
        renderer = fig.canvas.get_renderer()
        ax = self._axes(fig)
        assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
        label = ax.xaxis.label.get_window_extent(renderer)
        for text in [legend.get_title(), *legend.get_texts()]:
            assert not text.get_window_extent(renderer).overlaps(label), text.get_text()

    def test_missing_statistics_read_na(self, sweeps, style):
        atp = sweeps["atp_head"]
        bare = type(atp)(atp.name, atp.estimate, atp.verified, None)
        (legend,) = scatter_figure(bare, INFO, style).legends
        assert "r = n/a" in legend.get_title().get_text()


class TestOrdinaryFiguresUnchanged:
    """Exact sweeps draw as before; attribution rows never reach their figures."""

    def test_files_written(self, rendered):
        figures, _ = rendered
        stems = [p.stem for p in figures]
        assert stems == [
            *["head"] * 2, *["attn_pos"] * 2,
            *["atp_head_vs_exact"] * 2, *["atp_head_scatter"] * 2,
            *["atp_resid_vs_exact"] * 2, *["atp_resid_scatter"] * 2,
        ]  # fmt: skip
        assert {p.suffix for p in figures} == {".png", ".pdf"}
        assert all(p.is_file() and p.stat().st_size > 0 for p in figures)
        assert not (figures[0].parent / "atp_head.png").exists()

    def test_exact_figures_are_byte_identical_with_attribution_rows(
        self, exact_only, rendered, style, tmp_path
    ):
        figures, _ = rendered
        before = render_figures(exact_only, INFO, style, tmp_path)
        assert [p.name for p in before] == [p.name for p in figures[:4]]
        for old, new in zip(before, figures[:4], strict=True):
            assert old.read_bytes() == new.read_bytes(), old.name

    def test_table_without_method_column_still_plots(self, exact_only, rendered, style, tmp_path):
        figures, _ = rendered
        bare = exact_only.drop(columns="method")
        paths = render_figures(bare, INFO, style, tmp_path)
        assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in figures[:4]]
        report = write_report(bare, BASELINES, paths, INFO, style, tmp_path)
        assert "Attribution patching" not in report[0].read_text()


class TestReport:
    """The "Attribution patching" section and the metrics JSON."""

    def test_markdown_table_values(self, rendered):
        md = rendered[1]["md"].read_text()
        section = md.split("## Attribution patching")[1]
        assert "## attn_pos" in md.split("## Attribution patching")[0]
        assert (
            "| atp_head | z | denoise | head | 2 | 3 / 12 (incl. 1 control) | 0.97 | 0.93 | "
            "0.50 | 1 forward + 1 backward | 3 forward | 12 forward |"
        ) in section
        assert (
            "| atp_resid | resid_pre | denoise | none | 1 | 2 / 9 (incl. 1 control) | 0.81 | "
            in (section)
        )
        assert "- L1 H2: exact 0.31, estimate 0.02" in section
        assert "∂metric/∂activation" in section and "ground truth" in section

    def test_section_lists_each_figure_once(self, rendered):
        figures, paths = rendered
        md, html = paths["md"].read_text(), paths["html"].read_text()
        for figure in figures:
            assert md.count(f"figures/{figure.name}") == 1
        assert html.count("data:image/png;base64,") == sum(p.suffix == ".png" for p in figures)
        assert "## atp_head_vs_exact" not in md  # not an orphan figure section

    def test_html_has_the_section(self, rendered):
        html = rendered[1]["html"].read_text()
        assert '<h2 id="attribution-patching">Attribution patching</h2>' in html
        assert '<td class="num">0.97</td><td class="num">0.93</td>' in html
        assert "<li>L1 H2: exact 0.31, estimate 0.02</li>" in html

    def test_no_section_without_attribution_sweeps(self, exact_only, style, tmp_path):
        paths = write_report(exact_only, BASELINES, [], INFO, style, tmp_path, checks={})
        md, html = paths[0].read_text(), paths[1].read_text()
        assert "Attribution" not in md and "attribution" not in html.lower()

    def test_top_components_marks_the_estimate(self, rendered, exact_only, style, tmp_path):
        metrics = json.loads(rendered[1]["json"].read_text())
        assert list(metrics) == ["head", "attn_pos", "atp_head", "atp_resid"]
        assert "method" not in metrics["head"]
        assert metrics["atp_head"]["method"] == "attribution"
        top = metrics["atp_head"]["top1"]
        assert (top["layer"], top["head"]) == (2, 3)
        assert top["normalized"] == pytest.approx(_estimate_head(2, 3), abs=1e-4)
        exact = write_report(exact_only, BASELINES, [], INFO, style, tmp_path)[2]
        before = json.loads(exact.read_text())
        assert {k: metrics[k] for k in before} == before


class TestStage:
    """The plot stage reads attribution_check.json when there is one."""

    def test_missing_file_means_no_attribution_sweeps(self, tmp_path):
        assert attribution_checks(ExperimentPaths("m", "d", root=tmp_path)) == {}

    def test_reads_the_sweeps(self, checks, tmp_path):
        exp = ExperimentPaths("m", "d", root=tmp_path)
        exp.results.mkdir(parents=True)
        (exp.results / "attribution_check.json").write_text(json.dumps({"sweeps": checks}))
        assert attribution_checks(exp) == checks
        (exp.results / "attribution_check.json").write_text('{"sweeps": {}}')
        assert attribution_checks(exp) == {}
