"""Prompt pairs written out in the config (``dataset.generator: pairs``).

Labels there name a word instead of a character offset, since nobody counts characters
by hand: ``{IO: John, S1: Mary, S2: "Mary#2"}`` — ``#k`` picks the k-th occurrence.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from patchsweep.datasets.base import PromptPair
from patchsweep.errors import DataError

REQUIRED = ("clean", "corrupted", "correct", "incorrect")


def pairs_from_config(
    rows: Sequence[Mapping[str, Any]], source: str = "dataset.pairs"
) -> list[PromptPair]:
    """Build pairs from mappings with clean, corrupted, correct, incorrect and labels."""
    if not rows:
        raise DataError(f"{source} is empty", "add at least one pair, or use a generator")
    return [_pair(row, i, source) for i, row in enumerate(rows)]


def _pair(row: Mapping[str, Any], index: int, source: str) -> PromptPair:
    where = str(row.get("origin") or f"{source}[{index}]")
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        raise DataError(
            f"{where} lacks {', '.join(missing)}",
            f"give every pair {', '.join(REQUIRED)} (labels optional)",
        )
    clean = str(row["clean"])
    labels = {
        str(k): word_offset(clean, str(v), f"{where}: labels.{k}")
        for k, v in dict(row.get("labels") or {}).items()
    }
    return PromptPair(
        clean=clean,
        corrupted=str(row["corrupted"]),
        correct=_answers(row["correct"]),
        incorrect=_answers(row["incorrect"]),
        labels=labels,
        template=str(row.get("template", "")),
        origin=str(row.get("origin", "")),
    )


def _answers(value: Any) -> tuple[str, ...]:
    return (str(value),) if isinstance(value, str) else tuple(str(v) for v in value)


def word_offset(text: str, spec: str, where: str) -> int:
    """Character offset of the k-th whole-word occurrence named by ``word`` or ``word#k``."""
    word, _, nth = spec.partition("#")
    k = int(nth) if nth.isdigit() else 1
    hits = [m.start() for m in re.finditer(rf"(?<!\w){re.escape(word)}(?!\w)", text)]
    if len(hits) < k:
        raise DataError(
            f"{where}: {spec!r} does not occur {k} time(s) in {text!r}",
            "name a word of the clean prompt, with #k for its k-th occurrence",
        )
    return hits[k - 1]
