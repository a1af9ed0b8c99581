"""Induction prompt pairs: a random token sequence, then its repeat, to be continued.

A sequence of ``length`` distinct words is followed by its first ``length − 1`` words
again; the model should copy the word that followed the current one last time::

    tennis Mary Oslo bone chef   tennis Mary Oslo bone   ->  " chef"

Conventions:
    * Words are drawn without replacement from :data:`~patchsweep.datasets.vocab.INDUCTION_POOL`
      (the content words of all tasks), so each word of the first copy occurs there once
      and the answer is unambiguous. Words are joined by single spaces.
    * The corrupted prompt replaces the whole first copy with other random words (none
      from the clean sequence); the second copy is unchanged, so nothing earlier in the
      prompt says what comes next.
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
    n_pairs: int, seed: int, *, length: int = 8, split: str = "test"
) -> list[PromptPair]:
    """Generate induction prompt pairs.

    Args:
        n_pairs: How many pairs.
        seed: Seed of a private ``random.Random``.
        length: Words in the repeated sequence (the prompt has ``2 * length − 1`` words).
        split: Accepted for a uniform interface; changes nothing.

    Returns:
        ``n_pairs`` prompt pairs, see the module docstring for their conventions.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 2 <= length <= (len(INDUCTION_POOL) - 1) // 2:
        raise ValueError(f"induction length must be in [2, {(len(INDUCTION_POOL) - 1) // 2}]")
    rng = random.Random(seed)
    out: list[PromptPair] = []
    for _ in range(n_pairs):
        drawn = rng.sample(INDUCTION_POOL, 2 * length + 1)
        seq, other, distractor = drawn[:length], drawn[length : 2 * length], drawn[-1]
        clean_words = seq + seq[:-1]
        offsets = _offsets(clean_words)
        out.append(
            PromptPair(
                clean=" ".join(clean_words),
                corrupted=" ".join(other + seq[:-1]),
                correct=(f" {seq[-1]}",),
                incorrect=(f" {distractor}",),
                labels={
                    "REP1": offsets[0],
                    "CURRENT1": offsets[length - 2],
                    "ANSWER1": offsets[length - 1],
                    "REP2": offsets[length],
                },
                template=f"{TEMPLATE}-{length}",
            )
        )
    return out
