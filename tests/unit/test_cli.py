"""Stage entry points: patchsweep's INFO lines (every other library's only from WARNING),
and the record under logs/stages/ of how each run ended."""

from __future__ import annotations

import json
import subprocess
import sys

from patchsweep.cli import CRASH_MESSAGE_CHARS, EXIT_USER_ERROR, crash_problem

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


# A stage entry point as the stages have one, run as DVC runs it (its own process): the
# failure to raise comes from the command line.
STAGE = """
import sys
from patchsweep.cli import run_stage
from patchsweep.errors import ConfigError

def main(argv):
    kind = argv[-1]
    if kind == "bug":
        raise ValueError("layer 7 of 2\\nsecond line")
    if kind == "interrupt":
        raise KeyboardInterrupt
    if kind == "user":
        raise ConfigError("sweeps.x.layers has [7]", "use layers between 0 and 1")

sys.argv[0] = "patch"
run_stage(main)
"""


def run_fake_stage(tmp_path, kind: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run the stage above in ``tmp_path``; its exit and the record it left."""
    done = subprocess.run(
        [sys.executable, "-c", STAGE, "m", "d", kind], cwd=tmp_path, capture_output=True, text=True
    )
    path = tmp_path / "logs" / "stages" / f"patch+m+d+{kind}.json"
    assert path.is_file(), f"no record at {path}: {done.stderr}"
    return done, json.loads(path.read_text())


class TestStageRecords:
    """Every way a stage ends leaves a record: done, failed (a user error), crashed."""

    def test_an_unexpected_exception_is_recorded_as_crashed_and_raised(self, tmp_path):
        done, record = run_fake_stage(tmp_path, "bug")
        assert done.returncode == 1  # Python's own status for an uncaught exception
        assert "Traceback (most recent call last)" in done.stderr
        assert "ValueError: layer 7 of 2" in done.stderr
        assert record["status"] == "crashed"
        assert record["problem"] == (
            "ValueError: layer 7 of 2 second line (see the traceback above)"
        )
        assert record["args"] == ["m", "d", "bug"] and record["seconds"] > 0

    def test_ctrl_c_is_recorded_as_crashed_and_still_interrupts(self, tmp_path):
        done, record = run_fake_stage(tmp_path, "interrupt")
        assert done.returncode != 0
        assert "KeyboardInterrupt" in done.stderr
        assert record["status"] == "crashed"
        assert record["problem"] == "KeyboardInterrupt (see the traceback above)"

    def test_a_user_error_is_failed_with_its_problem_and_no_traceback(self, tmp_path):
        done, record = run_fake_stage(tmp_path, "user")
        assert done.returncode == EXIT_USER_ERROR
        assert "Traceback" not in done.stderr and "fix: use layers" in done.stderr
        assert record["status"] == "failed"
        assert record["problem"] == "sweeps.x.layers has [7]"

    def test_a_finished_stage_is_done(self, tmp_path):
        done, record = run_fake_stage(tmp_path, "ok")
        assert done.returncode == 0, done.stderr
        assert record["status"] == "done" and record["problem"] == ""


def test_crash_problem_names_the_exception_type_with_its_module():
    class OutOfMemory(RuntimeError):
        pass

    problem = crash_problem(OutOfMemory("x" * (CRASH_MESSAGE_CHARS + 50)))
    assert problem.startswith(f"{__name__}.")
    assert "OutOfMemory: xxx" in problem and problem.endswith("... (see the traceback above)")
    assert len(problem) < CRASH_MESSAGE_CHARS + 200
