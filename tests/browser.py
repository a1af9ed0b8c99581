"""Headless Chromium for the slow tier: open a page with the network cut off and say what
did not draw.

Debian's packages give the browser and its driver (``apt-get install -y chromium
chromium-driver``); without them the tests that use :func:`chromium` skip and say so.
Every host name resolves to nothing, so a page that needs a CDN draws as it would offline.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = "apt-get install -y chromium chromium-driver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,900",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: no host name resolves
)
WAIT_S = 15.0  # for vega to draw every chart; a drawn page takes well under a second


@contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """A headless Chromium (selenium WebDriver) with a fresh profile in ``profile``; skip
    the test when Debian's chromium or chromium-driver is not installed."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.skip(f"no {' and no '.join(missing)}: install Chromium and its driver: `{INSTALL}`")
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium: pip install -e '.[dev]'"
    )
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # the driver is named: selenium would otherwise try to download one
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def vega_chart_ids(page: Path) -> list[str]:
    """The ids of the elements a DVC plots page hands to ``vegaEmbed``, in page order."""
    return re.findall(r"vegaEmbed\('#([^']+)'", page.read_text(encoding="utf-8"))


def colours(png: bytes, most: int = 64) -> int:
    """How many colours a screenshot has, counted up to ``most``: 1 is a blank page."""
    from PIL import Image

    counted = Image.open(io.BytesIO(png)).convert("RGB").getcolors(maxcolors=most)
    return most if counted is None else len(counted)


def undrawn_charts(driver: Any, page: Path, ids: list[str]) -> list[str]:
    """Open ``page``; the charts of ``ids`` that vega did not draw, each with the reason.

    A chart is drawn when vega-embed filled its element with a ``.marks`` canvas or SVG
    of non-zero size, and a screenshot of the element has more than a few colours (axes,
    text and lines: a blank or half-drawn box has one or two).
    """
    driver.get(page.as_uri())
    find = "return document.querySelectorAll(arguments[0]).length"
    selector = ", ".join(f"#{i} .marks" for i in ids)
    deadline = time.monotonic() + WAIT_S
    while driver.execute_script(find, selector) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.1)
    problems = []
    for chart in ids:
        size = driver.execute_script(
            "const m = document.querySelector(arguments[0]);"
            "if (!m) return null; const r = m.getBoundingClientRect(); return [r.width, r.height]",
            f"#{chart} .marks",
        )
        if size is None:
            problems.append(f"{chart}: no vega chart (vega-embed did not run)")
        elif min(size) <= 0:
            problems.append(f"{chart}: the chart has size {size}")
        else:
            element = driver.find_element("css selector", f"#{chart}")
            if (n := colours(element.screenshot_as_png)) < 4:
                problems.append(f"{chart}: the chart's box has {n} colour(s): nothing drawn")
    return problems


def unloaded_images(driver: Any, page: Path) -> list[str]:
    """Open ``page``; every ``<img>`` that did not load and decode, by its alt text."""
    driver.get(page.as_uri())
    deadline = time.monotonic() + WAIT_S
    while driver.execute_script("return document.readyState") != "complete":
        if time.monotonic() > deadline:
            return ["the page did not finish loading"]
        time.sleep(0.1)
    states = driver.execute_script(
        "return [...document.images].map(i => [i.alt, i.complete, i.naturalWidth])"
    )
    return [f"{alt!r}: not drawn" for alt, complete, width in states if not (complete and width)]
