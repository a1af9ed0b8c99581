"""Stage normalize: every sweep's raw metrics → one tidy results table + baselines JSON.

Run by DVC as ``python -m patchsweep.stages.normalize MODEL DATASET``.
"""

from __future__ import annotations

import logging

import pandas as pd

from patchsweep.cli import run_stage, stage_args
from patchsweep.config import load_config
from patchsweep.io import (
    check_meta,
    publish_together,
    read_csv,
    read_meta,
    read_tensors,
    write_csv,
    write_json,
)
from patchsweep.metrics import get_metric, top1_correct
from patchsweep.normalize import aggregate, baseline_stats, normalize
from patchsweep.paths import ExperimentPaths
from patchsweep.stored import load_tokenized

log = logging.getLogger(__name__)


def run(exp: ExperimentPaths) -> None:
    """Write ``results.csv`` (per site), ``per_prompt.csv`` and ``baselines.json``."""
    cfg = load_config(exp.config)
    pairs, token_hash = load_tokenized(exp)
    check_meta(exp.final_logits, read_meta(exp.final_logits), {"tokens_hash": token_hash})
    logits = read_tensors(exp.final_logits, ["clean", "corrupted"])
    metric = get_metric(cfg.metric.name)
    answers = (*pairs.answers(), logits["clean"])
    clean = metric(logits["clean"], *answers)
    corrupted = metric(logits["corrupted"], *answers)
    stats = baseline_stats(clean, corrupted)
    final = {run: value[:, -1] if value.dim() == 3 else value for run, value in logits.items()}
    baselines = {
        "model": cfg.model.name,
        "dataset": cfg.dataset.name,
        "metric": cfg.metric.name,
        **stats,
        "clean_accuracy": float(top1_correct(final["clean"], pairs.correct_ids).float().mean()),
        "corrupted_accuracy": float(
            top1_correct(final["corrupted"], pairs.correct_ids).float().mean()
        ),
        "n_prompts": pairs.n_pairs,
    }
    raw = pd.concat([read_csv(exp.patch(name)) for name in cfg.sweeps], ignore_index=True)
    per_prompt = normalize(raw, stats["clean"], stats["corrupted"])
    table = aggregate(per_prompt)
    with publish_together(exp.table, exp.per_prompt, exp.lines, exp.baselines):
        write_csv(exp.table, table)
        write_csv(exp.per_prompt, per_prompt)
        exp.lines.mkdir(parents=True, exist_ok=True)  # a DVC output even with no 1-D sweep
        one_dimensional = table[(table["position"] == -1) & (table["head"] == -1)]
        for sweep, rows in one_dimensional.groupby("sweep", sort=False):
            write_csv(exp.lines / f"{sweep}.csv", rows[["layer", "normalized", "sem", "metric"]])
        write_json(exp.baselines, baselines)
    log.info(
        "clean %s %.3f ± %.3f, corrupted %.3f ± %.3f over %d prompts; wrote %s",
        cfg.metric.name,
        stats["clean"],
        stats["clean_sem"],
        stats["corrupted"],
        stats["corrupted_sem"],
        pairs.n_pairs,
        exp.table,
    )


def main(argv: list[str]) -> None:
    """The DVC entry point: the experiment named on the command line."""
    model, dataset = stage_args(argv, "normalize", "MODEL DATASET", 2)
    run(ExperimentPaths(model, dataset))


if __name__ == "__main__":
    run_stage(main)
