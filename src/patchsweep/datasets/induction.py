"""Induction prompt pairs: a random token sequence, then its repeat, to be continued.

A sequence of ``length`` distinct words is followed by its first ``length − 1`` words
again; the model should copy the word that followed the current one last time::

    tennis Mary Oslo bone chef   tennis Mary Oslo bone   ->  " chef"

An optional ``prefix`` of other distinct words comes first, so the first copy does not
always start the prompt: without one, the answer always sits halfway along the prompt and
a head can find it by position alone, with no previous-token head (training uses this).

Conventions:
    * Words are drawn without replacement from :data:`~patchsweep.datasets.vocab.INDUCTION_POOL`
      (the content words of all tasks), so each word of the first copy occurs there once
      and the answer is unambiguous. Words are joined by single spaces.
    * The corrupted prompt replaces the whole first copy with other random words (none
      from the clean sequence); the prefix and the second copy are unchanged, so nothing
      earlier in the prompt says what comes next.
    * ``correct = (" " + last word,)``; ``incorrect`` is one random pool word that occurs
      in neither prompt — a neutral baseline, since induction has no natural wrong answer.
    * Labels (character offsets into ``clean``): ``REP1`` (start of the first copy),
      ``CURRENT1`` (the first copy's occurrence of the prompt's last word), ``ANSWER1``
      (the first copy's occurrence of the answer: where an induction head looks) and
      ``REP2`` (start of the second copy).
    * Every sequence is fresh random draw, so there is nothing to hold out: ``split`` is
      accepted for a uniform interface and changes nothing.
"""

from __future__ import annotations

import random

from patchsweep.datasets.base import PromptPair
from patchsweep.datasets.vocab import INDUCTION_POOL

SPLITS = ("train", "test")
TEMPLATE = "induction"


def _offsets(words: list[str]) -> list[int]:
    """Character offset of each word in ``" ".join(words)``."""
    offsets, pos = [], 0
    for word in words:
        offsets.append(pos)
        pos += len(word) + 1
    return offsets


def generate_induction(
    n_pairs: int, seed: int, *, length: int = 8, prefix: int = 0, split: str = "test"
) -> list[PromptPair]:
    """Generate induction prompt pairs.

    Args:
        n_pairs: How many pairs.
        seed: Seed of a private ``random.Random``.
        length: Words in the repeated sequence (the prompt has ``2 * length − 1`` words
            after the prefix).
        prefix: Distinct words before the first copy, none of them repeated later.
        split: Accepted for a uniform interface; changes nothing.

    Returns:
        ``n_pairs`` prompt pairs, see the module docstring for their conventions.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if prefix < 0:
        raise ValueError(f"induction prefix must be >= 0, got {prefix}")
    longest = (len(INDUCTION_POOL) - 1 - prefix) // 2
    if not 2 <= length <= longest:
        raise ValueError(
            f"induction length must be in [2, {longest}] with a prefix of {prefix} words"
        )
    rng = random.Random(seed)
    out: list[PromptPair] = []
    for _ in range(n_pairs):
        drawn = rng.sample(INDUCTION_POOL, 2 * length + 1 + prefix)
        seq, other, distractor = drawn[:length], drawn[length : 2 * length], drawn[2 * length]
        before = drawn[2 * length + 1 :]
        clean_words = before + seq + seq[:-1]
        offsets = _offsets(clean_words)
        out.append(
            PromptPair(
                clean=" ".join(clean_words),
                corrupted=" ".join(before + other + seq[:-1]),
                correct=(f" {seq[-1]}",),
                incorrect=(f" {distractor}",),
                labels={
                    "REP1": offsets[prefix],
                    "CURRENT1": offsets[prefix + length - 2],
                    "ANSWER1": offsets[prefix + length - 1],
                    "REP2": offsets[prefix + length],
                },
                template=f"{TEMPLATE}-{length}",
            )
        )
    return out
