"""Stage tokenize: the dataset's prompt pairs → validated token ids and named positions.

Run by DVC as ``python -m patchsweep.stages.tokenize MODEL DATASET``.
"""

from __future__ import annotations

import logging

from patchsweep.cli import run_stage, stage_args
from patchsweep.config import load_config
from patchsweep.io import tensor_hash, write_json, write_tensors
from patchsweep.models import load_tokenizer
from patchsweep.paths import ExperimentPaths
from patchsweep.prompts import prepare_pairs

log = logging.getLogger(__name__)


def run(exp: ExperimentPaths) -> None:
    """Tokenize, validate, and write ``tokens.safetensors`` and ``prompts.json``."""
    cfg = load_config(exp.config)
    pairs, tokenized = prepare_pairs(cfg.dataset, load_tokenizer(cfg.model))
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
