"""What each forward pass of a sweep computes: the unit of the cost estimate.

A pass feeds ``tokens`` positions (batch rows × width, padding included) through
``layers`` blocks, for ``rows`` patched rows. The engine records every pass it actually
runs while :func:`recording_passes` is active; :func:`patchsweep.engine.tiling.pass_shape`
predicts the same figures from the plan alone, which is what ``patchsweep estimate``
prints. A test holds the two to each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class PassShape:
    """One forward pass's size.

    Attributes:
        layout: ``padded``, ``packed``, or ``prefix`` (the target run's keys and values).
        rows: Patched rows it serves (0 for the prefix pass).
        tokens: Token positions it feeds (batch × width).
        layers: Blocks it runs (those from its lowest patched layer up).
        bytes: Predicted working memory (0 where not predicted).
        uses_prefix: It starts after position 0, from the target run's cached keys and
            values (which one prefix pass per prompt length computes first).
    """

    layout: str
    rows: int
    tokens: int
    layers: int
    bytes: int = 0
    uses_prefix: bool = False

    @property
    def token_layers(self) -> int:
        return self.tokens * self.layers


_RECORDS: ContextVar[list[PassShape] | None] = ContextVar("patchsweep_passes", default=None)


@contextmanager
def recording_passes() -> Iterator[list[PassShape]]:
    """Collect every forward pass the engine runs inside the block, in order."""
    records: list[PassShape] = []
    token = _RECORDS.set(records)
    try:
        yield records
    finally:
        _RECORDS.reset(token)


def record_pass(layout: str, rows: int, tokens: int, layers: int) -> None:
    """Called by each pass as it runs; free when nothing is recording."""
    records = _RECORDS.get()
    if records is not None:
        records.append(PassShape(layout, rows, tokens, layers))
