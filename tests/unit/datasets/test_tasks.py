"""The generators' scoring defaults agree with the pipeline's dataset configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from patchsweep.datasets import GENERATORS
from patchsweep.datasets.tasks import TASKS, metric_for, task_of, uses_noise

CONF = Path(__file__).resolve().parents[3] / "conf" / "dataset"
CONFIGS = sorted(CONF.glob("*.yaml"))


def test_every_generator_has_a_task():
    assert set(TASKS) == set(GENERATORS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_conf_dataset_scoring_matches_the_generator(path):
    cfg = yaml.safe_load(path.read_text())
    if cfg.get("generator") not in GENERATORS:
        pytest.skip("pairs from a file or written out: no generator defaults")
    task = task_of(cfg["generator"])
    assert cfg.get("metric", "logit_diff") == metric_for(cfg["generator"], cfg.get("options", {}))
    assert cfg.get("score_from") == task.score_from
    options = cfg.get("options", {})
    if uses_noise(cfg["generator"], options):
        assert cfg["noise"] == task.noise
    else:
        assert cfg.get("noise", {}).get("scale", 0) == 0
