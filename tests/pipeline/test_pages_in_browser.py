"""The pages people open, drawn in headless Chromium with the network cut off: `dvc plots
show` and `dvc plots diff` with the project's template (vega inline), and an experiment's
report.html (figures embedded). DVC's own page, which loads vega from a CDN, must come out
blank there: that is what the template fixes, and it shows the check can fail.

Slow tier; skipped, with the apt command to run, where Debian's chromium is missing.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from browser import chromium, colours, undrawn_charts, unloaded_images, vega_chart_ids
from project import REPO, sh

pytestmark = pytest.mark.slow

# normalized per layer, two sweeps: what the fixture's stage writes to lines/<sweep>.csv
VALUES = {"resid_layer": [0.05, 0.4, 0.95], "attn_layer": [0.3, -0.2, 0.6]}
WRITE_LINES = """\
import csv, json, pathlib
out = pathlib.Path("lines")
out.mkdir(exist_ok=True)
for sweep, values in json.loads(pathlib.Path("values.json").read_text()).items():
    with open(out / f"{sweep}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", "normalized", "sem", "metric"])
        w.writerows([layer, v, 0.02, 3 * v - 1] for layer, v in enumerate(values))
"""


def project_lines_plot() -> dict:
    """The properties dvc.yaml gives the per-layer ``lines`` plots (x, y, cache)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage in stages.values():
        for entry in stage.get("plots", []):
            for path, props in entry.items():
                if path.endswith("/lines"):
                    return dict(props)
    raise AssertionError("dvc.yaml declares no .../lines plots")


def make_plots_repo(root: Path, lines_plot: dict) -> Path:
    """A git + DVC repo with one stage that writes lines/ as the project's plots, with the
    project's ``plots`` settings in .dvc/config; reproduced and committed."""
    from configobj import ConfigObj

    root.mkdir(parents=True)
    (root / "write_lines.py").write_text(WRITE_LINES)
    (root / "values.json").write_text(json.dumps(VALUES))
    stage = {
        "cmd": "python write_lines.py",
        "deps": ["write_lines.py", "values.json"],
        "plots": [{"lines": lines_plot}],
    }
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"lines": stage}}))
    sh(root, "git", "init", "-q")
    sh(root, "dvc", "init", "-q")
    config = ConfigObj(str(root / ".dvc" / "config"))
    config["plots"] = dict(ConfigObj(str(REPO / ".dvc" / "config"))["plots"])
    config.write()
    (root / ".gitignore").write_text("/dvc_plots/\n")
    sh(root, "dvc", "repro", "-q")
    sh(root, "git", "add", "-A")
    sh(root, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "lines")
    return root


def write_template(root: Path) -> None:
    """The set-up step (`make setup` runs it): the template .dvc/config names."""
    sh(root, "python", "-m", "patchsweep.plots_template")
    assert (root / ".dvc" / "plots-template.html").is_file()


@pytest.fixture
def repo(tmp_path) -> Path:
    root = make_plots_repo(tmp_path / "repo", project_lines_plot())
    write_template(root)
    return root


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium; first in each test's arguments, so a skip costs nothing."""
    with chromium(tmp_path / "profile") as driver:
        yield driver


def plots_page(root: Path, *command: str) -> Path:
    """Run a `dvc plots` command; the page it wrote, and its charts' ids (one per CSV)."""
    out = sh(root, "dvc", "plots", *command)
    page = Path(re.findall(r"file://(\S+)", out)[-1])
    assert len(vega_chart_ids(page)) == len(VALUES), out
    return page


def test_plots_show_draws_offline(browser, repo):
    page = plots_page(repo, "show")  # plain: .dvc/config names the template
    text = page.read_text()
    assert "<script src=" not in text and "window.vegaEmbed" in text
    assert undrawn_charts(browser, page, vega_chart_ids(page)) == []
    assert colours(browser.get_screenshot_as_png()) > 4


def test_dvc_default_page_is_blank_offline(browser, repo):
    """Without the template DVC writes its CDN page; offline, the check finds nothing."""
    sh(repo, "dvc", "config", "--unset", "plots.html_template")
    page = plots_page(repo, "show")
    assert '<script src="https://' in page.read_text()
    ids = vega_chart_ids(page)
    problems = undrawn_charts(browser, page, ids)
    assert problems == [f"{i}: no vega chart (vega-embed did not run)" for i in ids]
    assert colours(browser.get_screenshot_as_png()) == 1


def test_plots_diff_against_head_in_fresh_clone(browser, repo, tmp_path):
    """The CSVs are in git (cache: false), so a clone without DVC's cache can compare."""
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    write_template(clone)
    edited = {**VALUES, "resid_layer": [0.1, 0.2, 0.3]}
    (clone / "values.json").write_text(json.dumps(edited))
    sh(clone, "dvc", "repro", "-q")

    data = json.loads(sh(clone, "dvc", "plots", "diff", "HEAD", "--json", stdout_only=True))
    for sweep in VALUES:
        values = data["data"][f"lines/{sweep}.csv"][0]["content"]["data"]["values"]
        drawn = {(v["rev"], int(v["layer"])): float(v["normalized"]) for v in values}
        for rev, table in (("HEAD", VALUES), ("workspace", edited)):
            assert [drawn[rev, layer] for layer in range(3)] == table[sweep], (sweep, rev)
    page = plots_page(clone, "diff", "HEAD")
    assert undrawn_charts(browser, page, vega_chart_ids(page)) == []


def test_cached_plots_cannot_be_compared_in_a_fresh_clone(tmp_path):
    """Why dvc.yaml keeps them out of the cache: a clone has no cache and no remote."""
    assert project_lines_plot().get("cache") is False
    repo = make_plots_repo(tmp_path / "repo", {**project_lines_plot(), "cache": True})
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    out = sh(clone, "dvc", "plots", "diff", "HEAD", "--json")
    assert "failed to load some plots" in out and "HEAD" in out


# --- the report page: figures embedded as PNG data URIs ---------------------------------


def _row(sweep: str, layer: int, position: int, value: float) -> dict:
    label = ("IO", "S1", "END")[position] if position >= 0 else "all"
    return {
        "sweep": sweep, "component": "resid_pre", "direction": "denoise", "layer": layer,
        "head": -1, "position": position, "position_label": label, "window": 1,
        "method": "exact", "metric": 3 * value - 1, "normalized": value, "sem": 0.02,
        "n_prompts": 8,
    }  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, list[Path]]:
    """report.html of a two-sweep table (a layer line, a layer × position heatmap), and
    its PNG figures."""
    from patchsweep.plotting import ExperimentInfo, PlotStyle, render_figures, write_report

    rows = [_row("resid_layer", layer, -1, 0.3 * layer) for layer in range(3)]
    rows += [_row("resid_pos", lay, pos, 0.1 * lay + 0.2 * pos) for lay in range(3)
             for pos in range(3)]  # fmt: skip
    table = pd.DataFrame(rows)
    baselines = {"clean": 2.0, "corrupted": -1.0, "n_prompts": 8}
    info, style = ExperimentInfo("tiny", "tiny", "logit_diff"), PlotStyle(dpi=40, top_k=3)
    root = tmp_path_factory.mktemp("report")
    figures = render_figures(table, info, style, root / "figures")
    paths = write_report(table, baselines, figures, info, style, root)
    html = next(p for p in paths if p.suffix == ".html")
    return html, [f for f in figures if f.suffix == ".png"]


def test_report_figures_draw(browser, report):
    page, pngs = report
    assert len(pngs) >= 2
    assert unloaded_images(browser, page) == []
    images = browser.find_elements("css selector", "img")
    assert len(images) == len(pngs)
    for image in images:  # a figure: axes, text, a colour scale — many colours
        assert colours(image.screenshot_as_png) > 4, image.get_attribute("alt")


def test_report_check_finds_a_broken_figure(browser, report, tmp_path):
    page, _ = report
    text = page.read_text()
    start = text.index("data:image/png;base64,") + len("data:image/png;base64,")
    broken = tmp_path / "report.html"
    broken.write_text(text[:start] + "AAAA" + text[start + 400 :])  # a truncated PNG
    shutil.copytree(page.parent / "figures", tmp_path / "figures")  # the vector links
    problems = unloaded_images(browser, broken)
    assert len(problems) == 1 and problems[0].endswith("not drawn"), problems
