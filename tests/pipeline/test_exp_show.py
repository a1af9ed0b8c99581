"""`make exps`: `dvc exp show` cut to the columns people compare, on a scratch repo whose
experiments carry the repository's own config.yaml and metrics files."""

from __future__ import annotations

import csv
import io
import json
import shutil

import yaml
from project import REPO, make_dvc_repo, sh

DATASETS = {"tiny": "ioi", "other": "factual"}  # scratch dataset ← the organism's files
FILES = ("config.yaml", "baselines.json", "attribution_check.json", "top_components.json")


def columns_and_rows(text: str) -> tuple[list[str], list[dict]]:
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


def test_make_exps_keeps_params_and_headline_metrics_only(tmp_path, tiny_gpt2_dir):
    repo = make_dvc_repo(tmp_path / "repo", tiny_gpt2_dir, ["resid_layer", "head"])
    for dataset, source in DATASETS.items():
        folder = repo / "results" / "tiny" / dataset
        folder.mkdir(parents=True)
        for name in FILES:
            shutil.copy(REPO / "results" / "organism" / source / name, folder / name)
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "results")

    everything, _ = columns_and_rows(sh(repo, "dvc", "exp", "show", "--csv", stdout_only=True))
    shown = sh(
        repo, "make", "-s", "-f", str(REPO / "Makefile"), "exps", "STAMP=", "EXPS_ARGS=--csv",
        stdout_only=True,
    )  # fmt: skip
    kept, rows = columns_and_rows(shown)

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
