"""Atomic file writes and safetensors with checked metadata.

Every output goes to a temporary file in its destination folder and is renamed into
place, so an interrupted stage leaves the previous file or none, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from patchsweep.errors import DataError, OutputError, StaleInputError

META_KEY = "patchsweep"  # the one safetensors metadata entry: a JSON object


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _unwritable(path, exc) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise _unwritable(path, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)


def _unwritable(path: Path, exc: OSError) -> OutputError:
    return OutputError(
        f"cannot write {path}: {exc.strerror or exc}",
        f"make sure {path.parent} is a writable folder and {path.name} is not a folder",
    )


def write_bytes(path: Path, data: bytes) -> None:
    """Write bytes atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically, with ``\n`` line ends on every OS."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically, keys sorted so equal data gives equal bytes."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    """Read a JSON file, naming the file when it is missing or malformed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"{path} does not exist", "run `dvc repro` to rebuild it") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc})", "delete it and rerun") from exc


def write_csv(path: Path, table: pd.DataFrame) -> None:
    """Write a table as CSV atomically, with a fixed float format for stable bytes."""
    with atomic_path(path) as tmp:
        # 6 significant digits: float32 results vary in the 7th between processes on CPU
        table.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")


def read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV table, naming the file when it is missing."""
    if not path.is_file():
        raise DataError(f"{path} does not exist", "run `dvc repro` to rebuild it")
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def write_tensors(path: Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Save tensors as safetensors with JSON-encoded string metadata, atomically."""
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    # One metadata entry: safetensors stores the metadata as a hash map whose order varies
    # between processes, so several entries would give different bytes on every run.
    metadata = {META_KEY: json.dumps(dict(meta), sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=metadata)


@contextlib.contextmanager
def open_tensors(path: Path) -> Iterator[Any]:
    """Open a safetensors file; a missing, truncated or corrupt file gets a clear error."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            yield handle
    except FileNotFoundError as exc:
        raise DataError(f"{path} does not exist", "run `dvc repro` to rebuild it") from exc
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(
            f"{path} is not a readable safetensors file ({exc})",
            "it is truncated or corrupt: delete it and run `dvc repro` again",
        ) from exc


def read_meta(path: Path) -> dict[str, Any]:
    """Read the metadata of a safetensors file without loading its tensors."""
    with open_tensors(path) as handle:
        raw = handle.metadata() or {}
    return json.loads(raw[META_KEY]) if META_KEY in raw else {}


def stored_keys(path: Path) -> set[str]:
    """The tensor names in a safetensors file."""
    with open_tensors(path) as handle:
        return set(handle.keys())


def read_tensors(path: Path, keys: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Load some or all tensors of a safetensors file."""
    with open_tensors(path) as handle:
        available = set(handle.keys())  # safe_open handles support no `in`
        wanted = keys if keys is not None else sorted(available)
        missing = [k for k in wanted if k not in available]
        if missing:
            raise StaleInputError(
                f"{path} lacks {', '.join(missing)}",
                "the file predates this config: run `dvc repro` so capture reruns",
            )
        return {k: handle.get_tensor(k) for k in wanted}


def tensor_hash(*tensors: torch.Tensor) -> str:
    """A short content hash of token ids, recorded in every file derived from them."""
    digest = hashlib.sha256()
    for tensor in tensors:
        t = tensor.detach().cpu().contiguous()
        digest.update(str((tuple(t.shape), str(t.dtype))).encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()[:16]


def check_meta(path: Path, meta: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Refuse a file whose metadata disagrees with what the reading stage expects."""
    for key, want in expected.items():
        have = meta.get(key)
        if have != want:
            raise StaleInputError(
                f"{path} was made with {key}={have!r}, but this run expects {key}={want!r}",
                "the cached activations belong to other inputs: run `dvc repro` so the "
                "capture stage rebuilds them (or delete the file)",
            )
