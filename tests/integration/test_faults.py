"""Faults while writing outputs end in a clear error or are harmless: temporaries that a
killed run left are removed by the next run, a stage's outputs are published together or
not at all, a full disk is an OutputError (exit 2), and bad plot settings stop the plot
stage before it writes anything."""

from __future__ import annotations

import base64
import errno
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from project import EXP, files_under, make_project, run_and_fail, run_through_patch

from patchsweep import io
from patchsweep.errors import ConfigError, OutputError
from patchsweep.plotting.report import REPORT_HTML, REPORT_MD, TOP_COMPONENTS

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
REPORTS = [EXP.results / name for name in (REPORT_MD, REPORT_HTML, TOP_COMPONENTS)]


def temporaries(folder: Path) -> list[Path]:
    return [p for p in files_under(folder) if p.name.endswith(".tmp")]


def capture_outputs() -> list[Path]:
    return [EXP.activations("clean"), EXP.activations("corrupted"), EXP.final_logits]


@pytest.fixture(scope="module")
def normalized(tmp_path_factory, tiny_gpt2_dir) -> Path:
    """A project run once through normalize; tests work on copies of it."""
    from patchsweep.stages import normalize

    root = tmp_path_factory.mktemp("normalized")
    make_project(root, tiny_gpt2_dir)
    cwd = Path.cwd()
    os.chdir(root)
    try:
        run_through_patch()
        normalize.run(EXP)
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture
def done(normalized, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the normalized project, as the working directory."""
    root = tmp_path / "project"
    shutil.copytree(normalized, root)
    monkeypatch.chdir(root)
    return root


def full_disk_after_half(real):
    """A write that puts half its bytes on disk, then finds the disk full."""

    def write(self, data, *args, **kwargs):
        real(self, data[: len(data) // 2], *args, **kwargs)
        raise ENOSPC

    return write


class TestOrphanedTemporaries:
    """What a `kill -9` left beside an output is gone after the next write of it."""

    def test_a_write_removes_its_own_outputs_orphans_only(self, tmp_path):
        mine, other = tmp_path / ".a.csv.x1y2.tmp", tmp_path / ".b.csv.x1y2.tmp"
        mine.write_bytes(b"12 MB of a killed run")
        other.write_bytes(b"another output's")
        io.write_text(tmp_path / "a.csv", "a\n")
        assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "a.csv"]

    def test_a_live_writers_temporary_is_kept_a_killed_ones_removed(self, tmp_path):
        target = tmp_path / "out.txt"
        hold = (
            "import sys, time\nfrom pathlib import Path\nfrom patchsweep.io import atomic_path\n"
            "with atomic_path(Path(sys.argv[1])) as tmp:\n"
            "    tmp.write_bytes(b'half')\n    print('writing', flush=True)\n    time.sleep(600)\n"
        )
        writer = subprocess.Popen(
            [sys.executable, "-c", hold, str(target)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert writer.stdout.readline().strip() == "writing"
            [theirs] = tmp_path.glob(".out.txt.*.tmp")
            io.write_text(target, "mine\n")  # a concurrent writer of the same file
            assert theirs.exists(), "a live writer's temporary was deleted"
        finally:
            writer.kill()
            writer.wait()
        io.write_text(target, "again\n")
        assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
        assert target.read_text() == "again\n"

    def test_capture_removes_what_a_killed_capture_left(self, done):
        from patchsweep.stages import capture

        stale = [
            EXP.cache / ".final_logits.safetensors.k9k9k9.tmp",
            EXP.activations("clean").parent / ".clean.safetensors.k9k9k9.tmp",
            EXP.activations("clean").parent / ".dropped_run.safetensors.k9k9k9.tmp",
        ]
        for path in stale:
            path.write_bytes(b"\0" * 4096)
        capture.run(EXP)
        assert temporaries(EXP.cache) == []

    def test_plot_removes_what_a_killed_plot_left(self, done):
        from patchsweep.stages import plot

        EXP.figures.mkdir(parents=True, exist_ok=True)
        stale = [EXP.figures / ".gone_sweep.png.k9k9k9.tmp", EXP.results / ".report.md.k9.tmp"]
        for path in stale:
            path.write_bytes(b"half a figure")
        plot.run(EXP)
        assert temporaries(EXP.results) == []
        # The report embeds the figures just published, not what the folder held before.
        html = EXP.results.joinpath(REPORT_HTML).read_text()
        embedded = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
        pngs = {p.read_bytes() for p in EXP.figures.glob("*.png")}
        assert embedded and {base64.b64decode(data) for data in embedded} <= pngs


class TestPublishedTogether:
    """publish_together: every write of the block, or none of them."""

    def test_a_failing_block_publishes_nothing(self, tmp_path):
        a, b = tmp_path / "a.txt", tmp_path / "b.json"
        a.write_text("old a")
        with pytest.raises(RuntimeError), io.publish_together(a, b):
            io.write_text(a, "new a")
            io.write_json(b, {"new": True})
            raise RuntimeError("the next step failed")
        assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
        assert a.read_text() == "old a"

    def test_a_block_that_ends_publishes_everything_at_its_end(self, tmp_path):
        a, b = tmp_path / "sub" / "a.txt", tmp_path / "b.txt"
        with io.publish_together(a, b):
            io.write_text(a, "new a")
            io.write_text(b, "new b")
            assert not a.exists() and not b.exists()
            assert io.staged(a).read_text() == "new a"  # readable before it is published
        assert (a.read_text(), b.read_text()) == ("new a", "new b")
        assert temporaries(tmp_path) == []

    def test_a_failed_rename_puts_back_the_files_already_replaced(self, tmp_path, monkeypatch):
        a, b = tmp_path / "a.txt", tmp_path / "b.txt"
        a.write_text("old a")
        b.write_text("old b")
        real = os.replace

        def replace(src, dst):
            if Path(dst) == b:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real(src, dst)

        monkeypatch.setattr(io.os, "replace", replace)
        failed = pytest.raises(OutputError, match=f"cannot write {re.escape(str(b))}")
        with failed, io.publish_together(a, b):
            io.write_text(a, "new a")
            io.write_text(b, "new b")
        assert (a.read_text(), b.read_text()) == ("old a", "old b")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


class TestFullDisk:
    """ENOSPC mid-write: an OutputError that names the file, nothing left behind."""

    @pytest.mark.parametrize("writer", ["csv", "json", "tensors"])
    def test_each_writer(self, tmp_path, monkeypatch, writer):
        path = tmp_path / f"out.{writer}"
        path.write_bytes(b"previous")
        if writer == "csv":
            to_csv = full_disk_after_half_csv(pd.DataFrame.to_csv)
            monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)
        else:
            monkeypatch.setattr(Path, "write_bytes", full_disk_after_half(Path.write_bytes))
        with pytest.raises(OutputError) as raised:
            WRITERS[writer](path)
        assert raised.value.problem == f"cannot write {path}: No space left on device"
        assert "free space on the disk that holds" in raised.value.fix
        assert [p.name for p in tmp_path.iterdir()] == [path.name]
        assert path.read_bytes() == b"previous"

    @pytest.mark.parametrize("previous", [True, False], ids=["over-old-files", "first-run"])
    def test_mid_capture_publishes_none_of_the_three(self, done, capsys, monkeypatch, previous):
        from patchsweep.stages import capture

        old = {}
        for path in capture_outputs():
            if previous:
                old[path] = f"previous {path.name}".encode()
                path.write_bytes(old[path])
            else:
                path.unlink()
        real = io.StreamedTensors.write_rows

        def full_once_clean_is_written(self, *args, **kwargs):
            if ".corrupted.safetensors." in Path(self._handle.name).name:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(self, *args, **kwargs)

        monkeypatch.setattr(io.StreamedTensors, "write_rows", full_once_clean_is_written)
        err = run_and_fail(capture.run, capsys, EXP)
        corrupted = EXP.activations("corrupted")
        assert f"cannot write {corrupted}: No space left on device" in err
        assert "fix: free space on the disk that holds" in err
        assert temporaries(EXP.cache) == []
        for path in capture_outputs():
            assert (path.read_bytes() if path.exists() else None) == old.get(path), path

    def test_mid_plot_publishes_no_figure_and_no_report(self, done, capsys, monkeypatch):
        from patchsweep.stages import plot

        monkeypatch.setattr(Path, "write_bytes", full_disk_on_third_write(Path.write_bytes))
        err = run_and_fail(plot.run, capsys, EXP)
        assert "No space left on device" in err and "fix: free space" in err
        assert files_under(EXP.figures) == []
        assert not any(path.exists() for path in REPORTS)
        assert temporaries(EXP.results) == []


WRITERS = {
    "csv": lambda path: io.write_csv(path, pd.DataFrame({"a": range(100)})),
    "json": lambda path: io.write_json(path, {"a": list(range(100))}),
    "tensors": lambda path: io.write_tensors(path, {"t": torch.ones(100)}, {}),
}


def full_disk_after_half_csv(real):
    """DataFrame.to_csv that writes half the table to its file, then finds the disk full."""

    def to_csv(self, path, *args, **kwargs):
        real(self.iloc[: len(self) // 2], path, *args, **kwargs)
        raise ENOSPC

    return to_csv


def full_disk_on_third_write(real):
    """Path.write_bytes whose first two calls succeed; the third writes half, then fails."""
    calls = []

    def write(self, data):
        calls.append(self)
        if len(calls) < 3:
            return real(self, data)
        real(self, data[: len(data) // 2])
        raise ENOSPC

    return write


BAD_PLOT_SETTINGS = [
    ("plot.cmap=nope", "plot.cmap is 'nope', which is not a matplotlib colormap", "RdBu_r"),
    ("plot.cmap=rdbu_r", "plot.cmap is 'rdbu_r'", "did you mean RdBu_r"),
    ("plot.annotate_fmt=d", "plot.annotate_fmt is 'd', which is not a format spec", ".2f"),
    ("plot.formats=[png,bmpx]", "plot.formats has 'bmpx', which is not a figure format", "png"),
    ("plot.formats=[eps]", "plot.formats has 'eps', which is written without reproducible", "pdf"),
    ("plot.dpi=0", "plot.dpi is 0, outside 10..1200", "set plot.dpi between 10 and 1200"),
    ("plot.dpi=100000", "plot.dpi is 100000, outside 10..1200", "300-600 for print"),
    ("plot.top_k=0", "plot.top_k is 0", "at least 1"),
    ("plot.width=-1", "plot.width is -1.0", "above 0"),
]


class TestPlotSettings:
    """A bad plot setting stops compose (before hours of sweeps), and the plot stage
    refuses one in a hand-edited config before it draws or writes anything."""

    @pytest.mark.parametrize(("override", "problem", "fix"), BAD_PLOT_SETTINGS)
    def test_compose_refuses(self, done, capsys, override, problem, fix):
        from patchsweep.stages import compose

        before = EXP.config.read_bytes()
        err = run_and_fail(compose.run, capsys, EXP, [override])
        assert problem in err
        assert fix in err.split("fix:", 1)[1]
        assert EXP.config.read_bytes() == before
        assert temporaries(EXP.results) == []

    @pytest.mark.parametrize(("override", "problem", "fix"), BAD_PLOT_SETTINGS)
    def test_fails_before_writing(self, done, capsys, override, problem, fix):
        from omegaconf import OmegaConf

        from patchsweep.stages import compose, plot

        compose.run(EXP)
        edited = OmegaConf.merge(OmegaConf.load(EXP.config), OmegaConf.from_dotlist([override]))
        EXP.config.write_text(OmegaConf.to_yaml(edited))
        err = run_and_fail(plot.run, capsys, EXP)
        assert problem in err
        assert fix in err.split("fix:", 1)[1]
        assert files_under(EXP.figures) == []
        assert not any(path.exists() for path in REPORTS)
        assert temporaries(EXP.results) == []

    def test_the_defaults_and_a_percent_format_pass(self):
        from patchsweep.config import PlotConfig
        from patchsweep.plotting import PlotStyle, check_style
        from patchsweep.plotting.settings import format_value

        check_style(PlotConfig())
        check_style(PlotStyle())
        check_style({"annotate_fmt": ".1%", "formats": ["svg"], "dpi": 1200})
        assert format_value(-1e-9, ".1%") == "0.0%"  # no "-0.0%", and no crash
        assert format_value(-0.5, ".2f") == "\u22120.50"

    def test_a_mapping_is_checked_under_its_key(self):
        from patchsweep.plotting import check_style

        with pytest.raises(ConfigError, match=r"style\.cmap is 'nope'"):
            check_style({"cmap": "nope"}, key="style")
