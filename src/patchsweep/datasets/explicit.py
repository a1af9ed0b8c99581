"""Prompt pairs written out in the config (``dataset.generator: pairs``).

Labels there name a word instead of a character offset, since nobody counts characters
by hand: ``{IO: John, S1: Mary, S2: "Mary#2"}`` — ``#k`` picks the k-th occurrence
(``#1``, or no ``#``, the first); a word that itself holds ``#`` needs its count: ``C##1``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from patchsweep.datasets.base import PromptPair
from patchsweep.errors import DataError

REQUIRED = ("clean", "corrupted", "correct", "incorrect")
PROMPT_EXAMPLE = '"When John and Mary went to the store, Mary gave a book to"'
ANSWER_EXAMPLE = '" John" or [" John", " Johnny"]'


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
    clean = _text(row["clean"], f"{where}: clean", PROMPT_EXAMPLE)
    return PromptPair(
        clean=clean,
        corrupted=_text(row["corrupted"], f"{where}: corrupted", PROMPT_EXAMPLE),
        correct=_answers(row["correct"], f"{where}: correct"),
        incorrect=_answers(row["incorrect"], f"{where}: incorrect"),
        labels=_labels(row.get("labels"), clean, where),
        template=_text(row.get("template") or "", f"{where}: template", '"a"'),
        origin=str(row.get("origin", "")),
    )


def _text(value: Any, what: str, example: str) -> str:
    """``value`` if it is a string. JSON and YAML hand over ``null``, numbers and
    booleans as such, and ``str()`` would quietly turn them into prompts like "None"."""
    if not isinstance(value, str):
        raise DataError(
            f"{what} is {_shown(value)}, not a string",
            f"write it as a quoted string, e.g. {example}",
        )
    return value


def _shown(value: Any) -> str:
    return "null" if value is None else f"{value!r} ({type(value).__name__})"


def _answers(value: Any, what: str) -> tuple[str, ...]:
    """One answer string, or a list of them (an answer set)."""
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Sequence):
        raise DataError(
            f"{what} is {_shown(value)}, not a string or a list of strings",
            f"write the answer(s) with their leading space, e.g. {ANSWER_EXAMPLE}",
        )
    return tuple(_text(v, f"{what}[{i}]", '" John"') for i, v in enumerate(value))


def _labels(value: Any, clean: str, where: str) -> dict[str, int]:
    """Label name → character offset of the word it names in the clean prompt."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DataError(
            f"{where}: labels is {_shown(value)}, not a mapping of name to word",
            'write labels as {"IO": "John", "S2": "Mary#2"}',
        )
    return {
        str(k): word_offset(
            clean, _text(v, f"{where}: labels.{k}", '"Mary#2"'), f"{where}: labels.{k}"
        )
        for k, v in value.items()
    }


def word_offset(text: str, spec: str, where: str) -> int:
    """Character offset of the k-th whole-word occurrence named by ``word`` or ``word#k``."""
    word, k = _occurrence(spec, where)
    hits = [m.start() for m in re.finditer(rf"(?<!\w){re.escape(word)}(?!\w)", text)]
    if len(hits) < k:
        raise DataError(
            f"{where}: {spec!r} does not occur {k} time(s) in {text!r}",
            "name a word of the clean prompt, with #k for its k-th occurrence",
        )
    return hits[k - 1]


def _occurrence(spec: str, where: str) -> tuple[str, int]:
    """Split ``word#k`` into the word and k. Anything after ``#`` but a count ≥ 1 is a
    typo (``Mary#0``, ``Mary#x``), and guessing an occurrence would patch the wrong token."""
    word, sep, nth = spec.rpartition("#")
    if not sep:
        word, nth = spec, "1"
    if not word.strip():
        raise DataError(
            f"{where}: {spec!r} names no word",
            "name a word of the clean prompt, e.g. Mary or Mary#2",
        )
    if not (nth.isascii() and nth.isdigit()) or int(nth) < 1:
        raise DataError(
            f"{where}: {spec!r} has {repr(nth) if nth else 'nothing'} after '#', "
            "which is not a whole number ≥ 1",
            f"write {word}#2 for the second occurrence of {word!r} (#1, or no #, for the "
            f"first); if {spec!r} is itself the word, write {spec}#1",
        )
    return word, int(nth)
