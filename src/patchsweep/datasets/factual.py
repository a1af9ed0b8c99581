"""Factual-recall prompt pairs over a fixed synthetic knowledge base.

Each invented subject has one attribute per relation (a city, a profession, a sport); the
prompt asks for it::

    Orla lives in the city of   ->  " Cairo"

The subjects are invented words, so a model can only know these facts from the organism's
training set: the knowledge base *is* the task, and every fact occurs in training (the
``split`` option is accepted for a uniform interface and changes nothing).

Conventions:
    * :data:`KNOWLEDGE_BASE` maps ``(subject, relation)`` to the attribute. It is drawn
      once from a constant seed (:data:`KB_SEED`), independent of the generator's seed,
      so every run and every machine sees the same facts.
    * Corruption ``"noise"`` (the default) sets ``corrupted = clean``: the corruption of
      causal tracing (Meng et al., 2022) is Gaussian noise added later to the subject's
      token embeddings, not a different prompt. ``incorrect`` then holds one random other
      attribute of the same relation, so a logit difference is still defined.
    * Corruption ``"replace"`` puts another subject with the same number of words and a
      different attribute in the subject's place; ``correct`` is the clean subject's
      attribute, ``incorrect`` the replacement subject's.
    * Labels (character offsets into ``clean``): ``SUBJ`` (first subject word),
      ``SUBJ_LAST`` (last subject word; the position causal tracing singles out) and
      ``REL`` (first word of the relation phrase).
    * ``template`` is the relation's template, e.g. ``"{SUBJECT} lives in the city of"``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from patchsweep.datasets.base import PromptPair
from patchsweep.datasets.vocab import (
    CITIES,
    PROFESSIONS,
    SPORTS,
    SUBJECTS,
    next_word_offset,
    render,
)

# relation -> (template, attribute pool)
RELATIONS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "city": ("{SUBJECT} lives in the city of", CITIES),
    "profession": ("{SUBJECT} works as a", PROFESSIONS),
    "sport": ("{SUBJECT} plays the sport of", SPORTS),
}
KB_SEED = 20261125
CORRUPTIONS = ("noise", "replace")
SPLITS = ("train", "test")


def _build_knowledge_base() -> dict[tuple[str, str], str]:
    rng = random.Random(KB_SEED)
    return {
        (subject, relation): rng.choice(pool)
        for relation, (_template, pool) in RELATIONS.items()
        for subject in SUBJECTS
    }


KNOWLEDGE_BASE: Mapping[tuple[str, str], str] = _build_knowledge_base()


def generate_factual(
    n_pairs: int,
    seed: int,
    *,
    corruption: str = "noise",
    split: str = "test",
    relations: tuple[str, ...] | list[str] | None = None,
) -> list[PromptPair]:
    """Generate factual-recall prompt pairs.

    Args:
        n_pairs: How many pairs (facts are drawn with replacement).
        seed: Seed of a private ``random.Random``.
        corruption: ``"noise"`` (corrupted = clean) or ``"replace"`` (another subject).
        split: Accepted for a uniform interface; every fact is in both splits.
        relations: Restrict to these relations (default: all of :data:`RELATIONS`).

    Returns:
        ``n_pairs`` prompt pairs, see the module docstring for their conventions.
    """
    if corruption not in CORRUPTIONS:
        raise ValueError(f"factual corruption must be one of {CORRUPTIONS}, got {corruption!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    chosen = list(RELATIONS) if relations is None else list(relations)
    unknown = sorted(set(chosen) - set(RELATIONS))
    if unknown:
        raise ValueError(f"unknown relations {unknown}; known: {sorted(RELATIONS)}")
    rng = random.Random(seed)
    out: list[PromptPair] = []
    for _ in range(n_pairs):
        relation = rng.choice(chosen)
        subject = rng.choice(SUBJECTS)
        template, pool = RELATIONS[relation]
        answer = KNOWLEDGE_BASE[(subject, relation)]
        clean, offsets = render(template, {"SUBJECT": subject})
        if corruption == "noise":
            corrupted = clean
            wrong = rng.choice([a for a in pool if a != answer])
        else:
            n_words = len(subject.split())
            others = [
                s
                for s in SUBJECTS
                if len(s.split()) == n_words and KNOWLEDGE_BASE[(s, relation)] != answer
            ]
            other = rng.choice(others)
            corrupted, _ = render(template, {"SUBJECT": other})
            wrong = KNOWLEDGE_BASE[(other, relation)]
        start = offsets["SUBJECT"][0]
        last = start + subject.rfind(" ") + 1
        out.append(
            PromptPair(
                clean=clean,
                corrupted=corrupted,
                correct=(f" {answer}",),
                incorrect=(f" {wrong}",),
                labels={
                    "SUBJ": start,
                    "SUBJ_LAST": last,
                    "REL": next_word_offset(clean, last),
                },
                template=template,
            )
        )
    return out
