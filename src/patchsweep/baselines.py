"""The unpatched runs' metrics: the anchors that normalised effects are measured against.

A sweep's raw metric means little alone; what a figure shows is how far each patch moves
it from the corrupted run's value (0) towards the clean run's (1). This module scores the
two unpatched runs once per experiment, for the normalize stage and the Python API alike.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from patchsweep.errors import DataError
from patchsweep.metrics import get_metric, top1_correct
from patchsweep.normalize import Anchors
from patchsweep.tokenize import TokenizedPairs

log = logging.getLogger(__name__)

RELATIVE_GAP_WARNING = 0.05


def baseline_stats(clean: torch.Tensor, corrupted: torch.Tensor) -> dict[str, float]:
    """Mean and s.e.m. of the clean and corrupted metric over prompts.

    Raises:
        DataError: the clean and corrupted means are equal, so normalising is undefined.
    """
    stats = {
        "clean": float(clean.mean()),
        "corrupted": float(corrupted.mean()),
        "clean_sem": _sem(clean),
        "corrupted_sem": _sem(corrupted),
    }
    gap = stats["clean"] - stats["corrupted"]
    scale = max(abs(stats["clean"]), abs(stats["corrupted"]), 1e-12)
    if abs(gap) <= 1e-7 * scale or gap == 0:
        raise DataError(
            f"the clean and corrupted metric are equal ({stats['clean']:.6g}): normalising "
            "by their difference is undefined",
            "the corruption does not change the behaviour: check the corrupted prompts and "
            "answers, or the model (a random model shows almost no effect)",
        )
    if abs(gap) < RELATIVE_GAP_WARNING * scale:
        log.warning(
            "clean − corrupted gap %.3g is tiny next to the metric (%.3g): normalised "
            "values will be noisy",
            gap,
            scale,
        )
    return stats


def prompt_anchors(
    pairs: TokenizedPairs, final_logits: dict[str, torch.Tensor], metric_name: str
) -> Anchors:
    """Each prompt's clean and corrupted metric: the anchors of paired normalisation.

    Args:
        final_logits: ``clean`` and ``corrupted`` logits as the metric reads them, (N, V)
            or (N, K, V) with score positions; one row per table ``prompt`` (noise
            datasets repeat each pair, and each repeat is anchored by its own runs).
    """
    metric = get_metric(metric_name)
    answers = (*pairs.answers(), final_logits["clean"])
    clean, corrupted = (metric(final_logits[run], *answers) for run in ("clean", "corrupted"))
    return Anchors(clean.double().cpu().numpy(), corrupted.double().cpu().numpy())


def experiment_baselines(
    pairs: TokenizedPairs,
    final_logits: dict[str, torch.Tensor],
    metric_name: str,
    model: str,
    dataset: str,
) -> dict[str, Any]:
    """``baselines.json``: both runs' metric (mean, s.e.m.) and top-1 accuracy.

    Args:
        final_logits: ``clean`` and ``corrupted`` logits as the metric reads them, (N, V)
            or (N, K, V) with score positions.
    """
    anchors = prompt_anchors(pairs, final_logits, metric_name)
    # back to the metric's float32 (exact), so the means are those reported before
    stats = baseline_stats(
        torch.from_numpy(anchors.clean).float(), torch.from_numpy(anchors.corrupted).float()
    )
    last = {run: v[:, -1] if v.dim() == 3 else v for run, v in final_logits.items()}
    return {
        "model": model,
        "dataset": dataset,
        "metric": metric_name,
        **stats,
        "clean_accuracy": float(top1_correct(last["clean"], pairs.correct_ids).float().mean()),
        "corrupted_accuracy": float(
            top1_correct(last["corrupted"], pairs.correct_ids).float().mean()
        ),
        "n_prompts": pairs.n_pairs,
    }


def _sem(values: torch.Tensor) -> float:
    n = values.numel()
    return float(values.double().std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
