"""Reading the files earlier stages wrote, with their metadata checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from patchsweep.errors import DataError, StaleInputError
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


def storage_meta(storage_dtype: str | None) -> dict[str, str]:
    """What the capture stage records of ``capture.storage_dtype``: nothing when it is
    null, so that files stored in the model's dtype keep their bytes."""
    return {} if storage_dtype is None else {"storage_dtype": storage_dtype}


def expected_meta(
    model: dict[str, str], tokens_hash: str, storage_dtype: str | None
) -> dict[str, Any]:
    """The metadata a reader of the captured files expects: this model (its identity,
    dtype included), these tokens, and this ``capture.storage_dtype``."""
    return {**model, "tokens_hash": tokens_hash, "storage_dtype": storage_dtype}


def load_activations(
    exp: ExperimentPaths,
    run: str,
    keys: list[str] | None,
    expected: dict[str, Any],
    only: list[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Cached activations of one run, refused unless made by this model from these tokens.

    ``keys`` must all be present; ``only`` adds whichever of its keys exist. ``expected``
    is :func:`expected_meta`'s; the tensors come back in the model's dtype (its
    ``dtype``), whatever dtype they were stored in.
    """
    path = exp.activations(run)
    meta = check_captured(path, {**expected, "run": run})
    if only is not None:
        required = keys or []
        keys = [*required, *(k for k in only if k in stored_keys(path) and k not in required)]
    tensors = read_tensors(path, keys)
    stored = getattr(torch, meta.get("storage_dtype") or meta["dtype"])
    model = getattr(torch, meta["dtype"])
    for key, value in tensors.items():
        if value.is_floating_point() and value.dtype != stored:
            raise DataError(
                f"{path}: {key} is {value.dtype}, but the file says its activations are "
                f"stored in {stored}",
                "the file is damaged or was written by other code: delete it and run `dvc repro`",
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise DataError(
                f"{path}: {key} holds NaN or inf values",
                "the model overflowed (try model.dtype=float32) or the file is damaged: "
                "delete it and run `dvc repro`",
            )
    return {k: v.to(model) if v.is_floating_point() else v for k, v in tensors.items()}


def check_captured(path: Path, expected: dict[str, Any]) -> dict[str, Any]:
    """A captured file's metadata, refused unless it matches ``expected`` (dtypes first,
    for their own messages); returned for the caller's use."""
    meta = read_meta(path)
    check_dtypes(path, meta, expected)
    check_meta(path, meta, expected)
    return meta


def check_dtypes(path: Path, meta: dict[str, Any], expected: dict[str, Any]) -> None:
    """Refuse activations computed in another model dtype, or stored in another
    ``capture.storage_dtype``, than this run's config says: the patch would read values
    rounded differently from what its results claim.

    Raises:
        StaleInputError: names both dtypes, the config key and how to make them agree.
    """
    have, want = meta.get("dtype"), expected.get("dtype")
    if "dtype" in expected and have != want:
        raise StaleInputError(
            f"{path} holds activations the model computed in {have}, but this run loads "
            f"the model in {want} (model.dtype)",
            f"run `dvc repro` so the capture stage captures them again in {want}, or set "
            f"model.dtype back to {have}",
        )
    have, want = meta.get("storage_dtype"), expected.get("storage_dtype")
    if "storage_dtype" in expected and have != want:
        name = {None: "null (the model's dtype)"}
        raise StaleInputError(
            f"{path} holds activations stored with capture.storage_dtype="
            f"{name.get(have, have)}, but this run's config has capture.storage_dtype="
            f"{name.get(want, want)}",
            "run `dvc repro` so the capture stage stores them again as configured, or set "
            f"capture.storage_dtype back to {'null' if have is None else have}",
        )
