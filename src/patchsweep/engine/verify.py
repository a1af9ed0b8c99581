"""Exact patching of the sites an attribution sweep ranks highest, and of a random
control sample of the rest: how far the gradient estimate can be trusted, measured.

An attribution estimate is a first-order approximation; where attention saturates or an
MLP is far from linear it can be badly off. Exact-patching the top of the ranking costs a
few dozen patched rows per prompt, and tells whether the ranking's head is right; the
control sample, drawn from the sites the ranking put low, catches false negatives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from patchsweep.config import EngineConfig, SweepConfig
from patchsweep.engine.accounting import PassShape, recording_passes
from patchsweep.engine.inputs import PatchInputs, source_and_target
from patchsweep.engine.sites import Sites, build_sites
from patchsweep.engine.sweep import Runs, run_patches
from patchsweep.metrics import get_metric
from patchsweep.models import LoadedModel
from patchsweep.tables import tidy_table
from patchsweep.tokenize import TokenizedPairs


def subset(sites: Sites, index: torch.Tensor) -> Sites:
    """The sites at ``index``, in that order."""
    return Sites(
        layers=sites.layers[index],
        heads=sites.heads[index],
        positions=sites.positions[index],
        labels=[sites.labels[i] for i in index.tolist()],
        slots=sites.slots[index],
        window=sites.window,
    )


def choose_sites(
    effect: np.ndarray, top_k: int, control: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ranking's top ``top_k`` sites by |estimated effect|, and ``control`` of the
    others drawn at random (seeded): indices into ``effect``, each sorted."""
    order = np.argsort(-np.abs(effect), kind="stable")
    top = np.sort(order[:top_k])
    rest = order[top_k:]
    rng = np.random.default_rng(seed)
    drawn = rng.choice(rest, size=min(control, len(rest)), replace=False) if len(rest) else rest
    return top, np.sort(drawn)


def exact_patch_sites(
    model: LoadedModel,
    pairs: TokenizedPairs,
    name: str,
    sweep: SweepConfig,
    runs: Runs,
    metric_name: str,
    engine: EngineConfig,
    chosen: np.ndarray,
) -> tuple[pd.DataFrame, list[PassShape]]:
    """Exact-patch the chosen sites of ``sweep`` (as numbered by its own table), through
    the engine's ordinary path; their raw table (``method`` exact) and the passes run."""
    sites = subset(build_sites(name, sweep, pairs, model.dims), torch.as_tensor(chosen))
    source_run, target_run = source_and_target(sweep.direction)
    inputs = PatchInputs.for_sweep(
        pairs,
        sweep.component,
        sweep.direction,
        source_run=runs.run(source_run),
        target_run=runs.run(target_run),
        clean_logits=runs.final_logits["clean"],
        target_logits=runs.final_logits[target_run],
    )
    with recording_passes() as passes:
        metric = run_patches(
            model,
            sweep.component,
            sites,
            inputs,
            get_metric(metric_name),
            budget_mb=engine.memory_budget_mb,
            max_batch=engine.max_batch,
            progress=engine.progress,
            desc=f"verify {name}",
        )
    return tidy_table(name, sweep, sites, metric, method="exact"), passes
