"""Stage normalize: every sweep's raw metrics → one tidy results table + baselines JSON.

Run by DVC as ``python -m patchsweep.stages.normalize MODEL DATASET``.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import torch

from patchsweep.baselines import experiment_baselines, prompt_anchors
from patchsweep.cli import run_stage, stage_args
from patchsweep.config import Config, load_config
from patchsweep.engine.sweep import Runs
from patchsweep.io import (
    FULL_PRECISION,
    check_meta,
    publish_together,
    read_csv,
    read_json,
    read_meta,
    read_tensors,
    write_csv,
    write_json,
)
from patchsweep.models import load_model
from patchsweep.normalize import results_tables
from patchsweep.paths import RUNS, ExperimentPaths
from patchsweep.stored import check_captured, expected_meta, load_activations, load_tokenized
from patchsweep.tokenize import TokenizedPairs
from patchsweep.validity import check_validity

log = logging.getLogger(__name__)


def run(exp: ExperimentPaths) -> None:
    """Write ``results.csv`` (per site), ``per_prompt.csv``, ``baselines.json`` (with the
    normalisation and the prompts it left out, and the validity checks) and
    ``attribution_check.json``.

    The validity checks (:mod:`patchsweep.validity`) run the model through the patch
    engine a few times first; a failed check stops the stage before anything is written.

    ``per_prompt.csv`` keeps float32's full precision: it is the table others recompute
    statistics from; ``results.csv`` holds means, where 6 digits are plenty.
    """
    cfg = load_config(exp.config)
    pairs, token_hash = load_tokenized(exp)
    check_meta(exp.final_logits, read_meta(exp.final_logits), {"tokens_hash": token_hash})
    logits = read_tensors(exp.final_logits, ["clean", "corrupted"])
    baselines = experiment_baselines(
        pairs, logits, cfg.metric.name, cfg.model.name, cfg.dataset.name
    )
    validity = _validity(exp, cfg, pairs, token_hash, logits)
    attributed = [name for name, sweep in cfg.sweeps.items() if sweep.method == "attribution"]
    raw = pd.concat(
        [read_csv(exp.patch(name)) for name in cfg.sweeps]
        + [read_csv(exp.verified(name)) for name in attributed],  # their exact-patched sites
        ignore_index=True,
    )
    checks = {"sweeps": {name: read_json(exp.check(name)) for name in attributed}}
    anchors = prompt_anchors(pairs, logits, cfg.metric.name)
    table, per_prompt, normalization = results_tables(raw, anchors, cfg.stats)
    # which prompts the effects leave out and why; whether the engine reproduces the runs
    baselines = {**baselines, **normalization, "validity": validity}
    outputs = (exp.table, exp.per_prompt, exp.lines, exp.baselines, exp.attribution_check)
    with publish_together(*outputs):
        write_csv(exp.table, table)
        write_csv(exp.per_prompt, per_prompt, digits=FULL_PRECISION)
        exp.lines.mkdir(parents=True, exist_ok=True)  # a DVC output even with no 1-D sweep
        one_dimensional = table[(table["position"] == -1) & (table["head"] == -1)]
        for sweep, rows in one_dimensional.groupby("sweep", sort=False):
            own = rows[rows["method"] == cfg.sweeps[str(sweep)].method]
            write_csv(exp.lines / f"{sweep}.csv", own[["layer", "normalized", "sem", "metric"]])
        write_json(exp.baselines, baselines)
        write_json(exp.attribution_check, checks)
    log.info(
        "clean %s %.3f ± %.3f, corrupted %.3f ± %.3f over %d prompts; wrote %s",
        cfg.metric.name,
        baselines["clean"],
        baselines["clean_sem"],
        baselines["corrupted"],
        baselines["corrupted_sem"],
        pairs.n_pairs,
        exp.table,
    )


def _validity(
    exp: ExperimentPaths,
    cfg: Config,
    pairs: TokenizedPairs,
    token_hash: str,
    logits: dict[str, torch.Tensor],
) -> dict[str, Any]:
    """The validity checks of this experiment, on its cached runs (residual stream and
    embedding noise only: the checks patch ``resid_pre``)."""
    model = load_model(cfg.model)
    storage = cfg.capture.storage_dtype
    expected = expected_meta(model.identity(), token_hash, storage)
    check_captured(exp.final_logits, expected)
    stored = {
        run: load_activations(exp, run, None, expected, only=["resid", "embed_delta"])
        for run in RUNS
    }
    runs = Runs(
        clean=stored["clean"],
        corrupted=stored["corrupted"],
        final_logits=logits,
        storage_dtype=getattr(torch, storage) if storage else None,
    )
    experiment = f"{cfg.model.name} on {cfg.dataset.name}"
    return check_validity(model, pairs, runs, cfg.metric.name, cfg.engine, experiment)


def main(argv: list[str]) -> None:
    """The DVC entry point: the experiment named on the command line."""
    model, dataset = stage_args(argv, "normalize", "MODEL DATASET", 2)
    run(ExperimentPaths(model, dataset))


if __name__ == "__main__":
    run_stage(main)
