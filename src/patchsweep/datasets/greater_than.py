"""Greater-Than prompt pairs, after Hanna et al. (2023).

The prompt starts a span of years and stops before the end year's last two digits::

    The war lasted from the year 17 32 to the year 17   ->  any of " 33" ... " 99"

Conventions:
    * Years are written as two tokens, century then two-digit year (``"17 32"``), so each
      half is one token of the word-level vocabulary (GPT-2's BPE splits ``"1732"`` the
      same way for most years, but not all: use this generator with the organism).
    * ``correct`` holds every two-digit year greater than YY (``" 33"`` … ``" 99"``),
      ``incorrect`` every one less than or equal to it (``" 00"`` … ``" 32"``); the usual
      metric is the probability difference sum p(correct) − sum p(incorrect).
    * The corrupted prompt sets YY to ``"01"`` (the paper's "01-dataset"): every end year
      is then plausible, so the prompt's information about YY is gone.
    * YY ranges over 02 … 98, so both answer sets are non-empty; the century over 11 … 19.
    * Labels (character offsets into ``clean``): ``NOUN``, ``XX1`` (start century),
      ``YY`` (start year's two digits) and ``XX2`` (end century, the last token).
    * Splits hold out (century, YY) combinations by a fixed hash, about one in five, so
      test prompts pose start years the organism never saw in training.
"""

from __future__ import annotations

import random
import zlib

from patchsweep.datasets.base import PromptPair
from patchsweep.datasets.vocab import CENTURIES, GT_NOUNS, TWO_DIGITS, render

TEMPLATE = "The {NOUN} lasted from the year {XX} {YY} to the year {XX}"
CORRUPT_YY = "01"
YY_RANGE = range(2, 99)
SPLITS = ("train", "test")
TEST_FRACTION = 5


def is_test_year(century: str, yy: str) -> bool:
    """Whether the start year (century, YY) belongs to the held-out test split."""
    return zlib.crc32(f"{century}|{yy}".encode()) % TEST_FRACTION == 0


def greater_years(yy: str) -> tuple[str, ...]:
    """The two-digit years greater than ``yy``, each with its leading space."""
    return tuple(f" {y}" for y in TWO_DIGITS if int(y) > int(yy))


def not_greater_years(yy: str) -> tuple[str, ...]:
    """The two-digit years less than or equal to ``yy``, each with its leading space."""
    return tuple(f" {y}" for y in TWO_DIGITS if int(y) <= int(yy))


def generate_greater_than(n_pairs: int, seed: int, *, split: str = "test") -> list[PromptPair]:
    """Generate Greater-Than prompt pairs.

    Args:
        n_pairs: How many pairs.
        seed: Seed of a private ``random.Random``.
        split: ``"test"`` (held-out start years) or ``"train"``.

    Returns:
        ``n_pairs`` prompt pairs, see the module docstring for their conventions.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    want_test = split == "test"
    starts = [
        (c, f"{y:02d}")
        for c in CENTURIES
        for y in YY_RANGE
        if is_test_year(c, f"{y:02d}") == want_test
    ]
    rng = random.Random(seed)
    out: list[PromptPair] = []
    for _ in range(n_pairs):
        century, yy = rng.choice(starts)
        noun = rng.choice(GT_NOUNS)
        clean, offsets = render(TEMPLATE, {"NOUN": noun, "XX": century, "YY": yy})
        corrupted, _ = render(TEMPLATE, {"NOUN": noun, "XX": century, "YY": CORRUPT_YY})
        out.append(
            PromptPair(
                clean=clean,
                corrupted=corrupted,
                correct=greater_years(yy),
                incorrect=not_greater_years(yy),
                labels={
                    "NOUN": offsets["NOUN"][0],
                    "XX1": offsets["XX"][0],
                    "YY": offsets["YY"][0],
                    "XX2": offsets["XX"][1],
                },
                template=TEMPLATE,
            )
        )
    return out
