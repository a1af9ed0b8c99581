"""Run whole experiments outside DVC, with Hydra's command line and launchers.

``python -m patchsweep.run dataset=greater_than`` runs compose → tokenize → capture →
patch → normalize → plot in one process for one experiment, writing the same files as
``dvc repro``. With ``-m`` it is a Hydra multirun: ``python -m patchsweep.run -m
dataset=ioi,greater_than`` runs one experiment per dataset, sequentially by default or
in parallel with a launcher plugin (``hydra/launcher=joblib``, or ``submitit_slurm`` on
a cluster; install ``hydra-joblib-launcher`` / ``hydra-submitit-launcher``). DVC does
not track these runs: use ``dvc repro`` or ``dvc exp run`` for cached, granular reruns.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from patchsweep.cli import setup_logging
from patchsweep.config import check_group_choices, register_schemas
from patchsweep.errors import PatchsweepError
from patchsweep.paths import ExperimentPaths
from patchsweep.stages import capture, normalize, patch, plot, tokenize
from patchsweep.stages.compose import write_resolved

log = logging.getLogger(__name__)
CONF = str(Path.cwd() / "conf")
OUTPUTS = Path("runs")  # outside DVC's results/ and data/cache/

register_schemas()


def run_experiment(cfg: DictConfig, model: str, dataset: str) -> ExperimentPaths:
    """Every stage of one experiment, in order, from an already composed config."""
    exp = ExperimentPaths(model, dataset, outputs=OUTPUTS)
    write_resolved(exp, cfg)
    tokenize.run(exp)
    capture.run(exp)
    for name in cfg.sweeps:
        patch.run(exp, name)
    normalize.run(exp)
    plot.run(exp)
    return exp


@hydra.main(config_path=CONF, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: the experiment named by the chosen model and dataset options."""
    setup_logging()
    choices = HydraConfig.get().runtime.choices
    try:
        check_group_choices([f"{k}={choices[k]}" for k in ("model", "dataset")])
        exp = run_experiment(cfg, choices["model"], choices["dataset"])
    except PatchsweepError as exc:
        log.error("%s\n  fix: %s", exc.problem, exc.fix)
        raise SystemExit(2) from exc
    log.info("results in %s", exp.results)


if __name__ == "__main__":
    main()
