"""Reading `dvc exp show --json`: a row per revision × experiment, from a saved sample
(tests/dvc_exp_sample.py says what it holds)."""

from __future__ import annotations

import copy

import pytest
from dvc_exp_sample import SAMPLE, dvc_revisions, label, metric, params_of

from patchsweep import dvc_exp
from patchsweep.errors import PatchsweepError


def test_a_row_per_revision_and_experiment_in_dvcs_order():
    rows = dvc_exp.rows(SAMPLE)
    expected = [
        (label(state), m, d)
        for state in dvc_revisions()
        for m in params_of(state)["model"]
        for d in params_of(state)["dataset"]
    ]
    assert [(r.revision.label, r.model, r.dataset) for r in rows] == expected
    assert len({r.revision.label for r in rows}) == 6  # the sample's six revisions
    assert [r.first for r in rows] == [
        i == 0 for state in dvc_revisions() for i, _ in enumerate(params_of(state)["dataset"])
    ]
    experiments = [r.revision for r in rows if r.revision.experiment and r.first]
    assert [e.label for e in experiments] == [run["name"] for run in SAMPLE[1]["experiments"]]
    assert {e.baseline for e in experiments} == {SAMPLE[1]["name"]}
    assert [e.label for e in experiments if e.state] == ["queued-ioi"]
    assert experiments[-1].state == "queued"


def test_each_row_holds_its_revisions_results():
    by_key = {(r.revision.label, r.dataset): r for r in dvc_exp.rows(SAMPLE)}
    for state in dvc_revisions():
        params = params_of(state)
        for dataset in params["dataset"]:
            row = by_key[(label(state), dataset)]
            assert row.revision.rev == state["rev"]
            assert row.revision.params == params
            assert row.attributed == (dataset in params["attributed"])
            base = metric(state, "organism", dataset, "baselines")
            assert (row.clean, row.corrupted) == (base.get("clean"), base.get("corrupted"))
            assert row.valid == base.get("validity", {}).get("passed")
            check = metric(state, "organism", dataset, "attribution_check").get("sweeps")
            assert row.pearson == ({k: v["pearson"] for k, v in check.items()} if check else None)


def test_a_missing_file_is_no_value_an_unreadable_one_an_error():
    by_key = {(r.revision.label, r.dataset): r for r in dvc_exp.rows(SAMPLE)}
    missing = by_key[("workspace", "induction")]  # its baselines.json was deleted
    assert (missing.clean, missing.corrupted, missing.errors) == (None, None, {})
    broken = by_key[("workspace", "factual")]  # its attribution_check.json is not JSON
    assert broken.pearson is None and broken.clean is not None
    assert list(broken.errors) == ["attribution_check"]
    assert "corrupted" in broken.errors["attribution_check"]


def test_results_files_outside_params_yaml_and_a_revision_without_either():
    shown = copy.deepcopy(SAMPLE[:1])
    data = shown[0]["data"]
    data["metrics"]["results/gpt2/ioi/baselines.json"] = {"data": {"clean": 3.5}}
    rows = dvc_exp.rows(shown)
    assert (rows[-1].model, rows[-1].dataset, rows[-1].clean) == ("gpt2", "ioi", 3.5)
    data["params"] = {"params.yaml": {"error": {"type": "YAMLError", "msg": "bad"}}}
    data["metrics"] = {}
    (only,) = dvc_exp.rows(shown)
    assert (only.model, only.dataset, only.first) == ("", "", True)


def test_not_dvcs_format_is_refused():
    with pytest.raises(PatchsweepError, match="list of revisions"):
        dvc_exp.revisions({"rev": "workspace"})


def test_outside_a_dvc_repository_dvc_exp_show_says_where_to_run(tmp_path):
    with pytest.raises(PatchsweepError) as raised:
        dvc_exp.dvc_exp_show(cwd=tmp_path)
    assert "`dvc exp show --json` exited" in raised.value.problem
    assert "patchsweep exps` in the project root" in raised.value.fix
