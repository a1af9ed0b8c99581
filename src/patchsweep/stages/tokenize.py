"""Stage tokenize: the dataset's prompt pairs → validated token ids and named positions.

Run by DVC as ``python -m patchsweep.stages.tokenize MODEL DATASET``.
"""

from __future__ import annotations

import logging
from collections import Counter

from patchsweep.cli import run_stage, stage_args
from patchsweep.config import DatasetConfig, load_config
from patchsweep.datasets.base import PromptPair
from patchsweep.datasets.explicit import pairs_from_config
from patchsweep.datasets.files import pairs_from_file
from patchsweep.errors import ConfigError
from patchsweep.io import tensor_hash, write_json, write_tensors
from patchsweep.models import load_tokenizer
from patchsweep.noise import with_noise_samples
from patchsweep.paths import ExperimentPaths
from patchsweep.tokenize import score_from_label, tokenize_pairs

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


def run(exp: ExperimentPaths) -> None:
    """Tokenize, validate, and write ``tokens.safetensors`` and ``prompts.json``."""
    cfg = load_config(exp.config)
    pairs = load_pairs(cfg.dataset)
    duplicates = [p for p, n in Counter((p.clean, p.corrupted) for p in pairs).items() if n > 1]
    if duplicates:
        log.warning(
            "%d prompt pair(s) occur more than once, e.g. %r: they weigh double in the mean",
            len(duplicates),
            duplicates[0][0],
        )
    if cfg.dataset.noise.scale > 0:
        pairs = with_noise_samples(pairs, cfg.dataset.noise.samples)
    tokenized = tokenize_pairs(
        pairs, load_tokenizer(cfg.model), allow_unknown=cfg.dataset.allow_unknown_tokens
    )
    if cfg.dataset.score_from is not None:
        tokenized = score_from_label(tokenized, cfg.dataset.score_from)
    scoring = [t for t in (tokenized.score_positions, tokenized.score_targets) if t is not None]
    token_hash = tensor_hash(
        tokenized.clean_ids, tokenized.corrupted_ids, tokenized.lengths, *scoring
    )
    meta = {"tokens_hash": token_hash, "tokenizer": cfg.model.path, "dataset": cfg.dataset.name}
    write_tensors(exp.tokens, tokenized.to_tensors(), meta)
    write_json(
        exp.prompts,
        {
            **meta,
            "pairs": [
                {
                    "clean": p.clean,
                    "corrupted": p.corrupted,
                    "correct": list(p.correct),
                    "incorrect": list(p.incorrect),
                    "template": p.template,
                    "tokens": tokens,
                }
                for p, tokens in zip(pairs, tokenized.tokens, strict=True)
            ],
        },
    )
    log.info(
        "tokenized %d pairs (lengths %s) into %s",
        tokenized.n_pairs,
        sorted(set(tokenized.lengths.tolist())),
        exp.tokens,
    )


def main(argv: list[str]) -> None:
    """The DVC entry point: the experiment named on the command line."""
    model, dataset = stage_args(argv, "tokenize", "MODEL DATASET", 2)
    run(ExperimentPaths(model, dataset))


if __name__ == "__main__":
    run_stage(main)
