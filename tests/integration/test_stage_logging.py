"""What a stage prints: its own progress, not the libraries' chatter (run as DVC runs it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from project import EXP, run_through_patch

from patchsweep.stages import normalize

# A log line as setup_logging formats it: "LEVEL logger.name: message".
LOG_LINE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+): ")
OWN = ("patchsweep", "__main__")  # a stage module run with -m logs as __main__


def stage_output(*argv: str) -> str:
    """Everything ``python -m patchsweep.stages.<argv>`` prints, stdout and stderr."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for name in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):
        env.pop(name, None)  # as a shell that never set them runs the stage
    done = subprocess.run(
        [sys.executable, "-m", f"patchsweep.stages.{argv[0]}", *argv[1:]],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def info_loggers(output: str) -> set[str]:
    """The loggers that printed INFO lines."""
    return {
        m.group(2)
        for line in output.splitlines()
        if (m := LOG_LINE.match(line)) and m.group(1) == "INFO"
    }


def test_stages_print_their_own_progress_and_no_library_chatter(project):
    run_through_patch()
    normalize.run(EXP)
    patch = stage_output("patch", "tiny", "tiny", "head")
    plot = stage_output("plot", "tiny", "tiny")  # PDFs: fontTools subsets their fonts
    for output in (patch, plot):
        assert "fontTools" not in output
        # transformers' progress bar over the checkpoint's tensors, on every model load
        assert "Loading weights" not in output
        assert {n for n in info_loggers(output) if n.split(".")[0] not in OWN} == set()
    # the stage's own progress stays
    assert "INFO patchsweep.stage: stage patch tiny tiny head done in" in patch
    assert "INFO __main__: wrote data/cache/tiny/tiny/patch/head.csv" in patch
    assert "INFO patchsweep.stage: stage plot tiny tiny done in" in plot
    assert (project / EXP.figures / "head.pdf").is_file()
