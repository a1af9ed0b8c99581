"""The DVC pipeline end to end in a scratch git repo: `dvc repro` reruns exactly the
stages an edit affects — a plot key only plot, a stats key normalize and plot, one sweep's
layers only that sweep's patch and its readers, one dataset's prompt only that dataset's
chain, an edited module exactly the stages that import it, nothing when nothing changed.

The activations are stored once: `dvc repro` links each activation file to its object
in DVC's cache (``cache.type`` in .dvc/config) instead of copying it, read-only so that
no write can reach the cache through the link, and a rerun after an input change leaves
the cache's earlier objects as they were.

The tests share one scratch pipeline (a full `dvc repro` of two experiments costs about a
minute) and run in the order they are written: each edit builds on the state the tests
before it left.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import yaml
from project import REPO, files_under, make_dvc_repo, sh

DATASETS = ("tiny", "other")  # the two experiments of make_dvc_repo


def repro(cwd: Path) -> set[str]:
    """Run `dvc repro`; return the names of the stages it ran, besides compose.

    compose runs on every repro (it hashes the inputs outside conf/); an unchanged
    config.yaml then stops everything downstream of it.
    """
    out = sh(cwd, "dvc", "repro")
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert {"compose@tiny-tiny", "compose@tiny-other"} <= ran, out
    return {name for name in ran if not name.startswith("compose@")}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_gpt2_dir) -> Path:
    """The scratch pipeline after its first `dvc repro`. Figures are PNG only: no claim
    here is about PDFs, which take the plot stage 2 s of font subsetting on each of its
    nine runs; the stages' PDFs are checked by test_determinism and test_stage_logging."""
    root = make_dvc_repo(
        tmp_path_factory.mktemp("pipeline"),
        tiny_gpt2_dir,
        ["resid_layer_pos", "head"],
        formats=["png"],
    )
    ran = repro(root)
    assert {"capture@tiny-tiny", "patch@tiny-tiny-head", "plot@tiny-other"} <= ran
    return root


# --- activations stored once: links to DVC's cache ---------------------------------------


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


def data_cache_objects(root: Path) -> list[Path]:
    """DVC's cache objects of the outputs under data/cache (tokens, activations, logits,
    patch tables), found by their md5 in dvc.lock. The outputs of normalize and plot
    (results/) are not counted: the plot stage's figures/ is a folder output, whose files
    DVC keeps as copies by design (.dvc/config)."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    md5s = {
        out["md5"]
        for stage in lock["stages"].values()
        for out in stage.get("outs", [])
        if out["path"].startswith("data/cache/")
    }
    folder = root / ".dvc" / "cache" / "files" / "md5"
    objects = [folder / md5[:2] / md5[2:] for md5 in sorted(md5s)]
    assert all(p.is_file() for p in objects), "dvc.lock names an object not in the cache"
    return objects


def object_md5(path: Path) -> str:
    """The md5 a cache object's path names: its folder (2 digits) and its file name."""
    return path.parent.name + path.name


def stored_bytes(*paths: Path) -> int:
    """Bytes the files below ``paths`` (folders) or the ``paths`` themselves (files) take,
    a hard-linked file once (as ``du`` counts)."""
    sizes = {}
    for path in paths:
        for file in [path] if path.is_file() else files_under(path):
            status = file.stat()
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
def hard_links(pipeline) -> None:
    """Skip a test of hard links where the outputs are reflinks."""
    if reflinks_work(pipeline):
        pytest.skip("outputs are reflinks here (shared blocks, not inodes): nothing to count")


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


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def test_first_run_writes_results(pipeline):
    for dataset in ("tiny", "other"):
        results = pipeline / "results" / "tiny" / dataset
        assert (results / "results.csv").is_file()
        assert (results / "baselines.json").is_file()
        assert (results / "figures" / "head.png").is_file()


def test_activations_are_read_only_links_to_the_cache(pipeline, hard_links):
    assert_linked(pipeline)


def test_the_cache_adds_no_second_copy(pipeline, hard_links):
    """data/cache and the DVC cache objects of its outputs together hold the activations
    once: what the objects add beyond data/cache stays under a fifth of the activations (a
    copy would add all of them). The run cache (``.dvc/cache/runs``, a few KB of lock
    entries per stage run) is left out: it is no output data, and on the tiny model it is
    a tenth of it. Checked before any edit, while every object is the current output's."""
    activations = sum(p.stat().st_size for p in activation_files(pipeline))
    outputs = stored_bytes(pipeline / "data" / "cache")
    total = stored_bytes(pipeline / "data" / "cache", *data_cache_objects(pipeline))
    assert total - outputs <= 0.2 * activations, (
        f"DVC's cache adds {total - outputs} bytes to data/cache's {outputs}, "
        f"of which {activations} are activations"
    )


def test_nothing_changed_runs_nothing(pipeline):
    assert repro(pipeline) == set()


def test_make_repro_ends_with_the_summary(pipeline):
    """`make repro`: dvc repro, then the summary; only the compose stages ran."""
    make = ("make", "-s", "-f", str(REPO / "Makefile"), "repro", "STAMP=", "PLOTS_TEMPLATE=")
    lines = sh(pipeline, *make, stdout_only=True).splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.startswith("dvc repro: ")]
    summary = lines[start:]
    assert re.fullmatch(r"dvc repro: 2 stages ran, 0 failed, \d+ up to date", summary[0]), lines
    assert summary[1].endswith("; dvc repro exited 0")
    for dataset in ("tiny", "other"):
        (row,) = [line.split() for line in summary if line.startswith(f"tiny/{dataset} ")]
        assert row[1].startswith("1/") and row[5] == "2" and row[7] == "ok", summary
    assert summary[-1].startswith("tiny/") and "needs attention:" not in summary


def test_plot_setting_reruns_only_plot(pipeline):
    edit(pipeline / "conf" / "plot" / "default.yaml", "dpi: 200", "dpi: 120")
    assert repro(pipeline) == {"plot@tiny-tiny", "plot@tiny-other"}


def test_stats_setting_reruns_normalize_and_plot(pipeline):
    stats = pipeline / "conf" / "stats" / "default.yaml"
    edit(stats, "\nnormalization: per_prompt\n", "\nnormalization: dataset\n")
    ran = repro(pipeline)
    assert ran == {f"{s}@tiny-{d}" for s in ("normalize", "plot") for d in ("tiny", "other")}


def test_layer_range_reruns_only_that_sweep_and_its_readers(pipeline):
    edit(
        pipeline / "conf" / "sweep" / "default.yaml",
        "head: {component: z, direction: denoise, positions: all}",
        "head: {component: z, direction: denoise, positions: all, layers: [1]}",
    )
    ran = repro(pipeline)
    expected = {f"{stage}@tiny-{d}" for stage in ("normalize", "plot") for d in ("tiny", "other")}
    expected |= {"patch@tiny-tiny-head", "patch@tiny-other-head"}
    assert ran == expected


def test_code_edit_reruns_exactly_the_stages_that_import_it(pipeline):
    """Stages depend on their code through data/code/<stage>.json: an edit to a module
    only plot imports reruns the code stage and plot; one no stage imports, only code."""
    for module in ("plotting/style.py", "api.py"):
        path = pipeline / "src" / "patchsweep" / module
        path.write_text(path.read_text() + "# an edit\n")
    assert repro(pipeline) == {"code", "plot@tiny-tiny", "plot@tiny-other"}
    path = pipeline / "src" / "patchsweep" / "summary.py"
    path.write_text(path.read_text() + "# an edit\n")
    assert repro(pipeline) == {"code"}


@pytest.fixture(scope="module")
def prompt_edit(pipeline) -> tuple[set[str], dict[Path, Path] | None]:
    """Edit the prompt of dataset ``other`` and run `dvc repro` once. Returns the stages
    it ran and, where outputs are hard links, the cache object each activation file was
    linked to before the edit."""
    before = None
    if not reflinks_work(pipeline):
        objects = cache_objects(pipeline)
        before = {}
        for path in activation_files(pipeline):
            status = path.stat()
            before[path] = objects[status.st_dev, status.st_ino]
    edit(pipeline / "conf" / "dataset" / "other.yaml", "park", "store")
    return repro(pipeline), before


def test_prompt_edit_reruns_only_that_datasets_chain(prompt_edit):
    ran, _ = prompt_edit
    assert ran == {
        "tokenize@tiny-other",
        "capture@tiny-other",
        "patch@tiny-other-resid_layer_pos",
        "patch@tiny-other-head",
        "normalize@tiny-other",
        "plot@tiny-other",
    }


def test_rerun_after_an_input_change_leaves_the_old_objects_intact(
    pipeline, prompt_edit, hard_links
):
    """DVC removes a stage's outputs before it runs it and capture renames new files into
    place, so no byte is written through a link into a cache object."""
    ran, before = prompt_edit
    assert "capture@tiny-other" in ran and "capture@tiny-tiny" not in ran
    changed = 0
    for path, old in before.items():
        assert old.is_file(), f"the cache lost {old}, {path} before the rerun"
        assert hashlib.md5(old.read_bytes()).hexdigest() == object_md5(old), (
            f"{old} ({path} before the rerun) was written in place through a link"
        )
        changed += path.stat().st_ino != old.stat().st_ino
    assert changed == 2  # other's clean and corrupted activations are new files
    assert_linked(pipeline)  # the new files too


def test_setting_a_value_back_restores_from_the_run_cache(pipeline):
    edit(pipeline / "conf" / "dataset" / "other.yaml", "store", "park")
    out = sh(pipeline, "dvc", "repro")
    assert "Stage 'capture@tiny-other' is cached - skipping run, checking out outputs" in out


def outputs_of(root: Path, dataset: str) -> dict[str, bytes]:
    folder = root / "results" / "tiny" / dataset
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_workspace_experiment_on_a_subset_is_refused_and_changes_nothing(pipeline):
    """DVC would remove the left-out experiments' outputs while it prepares a workspace
    `dvc exp run -S dataset=…`; the Hydra plugin refuses it before DVC changes a file."""
    import os
    import subprocess

    from project import BIN

    sh(pipeline, "git", "add", "-A")
    sh(pipeline, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "results")
    before = outputs_of(pipeline, "other")
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        ["dvc", "exp", "run", "-S", "dataset=tiny"],
        cwd=pipeline, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode != 0
    assert "leaves out tiny/other" in done.stderr and "--queue" in done.stderr
    assert "nothing was changed" in done.stderr
    assert outputs_of(pipeline, "other") == before
    assert sh(pipeline, "git", "status", "--porcelain", stdout_only=True) == ""
    assert repro(pipeline) == set()


@pytest.mark.slow
def test_run_outside_dvc_leaves_dvc_outputs_alone(pipeline):
    import sys

    before = {d: outputs_of(pipeline, d) for d in ("tiny", "other")}
    sh(pipeline, sys.executable, "-m", "patchsweep.run", "model=tiny", "dataset=other",
       "engine.progress=false")  # fmt: skip
    assert (pipeline / "runs" / "results" / "tiny" / "other" / "results.csv").is_file()
    assert {d: outputs_of(pipeline, d) for d in ("tiny", "other")} == before
    assert repro(pipeline) == set()
