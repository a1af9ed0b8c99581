"""The guard against workspace experiments that would delete other experiments' results
(the DVC-level run is in test_dvc_pipeline.py): which commands it refuses."""

from __future__ import annotations

import pytest
import yaml

from patchsweep.workspace_guard import WorkspaceExperimentError, check_dvc_command, set_params

DVC = "/venv/bin/dvc"


@pytest.fixture
def workspace(tmp_path):
    experiments = tmp_path / "conf" / "experiments"
    experiments.mkdir(parents=True)
    defaults = [{"model": ["organism"]}, {"dataset": ["ioi", "induction"]}, "_self_"]
    (experiments / "params.yaml").write_text(yaml.safe_dump({"defaults": defaults}))
    for dataset in ("ioi", "induction"):
        folder = tmp_path / "results" / "organism" / dataset
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text("{}\n")
    return tmp_path


@pytest.mark.parametrize(
    "argv",
    [
        [DVC, "exp", "run", "-S", "dataset=ioi"],
        [DVC, "exp", "run", "-S", "params.yaml:dataset=[ioi]"],
        [DVC, "exp", "run", "--set-param=dataset=ioi"],
        [DVC, "exp", "run", "-S", "model=[gpt2]"],
    ],
    ids=["short", "with-file", "long-form", "other-model"],
)
def test_a_subset_in_the_workspace_is_refused(workspace, argv):
    with pytest.raises(WorkspaceExperimentError, match="leaves out organism/") as caught:
        check_dvc_command(argv, workspace)
    assert "--queue" in caught.value.fix


@pytest.mark.parametrize(
    "argv",
    [
        [DVC, "exp", "run", "--queue", "-S", "dataset=ioi"],
        [DVC, "exp", "run", "--temp", "-S", "dataset=ioi"],
        [DVC, "exp", "run", "-S", "dataset=[ioi,induction]"],
        [DVC, "exp", "run", "-S", "sweep=[head]"],
        [DVC, "exp", "run"],
        [DVC, "repro"],
        ["/usr/bin/python", "-m", "patchsweep.run", "dataset=ioi"],
    ],
    ids=["queued", "temp", "all-datasets", "sweeps-only", "defaults", "repro", "not-dvc"],
)
def test_everything_else_passes(workspace, argv):
    check_dvc_command(argv, workspace)


def test_defaults_edited_to_drop_a_dataset_are_refused_too(workspace):
    experiments = workspace / "conf" / "experiments" / "params.yaml"
    experiments.write_text(experiments.read_text().replace("- induction\n", ""))
    with pytest.raises(WorkspaceExperimentError, match="leaves out organism/induction"):
        check_dvc_command([DVC, "exp", "run"], workspace)


def test_set_params_reads_every_spelling():
    argv = [DVC, "exp", "run", "-S", "a=1", "--set-param", "b=2", "--set-param=c=3", "-Sd=4"]
    assert set_params(argv) == ["a=1", "b=2", "c=3", "d=4"]
