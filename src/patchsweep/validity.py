"""Checks that the patch engine really patches: every experiment's figures rest on them.

A hook that silently writes nothing, or writes into the wrong tensor, still produces a
tidy table of plausible numbers. Two forward-pass checks through the sweeps' own path
(:func:`patchsweep.engine.run_patches`) catch that before the numbers are published:

1. **whole residual stream at layer 0**: patching every position of the first block's
   input from the source run restores the source run, so each prompt must score the
   source metric — the clean metric when denoising, the corrupted one when noising. For
   a noise-corrupted dataset the corrupted run's stored layer-0 input is the noised
   embedding, so noising writes the noise in and denoising writes it out.
2. **empty patch**: a pass that patches nothing (sites whose window is zero layers) must
   score the target run. One site starts at the embeddings (re-adding a noise corruption),
   one at the last layer and position (the blocks below and the positions before are fed
   from the cached target run): together they cover the paths a sweep's passes take.

Each prompt's deviation from the unpatched run's metric must stay within float round-off:
:data:`RELATIVE_TOLERANCE` for the model's dtype, times the metric's scale (its largest
magnitude, at least 1). Activations stored in half precision (``capture.storage_dtype``)
carry that dtype's round-off into the patched passes, so the coarser of the two dtypes
sets the tolerance. A failure raises :class:`~patchsweep.errors.ValidityError`.

The report also gives each run's **answer accuracy**, the share of prompts whose answers
the model ranks as the dataset intends (:func:`answer_accuracy`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from patchsweep.config import EngineConfig, SweepConfig
from patchsweep.engine import PatchInputs, Runs, Sites, build_sites, run_patches
from patchsweep.engine.inputs import source_and_target
from patchsweep.errors import ValidityError
from patchsweep.metrics import get_metric
from patchsweep.models import LoadedModel
from patchsweep.tokenize import TokenizedPairs

log = logging.getLogger(__name__)

# Largest deviation a check allows, relative to the metric's scale. A patched pass and
# the captured run batch prompts differently (packed, padded, from a cached prefix), so
# they round differently: ~1e-6 in float32 on the organism and the tiny test models;
# a broken hook moves the metric by the clean − corrupted gap, orders of magnitude more.
RELATIVE_TOLERANCE = {
    torch.float64: 1e-9,
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 5e-2,
}

# Metrics whose sign says which answer the model prefers (correct > incorrect).
SIGNED_PREFERENCE = {"logit_diff", "prob_diff"}
# Metrics of the correct answers' probability: the preference is the probability mass of
# the correct answers against that of the incorrect ones.
PROBABILITY = {"prob", "logprob"}


@dataclass(frozen=True)
class CheckResult:
    """One check of one direction or target run: each prompt's deviation.

    Attributes:
        name: Its key in ``baselines.json``'s ``validity`` (``resid_layer0_denoise``, …).
        description: What was patched, for messages.
        expected: The unpatched run whose metric each prompt must score.
        deviation: (N,) |patched − expected| per prompt (inf where one is NaN).
        tolerance: The largest deviation allowed.
    """

    name: str
    description: str
    expected: str
    deviation: torch.Tensor
    tolerance: float

    @property
    def max_deviation(self) -> float:
        return float(self.deviation.max()) if self.deviation.numel() else 0.0

    @property
    def worst_prompt(self) -> int:
        return int(self.deviation.argmax()) if self.deviation.numel() else -1

    @property
    def passed(self) -> bool:
        return self.max_deviation <= self.tolerance

    def as_json(self) -> dict[str, Any]:
        return {
            "max_deviation": self.max_deviation,
            "tolerance": self.tolerance,
            "passed": self.passed,
            "expected": self.expected,
        }


def tolerance(dtype: torch.dtype, *expected: torch.Tensor) -> float:
    """The deviation allowed for a model of ``dtype`` whose metric takes these values."""
    values = torch.cat([e.flatten().double() for e in expected])
    finite = values[torch.isfinite(values)]
    scale = max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
    return RELATIVE_TOLERANCE.get(dtype, RELATIVE_TOLERANCE[torch.float32]) * scale


def rounding_dtype(model: LoadedModel, runs: Runs) -> torch.dtype:
    """The coarser of the model's dtype and the dtype the runs were stored in: a patched
    pass reads the stored activations, so their round-off is in its metric too."""
    dtypes = [model.dtype, *([runs.storage_dtype] if runs.storage_dtype else [])]
    return max(dtypes, key=lambda d: RELATIVE_TOLERANCE.get(d, RELATIVE_TOLERANCE[torch.float32]))


def deviation(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """(N,) |got − want|; 0 where both are NaN (a metric undefined for that prompt), inf
    where only one is."""
    got, want = got.double().flatten(), want.double().flatten()
    out = (got - want).abs()
    both = torch.isnan(got) & torch.isnan(want)
    out[both] = 0.0
    out[torch.isnan(out)] = float("inf")
    return out


def prompt_metric(
    pairs: TokenizedPairs, final_logits: Mapping[str, torch.Tensor], metric_name: str, run: str
) -> torch.Tensor:
    """(N,) each prompt's metric in the unpatched ``run``, from its stored logits."""
    metric = get_metric(metric_name)
    correct, incorrect = pairs.answers()
    return metric(final_logits[run].float(), correct, incorrect, final_logits["clean"]).cpu()


def empty_sites(model: LoadedModel, pairs: TokenizedPairs) -> list[Sites]:
    """Two single sites that patch nothing (a window of zero layers): one from the
    embeddings at every position, one from the last layer at each prompt's last
    position. Run apart, so that the tiler cannot merge the second into the first's
    full pass: it must skip the blocks below and the positions before."""
    n = pairs.n_pairs
    starts = [(0, torch.full((n,), -1, dtype=torch.long), "all", -1)]
    starts.append((model.dims.n_layers - 1, pairs.lengths - 1, "last", 0))
    return [
        Sites(
            layers=torch.tensor([layer], dtype=torch.long),
            heads=torch.tensor([-1], dtype=torch.long),
            positions=positions[None],
            labels=[label],
            slots=torch.tensor([slot], dtype=torch.long),
            window=0,
        )
        for layer, positions, label, slot in starts
    ]


def _inputs(
    pairs: TokenizedPairs, runs: Runs, direction: str, component: str = "resid_pre"
) -> PatchInputs:
    source, target = source_and_target(direction)
    return PatchInputs.for_sweep(
        pairs,
        component,
        direction,
        source_run=runs.run(source),
        target_run=runs.run(target),
        clean_logits=runs.final_logits["clean"],
        target_logits=None,  # every row is run: none is scored from the stored logits
    )


def whole_resid_check(
    model: LoadedModel,
    pairs: TokenizedPairs,
    runs: Runs,
    metric_name: str,
    direction: str,
    engine: EngineConfig,
) -> CheckResult:
    """Check 1 in one direction: the whole layer-0 residual stream from the source run."""
    source, target = source_and_target(direction)
    sweep = SweepConfig(component="resid_pre", direction=direction, positions="all", layers=[0])
    sites = build_sites(f"validity_{direction}", sweep, pairs, model.dims)
    got = _patched(model, sites, _inputs(pairs, runs, direction), metric_name, engine)[0]
    want = prompt_metric(pairs, runs.final_logits, metric_name, source)
    return CheckResult(
        name=f"resid_layer0_{direction}",
        description=(
            f"patching the whole residual stream at layer 0 from the {source} run into "
            f"the {target} run ({direction})"
        ),
        expected=source,
        deviation=deviation(got, want),
        tolerance=tolerance(rounding_dtype(model, runs), want),
    )


def empty_patch_check(
    model: LoadedModel,
    pairs: TokenizedPairs,
    runs: Runs,
    metric_name: str,
    target: str,
    engine: EngineConfig,
) -> CheckResult:
    """Check 2 for one target run: patched passes that patch nothing."""
    direction = "denoise" if target == "corrupted" else "noise"
    # Not told where the runs first differ, the engine runs the first site from the
    # embeddings at position 0, the path that check is for.
    inputs = dataclasses.replace(_inputs(pairs, runs, direction), first_differ=None)
    want = prompt_metric(pairs, runs.final_logits, metric_name, target)
    got = [
        _patched(model, sites, inputs, metric_name, engine)[0]
        for sites in empty_sites(model, pairs)
    ]
    worst = torch.stack([deviation(row, want) for row in got]).max(0).values
    return CheckResult(
        name=f"empty_patch_{target}",
        description=f"an empty patch (no site patched) of the {target} run",
        expected=target,
        deviation=worst,
        tolerance=tolerance(rounding_dtype(model, runs), want),
    )


def _patched(
    model: LoadedModel,
    sites: Sites,
    inputs: PatchInputs,
    metric_name: str,
    engine: EngineConfig,
) -> torch.Tensor:
    return run_patches(
        model,
        "resid_pre",
        sites,
        inputs,
        get_metric(metric_name),
        budget_mb=engine.memory_budget_mb,
        max_batch=engine.max_batch,
        progress=False,
    )


def answer_accuracy(
    pairs: TokenizedPairs, final_logits: Mapping[str, torch.Tensor], metric_name: str
) -> dict[str, Any]:
    """Each run's share of prompts where the model prefers the correct answers.

    ``logit_diff`` and ``prob_diff``: the metric is positive. ``prob`` and ``logprob``:
    the correct answers hold more probability than the incorrect ones (``prob_diff`` >
    0), where every pair has incorrect answers and the metric reads the final position.
    Other metrics (``mean_logprob``,
    ``neg_kl``, custom ones) compare no answers: accuracy is ``None`` there, and the
    top-1 accuracy of ``baselines.json`` is the measure of the model's behaviour.
    """
    has_incorrect = bool((pairs.incorrect_ids >= 0).any(1).all()) and pairs.n_pairs > 0
    last_only = pairs.score_positions is None  # prob_diff reads final-position logits
    if metric_name in SIGNED_PREFERENCE:
        rule, scored_by = f"{metric_name} > 0", metric_name
    elif metric_name in PROBABILITY and has_incorrect and last_only:
        rule, scored_by = "P(correct answers) > P(incorrect answers)", "prob_diff"
    else:
        why = "compares no correct and incorrect answers"
        return {"definition": f"not defined: {metric_name} {why}", "clean": None, "corrupted": None}
    out: dict[str, Any] = {"definition": rule}
    for run in ("clean", "corrupted"):
        values = prompt_metric(pairs, final_logits, scored_by, run)
        out[run] = float((values > 0).double().mean())
    return out


def check_validity(
    model: LoadedModel,
    pairs: TokenizedPairs,
    runs: Runs,
    metric_name: str,
    engine: EngineConfig,
    experiment: str,
) -> dict[str, Any]:
    """Run every check; ``baselines.json``'s ``validity`` object.

    Raises:
        ValidityError: a check failed; names the experiment, the check, the largest
            deviation, and where to look.
    """
    checks = [
        *(
            whole_resid_check(model, pairs, runs, metric_name, d, engine)
            for d in ("denoise", "noise")
        ),
        *(
            empty_patch_check(model, pairs, runs, metric_name, t, engine)
            for t in ("corrupted", "clean")
        ),
    ]
    for check in checks:
        log.info(
            "validity %s: max deviation %.3g (tolerance %.3g)",
            check.name,
            check.max_deviation,
            check.tolerance,
        )
        if not check.passed:
            raise ValidityError(
                f"{experiment}: validity check {check.name} failed: {check.description} "
                f"should give each prompt the {check.expected} run's {metric_name}, but "
                f"deviates by up to {check.max_deviation:.6g} (prompt "
                f"{check.worst_prompt}; tolerance {check.tolerance:.3g}). The patch is a "
                "silent no-op or writes the wrong place, and every sweep of this "
                "experiment is suspect",
                "look at the engine's hooks (patchsweep/engine/passes.py: _run_plan, "
                "write_patch) and the component map for this architecture "
                "(patchsweep/components.py: the resid_pre hook point); then check that "
                "the cached activations and final_logits come from the same capture "
                "(delete data/cache for this experiment and run `dvc repro`)",
            )
    return {
        **{check.name: check.as_json() for check in checks},
        "accuracy": answer_accuracy(pairs, runs.final_logits, metric_name),
        "passed": True,
    }
