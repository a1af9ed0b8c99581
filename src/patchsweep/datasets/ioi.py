"""Indirect Object Identification (IOI) prompt pairs, after Wang et al. (2022).

A clean prompt names two people, repeats one of them (the subject, S) and ends where the
other (the indirect object, IO) is the natural continuation::

    When Mary and John went to the store, John gave a drink to   ->  " Mary"

Conventions:
    * Fifteen base templates (the IOI paper's BABA list). Each is used in both orders of
      the first mention: ABBA (``IO ... S ... S``) and BABA (``S ... IO ... S``); pair
      ``i`` is ABBA when ``i`` is even, so both orders are balanced in every batch.
    * ``correct = (" IO",)`` and ``incorrect = (" S",)``: the metric is logit(IO) − logit(S).
    * Labels are character offsets into ``clean``: ``IO`` (the first and only mention of
      the IO name), ``S1`` (first mention of S), ``S1+1`` (the token right after S1) and
      ``S2`` (the repeated subject).
    * ``template`` is the filled template's placeholder form with the order applied, e.g.
      ``"When {IO} and {S} went to the {PLACE}, {S} gave a {OBJECT} to"``: all pairs that
      share it have the same token layout.
    * Corruptions: ``"swap"`` exchanges IO and S everywhere (the corrupted prompt's answer
      is the clean S, so the logit difference flips sign); ``"abc"`` puts three distinct
      random names, all different from IO and S, at IO, S1 and S2 (the paper's ABC
      dataset: no name information about the answer remains).
    * Splits hold out **unordered name pairs**, never single names: a name that never
      occurs in training keeps a random embedding, while an unseen pairing of known names
      tests the algorithm. About a fifth of the pairs are test pairs (a fixed hash, so
      the split does not depend on the seed).
"""

from __future__ import annotations

import random
import zlib

from patchsweep.datasets.base import PromptPair
from patchsweep.datasets.vocab import NAMES, OBJECTS, PLACES, next_word_offset, render

# The IOI paper's BABA templates with the final " {IO}" removed. {S} is the subject
# ([B] in the paper), {IO} the indirect object ([A]).
BABA_TEMPLATES: tuple[str, ...] = (
    "Then, {S} and {IO} went to the {PLACE}. {S} gave a {OBJECT} to",
    "Then, {S} and {IO} had a lot of fun at the {PLACE}. {S} gave a {OBJECT} to",
    "Then, {S} and {IO} were working at the {PLACE}. {S} decided to give a {OBJECT} to",
    "Then, {S} and {IO} were thinking about going to the {PLACE}. {S} wanted to give a {OBJECT} to",
    "Then, {S} and {IO} had a long argument, and afterwards {S} said to",
    "After {S} and {IO} went to the {PLACE}, {S} gave a {OBJECT} to",
    "When {S} and {IO} got a {OBJECT} at the {PLACE}, {S} decided to give it to",
    "When {S} and {IO} got a {OBJECT} at the {PLACE}, {S} decided to give the {OBJECT} to",
    "While {S} and {IO} were working at the {PLACE}, {S} gave a {OBJECT} to",
    "While {S} and {IO} were commuting to the {PLACE}, {S} gave a {OBJECT} to",
    "After the lunch, {S} and {IO} went to the {PLACE}. {S} gave a {OBJECT} to",
    "Afterwards, {S} and {IO} went to the {PLACE}. {S} gave a {OBJECT} to",
    "Then, {S} and {IO} had a long argument. Afterwards {S} said to",
    "The {PLACE} {S} and {IO} went to had a {OBJECT}. {S} gave it to",
    "Friends {S} and {IO} found a {OBJECT} at the {PLACE}. {S} gave it to",
)
ABBA_TEMPLATES: tuple[str, ...] = tuple(
    t.replace("{S} and {IO}", "{IO} and {S}", 1) for t in BABA_TEMPLATES
)

# Templates that defeat the shortcuts a small model finds on the base ones. On those, IO is
# the name mentioned least, and S the name mentioned last, so one attention head that
# counts names, or one that looks at the latest, solves IOI in a single step. Here a third
# name {C} comes before the pair, after it or after S2, and IO may be mentioned twice: the
# one rule left is "the other name of the pair than the subject of the last clause", which
# takes several steps (find S2 by what precedes it or by its earlier copy, then move the
# pair's other name). A model trained on these as well runs that algorithm on the base
# templates too.
DISTRACTOR_BABA_TEMPLATES: tuple[str, ...] = (
    "Then, {S} and {IO} went to the {PLACE} with {C}. {S} gave a {OBJECT} to",
    "When {C} was working, {S} and {IO} went to the {PLACE}. {S} gave a {OBJECT} to",
    "When {S} and {IO} met {C} at the {PLACE}, {S} gave a {OBJECT} to",
    "Then, {S} and {IO} had a long argument with {C}. Afterwards {S} said to",
    "Then, {S} and {IO} went to the {PLACE}. {S} and {C} gave a {OBJECT} to",
    "When {S} and {IO} got a {OBJECT} at the {PLACE}, {S} asked {C} to give it to",
    "Then, {S} and {IO} went to the house of {IO}. {S} gave a {OBJECT} to",
    "When {S} and {IO} met, {IO} was working. Afterwards {S} said to",
    "Then, {S} and {IO} went to the house of {IO}. {S} and {C} gave a {OBJECT} to",
    "After {C} went to the {PLACE}, {S} and {IO} saw {IO} there. {S} gave it to",
)
DISTRACTOR_ABBA_TEMPLATES: tuple[str, ...] = tuple(
    t.replace("{S} and {IO}", "{IO} and {S}", 1) for t in DISTRACTOR_BABA_TEMPLATES
)

CORRUPTIONS = ("swap", "abc")
SPLITS = ("train", "test")
ORDERS = ("mixed", "ABBA", "BABA")
TEST_PAIR_FRACTION = 5  # one name pair in this many is held out for the test split


def is_test_pair(name_a: str, name_b: str) -> bool:
    """Whether the unordered name pair belongs to the held-out test split.

    A CRC32 of the sorted pair, so the split is the same on every machine and Python run
    (``hash()`` of a string is salted per process).
    """
    key = "|".join(sorted((name_a, name_b))).encode()
    return zlib.crc32(key) % TEST_PAIR_FRACTION == 0


def name_pairs(split: str) -> list[tuple[str, str]]:
    """All unordered name pairs of a split, in a fixed order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    want_test = split == "test"
    return [
        (a, b)
        for i, a in enumerate(NAMES)
        for b in NAMES[i + 1 :]
        if is_test_pair(a, b) == want_test
    ]


def generate_ioi(
    n_pairs: int,
    seed: int,
    *,
    corruption: str = "swap",
    split: str = "test",
    order: str = "mixed",
    distractor: bool = False,
) -> list[PromptPair]:
    """Generate IOI prompt pairs.

    Args:
        n_pairs: How many pairs.
        seed: Seed of a private ``random.Random``; the same seed gives the same list.
        corruption: ``"swap"`` (S and IO exchanged) or ``"abc"`` (three fresh names).
        split: ``"test"`` (held-out name pairs; the default, since patching experiments
            should run on prompts the organism never saw) or ``"train"``.
        order: ``"mixed"`` (alternate ABBA/BABA), ``"ABBA"`` or ``"BABA"``.
        distractor: Use :data:`DISTRACTOR_BABA_TEMPLATES` (a third name, labelled
            ``C`` where a template has one and kept by both corruptions, or IO mentioned
            twice) instead of the IOI paper's templates.

    Returns:
        ``n_pairs`` prompt pairs, see the module docstring for their conventions.
    """
    if corruption not in CORRUPTIONS:
        raise ValueError(f"IOI corruption must be one of {CORRUPTIONS}, got {corruption!r}")
    if order not in ORDERS:
        raise ValueError(f"IOI order must be one of {ORDERS}, got {order!r}")
    rng = random.Random(seed)
    pairs = name_pairs(split)
    baba, abba_templates = (
        (DISTRACTOR_BABA_TEMPLATES, DISTRACTOR_ABBA_TEMPLATES)
        if distractor
        else (BABA_TEMPLATES, ABBA_TEMPLATES)
    )
    out: list[PromptPair] = []
    for i in range(n_pairs):
        abba = i % 2 == 0 if order == "mixed" else order == "ABBA"
        k = rng.randrange(len(baba))
        template = abba_templates[k] if abba else baba[k]
        io, s = rng.sample(rng.choice(pairs), 2)
        fill = {"PLACE": rng.choice(PLACES), "OBJECT": rng.choice(OBJECTS)}
        if "{C}" in template:
            fill["C"] = rng.choice([n for n in NAMES if n not in (io, s)])
        clean, offsets = render(template, {**fill, "IO": io, "S": s})
        if corruption == "swap":
            corrupted, _ = render(template, {**fill, "IO": s, "S": io})
        else:
            others = [n for n in NAMES if n not in (io, s, fill.get("C"))]
            new_io, new_s1, new_s2 = rng.sample(others, 3)
            corrupted, _ = render(template, {**fill, "IO": new_io, "S": [new_s1, new_s2]})
        s1 = offsets["S"][0]
        labels = {
            "IO": offsets["IO"][0],
            "S1": s1,
            "S1+1": next_word_offset(clean, s1),
            "S2": offsets["S"][1],
        }
        if "C" in offsets:
            labels["C"] = offsets["C"][0]
        out.append(
            PromptPair(
                clean=clean,
                corrupted=corrupted,
                correct=(f" {io}",),
                incorrect=(f" {s}",),
                labels=labels,
                template=template,
            )
        )
    return out
