"""Stage compose: resolve ``conf/`` for one experiment into ``results/<m>/<d>/config.yaml``.

Later stages read only this file, and DVC watches its leaf keys, so each stage reruns
exactly when a key it reads changes — and plain ``dvc repro`` sees every edit under conf/.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import yaml
from omegaconf import OmegaConf, open_dict

from patchsweep.config import compose_config
from patchsweep.errors import ConfigError
from patchsweep.io import write_text
from patchsweep.paths import ExperimentPaths

log = logging.getLogger(__name__)


def listed_sweeps(params_file: Path) -> list[str] | None:
    """The sweep names ``params.yaml`` asks DVC to run, or None when it lists none."""
    if not params_file.is_file():
        return None
    params = yaml.safe_load(params_file.read_text()) or {}
    names = params.get("sweep")
    return [str(n) for n in names] if names is not None else None


def run(exp: ExperimentPaths, overrides: Sequence[str] = ()) -> Path:
    """Compose the experiment's config, keep the sweeps params.yaml lists, write it."""
    cfg = compose_config(
        [f"model={exp.model}", f"dataset={exp.dataset}", *overrides], exp.root / "conf"
    )
    wanted = listed_sweeps(exp.root / "params.yaml")
    if wanted is not None:
        unknown = [n for n in wanted if n not in cfg.sweeps]
        if unknown:
            raise ConfigError(
                f"params.yaml lists sweep(s) {unknown} that conf/sweep does not define "
                f"(defined: {sorted(cfg.sweeps)})",
                "define them under sweeps: in a conf/sweep/*.yaml file, or remove them from "
                "the sweep list in params.yaml",
            )
        with open_dict(cfg):
            for name in list(cfg.sweeps):
                if name not in wanted:
                    del cfg.sweeps[name]
    if cfg.dataset.metric:  # a task scored by its own metric (Greater-Than: prob_diff)
        cfg.metric.name = cfg.dataset.metric
    write_text(exp.config, OmegaConf.to_yaml(cfg, resolve=True))
    log.info("wrote %s (sweeps: %s)", exp.config, ", ".join(cfg.sweeps))
    return exp.config
