"""Prompt-pair generators, looked up by name.

Every generator has the signature ``(n_pairs: int, seed: int, **options) ->
list[PromptPair]``, is deterministic in its seed (a private ``random.Random``, never the
global one) and accepts ``split="train" | "test"``. Task conventions (answers, labels,
corruptions) are in each generator's module docstring.
"""

from __future__ import annotations

from collections.abc import Callable

from patchsweep.datasets.base import PromptPair
from patchsweep.datasets.factual import generate_factual
from patchsweep.datasets.greater_than import generate_greater_than
from patchsweep.datasets.induction import generate_induction
from patchsweep.datasets.ioi import generate_ioi

GENERATORS: dict[str, Callable[..., list[PromptPair]]] = {
    "ioi": generate_ioi,
    "greater_than": generate_greater_than,
    "factual": generate_factual,
    "induction": generate_induction,
}


def generate(name: str, n_pairs: int, seed: int, **options: object) -> list[PromptPair]:
    """Generate ``n_pairs`` prompt pairs with the generator registered as ``name``.

    Args:
        name: A key of :data:`GENERATORS`.
        n_pairs: How many pairs.
        seed: The generator's seed; the same seed gives the same list.
        **options: Generator-specific options (``corruption``, ``split``, ...).

    Raises:
        ValueError: If no generator is registered under ``name``.
    """
    try:
        generator = GENERATORS[name]
    except KeyError:
        known = ", ".join(sorted(GENERATORS))
        raise ValueError(f"unknown prompt generator {name!r}; known generators: {known}") from None
    return generator(n_pairs, seed, **options)


__all__ = ["GENERATORS", "PromptPair", "generate"]
