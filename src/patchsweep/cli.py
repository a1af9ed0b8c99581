"""What every stage entry point shares: logging, and errors turned into exit codes.

A :class:`~patchsweep.errors.PatchsweepError` prints its problem and fix and exits with
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from patchsweep.errors import ConfigError, PatchsweepError

EXIT_USER_ERROR = 2


def setup_logging() -> None:
    """INFO logs to stderr, and quiet third-party chatter that hides the stage's own."""
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_stage(main: Callable[[list[str]], None], argv: list[str] | None = None) -> None:
    """Run a stage's ``main(argv)``; on a user error print it and exit non-zero."""
    setup_logging()
    try:
        main(sys.argv[1:] if argv is None else argv)
    except PatchsweepError as exc:
        print(f"error: {exc.problem}\n  fix: {exc.fix}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


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
