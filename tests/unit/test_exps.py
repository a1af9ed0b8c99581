"""`patchsweep exps`: the table and CSV made from a saved `dvc exp show --json`
(tests/dvc_exp_sample.py says what it holds)."""

from __future__ import annotations

import copy
import csv
import io
import re
from datetime import datetime

import pytest
from dvc_exp_sample import SAMPLE, dvc_revisions, label, metric, params_of

from patchsweep import command, dvc_exp, exps

WIDTH = 100  # a terminal's columns the table must fit with the six default datasets
HEADER = ["revision", "created", "sweeps", "experiment", "clean", "corrupted", "valid",
          "atp r (n)"]  # fmt: skip


def headers(line: str) -> list[str]:
    """A table line's header names (two spaces or more apart)."""
    return re.split(r"\s{2,}", line.strip())


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def keyed_lines(rows: list[dvc_exp.Result]) -> dict[tuple[str, str], str]:
    lines = exps.table_lines(rows)[1:]
    return dict(zip([(r.revision.label, r.dataset) for r in rows], lines, strict=True))


def test_the_table_fits_100_columns_with_the_six_default_datasets():
    rows = dvc_exp.rows(SAMPLE)
    lines = exps.table_lines(rows)
    assert len(params_of(SAMPLE[0])["dataset"]) == 6
    assert max(len(line) for line in lines) <= WIDTH
    assert headers(lines[0]) == HEADER and len(lines) == 1 + len(rows)


def test_a_revisions_own_columns_are_on_its_first_row_only():
    rows = dvc_exp.rows(SAMPLE)
    for row, line in zip(rows, exps.table_lines(rows)[1:], strict=True):
        assert f"{row.model}/{row.dataset}" in line.split()
        if row.first:  # experiments indented under their commit
            assert line.startswith(("  " if row.revision.experiment else "") + row.revision.label)
        else:
            assert line.startswith(" " * 20)


def test_numbers_to_four_digits_and_the_lowest_r_with_the_sweep_count():
    rows = dvc_exp.rows(SAMPLE)
    lines = keyed_lines(rows)
    for (revision, dataset), line in lines.items():
        state = next(s for s in dvc_revisions() if label(s) == revision)
        base = metric(state, "organism", dataset, "baselines")
        fields = line.split()
        at = fields.index(f"organism/{dataset}")
        for offset, key in ((1, "clean"), (2, "corrupted")):
            if key in base:
                shown = fields[at + offset]
                assert float(shown) == pytest.approx(base[key], rel=5e-4)
                assert len(shown.lstrip("-").replace(".", "").lstrip("0")) <= 4
    checked = [r for r in rows if r.pearson]
    assert checked and all(len(r.pearson) == 4 for r in checked)  # four attribution sweeps
    for row in checked:
        line = lines[(row.revision.label, row.dataset)]
        assert line.endswith(f"{min(row.pearson.values()):.3f} ({len(row.pearson)})")


def test_missing_unreadable_and_queued_values():
    rows = dvc_exp.rows(SAMPLE)
    lines = keyed_lines(rows)
    # the workspace's induction baselines.json was deleted: "-"
    assert lines[("workspace", "induction")].split()[-4:] == ["-", "-", "-", "-"]
    # its factual attribution_check.json is not JSON: "err", and --csv says why
    assert lines[("workspace", "factual")].split()[-1] == "err"
    error = next(
        r["error"] for r in csv_rows(exps.csv_text(rows))
        if r["revision"] == "workspace" and r["dataset"] == "factual"
    )  # fmt: skip
    assert error.startswith("attribution_check.json: ") and "corrupted" in error
    # a queued experiment: its state for a time, no values, nothing "missing"
    queued = lines[("queued-ioi", "ioi")].split()
    assert queued[:2] == ["queued-ioi", "queued"] and queued[-4:] == ["-", "-", "-", "-"]


def test_a_failed_validity_check_and_an_attributed_dataset_without_checks():
    shown = copy.deepcopy(SAMPLE)
    metrics = shown[0]["data"]["metrics"]
    metrics["results/organism/ioi/baselines.json"]["data"]["validity"]["passed"] = False
    metrics["results/organism/ioi/attribution_check.json"] = {"data": {"sweeps": {}}}
    assert "ioi" in params_of(shown[0])["attributed"]
    rows = dvc_exp.rows(shown)
    assert exps.table_lines(rows)[1].split()[-2:] == ["FAIL", "missing"]  # workspace, ioi
    assert csv_rows(exps.csv_text(rows))[0]["valid"] == "false"


def test_csv_keeps_full_precision_and_spells_out_the_params_choices():
    rows = dvc_exp.rows(SAMPLE)
    table = csv_rows(exps.csv_text(rows))
    assert len(table) == len(rows)
    by_key = {(r["revision"], r["dataset"]): r for r in table}
    for state in dvc_revisions():
        params = params_of(state)
        for dataset in params["dataset"]:
            row = by_key[(label(state), dataset)]
            assert row["rev"] == state["rev"] and row["created"] == (
                state["data"]["timestamp"] or ""
            )
            assert row["datasets"].split() == list(params["dataset"])
            assert row["attributed"].split() == list(params["attributed"])
            assert row["sweep"].split() == params["sweep"]
            assert int(row["sweeps"]) == len(params["sweep"])
            names = [s["name"] for s in params["attribution_sweep"]]
            assert row["attribution_sweep"].split() == names
            base = metric(state, "organism", dataset, "baselines")
            for key in ("clean", "corrupted"):
                assert (float(row[key]) if row[key] else None) == base.get(key)
            sweeps = metric(state, "organism", dataset, "attribution_check").get("sweeps", {})
            for name, check in sweeps.items():
                assert float(row[f"r.{name}"]) == check["pearson"]
    # the values the experiments changed, to the digit
    assert by_key[("three-sweeps", "ioi")]["r.atp_head"] == "0.912345678"
    assert by_key[("two-datasets", "greater_than")]["corrupted"] == "0.2012345678"


def test_only_changed_keeps_the_values_that_differ_between_revisions():
    rows = dvc_exp.rows(SAMPLE)
    header = headers(exps.table_lines(rows, only_changed=True)[0])
    # sweeps (13 or 3), clean (three-sweeps) and corrupted (two-datasets) differ; validity
    # is "ok" wherever it is recorded, and the lowest r is the same in every revision
    assert header == ["revision", "created", "sweeps", "experiment", "clean", "corrupted"]
    columns = next(csv.reader(io.StringIO(exps.csv_text(rows, only_changed=True))))
    assert "r.atp_head" in columns and "r.atp_attn_out" not in columns
    assert "datasets" in columns and "models" not in columns


def test_created_is_month_day_and_time_this_year_else_the_date():
    row = next(r for r in dvc_exp.rows(SAMPLE) if r.revision.label == "main")
    created = datetime.fromisoformat(row.revision.created)
    assert exps._created(row, now=created) == created.strftime("%m-%d %H:%M")
    later = created.replace(year=created.year + 1)
    assert exps._created(row, now=later) == created.strftime("%Y-%m-%d")


def test_a_long_experiment_name_is_cut():
    shown = copy.deepcopy(SAMPLE)
    shown[1]["experiments"][0]["name"] = "a-very-long-experiment-name-" * 3
    lines = exps.table_lines(dvc_exp.rows(shown))
    assert max(len(line) for line in lines) <= WIDTH
    assert any(line.startswith("  a-very-long...  ") for line in lines)


def test_the_command_prints_the_table_or_csv(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(dvc_exp, "dvc_exp_show", lambda options: seen.append(options) or SAMPLE)
    rows = dvc_exp.rows(SAMPLE)
    assert command.main(["exps"]) == 0
    assert capsys.readouterr().out.splitlines() == exps.table_lines(rows)
    assert command.main(["exps", "--csv", "-A", "--only-changed"]) == 0
    assert capsys.readouterr().out == exps.csv_text(rows, only_changed=True)
    assert command.main(["exps", "-n", "3"]) == 0
    assert seen == [[], ["-A"], ["-n", "3"]]


def test_outside_a_dvc_repository_the_command_fails_with_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert command.main(["exps"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: `dvc exp show --json` exited") and "\n  fix: run" in err
