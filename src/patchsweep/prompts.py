"""From a dataset's config to validated, tokenized prompt pairs.

The tokenize stage and the Python API both come through here, so a prompt file or a
generator gives the same tokens, positions and checks either way.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from patchsweep.config import DatasetConfig
from patchsweep.datasets.base import PromptPair
from patchsweep.datasets.explicit import pairs_from_config
from patchsweep.datasets.files import pairs_from_file
from patchsweep.errors import ConfigError
from patchsweep.noise import with_noise_samples
from patchsweep.tokenize import TokenizedPairs, score_from_label, tokenize_pairs

log = logging.getLogger(__name__)


def load_pairs(cfg: DatasetConfig) -> list[PromptPair]:
    """The pairs a dataset config describes: written out, or made by a generator."""
    if cfg.generator == "pairs":
        return pairs_from_config(cfg.pairs)
    if cfg.generator == "file":
        if "path" not in cfg.options:
            raise ConfigError(
                f"dataset {cfg.name!r} reads a file but names none",
                "set dataset.options.path to a .csv or .jsonl file of prompt pairs",
            )
        return pairs_from_file(cfg.options["path"])
    from patchsweep.datasets import GENERATORS, generate

    if cfg.generator not in GENERATORS:
        raise ConfigError(
            f"dataset.generator is {cfg.generator!r}",
            f"use one of: {', '.join(sorted(GENERATORS))}, pairs (written out in the "
            "config) or file (a CSV or JSONL file)",
        )
    try:
        return generate(cfg.generator, n_pairs=cfg.n_pairs, seed=cfg.seed, **cfg.options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"dataset {cfg.name!r}: generator {cfg.generator!r} rejects its options "
            f"{dict(cfg.options)}: {exc}",
            f"see the docstring of patchsweep.datasets.{cfg.generator} for its options",
        ) from exc


def prepare_pairs(
    cfg: DatasetConfig, tokenizer: Any, pairs: list[PromptPair] | None = None
) -> tuple[list[PromptPair], TokenizedPairs]:
    """The dataset's pairs (one row per noise draw) and their tokens, checked.

    ``pairs``, if given, are used instead of those ``cfg`` describes.
    """
    pairs = load_pairs(cfg) if pairs is None else pairs
    duplicates = [p for p, n in Counter((p.clean, p.corrupted) for p in pairs).items() if n > 1]
    if duplicates:
        log.warning(
            "%d prompt pair(s) occur more than once, e.g. %r: they weigh double in the mean",
            len(duplicates),
            duplicates[0][0],
        )
    if cfg.noise.scale > 0:
        pairs = with_noise_samples(pairs, cfg.noise.samples)
    tokenized = tokenize_pairs(pairs, tokenizer, allow_unknown=cfg.allow_unknown_tokens)
    if cfg.score_from is not None:
        tokenized = score_from_label(tokenized, cfg.score_from)
    return pairs, tokenized
