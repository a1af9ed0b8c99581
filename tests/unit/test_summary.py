"""The summary after `dvc repro`: which stages ran, failed or were skipped, one line per
experiment, and what needs attention — from synthetic records and results in tmp_path."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from patchsweep import command, summary
from patchsweep.cli import record_stage, run_stage, stage_record_path
from patchsweep.stage_runs import command_record, pipeline_stages

REPO = Path(__file__).resolve().parents[2]

# dvc.yaml's shape in small: a stage outside the matrices, matrices over model × dataset
# (× sweep), and one over a list of dicts (DVC names its entries sweep0, sweep1, ...).
DVC_YAML = {
    "stages": {
        "train_organism": {"cmd": "python -m patchsweep.stages.train_organism"},
        "compose": {
            "matrix": {"model": "${model}", "dataset": "${dataset}"},
            "cmd": "python -m patchsweep.stages.compose ${item.model} ${item.dataset}",
        },
        "patch": {
            "matrix": {"model": "${model}", "dataset": "${dataset}", "sweep": "${sweep}"},
            "cmd": "python -m patchsweep.stages.patch ${item.model} ${item.dataset} ${item.sweep}",
        },
        "attribute": {
            "matrix": {
                "model": "${model}",
                "dataset": "${attributed}",
                "sweep": "${attribution_sweep}",
            },
            "cmd": "python -m patchsweep.stages.patch ${item.model} ${item.dataset} "
            "${item.sweep.name}",
        },
        "normalize": {
            "matrix": {"model": "${model}", "dataset": "${dataset}"},
            "cmd": "python -m patchsweep.stages.normalize ${item.model} ${item.dataset}",
        },
    }
}
PARAMS = {
    "model": {"m": True},
    "dataset": {"a": True, "b": True},
    "sweep": ["s1", "s2"],
    "attributed": {"a": True},
    "attribution_sweep": [{"name": "atp", "exact": "s1"}],
}
STAGES = {
    "train_organism": ("train_organism", []),
    **{f"compose@m-{d}": ("compose", ["m", d]) for d in "ab"},
    **{f"patch@m-{d}-{s}": ("patch", ["m", d, s]) for d in "ab" for s in ("s1", "s2")},
    "attribute@m-a-sweep0": ("patch", ["m", "a", "atp"]),
    **{f"normalize@m-{d}": ("normalize", ["m", d]) for d in "ab"},
}


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    """The summary wraps to the terminal's width (at most 120 columns); these tests read
    whole lines, so they fix it rather than take whatever the test runner has (pytest's
    worker processes have none, and fall back to 80)."""
    monkeypatch.setenv("COLUMNS", "120")


def project(root: Path, locked=tuple(STAGES), dvc_yaml=DVC_YAML, params=PARAMS) -> Path:
    """dvc.yaml, params.yaml and a dvc.lock holding ``locked``."""
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    lock = {"schema": "2.0", "stages": {name: {"cmd": "python"} for name in locked}}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    return root


def record(root: Path, name: str, finished: float, status="done", seconds=1.0, problem=""):
    """The record the stage of dvc.yaml named ``name`` leaves (as cli.record_stage)."""
    stage, args = STAGES[name]
    path = root / stage_record_path(stage, args)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = {"stage": stage, "args": args, "status": status, "seconds": seconds}
    path.write_text(json.dumps({**fields, "finished": finished, "problem": problem}))


def results(
    root: Path,
    dataset: str,
    sites: dict[str, int],
    n_prompts=8,
    excluded=(),
    validity=True,
    pearson=(),
) -> None:
    """results.csv with ``sites[sweep]`` rows per sweep, baselines.json, and
    attribution_check.json when ``pearson`` gives its sweeps' agreement."""
    folder = root / "results" / "m" / dataset
    folder.mkdir(parents=True, exist_ok=True)
    rows = [f"{sweep},resid_pre,{i},0.5" for sweep, n in sites.items() for i in range(n)]
    (folder / "results.csv").write_text("\n".join(["sweep,component,layer,normalized", *rows]))
    baselines = {
        "clean": 2.0,
        "corrupted": -2.0,
        "n_prompts": n_prompts,
        "excluded_prompts": list(excluded),
        "excluded_gaps": [0.01 * (i + 1) for i in range(len(excluded))],
        "exclusion_threshold": 0.04,
        "validity": {"passed": validity},
    }
    (folder / "baselines.json").write_text(json.dumps(baselines))
    if pearson:
        sweeps = {f"atp{i}": {"pearson": r} for i, r in enumerate(pearson)}
        (folder / "attribution_check.json").write_text(json.dumps({"sweeps": sweeps}))


def row(lines: list[str], experiment: str) -> list[str]:
    """The columns of an experiment's line."""
    found = [line.split() for line in lines if line.startswith(experiment + " ")]
    assert len(found) == 1, lines
    return found[0]


class TestStages:
    """Records since --since ran or failed; no record: up to date if dvc.lock has it."""

    def test_ran_failed_up_to_date_and_never_completed(self, tmp_path):
        root = project(tmp_path, locked=[n for n in STAGES if n != "normalize@m-b"])
        since = 1000.0
        record(root, "compose@m-a", since + 1, seconds=2.0)
        record(root, "patch@m-a-s1", since + 5, seconds=3.0)
        record(root, "patch@m-a-s2", since + 9, "failed", 4.0, "sweep s2: out of memory")
        record(root, "compose@m-b", since - 100)  # an earlier repro
        lines = summary.summarize(root, since, dvc_status=1)
        assert lines[0] == (
            "dvc repro: 2 stages ran, 1 failed, 6 not run (up to date or not reached), "
            "1 never completed"
        )
        assert lines[1].startswith("  9 s in the stages that ran, ")
        assert lines[1].endswith("; dvc repro exited 1")
        text = "\n".join(lines)
        assert "  FAILED patch@m-a-s2 after 4.0 s: sweep s2: out of memory" in text
        assert (
            "    full message: logs/stages/patch+m+a+s2.json; rerun: dvc repro patch@m-a-s2" in text
        )
        assert (
            "  m/b: never completed (not in dvc.lock; dvc repro stopped at the failure above): "
            "normalize" in text
        )
        assert row(lines, "m/a")[1:3] == ["3/5", "9.0"]  # the failed stage's time counts
        assert row(lines, "m/b")[1:3] == ["0/4", "0.0"]

    def test_nothing_to_do_is_all_up_to_date_and_quiet(self, tmp_path):
        root = project(tmp_path)
        for dataset in "ab":
            results(root, dataset, {"s1": 2})
        lines = summary.summarize(root, since=1000.0, dvc_status=0)
        assert lines[0] == f"dvc repro: 0 stages ran, 0 failed, {len(STAGES)} up to date"
        assert "needs attention:" not in lines

    @pytest.mark.parametrize(
        ("finished", "tally"), [(999.9, "0 stages ran"), (1000.0, "1 stage ran")]
    )
    def test_since_splits_this_run_from_earlier_ones(self, tmp_path, finished, tally):
        root = project(tmp_path)
        record(root, "patch@m-b-s2", finished)
        lines = summary.summarize(root, since=1000.0)
        skipped = len(STAGES) - int(tally[0])
        assert lines[0] == f"dvc repro: {tally}, 0 failed, {skipped} up to date"

    def test_since_zero_counts_every_last_run(self, tmp_path):
        root = project(tmp_path)
        for i, name in enumerate(STAGES):
            record(root, name, finished=100.0 + i)
        lines = summary.summarize(root, since=0)
        assert lines[0] == f"dvc repro: {len(STAGES)} stages ran, 0 failed, 0 up to date"
        assert lines[1] == f"  {len(STAGES)} s in the stages that ran"  # no start: no total

    def test_reads_the_records_run_stage_writes(self, tmp_path, monkeypatch):
        root = project(tmp_path)
        monkeypatch.chdir(root)
        since = time.time()
        record_stage("patch", ["m", "a", "s1"], "done")
        record_stage("normalize", ["m", "a"], "failed", "m on a: validity check x failed")
        lines = summary.summarize(Path("."), since)
        assert lines[0].startswith("dvc repro: 1 stage ran, 1 failed, ")
        assert "FAILED normalize@m-a after " in "\n".join(lines)
        assert row(lines, "m/a")[7] == "FAILED"  # the validity column

    def test_crashed_stage_is_reported_like_a_failed_one(self, tmp_path):
        root = project(tmp_path)
        problem = "ValueError: layer 7 of 2 (see the traceback above)"
        record(root, "patch@m-a-s1", 2000.0, "crashed", 3.0, problem)
        record(root, "normalize@m-b", 2001.0, "failed", problem="m on b: bad prompts")
        lines = summary.summarize(root, since=1000.0, dvc_status=1)
        assert lines[0] == (
            "dvc repro: 0 stages ran, 2 failed (1 crashed), "
            f"{len(STAGES) - 2} not run (up to date or not reached)"
        )
        text = "\n".join(lines)
        assert f"  CRASHED patch@m-a-s1 after 3.0 s: {problem}" in text
        assert (
            "    full message: logs/stages/patch+m+a+s1.json; rerun: dvc repro patch@m-a-s1" in text
        )
        assert "  FAILED normalize@m-b after 1.0 s: m on b: bad prompts" in text
        assert "no stage recorded a failure" not in text
        assert row(lines, "m/a")[1:3] == ["1/5", "3.0"]  # its time counts, like a failure's

    def test_reads_the_crash_run_stage_records(self, tmp_path, monkeypatch):
        root = project(tmp_path)
        monkeypatch.chdir(root)
        since = time.time()

        def crashing(argv):
            raise RuntimeError("CUDA out of memory")

        crashing.__module__ = "patchsweep.stages.patch"  # the record's stage name
        with pytest.raises(RuntimeError, match="CUDA out of memory"):
            run_stage(crashing, argv=["m", "a", "s2"])
        text = "\n".join(summary.summarize(Path("."), since))
        assert (
            "CRASHED patch@m-a-s2 after " in text
            and ": RuntimeError: CUDA out of memory (see the traceback above)" in text
        )

    def test_failure_without_a_record_is_said(self, tmp_path):
        root = project(tmp_path)
        text = "\n".join(summary.summarize(root, since=1000.0, dvc_status=2))
        assert "dvc repro exited 2, but no stage recorded a failure" in text

    def test_frozen_stage_is_named(self, tmp_path):
        frozen = {
            "stages": {
                **DVC_YAML["stages"],
                "train_organism": {
                    "cmd": "python -m patchsweep.stages.train_organism",
                    "frozen": True,
                },
            }
        }
        root = project(
            tmp_path, locked=[n for n in STAGES if n != "train_organism"], dvc_yaml=frozen
        )
        text = "\n".join(summary.summarize(root, since=1000.0))
        assert "frozen in dvc.yaml, DVC never runs them: train_organism" in text
        assert "never completed (not in dvc.lock" not in text

    def test_unparsable_dvc_yaml_still_counts_the_records(self, tmp_path):
        broken = {"stages": {"patch": {"matrix": {"sweep": "${no_such_key}"}, "cmd": "x"}}}
        root = project(tmp_path, dvc_yaml=broken)
        record(root, "patch@m-a-s1", 2000.0, "failed", problem="bad")
        lines = summary.summarize(root, since=1000.0)
        assert (
            lines[0] == "dvc repro: 0 stages ran, 1 failed, 0 not run (up to date or not reached)"
        )
        text = "\n".join(lines)
        assert "dvc.yaml: its stages could not be listed" in text
        assert "FAILED patch m a s1 after 1.0 s: bad" in text


class TestExperiments:
    """One line per experiment from results/<model>/<dataset>/; missing files are said."""

    def test_line_reads_the_results_files(self, tmp_path):
        root = project(tmp_path)
        results(
            root, "a", {"s1": 3, "s2": 2, "atp": 4}, n_prompts=8, excluded=[3], pearson=[0.95, 0.9]
        )
        record(root, "patch@m-a-s1", 2000.0, seconds=2.5)
        lines = summary.summarize(root, since=1000.0)
        assert lines[3].split() == [
            "experiment",
            "ran",
            "seconds",
            "prompts",
            "excluded",
            "sweeps",
            "sites",
            "validity",
            "atp",
            "r",
            "(n)",
        ]
        assert row(lines, "m/a") == ["m/a", "1/5", "2.5", "8", "1", "3", "9", "ok", "0.900", "(2)"]
        head, a, b = lines[3], lines[4], lines[5]
        end = head.index("validity") + len("validity")  # numbers align right under it
        assert a[end - 2 : end] == "ok" and b[end - 1 : end + 1] == "- "

    def test_excluded_prompts_say_which_and_why(self, tmp_path):
        root = project(tmp_path)
        results(root, "a", {"s1": 1}, n_prompts=8, excluded=[3, 5])
        text = " ".join(" ".join(summary.summarize(root, since=1000.0)).split())
        assert (
            "m/a: 2 of 8 prompts left out of the statistics (|clean - corrupted| under 0.04; "
            "see exclusion_rule in baselines.json): 3 (gap 0.01), 5 (gap 0.02)" in text
        )

    def test_missing_or_unreadable_files_are_reported(self, tmp_path):
        root = project(tmp_path)
        results(root, "a", {"s1": 1})
        (root / "results" / "m" / "a" / "baselines.json").write_text("{not json")
        lines = summary.summarize(root, since=1000.0)
        assert row(lines, "m/a")[3:9] == ["-", "-", "1", "1", "-", "-"]
        assert row(lines, "m/b")[3:9] == ["-", "-", "-", "-", "-", "-"]
        text = "\n".join(lines)
        assert "  no baselines.json (`dvc checkout` or `dvc repro` restores them): m/a" in text
        assert (
            "  no results.csv, baselines.json (`dvc checkout` or `dvc repro` restores them): "
            "m/b" in text
        )

    def test_missing_results_of_a_normalize_that_never_ran(self, tmp_path):
        root = project(tmp_path, locked=[n for n in STAGES if n != "normalize@m-b"])
        results(root, "a", {"s1": 1})
        text = "\n".join(summary.summarize(root, since=1000.0))
        assert "  no results.csv, baselines.json (normalize has not completed): m/b" in text

    def test_failed_normalize_marks_older_results(self, tmp_path):
        root = project(tmp_path)
        results(root, "a", {"s1": 1})
        record(root, "normalize@m-a", 2000.0, "failed", problem="m on a: validity check x failed")
        lines = summary.summarize(root, since=1000.0, dvc_status=2)
        assert row(lines, "m/a")[7] == "FAILED"
        assert "  m/a: normalize failed: its results are from an earlier run" in lines


class TestScreen:
    """The project's own pipeline, everything going wrong at once, still fits a screen."""

    def test_every_project_stage_names_its_record(self):
        stages = pipeline_stages(REPO)
        assert len(stages) > 50  # every matrix expanded
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        experiments = {(m, d) for m in params["model"] for d in params["dataset"]}
        for name, stage in stages.items():
            found = command_record(stage["cmd"])
            assert found is not None, f"{name}: {stage['cmd']}"
            path, args = found
            assert path.parent == Path("logs/stages")
            assert name in ("train_organism", "code") or tuple(args[:2]) in experiments, name

    def test_one_screen_when_everything_fails(self, tmp_path):
        for name in ("dvc.yaml", "params.yaml"):
            shutil.copy(REPO / name, tmp_path / name)
        params = yaml.safe_load((tmp_path / "params.yaml").read_text())
        experiments = [(m, d) for m in params["model"] for d in params["dataset"]]
        for name, stage in pipeline_stages(tmp_path).items():
            path, _ = command_record(stage["cmd"])
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            problem = f"{name}: " + "a long explanation of what went wrong " * 20
            (tmp_path / path).write_text(
                json.dumps(
                    {"status": "failed", "problem": problem, "seconds": 1.0, "finished": 2000.0}
                )
            )
        for model, dataset in experiments:
            folder = tmp_path / "results" / model / dataset
            folder.mkdir(parents=True)
            (folder / "baselines.json").write_text(
                json.dumps({"n_prompts": 64, "excluded_prompts": list(range(20))})
            )
        lines = summary.summarize(tmp_path, since=1000.0, dvc_status=1)
        assert len(experiments) <= 8 and len(lines) <= 40, "\n".join(lines)
        assert lines[-1].startswith("  ... and ") and lines[-1].endswith(" more lines")
        assert all(len(line) <= 120 for line in lines)


class TestCommand:
    """python -m patchsweep.summary and patchsweep summary: plain text, exit status 0."""

    def test_prints_plain_text_and_exits_zero(self, tmp_path, capsys):
        root = project(tmp_path)
        record(root, "patch@m-a-s1", 2000.0, "failed", problem="bad")
        assert summary.main(["--since", "1000", "--root", str(root), "--dvc-status", "2"]) == 0
        out = capsys.readouterr().out
        assert "FAILED patch@m-a-s1" in out and "\033" not in out  # not a terminal
        assert command.main(["summary", "--since", "1000", "--root", str(root)]) == 0
        assert capsys.readouterr().out.splitlines()[0] == out.splitlines()[0]

    def test_colour_marks_failed_and_crashed(self):
        assert summary._colour("  CRASHED patch@m-a-s1") == "  \033[31mCRASHED\033[0m patch@m-a-s1"
        assert summary._colour("  FAILED x") == "  \033[31mFAILED\033[0m x"

    @pytest.mark.parametrize(
        "argv",
        [
            [],
            ["--since", "soon"],
            ["--since", "-1"],
            ["--since", "nan"],
            ["--since", "0", "--dvc-status", "x"],
        ],
    )
    def test_bad_arguments_exit_2(self, argv, capsys):
        with pytest.raises(SystemExit) as exited:
            summary.main(argv)
        assert exited.value.code == 2
        assert "usage:" in capsys.readouterr().err

    def test_outside_a_project_exits_2_with_the_fix(self, tmp_path, capsys):
        assert summary.main(["--since", "0", "--root", str(tmp_path)]) == 2
        assert "fix: run the summary in the project root" in capsys.readouterr().err
