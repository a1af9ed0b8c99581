"""`make exps` (`patchsweep exps`) and `make exps-dvc` (`dvc exp show` cut to the columns
people compare), on a scratch repo whose commit and DVC experiment carry the
repository's own config.yaml and metrics files."""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest
import yaml
from project import REPO, make_dvc_repo, sh

DATASETS = {"tiny": "ioi", "other": "factual"}  # scratch dataset ← the organism's files
FILES = ("config.yaml", "baselines.json", "attribution_check.json", "top_components.json")
EXPERIMENT = "fewer-sweeps"  # drops a sweep; its tiny/baselines.json has another clean
CHANGED_CLEAN = 1.234567891


def columns_and_rows(text: str) -> tuple[list[str], list[dict]]:
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


def make(repo, *args: str) -> str:
    return sh(repo, "make", "-s", "-f", str(REPO / "Makefile"), *args, "STAMP=", stdout_only=True)


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_gpt2_dir):
    """The scratch repo: results committed, then an experiment saved (`dvc exp save`) with
    one sweep fewer and another clean baseline; the workspace back at the commit."""
    repo = make_dvc_repo(tmp_path_factory.mktemp("exps") / "repo", tiny_gpt2_dir,
                         ["resid_layer", "head"])  # fmt: skip
    for dataset, source in DATASETS.items():
        folder = repo / "results" / "tiny" / dataset
        folder.mkdir(parents=True)
        for name in FILES:
            shutil.copy(REPO / "results" / "organism" / source / name, folder / name)
    sh(repo, "dvc", "repro", "-q", "code")  # the code fingerprints compose depends on
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "results")

    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(
        yaml.safe_dump({**params, "sweep": params["sweep"][:1]}, sort_keys=False)
    )
    baselines = repo / "results/tiny/tiny/baselines.json"
    changed = {**json.loads(baselines.read_text()), "clean": CHANGED_CLEAN}
    baselines.write_text(json.dumps(changed))
    # only compose's outputs (config.yaml) exist: save the experiment with those
    sh(repo, "dvc", "exp", "save", "-q", "-n", EXPERIMENT, "compose")
    sh(repo, "git", "checkout", "-q", "--", ".")
    return repo


def test_make_exps_dvc_keeps_params_and_headline_metrics_only(repo):
    everything, _ = columns_and_rows(sh(repo, "dvc", "exp", "show", "--csv", stdout_only=True))
    kept, rows = columns_and_rows(make(repo, "exps-dvc", "EXPS_ARGS=--csv"))

    params = yaml.safe_load((repo / "params.yaml").read_text())
    attributed = json.loads((repo / "results/tiny/tiny/attribution_check.json").read_text())
    expected = {
        "Experiment",
        "Created",
        *(f"{group}.{name}" for group in ("model", "dataset") for name in params[group]),
        "sweep",
        *(
            f"results/tiny/{d}/baselines.json:{key}"
            for d in DATASETS
            for key in ("clean", "corrupted")
        ),
        *(f"sweeps.{name}.pearson" for name in attributed["sweeps"]),
    }
    assert len(attributed["sweeps"]) >= 2 and len(everything) > 300
    assert set(kept) == expected and len(kept) == len(expected) < 40
    workspace = rows[0]  # DVC lists the workspace first
    for dataset, source in DATASETS.items():
        shown_clean = float(workspace[f"results/tiny/{dataset}/baselines.json:clean"])
        baselines = REPO / "results" / "organism" / source / "baselines.json"
        assert shown_clean == json.loads(baselines.read_text())["clean"]
    assert yaml.safe_load(workspace["sweep"]) == params["sweep"]


def test_make_exps_lists_each_revision_and_experiment_with_its_results(repo):
    _, rows = columns_and_rows(make(repo, "exps", "EXPS_ARGS=--csv"))
    head = sh(repo, "git", "rev-parse", "--abbrev-ref", "HEAD", stdout_only=True).strip()
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert [(r["revision"], r["dataset"]) for r in rows] == [
        (revision, dataset) for revision in ("workspace", head, EXPERIMENT) for dataset in DATASETS
    ]
    for row in rows:
        source = REPO / "results" / "organism" / DATASETS[row["dataset"]]
        base = json.loads((source / "baselines.json").read_text())
        if row["revision"] == EXPERIMENT and row["dataset"] == "tiny":
            base["clean"] = CHANGED_CLEAN
        assert (float(row["clean"]), float(row["corrupted"])) == (base["clean"], base["corrupted"])
        sweeps = params["sweep"][:1] if row["revision"] == EXPERIMENT else params["sweep"]
        assert row["sweep"].split() == sweeps and int(row["sweeps"]) == len(sweeps)
        checks = json.loads((source / "attribution_check.json").read_text()).get("sweeps", {})
        for name, check in checks.items():
            assert float(row[f"r.{name}"]) == check["pearson"]
        assert row["model"] == "tiny" and not row["error"]
    assert rows[-1]["baseline"] == head and rows[-1]["created"]


def test_make_exps_fits_a_terminal_and_shows_what_changed(repo):
    lines = make(repo, "exps").splitlines()
    assert max(len(line) for line in lines) <= 100
    assert lines[0].split()[:4] == ["revision", "created", "sweeps", "experiment"]
    assert [line.split()[0] for line in lines[1:] if not line.startswith(" " * 4)] == [
        "workspace",
        sh(repo, "git", "rev-parse", "--abbrev-ref", "HEAD", stdout_only=True).strip(),
        EXPERIMENT,
    ]
    assert sum(f"tiny/{d}" in line for line in lines for d in DATASETS) == 3 * len(DATASETS)
    # the experiment changed the sweeps and one clean baseline, nothing else
    changed = make(repo, "exps", "EXPS_ARGS=--only-changed").splitlines()
    assert changed[0].split() == ["revision", "created", "sweeps", "experiment", "clean"]
