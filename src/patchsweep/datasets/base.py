"""The unit every dataset produces: one clean/corrupted prompt pair with its answers.

Generators (IOI, Greater-Than, ...) and user files all yield :class:`PromptPair`; the
tokenize stage turns them into aligned token ids and resolves the named positions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PromptPair:
    """A clean prompt, its corrupted twin, and what the metric compares.

    Attributes:
        clean: The prompt on which the model shows the behaviour.
        corrupted: The prompt that breaks it (same token length as ``clean``).
        correct: Continuations of ``clean`` the metric rewards, each with its leading
            space (``" John"``); usually one token each.
        incorrect: Continuations the metric penalises (``" Mary"``).
        labels: Named positions, as the character offset in ``clean`` where the labelled
            word starts (``{"IO": 6, "S1": 15, "S2": 41}``). ``END`` (the last token) is
            added by the tokenizer stage and need not be given.
        template: Which template produced the pair; prompts are grouped by it.
        origin: Where the pair came from, for error messages ("prompts.csv, line 4");
            empty for generated pairs, which are named by their index.
    """

    clean: str
    corrupted: str
    correct: tuple[str, ...]
    incorrect: tuple[str, ...]
    labels: Mapping[str, int] = field(default_factory=dict)
    template: str = ""
    origin: str = ""
