"""Stage patch: one sweep over cached activations, raw metric per site × prompt."""

from __future__ import annotations

import logging
from dataclasses import asdict

from patchsweep.checkpoint import Checkpoint, checkpoint_key
from patchsweep.component_types import COMPONENT_TYPES
from patchsweep.config import load_config
from patchsweep.engine import PatchInputs, build_sites, run_patches
from patchsweep.errors import ConfigError
from patchsweep.io import check_meta, read_meta, read_tensors, write_csv
from patchsweep.metrics import get_metric
from patchsweep.models import load_model
from patchsweep.paths import ExperimentPaths
from patchsweep.steps.inputs import load_activations, load_tokenized
from patchsweep.tables import tidy_table

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
    key = COMPONENT_TYPES[sweep.component].store
    if key not in cfg.capture.components and key != "resid":
        raise ConfigError(
            f"sweep {sweep_name!r} patches {sweep.component}, but the capture stage does not "
            f"store it (capture.components: {cfg.capture.components})",
            f"add {key} to capture.components in conf/capture/ (or conf/config.yaml)",
        )
    source = load_activations(exp, source_run, [key], expected)
    target = load_activations(exp, target_run, None, expected, only=["resid", "embed_delta"])
    check_meta(exp.final_logits, read_meta(exp.final_logits), expected)
    final_logits = read_tensors(exp.final_logits, ["clean", "corrupted"])
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
        PatchInputs.for_sweep(
            pairs,
            sweep.component,
            sweep.direction,
            source_run=source,
            target_run=target,
            clean_logits=final_logits["clean"],
            target_logits=final_logits[target_run],
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
