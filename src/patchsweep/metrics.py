"""Behaviour metrics read from the final position's logits, always in float32.

Answers come as padded id matrices (−1 = no answer in that slot), so one call scores a
batch whose rows have different numbers of correct or incorrect answers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from patchsweep.errors import ConfigError

Metric = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _mean_logit(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean logit over each row's answer ids; ``logits`` (B, V), ``ids`` (B, K) with −1 pad."""
    mask = ids >= 0
    gathered = logits.gather(1, ids.clamp(min=0))  # (B, K)
    return (gathered * mask).sum(1) / mask.sum(1)


def logit_diff(
    logits: torch.Tensor, correct: torch.Tensor, incorrect: torch.Tensor
) -> torch.Tensor:
    """Mean logit of the correct answers minus mean logit of the incorrect ones, per row."""
    logits = logits.float()
    return _mean_logit(logits, correct) - _mean_logit(logits, incorrect)


METRICS: dict[str, Metric] = {"logit_diff": logit_diff}


def get_metric(name: str) -> Metric:
    """The metric function registered under ``name``."""
    if name not in METRICS:
        raise ConfigError(f"metric.name is {name!r}", f"use one of: {', '.join(METRICS)}")
    return METRICS[name]


def top1_correct(logits: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """Whether each row's highest logit over the whole vocabulary is a correct answer."""
    top = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    return ((correct == top) & (correct >= 0)).any(dim=1)
