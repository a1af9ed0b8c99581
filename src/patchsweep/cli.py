"""What every stage entry point shares: logging, and errors turned into exit codes.

A :class:`~patchsweep.errors.PatchsweepError` prints its problem and fix and exits with
status 2; anything else is a bug and keeps its traceback (and its exit status), after
the stage's record under ``logs/stages/`` says it crashed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from patchsweep.errors import ConfigError, PatchsweepError

EXIT_USER_ERROR = 2
CRASHED = "crashed"  # a record's status after an exception that is not a PatchsweepError
CRASH_MESSAGE_CHARS = 2000  # of an exception's message kept in the record (a tensor's repr…)
_LOADED = time.time()


# Loggers whose INFO lines are the stage's progress; a stage module run with
# ``python -m`` logs as __main__.
OWN_LOGGERS = ("patchsweep", "__main__")
# Libraries that may set their own logger's level (or did in some version): held at
# WARNING by name too, since the root's level does not reach a logger with its own.
THIRD_PARTY = (
    "fontTools",  # every glyph subset of every PDF at INFO: thousands of lines a repro
    "matplotlib",
    "PIL",
    "urllib3",
    "httpx",
    "filelock",
    "huggingface_hub",
    "transformers",
    "nnsight",
    "hydra",
    "dvc",
)


def setup_logging() -> None:
    """patchsweep's INFO lines to stderr; every other library's only from WARNING.

    The root logger stays at WARNING, so a library not named here is quiet too. The
    progress bar transformers draws over a checkpoint's tensors on every model load is
    off unless ``HF_HUB_DISABLE_PROGRESS_BARS=0`` is set (it also governs downloads).
    """
    fmt = "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.WARNING, format=fmt, stream=sys.stderr)
    logging.getLogger().setLevel(logging.WARNING)  # also where Hydra configured it
    for own in OWN_LOGGERS:
        logging.getLogger(own).setLevel(logging.INFO)
    for noisy in THIRD_PARTY:
        library = logging.getLogger(noisy)
        if library.level < logging.WARNING:  # raised, never lowered (transformers: ERROR)
            library.setLevel(logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # read when huggingface_hub is imported; transformers may be imported already
    if os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1") == "1" and (
        "transformers" in sys.modules
    ):
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


def run_stage(main: Callable[[list[str]], None], argv: list[str] | None = None) -> None:
    """Run a stage's ``main(argv)``; on a user error print it and exit non-zero.

    The stage's wall time is logged at the end (from process start, so it includes
    imports): what ``patchsweep estimate`` predicts. It is also recorded, with how the
    stage ended, under ``logs/stages/`` for ``patchsweep summary``: DVC prints no totals.
    Any other exception (a bug, an out-of-memory error, Ctrl-C) is recorded as
    ``crashed`` and raised again, so its traceback prints and the exit status stays
    non-zero; without the record the summary could not say which stage it was. A
    ``SystemExit`` passes through unrecorded: the stage chose its own exit.
    """
    setup_logging()
    args = sys.argv[1:] if argv is None else argv
    stage = Path(sys.argv[0]).stem if argv is None else main.__module__.rpartition(".")[2]
    try:
        main(args)
    except PatchsweepError as exc:
        print(f"error: {exc.problem}\n  fix: {exc.fix}", file=sys.stderr)
        record_stage(stage, args, "failed", exc.problem)
        sys.exit(EXIT_USER_ERROR)
    except (Exception, KeyboardInterrupt) as exc:
        record_stage(stage, args, CRASHED, crash_problem(exc))
        raise
    seconds = record_stage(stage, args, "done")
    logging.getLogger("patchsweep.stage").info(
        "stage %s %s done in %.1f s", stage, " ".join(args), seconds
    )


def crash_problem(exc: BaseException) -> str:
    """What a crashed stage's record says: the exception's type and message, and where
    the rest is (the traceback, which Python prints after the record is written)."""
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    message = " ".join(str(exc).split())
    if len(message) > CRASH_MESSAGE_CHARS:
        message = message[: CRASH_MESSAGE_CHARS - 3] + "..."
    return f"{name}{': ' + message if message else ''} (see the traceback above)"


STAGE_RECORDS = Path("logs") / "stages"  # git-ignored; no stage reads it, so DVC ignores it


def stage_record_path(stage: str, args: list[str]) -> Path:
    """One file per stage instance (the last run's): names are plain, never hold '+'."""
    return STAGE_RECORDS / ("+".join([stage, *args]) + ".json")


def record_stage(stage: str, args: list[str], status: str, problem: str = "") -> float:
    """Write how this stage run ended and its wall time; return the seconds.

    A record that cannot be written costs a warning, never the stage's result.
    """
    seconds = process_seconds()
    record = {
        "stage": stage,
        "args": list(args),
        "status": status,
        "seconds": round(seconds, 2),
        "finished": round(time.time(), 3),
        "problem": problem,
    }
    path = stage_record_path(stage, args)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(path.name + ".tmp")
        temp.write_text(json.dumps(record, sort_keys=True) + "\n")
        os.replace(temp, path)
    except OSError as exc:
        logging.getLogger("patchsweep.stage").warning("could not record %s: %s", path, exc)
    return seconds


def process_seconds() -> float:
    """Seconds since this process started (Linux: from /proc), else since this module
    was imported."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = time.clock_gettime(time.CLOCK_BOOTTIME)
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time() - _LOADED


def stage_args(
    argv: list[str], stage: str, usage: str, count: int, more: bool = False
) -> list[str]:
    """The stage's positional arguments, refused with its usage line when miscounted."""
    if len(argv) < count or (len(argv) > count and not more):
        raise ConfigError(
            f"stage {stage} takes {usage}, got {len(argv)} argument(s): {argv}",
            f"run `python -m patchsweep.stages.{stage} {usage}` (dvc.yaml does)",
        )
    return argv
