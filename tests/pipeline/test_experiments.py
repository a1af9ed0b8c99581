"""DVC experiments over models and datasets. DVC's Hydra mode composes params.yaml from
conf/experiments/ on every `dvc exp run`, so the committed params.yaml must be exactly
that composition (plain `dvc repro` reads it as it is); `dvc exp run --queue -S
'dataset=a,b'` then queues one experiment per dataset, each running only its own chain."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from project import BIN, EXPERIMENTS, REPO, make_dvc_repo, sh

GROUPS = ("model", "dataset")  # conf/<group>/<name>.yaml ↔ conf/experiments/<group>/<name>.yaml


def hydra_settings(root: Path) -> dict:
    from configobj import ConfigObj

    return dict(ConfigObj(str(root / ".dvc" / "config")).get("hydra", {}))


def dvc_composition(root: Path, out: Path, overrides: list[str] | None = None) -> str:
    """params.yaml as `dvc exp run` writes it for ``root`` (DVC's own code, same call)."""
    from dvc.utils.hydra import compose_and_dump

    hydra = hydra_settings(root)
    config_dir = str((root / hydra.get("config_dir", "conf")).resolve())
    compose_and_dump(
        out, config_dir, None, hydra.get("config_name", "config"), str(root), overrides or []
    )
    return out.read_text()


def test_dvc_hydra_mode_composes_params_from_conf_experiments():
    hydra = hydra_settings(REPO)
    assert hydra.get("enabled") == "true"
    assert Path(hydra["config_dir"]) == EXPERIMENTS
    assert (REPO / EXPERIMENTS / f"{hydra['config_name']}.yaml").is_file()


@pytest.mark.parametrize("group", GROUPS)
def test_every_config_has_its_one_line_stub(group):
    configs = {p.stem for p in (REPO / "conf" / group).glob("*.yaml")}
    stubs = {p.stem: p for p in (REPO / EXPERIMENTS / group).glob("*.yaml")}
    assert set(stubs) == configs, (
        f"conf/{group}/ and {EXPERIMENTS}/{group}/ differ: add `<name>: true` as "
        f"{EXPERIMENTS}/{group}/<name>.yaml for each conf/{group}/<name>.yaml"
    )
    for name, path in stubs.items():
        stub = yaml.safe_load(path.read_text())
        if group == "dataset" and "attributed" in stub:  # it also runs attribution sweeps
            assert path.read_text().startswith("# @package _global_\n"), path
            assert stub == {"dataset": {name: True}, "attributed": {name: True}}, path
        else:
            assert stub == {name: True}, path


def test_params_yaml_is_dvcs_composition_of_conf_experiments(tmp_path):
    composed = dvc_composition(REPO, tmp_path / "params.yaml")
    assert (REPO / "params.yaml").read_bytes() == (tmp_path / "params.yaml").read_bytes(), (
        "params.yaml is stale: `dvc exp run` rewrites it from conf/experiments/params.yaml. "
        "Run `dvc exp run` (or copy the composition below) and commit params.yaml:\n" + composed
    )


def test_composed_params_list_every_default_dataset_once(tmp_path):
    params = yaml.safe_load(dvc_composition(REPO, tmp_path / "params.yaml"))
    defaults = yaml.safe_load((REPO / EXPERIMENTS / "params.yaml").read_text())["defaults"]
    listed = {group: names for d in defaults if isinstance(d, dict) for group, names in d.items()}
    assert list(params) == [
        "model", "dataset", "attributed", "sweep", "attribution_sweep", "sharded", "shard",
    ]  # fmt: skip
    assert set(params["attributed"]) <= set(params["dataset"])
    for group in GROUPS:
        assert list(params[group]) == listed[group]  # dvc.yaml's matrix iterates these keys
    defined = yaml.safe_load((REPO / "conf" / "sweep" / "default.yaml").read_text())
    assert set(params["sweep"]) <= set(defined)  # the file is `@package sweeps`
    assert set(params["sharded"]) <= set(defined) - set(params["sweep"])  # run in shards
    for entry in params["attribution_sweep"]:  # each checked against a listed exact sweep
        assert defined[entry["name"]]["method"] == "attribution"
        assert entry["exact"] in [*params["sweep"], *params["sharded"]]


@pytest.mark.parametrize(
    ("override", "datasets"),
    [
        ("dataset=greater_than", ["greater_than"]),
        ("dataset=[ioi,greater_than]", ["ioi", "greater_than"]),
        ("dataset=[factual_replace]", ["factual_replace"]),
    ],
)
def test_set_param_picks_datasets(tmp_path, override, datasets):
    params = yaml.safe_load(dvc_composition(REPO, tmp_path / "params.yaml", [override]))
    assert list(params["dataset"]) == datasets
    assert params["model"] == {"organism": True}


def test_set_param_picks_models(tmp_path):
    params = yaml.safe_load(dvc_composition(REPO, tmp_path / "p.yaml", ["model=[organism,gpt2]"]))
    assert list(params["model"]) == ["organism", "gpt2"]


def test_project_fixture_params_are_dvcs_composition(project, tmp_path_factory):
    (project / ".dvc").mkdir()
    shutil.copy(REPO / ".dvc" / "config", project / ".dvc" / "config")
    out = tmp_path_factory.mktemp("composed") / "params.yaml"
    dvc_composition(project, out)
    assert (project / "params.yaml").read_bytes() == out.read_bytes()


# --- the queue, end to end, on the real dvc.yaml in a scratch repo ----------------------


@pytest.fixture
def stop_queue():
    """Stops the queue's worker after the test (it would otherwise idle for a minute)."""
    roots: list[Path] = []
    yield roots.append
    for root in roots:
        subprocess.run([f"{BIN}/dvc", "queue", "stop"], cwd=root, capture_output=True)


def experiments(root: Path) -> list[dict]:
    """Every experiment of `dvc exp show --json`: name, state, params.yaml, outs."""
    shown = json.loads(sh(root, "dvc", "exp", "show", "--json", stdout_only=True))
    found = []
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            data = exp["revs"][0]["data"]
            found.append(
                {
                    "name": exp.get("name"),
                    "state": (exp.get("executor") or {}).get("state", "success"),
                    "params": data["params"]["params.yaml"]["data"],
                    "outs": set(data.get("outs") or {}),
                }
            )
    return found


def run_queue(root: Path, timeout: float = 240) -> list[dict]:
    """`dvc queue start -j 1`, then wait until no experiment is queued or running."""
    sh(root, "dvc", "queue", "start", "-j", "1")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = experiments(root)
        if all(e["state"] not in ("queued", "running") for e in found):
            return found
        time.sleep(2)
    raise AssertionError(
        f"queue still busy after {timeout} s:\n{sh(root, 'dvc', 'queue', 'status')}"
    )


def test_queue_sweep_runs_one_experiment_per_dataset(tmp_path, tiny_gpt2_dir, stop_queue):
    """`-S 'dataset=a,b'` queues one experiment per dataset; `-S 'dataset=[a,b]'` one with
    both. Each runs the compose stage (the quickest real one) for exactly its datasets."""
    repo = make_dvc_repo(tmp_path / "repo", tiny_gpt2_dir, ["resid_layer_pos"], ["compose"])
    stop_queue(repo)
    out = sh(repo, "dvc", "exp", "run", "--queue", "-S", "dataset=tiny,other")
    assert out.count("Queueing with overrides") == 2, out
    sh(repo, "dvc", "exp", "run", "--queue", "-S", "dataset=[tiny,other]")
    queued = experiments(repo)
    assert sorted(list(e["params"]["dataset"]) for e in queued) == [
        ["other"],
        ["tiny"],
        ["tiny", "other"],
    ]
    done = run_queue(repo)
    assert len(done) == 3
    for exp in done:
        datasets = list(exp["params"]["dataset"])
        assert exp["state"] == "success", exp
        assert exp["params"]["model"] == {"tiny": True}
        assert exp["params"]["sweep"] == ["resid_layer_pos"]
        configs = {o for o in exp["outs"] if o.endswith("config.yaml")}
        assert configs == {f"results/tiny/{d}/config.yaml" for d in datasets}, exp
    # the workspace is untouched: params.yaml still lists both datasets
    assert list(yaml.safe_load((repo / "params.yaml").read_text())["dataset"]) == [
        "tiny",
        "other",
    ]


@pytest.mark.slow
def test_queued_experiment_runs_its_whole_chain(tmp_path, tiny_gpt2_dir, stop_queue):
    """The full pipeline in the queue, one dataset per experiment."""
    repo = make_dvc_repo(tmp_path / "repo", tiny_gpt2_dir, ["resid_layer_pos"])
    stop_queue(repo)
    sh(repo, "dvc", "exp", "run", "--queue", "-S", "dataset=tiny,other")
    done = run_queue(repo, timeout=600)
    assert len(done) == 2
    for exp in done:
        assert exp["state"] == "success", exp
        (dataset,) = exp["params"]["dataset"]
        (other,) = {"tiny", "other"} - {dataset}
        assert f"results/tiny/{dataset}/results.csv" in exp["outs"]
        assert not [o for o in exp["outs"] if f"/tiny/{other}/" in o], exp
