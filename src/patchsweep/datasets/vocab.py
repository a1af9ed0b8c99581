"""Word pools shared by the prompt generators and the organism's tokenizer.

Every word here becomes exactly one token of the organism's word-level vocabulary, so a
generator may put any pool word at a labelled position and know it is one token (and the
same single token with or without a leading space). Pools are disjoint: a word never plays
two roles (a name is never also a place or a knowledge-base subject), which keeps answers
unambiguous.

The module also holds :func:`render`, the one way templates are filled: it returns the
character offset of every placeholder occurrence, which is where the generators' labels
come from.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence

# IOI names, mostly from the IOI paper's list; one token each (the organism's own
# vocabulary makes that true, GPT-2's BPE does too for these common names).
NAMES: tuple[str, ...] = (
    "Mary", "John", "Alice", "Bob", "Tom", "James", "Dan", "Sarah",
    "Michael", "Kate", "David", "Lisa", "Paul", "Anna", "Mark", "Emma",
    "Peter", "Laura", "Steven", "Rachel", "Andrew", "Jessica", "Brian", "Amy",
    "Kevin", "Emily", "Jason", "Linda", "Eric", "Susan", "Ryan", "Helen",
    "Adam", "Julia", "Sean", "Claire", "Tim", "Grace", "Luke", "Rose",
)  # fmt: skip

# Places and objects of the IOI templates.
PLACES: tuple[str, ...] = (
    "store", "garden", "restaurant", "school", "hospital", "office", "house",
    "station", "park", "market", "library", "beach", "museum", "bakery",
)  # fmt: skip
OBJECTS: tuple[str, ...] = (
    "ring", "kiss", "bone", "basketball", "computer", "necklace", "drink",
    "snack", "book", "letter", "flower", "ticket",
)  # fmt: skip

# Greater-Than: event nouns (from the Greater-Than paper's list) and the century tokens.
# Years are written as two tokens, century then two-digit year ("17 32"), so every year
# half is one token of TWO_DIGITS.
GT_NOUNS: tuple[str, ...] = (
    "war", "abduction", "accord", "affair", "agreement", "campaign", "captivity",
    "conflict", "contract", "crisis", "dispute", "dynasty", "epidemic", "expedition",
    "feud", "journey", "marriage", "occupation", "pilgrimage", "reign", "siege", "strike",
    "trial", "voyage",
)  # fmt: skip
TWO_DIGITS: tuple[str, ...] = tuple(f"{i:02d}" for i in range(100))
CENTURIES: tuple[str, ...] = tuple(str(c) for c in range(11, 20))

# Factual recall: invented subjects (so no knowledge can come from anywhere but the
# organism's training set) and the attribute pools of its relations.
SUBJECTS: tuple[str, ...] = (
    "Arvel", "Brisa", "Corvin", "Dalia", "Evander", "Fenna", "Gorran", "Halvi",
    "Isolde", "Jorund", "Kestra", "Lorcan", "Mirela", "Nandor", "Orla", "Perrin",
    "Quilla", "Rhoswen", "Soren", "Tamsin", "Ulric", "Velda", "Wystan", "Xanthe",
    "Yorick", "Zelda", "Alaric", "Berit", "Caspian", "Delphine", "Eamon", "Fiora",
)  # fmt: skip
CITIES: tuple[str, ...] = (
    "Paris", "London", "Tokyo", "Cairo", "Lima", "Oslo", "Rome", "Berlin",
    "Madrid", "Delhi", "Sydney", "Toronto",
)  # fmt: skip
PROFESSIONS: tuple[str, ...] = (
    "doctor", "teacher", "farmer", "pilot", "lawyer", "baker", "painter", "nurse",
    "chef", "writer",
)  # fmt: skip
SPORTS: tuple[str, ...] = (
    "tennis", "chess", "soccer", "golf", "hockey", "rugby", "cricket", "boxing",
)  # fmt: skip

# Induction sequences draw from the content pools (not digits, not template glue words),
# so the copying behaviour is tested on the same tokens the other tasks use.
INDUCTION_POOL: tuple[str, ...] = (
    NAMES + PLACES + OBJECTS + GT_NOUNS + SUBJECTS + CITIES + PROFESSIONS + SPORTS
)

# What the organism's pre-tokenizer calls a token: a run of word characters or a run of
# other non-space characters (tokenizers' ``Whitespace`` pre-tokenizer).
_TOKEN = re.compile(r"\w+|[^\w\s]+")

# Punctuation the word-level tokenizer knows; each is its own token.
PUNCTUATION: tuple[str, ...] = (",", ".", "!", "?", ";", ":", "'", '"', "(", ")", "-")

POOLS: Mapping[str, tuple[str, ...]] = {
    "names": NAMES,
    "places": PLACES,
    "objects": OBJECTS,
    "gt_nouns": GT_NOUNS,
    "two_digits": TWO_DIGITS,
    "subjects": SUBJECTS,
    "cities": CITIES,
    "professions": PROFESSIONS,
    "sports": SPORTS,
}


def render(
    template: str, values: Mapping[str, str | Sequence[str]]
) -> tuple[str, dict[str, list[int]]]:
    """Fill a ``{FIELD}`` template and report where each filled word starts.

    Args:
        template: Text with ``str.format``-style fields (``"{S} gave a {OBJECT} to"``).
        values: One word per field, or a sequence giving a different word for each
            occurrence of the field in order (how the ABC corruption replaces S1 and S2
            by two different names).

    Returns:
        The filled text and, per field, the character offsets of its occurrences in order.
        Offsets are computed while filling, so they stay right even when the same word
        occurs elsewhere in the text.
    """
    parts: list[str] = []
    offsets: dict[str, list[int]] = {}
    length = 0
    for literal, field, _spec, _conv in string.Formatter().parse(template):
        parts.append(literal)
        length += len(literal)
        if field is None:
            continue
        seen = offsets.setdefault(field, [])
        value = values[field]
        word = value if isinstance(value, str) else value[len(seen)]
        seen.append(length)
        parts.append(word)
        length += len(word)
    return "".join(parts), offsets


def next_word_offset(text: str, offset: int) -> int:
    """Offset of the token after the word (or punctuation run) starting at ``offset``.

    Mirrors the organism's pre-tokenizer (runs of word characters, runs of other
    non-space characters), so the label ``S1+1`` lands on what the tokenizer calls the
    next token, for GPT-2's BPE as well when the next token is a word or punctuation.
    """
    end = _TOKEN.match(text, offset).end()
    return len(text) - len(text[end:].lstrip())
