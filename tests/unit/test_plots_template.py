"""The offline template for `dvc plots`: vega inline, DVC's placeholders, the config that
names it, and the command that writes it. (tests/pipeline/test_pages_in_browser.py
draws the pages in Chromium.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from configobj import ConfigObj
from dvc_render.html import HTML, PAGE_HTML
from dvc_render.vega import VegaRenderer
from project import REPO

from patchsweep.errors import ConfigError
from patchsweep.plots_template import (
    TEMPLATE_NAME,
    build_template,
    main,
    vega_lite_version,
)

V5 = "https://vega.github.io/schema/vega-lite/v5.json"


@pytest.fixture(scope="module")
def template() -> str:
    return build_template()


def script_sources(page: str) -> list[str]:
    return re.findall(r"<script[^>]*\bsrc\s*=\s*\"([^\"]+)\"", page)


class TestVegaLiteVersion:
    def test_newest_of_the_schema_major_by_number_not_text(self):
        assert vega_lite_version(["5.8", "5.21", "5.3", "6.4"], V5) == "5.21"

    def test_other_majors_only_is_refused(self):
        with pytest.raises(ConfigError, match=r"none v5"):
            vega_lite_version(["6.1", "6.4"], V5)

    def test_unrecognised_schema_is_refused(self):
        with pytest.raises(ConfigError, match="unexpected"):
            vega_lite_version(["5.21"], "https://example.org/spec.json")


class TestTemplate:
    def test_keeps_dvc_placeholders_but_not_the_cdn_one(self, template):
        assert template.count("{plot_divs}") == 1 and template.count("{refresh_tag}") == 1
        assert "{scripts}" not in template

    def test_filled_page_loads_nothing_from_the_network(self, template):
        """DVC's own page names CDN scripts; filled the way DVC fills it, ours names none."""
        div = '<div id="p"><script>vegaEmbed("#p", {});</script></div>'

        def filled(page: str) -> str:
            return HTML(page).with_scripts(VegaRenderer.SCRIPTS).with_element(div).embed()

        assert [s for s in script_sources(filled(PAGE_HTML)) if s.startswith("https://")]
        ours = filled(template)
        assert script_sources(ours) == [] and div in ours

    def test_bundle_defines_vega_embed_before_the_plots(self, template):
        head, body = template.rsplit("\n<body>\n", 1)  # the bundle's text has "<body>"
        assert "window.vegaEmbed=" in head and "{plot_divs}" in body
        assert head.count("</script>") == 1 and "<script" not in body


class TestProjectConfig:
    def test_dvc_config_names_the_template_the_command_writes(self):
        config = ConfigObj(str(REPO / ".dvc" / "config"))
        assert config["plots"]["html_template"] == TEMPLATE_NAME  # relative to .dvc/
        assert f"/{TEMPLATE_NAME}" in (REPO / ".dvc" / ".gitignore").read_text().split()


class TestCommand:
    def test_writes_into_the_dvc_folder(self, tmp_path, monkeypatch, capsys, template):
        (tmp_path / ".dvc").mkdir()
        monkeypatch.chdir(tmp_path)
        assert main([]) == 0
        written = tmp_path / ".dvc" / TEMPLATE_NAME
        assert written.read_text(encoding="utf-8") == template
        assert capsys.readouterr().out.strip() == str(written)

    def test_writes_where_told(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        assert main(["-o", "sub/page.html"]) == 0
        assert "{plot_divs}" in Path(tmp_path / "sub" / "page.html").read_text()

    def test_outside_a_dvc_project_says_how_to_fix(self, tmp_path, monkeypatch, capsys):
        monkeypatch.chdir(tmp_path)
        assert main([]) == 2
        err = capsys.readouterr().err
        assert "no .dvc folder" in err and "fix: run this from the project's root" in err
        assert list(tmp_path.iterdir()) == []

    def test_unwritable_output_fails_cleanly(self, tmp_path, capsys):
        (tmp_path / "page.html").mkdir()  # a folder where the file should go
        assert main(["-o", str(tmp_path / "page.html")]) == 2
        assert "cannot write" in capsys.readouterr().err
        assert [p.name for p in tmp_path.iterdir()] == ["page.html"]
