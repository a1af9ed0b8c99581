"""The Python API: the README's notebook example, run from outside the repository, gives
the pipeline's numbers; light modules stay light; bad calls fail clearly."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from patchsweep.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "data" / "models" / "ioi-gpt2"
SITE = ["sweep", "layer", "head", "position", "position_label"]


def readme_example() -> str:
    """The README's Python block marked ``<!-- notebook example -->``."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- notebook example -->\s*```python\n(.*?)```", text, re.S)
    assert found, "README.md has no ```python block after <!-- notebook example -->"
    return found.group(1)


def pipeline_results(root: Path, sweeps: list[str]) -> pd.DataFrame:
    """results.csv of organism/ioi from the pipeline's own stages, run as DVC runs them
    (``python -m patchsweep.stages.<name>``) in a copy of the project's config."""
    shutil.copytree(REPO / "conf", root / "conf")
    (root / "data").mkdir()
    (root / "data" / "models").symlink_to(REPO / "data" / "models")
    (root / "params.yaml").write_text(yaml.safe_dump({"sweep": sweeps}))
    stages = [["compose"], ["tokenize"], ["capture"], *(["patch", s] for s in sweeps),
              ["normalize"]]  # fmt: skip
    for stage, *extra in stages:
        subprocess.run(
            [sys.executable, "-m", f"patchsweep.stages.{stage}", "organism", "ioi", *extra],
            cwd=root, check=True, capture_output=True,
        )  # fmt: skip
    return pd.read_csv(root / "results" / "organism" / "ioi" / "results.csv",
                       keep_default_na=False)  # fmt: skip


def test_readme_example_matches_the_pipeline_results(tmp_path, monkeypatch):
    """Run from a folder outside the repo (the model path made absolute): the table
    equals the pipeline's results.csv of the same experiment, site by site."""
    code = readme_example().replace('"data/models/ioi-gpt2"', repr(str(MODEL)))
    notebook = tmp_path / "notebook"
    notebook.mkdir()
    monkeypatch.chdir(notebook)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    table = namespace["table"]
    pipeline = pipeline_results(tmp_path / "project", sorted(table["sweep"].unique()))
    assert len(pipeline) == len(table) > 0
    merged = table.merge(pipeline, on=SITE, suffixes=("", "_pipeline"), validate="1:1")
    assert len(merged) == len(table)
    for column in ("metric", "normalized", "sem", "ci_low", "ci_high"):
        pd.testing.assert_series_equal(
            merged[column], merged[f"{column}_pipeline"], check_names=False, rtol=1e-5, atol=1e-6
        )
    for column in ("n_prompts", "normalization", "method"):
        assert (merged[column] == merged[f"{column}_pipeline"]).all(), column
    assert list(table.columns) == list(pipeline.columns)
    assert list(notebook.glob("figures/*.png")), "the example's plot() call wrote no figure"


@pytest.mark.parametrize("module", ["patchsweep.normalize", "patchsweep.plotting.figures"])
def test_table_modules_import_no_model_code(module):
    code = (
        f"import sys, {module}; "
        "heavy = [m for m in ('nnsight', 'transformers') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, f"{module} imports {result.stdout.strip()}"


@pytest.fixture(scope="module")
def organism():
    import patchsweep as ps

    return ps.load_model(MODEL, name="organism")


def test_a_dataset_keeps_its_own_metric(organism):
    import patchsweep as ps

    assert ps.load_prompts("greater_than", organism, n_pairs=4).metric == "prob_diff"
    assert ps.load_prompts("ioi", organism, n_pairs=4).metric == "logit_diff"
    assert ps.load_prompts("greater_than", organism, n_pairs=4, metric="prob").metric == "prob"


def test_sweep_keys_as_keywords_and_one_capture_for_several(organism):
    import patchsweep as ps

    prompts = ps.load_prompts("ioi", organism, n_pairs=6, corruption="swap")
    runs = ps.capture_runs(organism, prompts, ["attn_out"], progress=False)
    one = ps.sweep(organism, prompts, component="attn_out", positions="all", runs=runs,
                   engine={"progress": False})  # fmt: skip
    again = ps.sweep(organism, prompts, {"component": "attn_out", "positions": "all"},
                     engine={"progress": False})  # fmt: skip
    pd.testing.assert_frame_equal(one, again)
    assert set(one["sweep"]) == {"attn_out_denoise"}
    assert one.attrs["baselines"]["n_prompts"] == 6
    validity = one.attrs["baselines"]["validity"]
    assert validity["resid_layer0_denoise"]["passed"] and validity["empty_patch_clean"]["passed"]


def test_attribution_and_exact_tables_join_on_the_method_column(organism):
    import patchsweep as ps

    prompts = ps.load_prompts("ioi", organism, n_pairs=6, corruption="swap")
    runs = ps.capture_runs(organism, prompts, ["z"], progress=False)
    spec = {"component": "z", "positions": "all"}
    exact = ps.sweep(organism, prompts, spec, runs=runs, engine={"progress": False})
    estimate = ps.sweep(organism, prompts, {**spec, "method": "attribution"}, runs=runs,
                        engine={"progress": False})  # fmt: skip
    assert set(exact["method"]) == {"exact"} and set(estimate["method"]) == {"attribution"}
    both = exact.merge(estimate, on=["layer", "head", "position"], suffixes=("", "_atp"))
    assert len(both) == len(exact) == organism.dims.n_layers * organism.dims.n_heads
    # the estimate ranks the heads as exact patching does: its top head is one of the
    # exact ranking's top three
    top_estimate = both.loc[both["normalized_atp"].abs().idxmax()]
    top_three = both.loc[both["normalized"].abs().nlargest(3).index]
    assert (top_estimate["layer"], top_estimate["head"]) in set(
        zip(top_three["layer"], top_three["head"], strict=True)
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda ps, m: ps.load_prompts("no_such_task", m), "neither a generator nor"),
        (lambda ps, m: ps.load_prompts("missing.csv", m), "no prompt file"),
        (lambda ps, m: ps.sweep(m, ps.load_prompts("ioi", m, n_pairs=2), component="zz"),
         "component"),
        (lambda ps, m: ps.sweep(m, ps.load_prompts("ioi", m, n_pairs=2), component="z",
                                layer=[0]), "does not fit"),
        (lambda ps, m: ps.sweep(m, ps.load_prompts("ioi", m, n_pairs=2), {}), "no sweep"),
    ],
)  # fmt: skip
def test_bad_calls_name_the_problem(organism, call, message):
    import patchsweep as ps

    with pytest.raises(ConfigError, match=message):
        call(ps, organism)


def test_command_line_sweep_writes_a_table(tmp_path):
    out = tmp_path / "heads.csv"
    result = subprocess.run(
        [sys.executable, "-m", "patchsweep.command", "sweep", "ioi", "--model", str(MODEL),
         "--component", "z", "--positions", "all", "--n-pairs", "4", "-o", str(out)],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out)
    shape = json.loads((MODEL / "config.json").read_text())
    assert len(table) == shape["n_layer"] * shape["n_head"] and set(table["component"]) == {"z"}
    bad = subprocess.run(
        [sys.executable, "-m", "patchsweep.command", "sweep", "ioi", "--model", str(MODEL),
         "--component", "nope", "-o", str(tmp_path / "bad.csv")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2 and "fix:" in bad.stderr
    assert not (tmp_path / "bad.csv").exists()


@pytest.mark.parametrize("overrides", [["dataset=nope"], ["-m", "dataset=ioi,nope"]])
def test_command_line_run_refuses_an_unknown_option(overrides):
    result = subprocess.run(
        [sys.executable, "-m", "patchsweep.command", "run", *overrides],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 2
    assert "no conf/dataset/nope.yaml" in result.stderr and "ioi_single" in result.stderr
