"""Stage capture: run clean and corrupted prompts once; cache every activation to disk."""

from __future__ import annotations

import logging

import torch

from patchsweep.capture import capture_run
from patchsweep.config import load_config
from patchsweep.errors import DataError
from patchsweep.io import write_tensors
from patchsweep.models import load_model
from patchsweep.noise import embedding_noise
from patchsweep.paths import RUNS, ExperimentPaths
from patchsweep.steps.inputs import load_tokenized

log = logging.getLogger(__name__)


def run(exp: ExperimentPaths) -> None:
    """Write ``activations/{clean,corrupted}.safetensors`` and ``final_logits.safetensors``."""
    cfg = load_config(exp.config)
    torch.manual_seed(cfg.seed)
    pairs, token_hash = load_tokenized(exp)
    model = load_model(cfg.model)
    if int(pairs.lengths.max()) > _max_positions(model):
        raise DataError(
            f"the longest prompt has {int(pairs.lengths.max())} tokens, more than the "
            f"model's {_max_positions(model)} positions",
            "shorten the prompts or use a model with a longer context",
        )
    meta = {**model.identity(), "tokens_hash": token_hash, "seed": cfg.seed}
    ids = {"clean": pairs.clean_ids, "corrupted": pairs.corrupted_ids}
    noise = None
    if cfg.dataset.noise.scale > 0:
        embed_std = float(model.hf.get_input_embeddings().weight.detach().float().std())
        noise = embedding_noise(pairs, cfg.dataset.noise, embed_std, model.dims.d_model)
        log.info(
            "corrupting with embedding noise: %g × std %.3g on %s..%s, %d draw(s)",
            cfg.dataset.noise.scale,
            embed_std,
            cfg.dataset.noise.labels[0],
            cfg.dataset.noise.labels[-1],
            cfg.dataset.noise.samples,
        )
    logits = {}
    for run_name in RUNS:
        delta = noise if run_name == "corrupted" else None
        acts = capture_run(
            model,
            ids[run_name],
            pairs.lengths,
            components=cfg.capture.components,
            max_rows=cfg.capture.max_rows,
            desc=f"capture {run_name}",
            progress=cfg.engine.progress,
            embed_delta=delta,
        )
        for key in acts:
            if not bool(torch.isfinite(acts[key]).all()):
                raise DataError(
                    f"the {run_name} run produced NaN or inf in {key}",
                    "use model.dtype=float32, or check the model weights",
                )
        logits[run_name] = acts.pop("logits")
        if delta is not None:
            acts["embed_delta"] = delta.to(acts["resid"].dtype)
        write_tensors(exp.activations(run_name), acts, {**meta, "run": run_name})
        log.info("wrote %s", exp.activations(run_name))
    write_tensors(exp.final_logits, logits, meta)
    log.info("wrote %s", exp.final_logits)


def _max_positions(model) -> int:
    config = model.hf.config
    return int(
        getattr(config, "n_positions", None)
        or getattr(config, "max_position_embeddings", None)
        or 10**9
    )
