"""Atomic file writes and safetensors with checked metadata.

Every output goes to a temporary file in its destination folder and is renamed into
place, so an interrupted stage leaves the previous file or none, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save, save_file

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
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=_metadata(meta))


def _metadata(meta: Mapping[str, Any]) -> dict[str, str]:
    # One metadata entry: safetensors stores the metadata as a hash map whose order varies
    # between processes, so several entries would give different bytes on every run.
    return {META_KEY: json.dumps(dict(meta), sort_keys=True)}


@dataclass(frozen=True)
class TensorSpec:
    """The shape and dtype of a tensor that a streamed file will hold."""

    shape: tuple[int, ...]  # (N, ...): rows along the first dimension are written in turn
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class StreamedTensors:
    """A safetensors file filled in row blocks: its header is on disk, rows go to offsets.

    A C-contiguous tensor of shape (N, ...) stores row i as one run of bytes, so a block
    of rows can be written as soon as it is computed and then dropped from memory.
    """

    def __init__(self, handle: BinaryIO, specs: Mapping[str, TensorSpec], offsets: dict[str, int]):
        self._handle = handle
        self._specs = dict(specs)
        self._offsets = offsets
        self._written = {
            name: torch.zeros(spec.shape[0], dtype=torch.bool) for name, spec in specs.items()
        }

    def write_rows(
        self, name: str, rows: torch.Tensor, values: torch.Tensor, start: tuple[int, ...] = ()
    ) -> None:
        """Store ``values[i]`` in row ``rows[i]`` of tensor ``name``, from index ``start``.

        ``start`` indexes a row's leading dimensions; ``values[i]`` then fills one run of
        the row from there, so its shape is the rest of the row's, except that its first
        dimension may be shorter (the remainder keeps what was there: zeros in a new file).
        """
        spec = self._specs[name]
        rest = spec.shape[1 + len(start) :]
        have = tuple(values.shape[1:])
        fits = have == rest or (
            len(have) == len(rest) > 0 and have[1:] == rest[1:] and have[0] <= rest[0]
        )
        if values.dtype != spec.dtype or len(rows) != values.shape[0] or not fits:
            raise ValueError(
                f"{name}: got {values.dtype} {tuple(values.shape)} for {len(rows)} rows of "
                f"{spec.dtype} {spec.shape} from {start}"
            )
        data = values.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()
        data = data.reshape(len(rows), -1)
        row_bytes = spec.nbytes // spec.shape[0]
        into = sum(i * math.prod(spec.shape[1 + k + 1 :]) for k, i in enumerate(start))
        into *= spec.dtype.itemsize
        whole = data.shape[1] == row_bytes  # then runs of consecutive rows go in one write
        for first, at, count in _consecutive_runs(rows.tolist(), whole):
            self._handle.seek(self._offsets[name] + first * row_bytes + into)
            self._handle.write(data[at : at + count])
        self._written[name][rows] = True

    def check_complete(self) -> None:
        """Refuse to publish a file with rows never written to (they would read as 0)."""
        missing = [name for name, done in self._written.items() if not bool(done.all())]
        if missing:
            raise OutputError(
                f"rows of {', '.join(missing)} were never written",
                "this is a bug in the caller of stream_tensors; the file was not published",
            )


def _consecutive_runs(rows: list[int], join: bool = True) -> Iterator[tuple[int, int, int]]:
    """(first row, index into ``rows``, count) for each run of consecutive row numbers;
    every row alone unless ``join``."""
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or not join or rows[i] != rows[i - 1] + 1:
            yield rows[start], start, i - start
            start = i


@contextlib.contextmanager
def stream_tensors(
    path: Path, specs: Mapping[str, TensorSpec], meta: Mapping[str, Any]
) -> Iterator[StreamedTensors]:
    """Write a safetensors file row block by row block, atomically.

    The file's bytes equal what :func:`write_tensors` writes for the same tensors, so
    readers cannot tell the two apart; memory holds one block at a time, not the file.
    """
    if sys.byteorder != "little":  # safetensors stores little-endian; rows are raw memory
        raise OutputError("streamed writes need a little-endian machine", "use write_tensors")
    header, offsets = safetensors_header(specs, meta)
    with atomic_path(path) as tmp, tmp.open("r+b") as handle:
        handle.write(header)
        handle.truncate(len(header) + sum(spec.nbytes for spec in specs.values()))
        writer = StreamedTensors(handle, specs, offsets)
        yield writer
        writer.check_complete()


def safetensors_header(
    specs: Mapping[str, TensorSpec], meta: Mapping[str, Any]
) -> tuple[bytes, dict[str, int]]:
    """The header bytes ``save_file`` writes for such tensors, and each one's data offset.

    Layout (safetensors' format): an 8-byte little-endian length, compact JSON with
    ``__metadata__`` first and the tensors in storage order, padded with spaces to a
    multiple of 8; then the tensors' bytes back to back. Offsets returned here count from
    the start of the file.
    """
    entries: dict[str, Any] = {"__metadata__": _metadata(meta)}
    end = 0
    for name, code in _storage_order(specs):
        spec = specs[name]
        entries[name] = {
            "dtype": code,
            "shape": list(spec.shape),
            "data_offsets": [end, end + spec.nbytes],
        }
        end += spec.nbytes
    text = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    start = 8 + len(text)
    offsets = {name: start + entries[name]["data_offsets"][0] for name in specs}
    return len(text).to_bytes(8, "little") + text, offsets


def _storage_order(specs: Mapping[str, TensorSpec]) -> list[tuple[str, str]]:
    """Tensor names in the order safetensors stores them, with its dtype codes.

    Asked of the library itself (one element per tensor) rather than restated here, so
    that streamed files follow its rule (by dtype, then name) in whatever version is
    installed.
    """
    probe = save({name: torch.zeros(1, dtype=spec.dtype) for name, spec in specs.items()})
    length = int.from_bytes(probe[:8], "little")
    header = json.loads(probe[8 : 8 + length])
    header.pop("__metadata__", None)
    ordered = sorted(header.items(), key=lambda item: item[1]["data_offsets"][0])
    return [(name, entry["dtype"]) for name, entry in ordered]


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
