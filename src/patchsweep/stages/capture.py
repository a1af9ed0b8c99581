"""Stage capture: run clean and corrupted prompts once; cache every activation to disk.

Run by DVC as ``python -m patchsweep.stages.capture MODEL DATASET``.
"""

from __future__ import annotations

import logging

import torch

from patchsweep.capture import capture_pairs, plan_capture, return_freed_memory_to_os
from patchsweep.cli import run_stage, stage_args
from patchsweep.config import load_config
from patchsweep.errors import DataError
from patchsweep.io import publish_together
from patchsweep.models import LoadedModel, load_model, torch_dtype
from patchsweep.noise import corruption_noise
from patchsweep.paths import RUNS, ExperimentPaths
from patchsweep.stored import load_tokenized, storage_meta

log = logging.getLogger(__name__)


def run(exp: ExperimentPaths) -> None:
    """Write ``activations/{clean,corrupted}.safetensors`` and ``final_logits.safetensors``.

    Each run streams to its file one chunk of prompts at a time (chunks sized to
    ``capture.memory_budget_mb``), so memory does not grow with the number of prompts.
    Activations are stored in ``capture.storage_dtype`` when it is set, and the files
    record it; the final logits stay float32.
    The three files are published together, or none of them; temporaries that a killed
    run left in ``activations/`` or beside ``final_logits.safetensors`` are removed.
    """
    cfg = load_config(exp.config)
    return_freed_memory_to_os()  # else freed chunks stay in the heap and memory creeps up
    torch.manual_seed(cfg.seed)
    pairs, token_hash = load_tokenized(exp)
    model = load_model(cfg.model)
    if int(pairs.lengths.max()) > _max_positions(model):
        raise DataError(
            f"the longest prompt has {int(pairs.lengths.max())} tokens, more than the "
            f"model's {_max_positions(model)} positions",
            "shorten the prompts or use a model with a longer context",
        )
    dtype = model.dtype
    n, width = pairs.clean_ids.shape
    plan = plan_capture(
        model.dims,
        cfg.capture.components,
        width,
        dtype,
        cfg.capture.memory_budget_mb,
        cfg.capture.max_rows,
    )
    log.info("capturing %d prompts, %d per forward pass", n, plan.rows)
    storage = cfg.capture.storage_dtype
    meta = {**model.identity(), "tokens_hash": token_hash, "seed": cfg.seed}
    meta.update(storage_meta(storage))  # none by default: the files stay as they were
    activations = {run: exp.activations(run) for run in RUNS}
    noise = corruption_noise(cfg.dataset.noise, pairs, model)
    # the folder of the activation files (each a DVC output of its own): orphaned
    # temporaries anywhere in it are removed, whatever output they were for
    folder = exp.activations(RUNS[0]).parent
    with publish_together(folder, exp.final_logits):
        capture_pairs(
            model,
            pairs,
            plan,
            activations,
            exp.final_logits,
            meta,
            noise,
            cfg.engine.progress,
            storage=torch_dtype(storage) if storage else None,
        )


def _max_positions(model: LoadedModel) -> int:
    config = model.hf.config
    return int(
        getattr(config, "n_positions", None)
        or getattr(config, "max_position_embeddings", None)
        or 10**9
    )


def main(argv: list[str]) -> None:
    """The DVC entry point: the experiment named on the command line."""
    model, dataset = stage_args(argv, "capture", "MODEL DATASET", 2)
    run(ExperimentPaths(model, dataset))


if __name__ == "__main__":
    run_stage(main)
