"""What a sweep stage reads of the captured runs, checked: shared by the stages that
patch (patch, patch_shard, verify), apart from :mod:`patchsweep.stored` so that the
capture stage, which reads stored files too, does not depend on the engine."""

from __future__ import annotations

from typing import Any

import torch

from patchsweep.config import Config
from patchsweep.engine.inputs import source_and_target
from patchsweep.engine.sweep import Runs, stored_key
from patchsweep.errors import ConfigError
from patchsweep.io import read_tensors
from patchsweep.paths import ExperimentPaths
from patchsweep.stored import check_captured, expected_meta, load_activations


def load_sweep_runs(
    exp: ExperimentPaths, cfg: Config, sweep_name: str, model: dict[str, Any], tokens_hash: str
) -> Runs:
    """What a sweep reads of the two runs, refused unless made by this model from these
    tokens: the patched activation from the source run, the residual stream from the
    target run (the engine starts from it), both runs' final logits, and from either run
    the embedding noise of a noise corruption, which says where the two runs start to
    differ (and is added again wherever the target run is the noised one). Activations
    come in the model's dtype, however ``capture.storage_dtype`` stored them.

    Args:
        model: The loaded model's identity (:meth:`LoadedModel.identity`).

    Raises:
        ConfigError: the capture stage does not store the component the sweep patches.
    """
    sweep = cfg.sweeps[sweep_name]
    key = stored_key(sweep)
    if key not in cfg.capture.components and key != "resid":
        raise ConfigError(
            f"sweep {sweep_name!r} patches {sweep.component}, but the capture stage does not "
            f"store it (capture.components: {cfg.capture.components})",
            f"add {key} to capture.components in conf/capture/ (or conf/config.yaml)",
        )
    storage = cfg.capture.storage_dtype
    expected = expected_meta(model, tokens_hash, storage)
    check_captured(exp.final_logits, expected)
    source_run, target_run = source_and_target(sweep.direction)
    noise = ["embed_delta"]
    return Runs(
        **{
            source_run: load_activations(exp, source_run, [key], expected, only=noise),
            target_run: load_activations(exp, target_run, None, expected, only=["resid", *noise]),
        },
        final_logits=read_tensors(exp.final_logits, ["clean", "corrupted"]),
        storage_dtype=getattr(torch, storage) if storage else None,
    )
