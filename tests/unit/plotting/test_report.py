"""The report page, the self-contained HTML and the top-k metrics JSON."""

from __future__ import annotations

import base64
import html as htmllib
import json
import math
import re
from collections import Counter

import pandas as pd
import pytest

from patchsweep.plotting import (
    ExperimentInfo,
    PlotStyle,
    plan_figures,
    render_figures,
    split_sweeps,
    top_components,
    top_sites,
    write_report,
)
from patchsweep.plotting.markup import escape_md
from patchsweep.plotting.report import site_label

INFO = ExperimentInfo(model="gpt2", dataset="ioi", metric="logit_diff")
BASELINES = {
    "model": "gpt2",
    "dataset": "ioi",
    "metric": "logit_diff",
    "clean": 3.21,
    "corrupted": -1.05,
    "clean_sem": 0.11,
    "corrupted_sem": 0.09,
    "clean_accuracy": 0.96,
    "corrupted_accuracy": 0.12,
    "n_prompts": 40,
}
LABELS = ["IO", "S1", "S2", "END"]


def _row(sweep, direction, layer, head, position, value, sem=0.02):
    label = LABELS[position] if position >= 0 else "all"
    component = "z" if head >= 0 else "attn_out"
    return {
        "sweep": sweep,
        "component": component,
        "direction": direction,
        "layer": layer,
        "head": head,
        "position": position,
        "position_label": label,
        "window": 1,
        "metric": 4.26 * value - 1.05,
        "normalized": value,
        "sem": sem,
        "n_prompts": 40,
    }


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """Three sweeps with known rankings; a negative effect must outrank smaller positives."""
    denoise = {
        (0, 0): 0.1,
        (0, 1): 0.02,
        (0, 2): -0.6,
        (0, 3): 0.3,
        (1, 0): 0.05,
        (1, 1): 0.0,
        (1, 2): 0.45,
        (1, 3): 0.8,
    }
    rows = [_row("attn_pos", "denoise", lay, -1, pos, v) for (lay, pos), v in denoise.items()]
    # Noising: the sites that matter are those that fall furthest from 1.
    noise = {0: 0.99, 1: 0.2, 2: 1.01, 3: 0.7}
    rows += [_row("noise_attn", "noise", lay, -1, -1, v) for lay, v in noise.items()]
    rows += [
        _row("heads", "denoise", lay, h, -1, 0.1 * (lay + h), sem=float("nan"))
        for lay in range(2)
        for h in range(2)
    ]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def style() -> PlotStyle:
    return PlotStyle(dpi=30, formats=["png", "pdf"], top_k=3)


@pytest.fixture(scope="module")
def report(table, style, tmp_path_factory):
    """Rendered once for the module: the tests only read the files."""
    root = tmp_path_factory.mktemp("report")
    figures = render_figures(table, INFO, style, root / "figures")
    paths = write_report(table, BASELINES, figures, INFO, style, root / "report")
    return figures, dict(zip(["md", "html", "json"], paths, strict=True))


class TestTopSites:
    """Ranking by the size of the effect, which depends on the direction."""

    def test_denoise_ranked_by_absolute_normalized(self, table):
        top = top_sites(table[table["sweep"] == "attn_pos"], 4)
        assert top["normalized"].tolist() == [0.8, -0.6, 0.45, 0.3]

    def test_noise_ranked_by_drop_from_clean(self, table):
        top = top_sites(table[table["sweep"] == "noise_attn"], 2)
        assert top["layer"].tolist() == [1, 3]
        assert top["effect"].tolist() == pytest.approx([0.8, 0.3])

    def test_ties_broken_by_site_not_row_order(self, table):
        heads = table[table["sweep"] == "heads"]
        forward, backward = top_sites(heads, 4), top_sites(heads.iloc[::-1], 4)
        pd.testing.assert_frame_equal(forward, backward)
        assert [(r.layer, r.head) for r in forward.itertuples()][:3] == [(1, 1), (0, 1), (1, 0)]

    def test_site_labels(self, table):
        row = table[table["sweep"] == "attn_pos"].iloc[2]
        assert site_label(row) == "L0 pos 2 (S2)"
        assert site_label(table[table["sweep"] == "heads"].iloc[3]) == "L1 H1"
        assert site_label(pd.Series({**row, "position": -1, "window": 3, "layer": 2})) == "L2–4"


class TestTopComponentsJson:
    """The DVC metrics file."""

    def test_layout_and_numeric_leaves(self, report):
        _, paths = report
        metrics = json.loads(paths["json"].read_text())
        assert list(metrics) == ["attn_pos", "noise_attn", "heads"]
        entry = metrics["attn_pos"]
        assert entry["top1"] == {
            "site": "L1 pos 3 (END)",
            "layer": 1,
            "head": -1,
            "position": 3,
            "normalized": 0.8,
            "sem": 0.02,
            "effect": 0.8,
        }
        assert entry["top2"]["normalized"] == -0.6
        assert set(entry) == {"component", "direction", "max_abs_effect", "top1", "top2", "top3"}

    def test_missing_sem_is_null_not_nan(self, report):
        _, paths = report
        text = paths["json"].read_text()
        assert "NaN" not in text
        assert json.loads(text)["heads"]["top1"]["sem"] is None

    def test_matches_function(self, table, report):
        _, paths = report
        sweeps = {name: table[table["sweep"] == name] for name in pd.unique(table["sweep"])}
        assert json.loads(paths["json"].read_text()) == top_components(sweeps, 3)


class TestReportPages:
    """report.md and report.html."""

    def test_html_is_self_contained_and_embeds_every_png(self, report):
        figures, paths = report
        html = paths["html"].read_text()
        assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html)
        assert "://" not in html  # no URL at all: base64 has no ':'
        pngs = [f for f in figures if f.suffix == ".png"]
        assert len(pngs) == 3
        for png in pngs:
            assert base64.b64encode(png.read_bytes()).decode() in html
        assert html.count("data:image/png;base64,") == len(pngs)

    def test_markdown_lists_baselines_top_sites_and_figures(self, report):
        figures, paths = report
        md = paths["md"].read_text()
        assert "gpt2" in md and "ioi" in md and "logit diff" in md
        assert "| clean | 3.21 ± 0.11 | 96.0% |" in md
        assert "| corrupted | -1.05 ± 0.09 | 12.0% |" in md
        assert "Prompts: 40." in md
        rows = re.findall(r"^\| (\d) \| (L[^|]+) \|", md.split("## attn_pos")[1], re.MULTILINE)
        assert rows[:3] == [("1", "L1 pos 3 (END)"), ("2", "L0 pos 2 (S2)"), ("3", "L1 pos 2 (S2)")]
        for figure in figures:
            assert f"../figures/{figure.name}" in md

    def test_rewriting_gives_identical_bytes(self, table, style, report):
        figures, paths = report
        again_dir = paths["md"].parent.parent / "again"  # sibling: same relative figure paths
        again = write_report(table, BASELINES, figures, INFO, style, again_dir)
        for first, second in zip(paths.values(), again, strict=True):
            assert first.read_bytes() == second.read_bytes(), first.name

    def test_missing_baselines_are_shown_not_fatal(self, table, style, tmp_path):
        paths = write_report(table, {"n_prompts": 1, "clean": math.nan}, [], INFO, style, tmp_path)
        assert "| clean | n/a | n/a |" in paths[0].read_text()


class TestEachSweepOnce:
    """No sweep is drawn twice, and the report shows each figure once with its caption."""

    @pytest.fixture(scope="class")
    def written(self, ioi, tmp_path_factory):
        root = tmp_path_factory.mktemp("once")
        style = PlotStyle(dpi=20, formats=["png", "pdf"])
        figures = render_figures(ioi.table, ioi.info, style, root / "figures", ioi.checks)
        paths = write_report(ioi.table, BASELINES, figures, ioi.info, style, root, ioi.checks)
        return figures, paths[0].read_text(), paths[1].read_text()

    def test_every_exact_sweep_is_in_exactly_one_figure(self, experiment):
        plans = plan_figures(experiment.table, experiment.info, experiment.checks)
        drawn = Counter(
            name
            for plan in plans
            if plan.kind not in ("vs_exact", "scatter")
            for name in plan.sweeps
        )
        assert drawn == dict.fromkeys(split_sweeps(experiment.table), 1)
        assert len({plan.stem for plan in plans}) == len(plans)

    def test_each_figure_once_in_both_pages(self, written):
        figures, md, html = written
        for figure in figures:
            assert md.count(f"figures/{figure.name}") == 1, figure.name
        pngs = [f for f in figures if f.suffix == ".png"]
        assert html.count("data:image/png;base64,") == len(pngs)

    def test_captions_under_the_figures(self, ioi, written):
        _, md, html = written
        captions = Counter(plan.caption for plan in plan_figures(ioi.table, ioi.info, ioi.checks))
        for caption, times in captions.items():  # both scatters have the same caption
            assert md.count(escape_md(caption)) == times, caption
            assert html.count(htmllib.escape(caption)) == times, caption

    def test_panel_members_point_to_the_panels(self, ioi, written):
        _, md, _ = written
        for name in split_sweeps(ioi.table):
            assert md.count(f"## {escape_md(name)}\n") == 1
        section = md.split("## attn_out_layer_pos\n")[1].split("\n## ")[0]
        assert "drawn in the figure panels_denoise, under resid_pre_layer_pos" in section
        assert "![" not in section
        partner = md.split("## noise_attn_out_layer\n")[1].split("\n## ")[0]
        assert "drawn in the figure attn_out_layer, under attn_out_layer" in partner
