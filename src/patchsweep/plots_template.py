"""Write the HTML template that makes ``dvc plots show`` work offline.

DVC's own page loads vega, vega-lite and vega-embed from a CDN, so without a network it
opens blank. This template carries the three libraries inline instead, as bundled by the
``vl-convert-python`` package (no network needed), and ``.dvc/config`` names it
(``plots.html_template``) so plain ``dvc plots show`` and ``dvc plots diff`` use it.

DVC fills a template's ``{scripts}`` with its CDN ``<script>`` tags and ``{plot_divs}``
with one ``<div>`` per plot, each calling ``vegaEmbed``. The template has no ``{scripts}``,
so the CDN tags are dropped, and loads the bundle in ``<head>``, before those calls run.

    python -m patchsweep.plots_template            # writes .dvc/plots-template.html
    python -m patchsweep.plots_template -o PATH    # elsewhere
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from patchsweep.cli import EXIT_USER_ERROR
from patchsweep.errors import ConfigError, PatchsweepError
from patchsweep.io import write_text

# What ``.dvc/config`` names: DVC resolves a relative plots.html_template from .dvc/.
TEMPLATE_NAME = "plots-template.html"
# DVC's page, less the CDN tags: the placeholders are the ones dvc_render.html fills.
PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <script type="text/javascript">
{bundle}
    </script>
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""
# Strings the bundle must not contain: DVC would substitute into the placeholders, and
# the HTML parser would end the inline script at the first ``</script``.
FORBIDDEN = ("{plot_divs}", "{scripts}", "{refresh_tag}", "</script")


def vega_lite_version(available: Sequence[str], schema: str) -> str:
    """The newest of the ``available`` Vega-Lite versions with the major version of DVC's
    plot templates' ``$schema`` (e.g. ``.../vega-lite/v5.json``): a v5 spec drawn by
    Vega-Lite 6 may not draw as DVC meant."""
    found = re.search(r"/vega-lite/v(\d+)", schema)
    if found is None:
        raise ConfigError(
            f"DVC's plot templates declare an unexpected $schema {schema!r}",
            "install the dvc and dvc-render versions of constraints-cpu.txt",
        )
    major = found.group(1)
    matching = [v for v in available if v.split(".")[0] == major]
    if not matching:
        raise ConfigError(
            f"vl-convert-python bundles Vega-Lite {', '.join(available)}, none v{major} as "
            "DVC's plot templates need",
            "install the vl-convert-python version of constraints-cpu.txt",
        )
    return max(matching, key=lambda v: tuple(int(part) for part in v.split(".")))


def build_template() -> str:
    """The template's text: DVC's page with vega, vega-lite and vega-embed inline."""
    import vl_convert
    from dvc_render.vega_templates import LinearTemplate

    version = vega_lite_version(
        vl_convert.get_vegalite_versions(), LinearTemplate.DEFAULT_CONTENT["$schema"]
    )
    bundle = vl_convert.javascript_bundle(vl_version=version)
    bad = [s for s in FORBIDDEN if s in bundle]
    if bad:
        raise ConfigError(
            f"the vega bundle of vl-convert-python contains {bad}, which would break the page",
            "install the vl-convert-python version of constraints-cpu.txt",
        )
    return PAGE.format(bundle=bundle, refresh_tag="{refresh_tag}", plot_divs="{plot_divs}")


def default_output(root: Path) -> Path:
    """``.dvc/plots-template.html`` of the DVC project at ``root``."""
    dvc_dir = root / ".dvc"
    if not dvc_dir.is_dir():
        raise ConfigError(
            f"no .dvc folder in {root}: the template belongs to a DVC project",
            "run this from the project's root folder, or give the file with -o PATH",
        )
    return dvc_dir / TEMPLATE_NAME


def write_template(output: Path) -> Path:
    """Write the template to ``output`` atomically (no half-written page); return it.

    Raises:
        OutputError: ``output`` cannot be written (from :func:`patchsweep.io.write_text`).
    """
    write_text(output, build_template())
    return output


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 with the problem and fix on bad input)."""
    parser = argparse.ArgumentParser(
        prog="python -m patchsweep.plots_template",
        description="Write the offline HTML template that .dvc/config names for dvc plots.",
    )
    parser.add_argument(
        "-o", "--output", type=Path, help=f"where to write it (default: .dvc/{TEMPLATE_NAME})"
    )
    ns = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        output = write_template(ns.output or default_output(Path.cwd()))
    except PatchsweepError as exc:
        print(f"error: {exc.problem}\n  fix: {exc.fix}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
