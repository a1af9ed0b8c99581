"""Errors that end a stage with a message a researcher can act on.

Each carries the problem and the fix; stage entry points print both and exit non-zero.
"""

from __future__ import annotations


class PatchsweepError(Exception):
    """A problem with the user's input or environment, with the fix spelled out."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}\n  fix: {fix}")
        self.problem = problem
        self.fix = fix


class ConfigError(PatchsweepError):
    """The configuration is malformed or inconsistent with the model."""


class DataError(PatchsweepError):
    """Prompts, answers or token ids are unusable as given."""


class ModelLoadError(PatchsweepError):
    """The model or tokenizer cannot be loaded."""


class StaleInputError(PatchsweepError):
    """A cached file was made from other inputs than the ones this stage was given."""


class OutputError(PatchsweepError):
    """An output cannot be written where the pipeline puts it."""


class ValidityError(PatchsweepError):
    """A patched pass does not reproduce an unpatched run: the engine's numbers are wrong."""
