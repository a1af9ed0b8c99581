"""Stage compose: resolve ``conf/`` for one experiment into ``results/<m>/<d>/config.yaml``.

Later stages read only this file, and DVC watches its leaf keys, so each stage reruns
exactly when a key it reads changes — and plain ``dvc repro`` sees every edit under conf/.

The file also records, under ``inputs:``, content hashes of what lives outside conf/
(the prompt file, a local model folder, a custom metric module; see
:mod:`patchsweep.fingerprint`). DVC runs compose on every ``dvc repro``
(``always_changed``) so those hashes are always current; an unchanged file gives the
same bytes, and nothing downstream reruns.

Run by DVC as ``python -m patchsweep.stages.compose MODEL DATASET [HYDRA_OVERRIDE ...]``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from patchsweep.cli import run_stage, stage_args
from patchsweep.config import (
    BUILTIN_METRICS,
    check_known_keys,
    check_no_environment,
    compose_config,
    to_object,
    validate,
)
from patchsweep.errors import ConfigError
from patchsweep.fingerprint import file_digest, model_revision, module_source
from patchsweep.io import write_text
from patchsweep.paths import ExperimentPaths
from patchsweep.plotting.settings import check_style
from patchsweep.shards import check_sharded, read_layout

log = logging.getLogger(__name__)


def listed_sweeps(params_file: Path, dataset: str | None = None) -> list[str] | None:
    """The sweep names ``params.yaml`` asks DVC to run, or None when it lists none.

    Datasets listed under ``attributed`` also run the ``attribution_sweep`` list (each
    entry ``{name: …, exact: …}``; the exact sweep it is checked against is in ``sweep``
    or ``sharded``). The sweeps under ``sharded`` run in shards (:mod:`patchsweep.shards`).
    """
    if not params_file.is_file():
        return None
    params = yaml.safe_load(params_file.read_text()) or {}
    names = params.get("sweep")
    if names is None:
        return None
    listed = [str(n) for n in names]
    listed += [name for name in read_layout(params_file) if name not in listed]
    if dataset is not None and dataset in (params.get("attributed") or {}):
        for entry in params.get("attribution_sweep") or []:
            listed.append(str(entry["name"]) if isinstance(entry, dict) else str(entry))
    return listed


def input_hashes(cfg: DictConfig) -> dict[str, str | None]:
    """Content hashes of the experiment's inputs outside conf/ (see ``InputsConfig``)."""
    prompts = None
    if cfg.dataset.generator == "file" and "path" in cfg.dataset.options:
        path = Path(str(cfg.dataset.options.path))
        prompts = file_digest(path) if path.is_file() else None  # tokenize says it's missing
    metric = None
    name = str(cfg.metric.name)
    if name not in BUILTIN_METRICS:
        module_name = name.partition(":")[0]
        source = module_source(module_name) if ":" in name else None
        if source is None:
            raise ConfigError(
                f"metric.name {name!r} is neither a built-in metric nor an importable "
                "module:function",
                f"use one of: {', '.join(BUILTIN_METRICS)}, or module:function of a module "
                "importable from the project root (e.g. metrics/mine.py → metrics.mine:fn)",
            )
        metric = file_digest(source)
    return {
        "prompts": prompts,
        "model": model_revision(str(cfg.model.path), cfg.model.revision),
        "metric": metric,
    }


def run(exp: ExperimentPaths, overrides: Sequence[str] = ()) -> Path:
    """Compose the experiment's config, keep the sweeps params.yaml lists, write it."""
    cfg = compose_config(
        [f"model={exp.model}", f"dataset={exp.dataset}", *overrides], exp.root / "conf"
    )
    return write_resolved(exp, cfg)


def write_resolved(exp: ExperimentPaths, cfg: DictConfig) -> Path:
    """Finish a composed config for one experiment and write ``config.yaml``.

    Shared by the compose stage and ``patchsweep.run``; see :func:`finish`.
    """
    cfg = finish(exp, cfg)
    for key, value in input_hashes(cfg).items():
        cfg.inputs[key] = value
    write_text(exp.config, OmegaConf.to_yaml(cfg, resolve=True))
    log.info("wrote %s (sweeps: %s)", exp.config, ", ".join(cfg.sweeps))
    return exp.config


def finish(exp: ExperimentPaths, cfg: DictConfig) -> DictConfig:
    """The experiment's config as the stages see it, checked: only the sweeps
    ``params.yaml`` lists, and the dataset's own metric (``patchsweep estimate`` reads it
    without writing anything)."""
    check_known_keys(cfg)
    check_no_environment(cfg)
    wanted = listed_sweeps(exp.root / "params.yaml", exp.dataset)
    if wanted is not None:
        unknown = [n for n in wanted if n not in cfg.sweeps]
        if unknown:
            raise ConfigError(
                f"params.yaml lists sweep(s) {unknown} that conf/sweep does not define "
                f"(defined: {sorted(cfg.sweeps)})",
                "define them under sweeps: in a conf/sweep/*.yaml file, or remove them from "
                "the sweep list (or sharded) in params.yaml",
            )
        check_sharded(exp.root / "params.yaml", to_object(cfg).sweeps)
        with open_dict(cfg):
            for name in list(cfg.sweeps):
                if name not in wanted:
                    del cfg.sweeps[name]
    if cfg.dataset.metric:  # a task scored by its own metric (Greater-Than: prob_diff)
        cfg.metric.name = cfg.dataset.metric
    typed = to_object(cfg)
    validate(typed)
    check_style(typed.plot)  # a bad plot setting fails now, not after hours of sweeps
    return cfg


def main(argv: list[str]) -> None:
    """The DVC entry point: the experiment named on the command line."""
    model, dataset, *overrides = stage_args(
        argv, "compose", "MODEL DATASET [OVERRIDE ...]", 2, more=True
    )
    run(ExperimentPaths(model, dataset), overrides)


if __name__ == "__main__":
    run_stage(main)
