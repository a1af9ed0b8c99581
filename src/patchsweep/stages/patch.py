"""Stage patch: one sweep over cached activations, raw metric per site × prompt.

Run by DVC as ``python -m patchsweep.stages.patch MODEL DATASET SWEEP``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from patchsweep.capture import STORAGE
from patchsweep.checkpoint import Checkpoint, checkpoint_key
from patchsweep.cli import run_stage, stage_args
from patchsweep.config import load_config
from patchsweep.errors import ConfigError
from patchsweep.io import check_meta, read_meta, read_tensors, write_csv
from patchsweep.metrics import get_metric
from patchsweep.models import load_model
from patchsweep.patching import PatchInputs, run_patches
from patchsweep.paths import ExperimentPaths
from patchsweep.stored import load_activations, load_tokenized
from patchsweep.sweeps import build_sites, tidy_table

log = logging.getLogger(__name__)


def run(exp: ExperimentPaths, sweep_name: str) -> None:
    """Run the sweep ``sweep_name`` and write its tidy per-prompt table."""
    cfg = load_config(exp.config)
    if sweep_name not in cfg.sweeps:
        raise ConfigError(
            f"sweep {sweep_name!r} is not in {exp.config} (has: {sorted(cfg.sweeps)})",
            "define it under sweeps: in conf/sweep/ and list it in params.yaml",
        )
    sweep = cfg.sweeps[sweep_name]
    pairs, token_hash = load_tokenized(exp)
    model = load_model(cfg.model)
    sites = build_sites(sweep_name, sweep, pairs, model.dims)
    source_run, target_run = (
        ("clean", "corrupted") if sweep.direction == "denoise" else ("corrupted", "clean")
    )
    expected = {**model.identity(), "tokens_hash": token_hash}
    key, layers = STORAGE[sweep.component]
    if key not in cfg.capture.components and key != "resid":
        raise ConfigError(
            f"sweep {sweep_name!r} patches {sweep.component}, but the capture stage does not "
            f"store it (capture.components: {cfg.capture.components})",
            f"add {key} to capture.components in conf/capture/ (or conf/config.yaml)",
        )
    source = load_activations(exp, source_run, [key], expected)[key][:, layers]
    target = load_activations(exp, target_run, None, expected, only=["resid", "embed_delta"])
    target_resid, target_delta = target["resid"], target.get("embed_delta")
    target_ids = pairs.corrupted_ids if sweep.direction == "denoise" else pairs.clean_ids
    check_meta(exp.final_logits, read_meta(exp.final_logits), expected)
    final_logits = read_tensors(exp.final_logits, ["clean", "corrupted"])
    clean_logits = final_logits["clean"]
    log.info(
        "sweep %s: %s %s, %d sites × %d prompts (%s into the %s run)",
        sweep_name,
        sweep.direction,
        sweep.component,
        len(sites),
        pairs.n_pairs,
        source_run,
        target_run,
    )
    checkpoint = Checkpoint(
        exp.checkpoint(sweep_name),
        checkpoint_key(
            model=model.identity(), tokens=token_hash, sweep=asdict(sweep), metric=cfg.metric.name
        ),
        every_s=cfg.engine.checkpoint_every_s,
    )
    metric = run_patches(
        model,
        sweep.component,
        sites,
        PatchInputs(
            target_ids,
            pairs.lengths,
            source,
            target_resid,
            *pairs.answers(),
            clean_logits,
            target_delta,
            pairs.score_positions,
            final_logits[target_run],
        ),
        get_metric(cfg.metric.name),
        budget_mb=cfg.engine.memory_budget_mb,
        max_batch=cfg.engine.max_batch,
        progress=cfg.engine.progress,
        desc=f"patch {sweep_name}",
        checkpoint=checkpoint,
    )
    write_csv(exp.patch(sweep_name), tidy_table(sweep_name, sweep, sites, metric))
    checkpoint.remove()
    log.info("wrote %s", exp.patch(sweep_name))


def main(argv: list[str]) -> None:
    """The DVC entry point: the experiment named on the command line."""
    model, dataset, sweep = stage_args(argv, "patch", "MODEL DATASET SWEEP", 3)
    run(ExperimentPaths(model, dataset), sweep)


if __name__ == "__main__":
    run_stage(main)
