"""The activations are stored once: `dvc repro` links each activation file to its object
in DVC's cache (``cache.type`` in .dvc/config) instead of copying it, read-only so that
no write can reach the cache through the link, and a rerun after an input change leaves
the cache's earlier objects as they were. In a scratch git + DVC repo, capture only."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from project import files_under, make_dvc_repo, sh

DATASETS = ("tiny", "other")  # the two experiments of make_dvc_repo


def activation_files(root: Path) -> list[Path]:
    files = [p for d in DATASETS for p in files_under(root / f"data/cache/tiny/{d}/activations")]
    return [p for p in files if p.suffix == ".safetensors"]


def cache_objects(root: Path) -> dict[tuple[int, int], Path]:
    """DVC's cache objects (``.dvc/cache/files/md5/ab/cdef…``) by (device, inode)."""
    objects = {}
    for path in files_under(root / ".dvc" / "cache" / "files" / "md5"):
        status = path.stat()
        objects[status.st_dev, status.st_ino] = path
    return objects


def object_md5(path: Path) -> str:
    """The md5 a cache object's path names: its folder (2 digits) and its file name."""
    return path.parent.name + path.name


def stored_bytes(*folders: Path) -> int:
    """Bytes the files below ``folders`` take, a hard-linked file once (as ``du`` counts)."""
    sizes = {}
    for folder in folders:
        for path in files_under(folder):
            status = path.stat()
            sizes[status.st_dev, status.st_ino] = status.st_size
    return sum(sizes.values())


def reflinks_work(folder: Path) -> bool:
    """Whether ``folder``'s file system clones files (btrfs, XFS, APFS): DVC then gives
    each output a copy-on-write clone, which shares blocks, not an inode."""
    from dvc_objects.fs.system import reflink

    source, clone = folder / ".reflink-probe", folder / ".reflink-probe.clone"
    source.write_bytes(b"probe")
    try:
        reflink(str(source), str(clone))
    except OSError:
        return False
    finally:
        source.unlink()
        clone.unlink(missing_ok=True)
    return True


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_gpt2_dir) -> Path:
    root = make_dvc_repo(
        tmp_path_factory.mktemp("links"),
        tiny_gpt2_dir,
        ["resid_layer_pos"],
        stages=["compose", "tokenize", "capture"],
    )
    if reflinks_work(root):
        pytest.skip("outputs are reflinks here (shared blocks, not inodes): nothing to count")
    ran = set(re.findall(r"Running stage '([^']+)'", sh(root, "dvc", "repro")))
    assert {f"capture@tiny-{d}" for d in DATASETS} <= ran, ran
    return root


def assert_linked(root: Path) -> None:
    """Each activation file is a read-only hard link to an object in DVC's cache."""
    activations = activation_files(root)
    assert len(activations) == 2 * len(DATASETS), activations  # clean and corrupted each
    objects = cache_objects(root)
    for path in activations:
        status = path.stat()
        assert status.st_nlink >= 2, f"{path} is a copy, not a link to DVC's cache"
        assert (status.st_dev, status.st_ino) in objects, f"{path} links to no cache object"
        assert not status.st_mode & 0o222, f"{path} is writable: a write would reach the cache"


def test_activations_are_read_only_links_to_the_cache(repo):
    assert_linked(repo)


def test_the_cache_adds_no_second_copy(repo):
    """data/cache and DVC's cache objects together hold the activations once: what the
    objects add beyond data/cache stays under a fifth of the activations (a copy would add
    all of them). The run cache (``.dvc/cache/runs``, a few KB of lock entries per stage
    run) is left out: it is no output data, and on the tiny model it is a tenth of it."""
    activations = sum(p.stat().st_size for p in activation_files(repo))
    outputs = stored_bytes(repo / "data" / "cache")
    total = stored_bytes(repo / "data" / "cache", repo / ".dvc" / "cache" / "files")
    assert total - outputs <= 0.2 * activations, (
        f"DVC's cache adds {total - outputs} bytes to data/cache's {outputs}, "
        f"of which {activations} are activations"
    )


def test_rerun_after_an_input_change_leaves_the_old_objects_intact(repo):
    """DVC removes a stage's outputs before it runs it and capture renames new files into
    place, so no byte is written through a link into a cache object."""
    objects = cache_objects(repo)
    before = {}
    for path in activation_files(repo):
        status = path.stat()
        before[path] = objects[status.st_dev, status.st_ino]
    prompt = repo / "conf" / "dataset" / "other.yaml"
    prompt.write_text(prompt.read_text().replace("park", "store"))
    out = sh(repo, "dvc", "repro")
    assert "Running stage 'capture@tiny-other'" in out
    assert "Running stage 'capture@tiny-tiny'" not in out
    changed = 0
    for path, old in before.items():
        assert old.is_file(), f"the cache lost {old}, {path} before the rerun"
        assert hashlib.md5(old.read_bytes()).hexdigest() == object_md5(old), (
            f"{old} ({path} before the rerun) was written in place through a link"
        )
        changed += path.stat().st_ino != old.stat().st_ino
    assert changed == 2  # other's clean and corrupted activations are new files
    assert_linked(repo)  # the new files too
