"""Stage logging: patchsweep's INFO lines, and every other library's only from WARNING."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import logging
from patchsweep.cli import setup_logging
setup_logging()
for name in ("patchsweep.stage", "__main__", "nnsight", "PIL.PngImagePlugin", "hydra",
             "dvc", "fontTools.subset", "matplotlib.font_manager", "some_new_library"):
    logging.getLogger(name).info("info from %s", name)
    logging.getLogger(name).warning("warning from %s", name)
"""


def test_only_patchsweep_logs_info_and_every_library_still_warns():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    infos = [line for line in lines if line.startswith("INFO ")]
    assert infos == [
        "INFO patchsweep.stage: info from patchsweep.stage",
        "INFO __main__: info from __main__",
    ]
    warned = {line.split(":")[0].split()[1] for line in lines if line.startswith("WARNING ")}
    assert "some_new_library" in warned and "fontTools.subset" in warned and "nnsight" in warned
