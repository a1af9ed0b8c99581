"""Atomic file writes, published one stage's set at a time, and safetensors with metadata.

Every output goes to a temporary file in its destination folder and is renamed into
place, so an interrupted stage leaves the previous file or none, never half of one.
Inside :func:`publish_together` the renames wait until the whole block succeeds, so a
stage's outputs change together or not at all. A writer killed with ``kill -9`` cannot
remove its temporary; the next write of the same output (or :func:`remove_orphans`)
does. Any ``OSError`` while writing (a full disk, no permission) becomes an
:class:`~patchsweep.errors.OutputError` that names the file.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from patchsweep.errors import DataError, OutputError, StaleInputError

if TYPE_CHECKING:  # torch, pandas and safetensors load on first use: compose, which
    import pandas as pd  # runs on every `dvc repro`, writes text only
    import torch

try:  # POSIX: a writer's lock on its temporary tells cleaners it is still alive
    import fcntl
except ImportError:  # pragma: no cover - Windows: orphans are then kept, never guessed at
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

META_KEY = "patchsweep"  # the one safetensors metadata entry: a JSON object
TMP_SUFFIX = ".tmp"  # temporaries are ".<output name>.<random>.tmp" beside the output


@dataclass
class _Temp:
    """A temporary that becomes ``target``; ``fd`` holds its lock until it is gone."""

    path: Path
    target: Path
    fd: int

    def discard(self) -> None:
        """Delete the temporary and release its lock (a no-op once renamed away)."""
        self.path.unlink(missing_ok=True)
        os.close(self.fd)


class _OutputSet:
    """Temporaries finished inside :func:`publish_together`, waiting to be renamed."""

    def __init__(self) -> None:
        self.temps: dict[Path, _Temp] = {}

    def add(self, temp: _Temp) -> None:
        """Hold ``temp`` back; a second write of the same output replaces the first."""
        earlier = self.temps.pop(temp.target, None)
        if earlier is not None:
            earlier.discard()
        self.temps[temp.target] = temp

    def discard(self) -> None:
        for temp in self.temps.values():
            temp.discard()
        self.temps.clear()

    def publish(self) -> None:
        """Rename every temporary into place; if one rename fails, undo the others.

        Each replaced output is first hard-linked to a backup, so a failed rename can
        put the previous files back. Only a crash between the renames themselves (a few
        system calls) can leave the set half published.
        """
        for target in self.temps:
            if target.is_dir():
                self.discard()
                raise _unwritable(target, IsADirectoryError(errno.EISDIR, "Is a directory"))
        backups = {target: _backup(target) for target in self.temps}
        done: list[Path] = []
        try:
            for target, temp in self.temps.items():
                with _writing(target):
                    os.replace(temp.path, target)
                done.append(target)
        except BaseException:
            for target in done:
                _restore(target, backups[target])
            raise
        finally:
            self.discard()
            for backup in backups.values():
                if backup is not None:
                    backup.unlink(missing_ok=True)


# The set that atomic writes in this context join; None = rename each write at once.
# A context variable, so that every writer (CSV, JSON, figures) joins without a new
# parameter; threads start with their own context, outside any set.
_PENDING: ContextVar[_OutputSet | None] = ContextVar("patchsweep_pending", default=None)


@contextlib.contextmanager
def publish_together(*outputs: Path) -> Iterator[None]:
    """Publish every atomic write in the block together when it ends, or none of them.

    On any error (or interrupt) in the block, all its temporaries are deleted and the
    previous outputs stay as they were. ``outputs`` are the stage's output files and
    folders: orphaned temporaries of earlier, killed runs are removed from them first.
    A block inside another joins the outer set. Code inside that reads an output
    written earlier in the block reads :func:`staged` of its path.
    """
    remove_orphans(outputs)
    if _PENDING.get() is not None:
        yield
        return
    pending = _OutputSet()
    token = _PENDING.set(pending)
    try:
        yield
    except BaseException:
        pending.discard()
        raise
    finally:
        _PENDING.reset(token)
    pending.publish()


def staged(path: Path) -> Path:
    """Where ``path``'s newest content is: its unpublished temporary inside
    :func:`publish_together`, else ``path`` itself."""
    pending = _PENDING.get()
    temp = pending.temps.get(path) if pending is not None else None
    return temp.path if temp is not None else path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    Orphaned temporaries of ``path`` are removed first. Inside :func:`publish_together`
    the rename waits for the whole set. An ``OSError`` in the block (the block writes
    the temporary) becomes an :class:`OutputError` naming ``path``.
    """
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans([path])
        temp: _Temp | None = _new_temp(path)
    try:
        with _writing(path):
            yield temp.path
        pending = _PENDING.get()
        if pending is not None:
            pending.add(temp)
            temp = None  # the set owns it now
        else:
            with _writing(path):
                os.replace(temp.path, path)
    finally:
        if temp is not None:
            temp.discard()


def remove_orphans(outputs: Iterable[Path]) -> list[Path]:
    """Delete temporaries that killed writers left beside output files or inside folders.

    A file's temporaries are ``.<name>.*.tmp`` beside it; a folder's, every ``.*.tmp``
    below it. Safe while another process writes the same output: each writer holds a
    lock on its temporary for as long as it lives (the system releases it when the
    process dies, ``kill -9`` included), and locked temporaries are kept. Where locks
    are unavailable (Windows, some network file systems) nothing is removed.

    Returns:
        The removed files.
    """
    removed = []
    for output in map(Path, outputs):
        if output.is_dir():
            candidates = output.rglob(f".*{TMP_SUFFIX}")
        else:
            candidates = output.parent.glob(f".{glob.escape(output.name)}.*{TMP_SUFFIX}")
        for candidate in candidates:
            if candidate.is_file() and _remove_if_unlocked(candidate):
                log.info("removed %s, left behind by an interrupted run", candidate)
                removed.append(candidate)
    return removed


def _remove_if_unlocked(candidate: Path) -> bool:
    """Delete ``candidate`` if no live writer holds its lock; True if it was deleted."""
    try:
        fd = os.open(candidate, os.O_RDONLY)
    except OSError:
        return False
    try:
        same = os.fstat(fd).st_ino == os.stat(candidate).st_ino  # not renamed meanwhile
        if not (same and _try_lock(fd)):
            return False
        candidate.unlink()
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool | None:
    """Lock ``fd`` without waiting: True, False if another holds it, None if unknowable."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # the file system has no locks
        return None
    return True


def _new_temp(path: Path) -> _Temp:
    """A new, locked temporary beside ``path``.

    A cleaner may lock and delete the file between its creation and our lock; then it
    has no links left, and another is made.
    """
    while True:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        if _try_lock(fd) is not False and os.fstat(fd).st_nlink > 0:
            return _Temp(Path(name), path, fd)
        os.close(fd)


def _backup(target: Path) -> Path | None:
    """A hard link to ``target``'s current file, or None (no file, or no hard links)."""
    if not target.is_file():
        return None
    backup = target.with_name(f".{target.name}.{os.urandom(4).hex()}.old{TMP_SUFFIX}")
    try:
        os.link(target, backup)
    except OSError:
        return None
    return backup


def _restore(target: Path, backup: Path | None) -> None:
    """Put ``target`` back as it was before a set was published: its backup, or none."""
    with contextlib.suppress(OSError):
        if backup is not None:
            os.replace(backup, target)
        else:
            target.unlink(missing_ok=True)


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``path`` into an :class:`OutputError`."""
    try:
        yield
    except OSError as exc:
        raise _unwritable(path, exc) from exc


def _unwritable(path: Path, exc: OSError) -> OutputError:
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        fix = (
            f"free space on the disk that holds {path.parent} (see `df -h {path.parent}`), "
            "or point that folder elsewhere (a symlink to a larger disk), then rerun"
        )
    else:
        fix = f"make sure {path.parent} is a writable folder and {path.name} is not a folder"
    return OutputError(f"cannot write {path}: {exc.strerror or exc}", fix)


def write_bytes(path: Path, data: bytes) -> None:
    """Write bytes atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically, with ``\n`` line ends on every OS."""
    write_bytes(path, text.encode("utf-8"))


# Significant digits kept in written tables and JSON: float32 results vary in the 7th
# between processes and machines on CPU, and committed files must not change with them.
SIGNIFICANT_DIGITS = 6
# Enough for any float32 to read back as itself: for raw and per-prompt tables, which are
# compared with a reference to 1e-5 and would lose that at 6 digits for metrics above 10.
FULL_PRECISION = 9


def stable_float(value: float) -> float | None:
    """``value`` rounded below float32 noise, with -0.0 as 0.0 and NaN or ±inf as None
    (JSON has no NaN, and a -0.0 would change the bytes of an unchanged result)."""
    if not math.isfinite(value):
        return None
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}") + 0.0


def _stable(data: Any) -> Any:
    if isinstance(data, float):
        return stable_float(data)
    if isinstance(data, dict):
        return {k: _stable(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_stable(v) for v in data]
    return data


def json_text(data: Any, sort_keys: bool = True) -> str:
    """JSON whose bytes depend only on the data: floats rounded by :func:`stable_float`,
    keys sorted unless their order is meaningful."""
    return json.dumps(_stable(data), indent=2, sort_keys=sort_keys, allow_nan=False) + "\n"


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically, keys sorted so equal data gives equal bytes."""
    write_text(path, json_text(data))


def read_json(path: Path) -> Any:
    """Read a JSON file, naming the file when it is missing or malformed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"{path} does not exist", "run `dvc repro` to rebuild it") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc})", "delete it and rerun") from exc


def write_csv(path: Path, table: pd.DataFrame, digits: int = SIGNIFICANT_DIGITS) -> None:
    """Write a table as CSV atomically, floats with ``digits`` significant digits.

    A fixed format keeps the bytes stable; :data:`FULL_PRECISION` for float32 tables.
    """
    floats = table.select_dtypes("floating").columns
    table = table.assign(**{c: table[c] + 0.0 for c in floats})  # -0.0 → 0.0
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format=f"%.{digits}g", lineterminator="\n")


def read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV table, naming the file when it is missing."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path} does not exist", "run `dvc repro` to rebuild it")
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def write_tensors(path: Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Save tensors as safetensors with JSON-encoded string metadata, atomically."""
    from safetensors.torch import save

    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    # Serialised in memory, then written: save_file reports a full disk as a
    # SafetensorError without its errno, and the fix depends on it.
    write_bytes(path, save(contiguous, metadata=_metadata(meta)))


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
        import torch

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
        import torch

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
    import torch
    from safetensors.torch import save

    probe = save({name: torch.zeros(1, dtype=spec.dtype) for name, spec in specs.items()})
    length = int.from_bytes(probe[:8], "little")
    header = json.loads(probe[8 : 8 + length])
    header.pop("__metadata__", None)
    ordered = sorted(header.items(), key=lambda item: item[1]["data_offsets"][0])
    return [(name, entry["dtype"]) for name, entry in ordered]


@contextlib.contextmanager
def open_tensors(path: Path) -> Iterator[Any]:
    """Open a safetensors file; a missing, truncated or corrupt file gets a clear error."""
    from safetensors import SafetensorError, safe_open

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
