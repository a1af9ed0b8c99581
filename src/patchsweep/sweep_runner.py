"""One sweep over captured runs → its tidy per-prompt table.

The one path from a sweep's config to its numbers: the patch stage calls it on the
activations the capture stage stored, the Python API (:mod:`patchsweep.api`) on
activations captured in memory. Both get the same sites, engine and table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import torch

from patchsweep.capture import STORAGE
from patchsweep.checkpoint import Checkpoint
from patchsweep.config import EngineConfig, SweepConfig
from patchsweep.metrics import get_metric
from patchsweep.models import LoadedModel
from patchsweep.patching import PatchInputs, run_patches
from patchsweep.sweeps import build_sites, tidy_table
from patchsweep.tokenize import TokenizedPairs


@dataclass
class Runs:
    """The unpatched clean and corrupted runs of a dataset, as capture stores them.

    Attributes:
        clean, corrupted: stored key (``resid``, ``z``, …) → (N, layers, T, ...)
            activations; a sweep needs its source component in the source run and
            ``resid`` (plus ``embed_delta`` for a noise corruption) in the target run.
        final_logits: ``clean`` and ``corrupted`` logits as the metric reads them.
    """

    clean: Mapping[str, torch.Tensor]
    corrupted: Mapping[str, torch.Tensor]
    final_logits: Mapping[str, torch.Tensor]

    def run(self, name: str) -> Mapping[str, torch.Tensor]:
        return self.clean if name == "clean" else self.corrupted


def source_and_target(sweep: SweepConfig) -> tuple[str, str]:
    """Which run a sweep patches from and which it patches into."""
    return ("clean", "corrupted") if sweep.direction == "denoise" else ("corrupted", "clean")


def stored_key(sweep: SweepConfig) -> str:
    """The stored activation (``resid``, ``z``, …) a sweep's patches are taken from."""
    return STORAGE[sweep.component][0]


def run_sweep(
    model: LoadedModel,
    pairs: TokenizedPairs,
    name: str,
    sweep: SweepConfig,
    runs: Runs,
    metric_name: str,
    engine: EngineConfig,
    checkpoint: Checkpoint | None = None,
    desc: str | None = None,
) -> pd.DataFrame:
    """Patch every site of ``sweep`` in every prompt; the raw metric per site × prompt."""
    sites = build_sites(name, sweep, pairs, model.dims)
    source_run, target_run = source_and_target(sweep)
    key, layers = STORAGE[sweep.component]
    target = runs.run(target_run)
    inputs = PatchInputs(
        pairs.corrupted_ids if sweep.direction == "denoise" else pairs.clean_ids,
        pairs.lengths,
        runs.run(source_run)[key][:, layers],
        target["resid"],
        *pairs.answers(),
        runs.final_logits["clean"],
        target.get("embed_delta"),
        pairs.score_positions,
        runs.final_logits[target_run],
    )
    metric = run_patches(
        model,
        sweep.component,
        sites,
        inputs,
        get_metric(metric_name),
        budget_mb=engine.memory_budget_mb,
        max_batch=engine.max_batch,
        progress=engine.progress,
        desc=desc or f"patch {name}",
        checkpoint=checkpoint,
    )
    return tidy_table(name, sweep, sites, metric)
