"""Heatmaps, the combined panel figure, file output and byte-determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import QuadMesh

from patchsweep.plotting import ExperimentInfo, PlotStyle, render_figures
from patchsweep.plotting.captions import heatmap_caption
from patchsweep.plotting.heatmaps import (
    head_pos_figure,
    layer_head_figure,
    layer_pos_figure,
    panels_figure,
    select_panel_sweeps,
)

TOKENS = ["When", " John", " and", " Mary", " went", ",", " John", " gave"]
LAYERS, HEADS = 3, 4
INFO = ExperimentInfo(model="gpt2", dataset="ioi", metric="logit_diff")


def _row(sweep, component, direction, layer, head, position, label, value, sem=0.02):
    return {
        "sweep": sweep,
        "component": component,
        "direction": direction,
        "layer": layer,
        "head": head,
        "position": position,
        "position_label": label,
        "window": 1,
        "metric": 2.0 * value - 1.0,
        "normalized": value,
        "sem": sem,
        "n_prompts": 20,
    }


@pytest.fixture
def table() -> pd.DataFrame:
    """resid_pre / attn_out / mlp_out layer × position, a head sweep and a head × position one."""
    rng = np.random.default_rng(0)
    rows = []
    for component in ("resid_pre", "attn_out", "mlp_out"):
        for layer in range(LAYERS):
            for position, token in enumerate(TOKENS):
                value = float(rng.normal(0, 0.1))
                rows.append(
                    _row(
                        f"{component}_pos", component, "denoise", layer, -1, position, token, value
                    )
                )
    rows[5]["normalized"] = -1.7  # overshoot: the scale must widen symmetrically
    for layer in range(LAYERS):
        for head in range(HEADS):
            rows.append(_row("heads", "z", "denoise", layer, head, -1, "all", 0.1 * head))
            for position, label in enumerate(["S2", "END"]):
                rows.append(_row("heads_pos", "z", "denoise", layer, head, position, label, 0.05))
    # Shuffled, so ordering comes from the plotting code, not from the input.
    return pd.DataFrame(rows).sample(frac=1.0, random_state=1).reset_index(drop=True)


@pytest.fixture
def style() -> PlotStyle:
    return PlotStyle(dpi=50, formats=["png", "pdf", "svg"])


def _sweep(table: pd.DataFrame, name: str) -> pd.DataFrame:
    return table[table["sweep"] == name].reset_index(drop=True)


def _panels(fig) -> list:
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.collections]


def _meshes(fig) -> list[QuadMesh]:
    return [c for ax in _panels(fig) for c in ax.collections if isinstance(c, QuadMesh)]


class TestLayerPosition:
    """Layer × position heatmaps."""

    def test_tick_labels_are_tokens_in_position_order(self, table, style):
        fig = layer_pos_figure(_sweep(table, "attn_out_pos"), INFO, style)
        (ax,) = _panels(fig)
        assert [t.get_text() for t in ax.get_xticklabels()] == TOKENS
        assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1", "2"]
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("Position", "Layer")

    def test_cells_follow_layer_and_position(self, table, style):
        sweep = _sweep(table, "attn_out_pos")
        (mesh,) = _meshes(layer_pos_figure(sweep, INFO, style))
        grid = np.asarray(mesh.get_array()).reshape(LAYERS, len(TOKENS))
        expected = sweep.pivot(index="layer", columns="position", values="normalized")
        np.testing.assert_allclose(grid, expected.to_numpy())

    def test_limits_are_symmetric_and_cover_overshoot(self, table, style):
        sweep = _sweep(table, "resid_pre_pos")
        (mesh,) = _meshes(layer_pos_figure(sweep, INFO, style))
        low, high = mesh.get_clim()
        assert low == -high
        assert high == pytest.approx(sweep["normalized"].abs().max()) == pytest.approx(1.7)

    def test_small_effects_keep_the_unit_scale(self, table, style):
        (mesh,) = _meshes(layer_pos_figure(_sweep(table, "mlp_out_pos"), INFO, style))
        assert mesh.get_clim() == (-1.0, 1.0)

    def test_title_is_one_line_and_the_caption_says_the_rest(self, table, style):
        sweep = _sweep(table, "mlp_out_pos")
        assert layer_pos_figure(sweep, INFO, style).get_suptitle() == "mlp_out_pos · gpt2 · ioi"
        caption = heatmap_caption([sweep], INFO, "layer × position")
        for part in ("mlp_out", "Denoising", "logit diff", "layer × position", "20 prompts"):
            assert part.lower() in caption.lower()

    def test_small_grid_is_annotated_large_grid_is_not(self, table, style):
        (ax,) = _panels(layer_pos_figure(_sweep(table, "mlp_out_pos"), INFO, style))
        assert len(ax.texts) == LAYERS * len(TOKENS)
        assert ax.texts[0].get_text().count("±") == 1
        rows = [
            _row("big", "resid_pre", "noise", layer, -1, pos, f"t{pos}", 0.5)
            for layer in range(30)
            for pos in range(20)
        ]
        (ax,) = _panels(layer_pos_figure(pd.DataFrame(rows), INFO, style))
        assert not ax.texts

    def test_duplicate_sites_are_rejected(self, table, style):
        sweep = _sweep(table, "mlp_out_pos")
        with pytest.raises(ValueError, match="several rows"):
            layer_pos_figure(pd.concat([sweep, sweep.head(1)]), INFO, style)


class TestHeads:
    """Layer × head grids and their per-position small multiples."""

    def test_layer_head_grid(self, table, style):
        fig = layer_head_figure(_sweep(table, "heads"), INFO, style)
        (ax,) = _panels(fig)
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "3"]
        assert ax.get_xlabel() == "Head"
        assert fig.get_suptitle() == "heads · gpt2 · ioi"
        low, high = _meshes(fig)[0].get_clim()
        assert low == -high == -1.0

    def test_one_panel_per_position_on_one_scale(self, table, style):
        fig = head_pos_figure(_sweep(table, "heads_pos"), INFO, style)
        panels = _panels(fig)
        assert [ax.get_title() for ax in panels] == ["pos 0: S2", "pos 1: END"]
        assert len({mesh.get_clim() for mesh in _meshes(fig)}) == 1
        assert sum(ax.get_label() == "<colorbar>" for ax in fig.axes) == 1


class TestPanels:
    """The resid / attn_out / mlp_out figure of one direction."""

    def test_one_panel_per_component_one_colorbar(self, table, style):
        grids = {
            name: _sweep(table, name) for name in ("mlp_out_pos", "resid_pre_pos", "attn_out_pos")
        }
        chosen = select_panel_sweeps(grids, "denoise")
        fig = panels_figure(chosen, INFO, style)
        panels = _panels(fig)
        assert [ax.get_title() for ax in panels] == ["resid_pre", "attn_out", "mlp_out"]
        assert sum(ax.get_label() == "<colorbar>" for ax in fig.axes) == 1
        clims = {mesh.get_clim() for mesh in _meshes(fig)}
        assert clims == {(-1.7, 1.7)}  # the overshoot in one panel sets the scale of all
        for ax in panels:
            assert [t.get_text() for t in ax.get_xticklabels()] == TOKENS

    def test_other_direction_is_not_mixed_in(self, table):
        grids = {"resid_pre_pos": _sweep(table, "resid_pre_pos")}
        assert select_panel_sweeps(grids, "noise") == []


class TestRenderFigures:
    """File names, formats and determinism of the public entry point."""

    def test_writes_every_sweep_once_panel_members_in_the_panels(self, table, tmp_path):
        style = PlotStyle(dpi=30, formats=["svg", "png"])
        paths = render_figures(table, INFO, style, tmp_path / "new")
        stems = {p.stem for p in paths}
        assert stems == {"heads", "heads_pos", "panels_denoise"}
        assert [p.suffix for p in paths[:2]] == [".svg", ".png"]  # in style.formats order
        assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
        assert not list((tmp_path / "new").glob(".*tmp"))  # no temp files left behind

    def test_rendering_twice_gives_identical_bytes(self, table, style, tmp_path):
        # A layer × position and a head × position heatmap, plus the combined panels.
        keep = table["sweep"].isin(["resid_pre_pos", "attn_out_pos", "heads_pos"])
        table = table[keep & (table["position"] < 2)]
        first = render_figures(table, INFO, style, tmp_path / "a")
        second = render_figures(table, INFO, style, tmp_path / "b")
        assert {p.suffix for p in first} == {".png", ".pdf", ".svg"}
        assert [p.name for p in first] == [p.name for p in second]
        for a, b in zip(first, second, strict=True):
            assert a.read_bytes() == b.read_bytes(), a.name

    def test_no_timestamps_or_versions_in_files(self, table, style, tmp_path):
        paths = render_figures(_sweep(table, "heads"), INFO, style, tmp_path)
        for path in paths:
            data = path.read_bytes()
            assert b"CreationDate" not in data and b"<dc:date>" not in data
            assert b"Matplotlib v" not in data and b"Matplotlib version" not in data

    def test_mixed_sweep_is_rejected(self, table, style, tmp_path):
        mixed = pd.concat(
            [_sweep(table, "heads"), _sweep(table, "heads_pos").assign(sweep="heads")]
        )
        with pytest.raises(ValueError, match="mixes"):
            render_figures(mixed, INFO, style, tmp_path)


class TestStyle:
    """Configuration checks that fail early instead of mid-render."""

    def test_rejects_unknown_format_and_annotate(self):
        with pytest.raises(ValueError, match="formats"):
            PlotStyle(formats=["png", "jpg"])
        with pytest.raises(ValueError, match="annotate"):
            PlotStyle(annotate="sometimes")

    def test_accepts_boolean_strings_from_the_command_line(self):
        assert PlotStyle(annotate="false").annotate is False
