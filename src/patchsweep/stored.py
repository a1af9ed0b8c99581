"""Reading the files earlier stages wrote, with their metadata checked."""

from __future__ import annotations

from typing import Any

import torch

from patchsweep.errors import DataError
from patchsweep.io import check_meta, read_json, read_meta, read_tensors, stored_keys
from patchsweep.paths import ExperimentPaths
from patchsweep.tokenize import TokenizedPairs


def load_tokenized(exp: ExperimentPaths) -> tuple[TokenizedPairs, str]:
    """The tokenized dataset and its token hash."""
    meta = read_meta(exp.tokens)
    prompts = read_json(exp.prompts)
    check_meta(exp.prompts, prompts, {"tokens_hash": meta.get("tokens_hash")})
    pairs = prompts["pairs"]
    tokenized = TokenizedPairs.from_tensors(
        read_tensors(exp.tokens),
        tokens=[p["tokens"] for p in pairs],
        templates=[p["template"] for p in pairs],
    )
    return tokenized, meta["tokens_hash"]


def load_activations(
    exp: ExperimentPaths,
    run: str,
    keys: list[str] | None,
    expected: dict[str, Any],
    only: list[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Cached activations of one run, refused unless made by this model from these tokens.

    ``keys`` must all be present; ``only`` adds whichever of its keys exist.
    """
    path = exp.activations(run)
    check_meta(path, read_meta(path), {**expected, "run": run})
    if only is not None:
        required = keys or []
        keys = [*required, *(k for k in only if k in stored_keys(path) and k not in required)]
    tensors = read_tensors(path, keys)
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise DataError(
                f"{path}: {key} holds NaN or inf values",
                "the model overflowed (try model.dtype=float32) or the file is damaged: "
                "delete it and run `dvc repro`",
            )
    return tensors
