"""Content hashes of the inputs that live outside ``conf/`` and the code.

A prompt file, a local model folder and a custom metric module shape a stage's output
but can sit anywhere on disk, so ``dvc.yaml`` cannot name them per experiment. The
compose stage (which DVC runs on every ``dvc repro``) writes their hashes into the
resolved config's ``inputs:`` section, and each stage declares the hashes it depends on
as DVC ``params``: an edit to any of these files changes a hash, and exactly the stages
that read the file rerun. The same hash of a local model folder is its ``revision``,
recorded in every activation file and checked by the stages that read them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
from pathlib import Path

# Files of a model folder that do not shape any output: model cards and hidden files.
_IGNORED_SUFFIXES = (".md",)
_BLOCK = 1 << 23  # 8 MiB reads: hashing a multi-GB checkpoint stays within memory
_COMMIT = re.compile(r"[0-9a-f]{40}")


def file_digest(path: Path) -> str:
    """``sha256:`` and the first 16 hex digits of a file's content hash."""
    digest = hashlib.sha256()
    _update(digest, path)
    return "sha256:" + digest.hexdigest()[:16]


def folder_digest(folder: Path) -> str:
    """A hash of every file below ``folder`` (names and contents), in a fixed order.

    Every format counts (safetensors, ``pytorch_model.bin``, sharded checkpoints, the
    config and tokenizer files), so new weights of any kind change the hash; model cards
    (``*.md``) and hidden files do not shape results and are left out.
    """
    digest = hashlib.sha256()
    for path in _model_files(folder):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        _update(digest, path)
    return "sha256:" + digest.hexdigest()[:16]


def _model_files(folder: Path) -> list[Path]:
    files = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if any(p.startswith(".") for p in parts) or path.suffix in _IGNORED_SUFFIXES:
            continue
        if path.is_file():
            files.append(path)
    return files


def _update(digest: hashlib._Hash, path: Path) -> None:
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)


def local_model_folder(path: str) -> Path | None:
    """The folder a ``model.path`` names, or None for a hub id."""
    folder = Path(path).expanduser()
    return folder if folder.is_dir() else None


def model_revision(path: str, revision: str | None) -> str:
    """What identifies the weights: a local folder's content hash, else the hub commit.

    For a hub id the commit is read from the local Hugging Face cache when the named
    revision (``main`` by default) has been downloaded, so a moved branch is noticed;
    otherwise the revision as given.
    """
    folder = local_model_folder(path)
    if folder is not None:
        return folder_digest(folder)
    wanted = revision or "main"
    if _COMMIT.fullmatch(wanted):
        return wanted
    return _cached_commit(path, wanted) or wanted


def _cached_commit(repo_id: str, ref: str) -> str | None:
    """The commit a branch or tag points to in the local hub cache, if downloaded."""
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:  # pragma: no cover - transformers always brings it
        return None
    refs = Path(HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs" / ref
    try:
        commit = refs.read_text().strip()
    except OSError:
        return None
    return commit if _COMMIT.fullmatch(commit) else None


def module_source(module_name: str) -> Path | None:
    """The source file of an importable module, found from the project root.

    The project root (the working directory) comes first on the import path, as it does
    for the stages, so a metric module beside ``dvc.yaml`` is found. Finding a module
    inside a package imports that package (never the module itself).
    """
    ensure_project_importable()
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return None
    return Path(spec.origin)


def ensure_project_importable() -> None:
    """Put the working directory (the project root) first on ``sys.path``.

    Stages run as ``python -m patchsweep.stages.<name>``, which puts the working
    directory there already; a command run from elsewhere (``patchsweep sweep``, a
    notebook) does not. User modules (a custom metric) are written relative to it.
    """
    root = os.getcwd()
    if root not in sys.path:
        sys.path.insert(0, root)
