"""How figures and the report name layers (windows) and positions (roles or indices)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import QuadMesh

from patchsweep.plotting import ExperimentInfo, PlotStyle, split_attribution, split_sweeps
from patchsweep.plotting.attribution import comparison_figure
from patchsweep.plotting.captions import INDEX_NOTE, heatmap_caption
from patchsweep.plotting.heatmaps import head_pos_figure, layer_pos_figure
from patchsweep.plotting.labels import is_role, layer_span
from patchsweep.plotting.report import site_label, top_components

INFO = ExperimentInfo(model="tiny", dataset="induction", metric="logprob")
STYLE = PlotStyle(dpi=30, formats=["png"])
MIXED = ["REP1", "Rhoswen", "David", "CURRENT1", "REP2", "Rhoswen", "END"]


def _rows(sweep, labels, layers=2, window=1, n_prompts=64, head=-1, direction="denoise"):
    return [
        {
            "sweep": sweep, "component": "z" if head >= 0 else "resid_pre",
            "direction": direction, "layer": layer, "head": head, "position": p,
            "position_label": label, "window": window, "metric": 0.1 * p,
            "normalized": 0.1 * p + 0.01 * layer, "sem": 0.01, "n_prompts": n_prompts,
        }
        for layer in range(layers)
        for p, label in enumerate(labels)
    ]  # fmt: skip


def _ticks(fig, axis: str = "y") -> list[str]:
    ax = next(ax for ax in fig.axes if any(isinstance(c, QuadMesh) for c in ax.collections))
    labels = ax.get_yticklabels() if axis == "y" else ax.get_xticklabels()
    return [t.get_text() for t in labels]


class TestWindows:
    """Rows name the layers actually patched: windows stop at the last layer."""

    def test_two_layer_model(self):
        table = pd.DataFrame(_rows("win", ["IO", "END"], layers=2, window=2))
        sweep = split_sweeps(table)["win"]
        assert _ticks(layer_pos_figure(sweep, INFO, STYLE)) == ["0–1", "1"]
        assert [site_label(row) for _, row in sweep.iterrows()][-1] == "L1 pos 1 (END)"

    def test_deeper_model_cuts_only_the_last_windows(self):
        table = pd.DataFrame(_rows("win", ["END"], layers=5, window=3))
        sweep = split_sweeps(table)["win"]
        assert _ticks(layer_pos_figure(sweep, INFO, STYLE)) == ["0–2", "1–3", "2–4", "3–4", "4"]

    def test_window_of_one_is_the_layer(self):
        table = pd.DataFrame(_rows("one", ["END"], layers=3))
        assert _ticks(layer_pos_figure(split_sweeps(table)["one"], INFO, STYLE)) == ["0", "1", "2"]

    def test_top_components_names_the_patched_layers(self):
        table = pd.DataFrame(_rows("win", ["IO", "END"], layers=2, window=2))
        top = top_components(split_sweeps(table), 1)["win"]["top1"]
        assert (top["layer"], top["site"]) == (1, "L1 pos 1 (END)")

    def test_layer_span(self):
        assert (layer_span(3, 3), layer_span(3, 5)) == ("3", "3–5")


class TestPositionLabels:
    """Varied prompts: role labels only, other positions by index. One prompt: tokens."""

    def test_mixed_labels_keep_roles_and_index_the_rest(self):
        sweep = split_sweeps(pd.DataFrame(_rows("pos", MIXED)))["pos"]
        expected = ["REP1", "1", "2", "CURRENT1", "REP2", "5", "END"]
        assert _ticks(layer_pos_figure(sweep, INFO, STYLE), "x") == expected
        assert INDEX_NOTE in heatmap_caption([sweep], INFO, "layer × position")
        rows = sweep[sweep["position"] == 1]
        assert site_label(rows.iloc[0]) == "L0 pos 1"

    def test_head_panels_titled_by_role_or_index(self):
        table = pd.DataFrame(_rows("hp", MIXED[:3], head=0) + _rows("hp", MIXED[:3], head=1))
        fig = head_pos_figure(split_sweeps(table)["hp"], INFO, STYLE)
        titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
        assert titles == ["pos 0: REP1", "pos 1", "pos 2"]

    def test_one_prompt_keeps_its_tokens(self):
        sweep = split_sweeps(pd.DataFrame(_rows("pos", MIXED, n_prompts=1)))["pos"]
        assert _ticks(layer_pos_figure(sweep, INFO, STYLE), "x") == MIXED
        assert INDEX_NOTE not in heatmap_caption([sweep], INFO, "layer × position")

    @pytest.mark.parametrize(
        "labels", [["IO", "S1", "S1+1", "S2", "END"], ["When", " John", " and", " Mary"]]
    )
    def test_labels_of_one_kind_stay(self, labels):
        sweep = split_sweeps(pd.DataFrame(_rows("pos", labels)))["pos"]
        assert _ticks(layer_pos_figure(sweep, INFO, STYLE), "x") == labels

    @pytest.mark.parametrize(
        ("label", "role"),
        [("IO", True), ("S1+1", True), ("SUBJ_LAST", True), ("XX1", True), ("REP2", True),
         ("END", True), ("The", False), (" John", False), ("A", False), (",", False),
         ("12", False)],
    )  # fmt: skip
    def test_is_role(self, label, role):
        assert is_role(label) is role

    def test_attribution_still_meets_its_exact_sweep(self, induction, layout_style):
        """Estimate and exact rows are relabelled alike, so the comparison still joins."""
        atp = split_attribution(induction.table, induction.checks)["atp_resid"]
        assert set(atp.estimate["position_label"]) >= {"1", "REP1", "END"}
        fig = comparison_figure(atp, induction.info, layout_style)
        meshes = [c for ax in fig.axes for c in ax.collections if isinstance(c, QuadMesh)]
        exact = np.ma.filled(meshes[1].get_array().astype(float), np.nan)
        assert np.isfinite(exact).sum() == len(atp.verified)
