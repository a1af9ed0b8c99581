"""Behaviour metrics read from the final position's logits, always in float32.

(Per-position metrics such as :func:`mean_logprob` read several positions instead: see
``dataset.score_from``.)

Every metric takes ``(logits, correct, incorrect, clean_logits)``: the patched run's
final-position logits (B, V), the answer ids as padded matrices (B, K) with −1 for "no
answer in this slot" — so rows may have different numbers of answers, and a metric can
score a *set* of answers (Greater-Than: every year above YY) — and the clean run's logits
of the same prompts, for metrics that compare distributions (KL). Larger must mean "more
like the clean run" for normalisation to read as 0 = corrupted, 1 = clean; KL is
therefore reported negated.

Add your own: any ``module:function`` with that signature, importable from the project
root or installed, e.g. ``metric.name=mypkg.metrics:entropy``. The stages import that
module, so its top-level code runs; DVC tracks the module's own source file (its hash is
``inputs.metric`` in the resolved config), not other modules it imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

from patchsweep.errors import ConfigError
from patchsweep.fingerprint import ensure_project_importable

Metric = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def _mean_over(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` (B, V) over each row's answer ids (B, K), −1 slots ignored."""
    mask = ids >= 0
    gathered = values.gather(1, ids.clamp(min=0))
    return (gathered * mask).sum(1) / mask.sum(1)


def _prob_mass(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Total probability of each row's answer set."""
    probs = logits.float().softmax(-1)
    mask = ids >= 0
    return (probs.gather(1, ids.clamp(min=0)) * mask).sum(1)


def logit_diff(logits, correct, incorrect, clean_logits=None) -> torch.Tensor:
    """Mean logit of the correct answers minus mean logit of the incorrect ones."""
    logits = logits.float()
    return _mean_over(logits, correct) - _mean_over(logits, incorrect)


def logprob(logits, correct, incorrect, clean_logits=None) -> torch.Tensor:
    """Log-probability of the correct answer set (log of its total probability)."""
    return _prob_mass(logits, correct).clamp_min(1e-45).log()


def prob(logits, correct, incorrect, clean_logits=None) -> torch.Tensor:
    """Total probability of the correct answers."""
    return _prob_mass(logits, correct)


def prob_diff(logits, correct, incorrect, clean_logits=None) -> torch.Tensor:
    """Probability of the correct set minus the incorrect set (Greater-Than's metric)."""
    return _prob_mass(logits, correct) - _prob_mass(logits, incorrect)


def mean_logprob(logits, correct, incorrect, clean_logits=None) -> torch.Tensor:
    """Mean log-probability of each scored position's next token: induction's metric.

    With score positions (``dataset.score_from``) the logits are (B, K, V) and ``correct``
    holds each position's own next token (B, K), −1 where a row has fewer positions.
    Given final-position logits (B, V) it is the log-probability of the first correct
    answer.
    """
    if logits.dim() == 2:
        logits, correct = logits[:, None], correct[:, :1]
    logp = logits.float().log_softmax(-1)
    mask = correct >= 0
    got = logp.gather(2, correct.clamp(min=0)[..., None])[..., 0]
    return (got * mask).sum(1) / mask.sum(1)


def neg_kl(logits, correct, incorrect, clean_logits=None) -> torch.Tensor:
    """−KL(clean ‖ patched) over the whole vocabulary: 0 when the clean run is restored."""
    if clean_logits is None:
        raise ConfigError("metric neg_kl needs the clean logits", "use it through run_patches")
    clean = clean_logits.float().log_softmax(-1)
    patched = logits.float().log_softmax(-1)
    return -(clean.exp() * (clean - patched)).sum(-1)


METRICS: dict[str, Metric] = {
    "logit_diff": logit_diff,
    "logprob": logprob,
    "prob": prob,
    "prob_diff": prob_diff,
    "mean_logprob": mean_logprob,
    "neg_kl": neg_kl,
}


def get_metric(name: str) -> Metric:
    """A built-in metric by name, or any ``module:function`` importable from the project."""
    if name in METRICS:
        return METRICS[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        ensure_project_importable()
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"metric.name {name!r} cannot be imported ({exc})",
                "give module:function of an importable module, e.g. mypkg.metrics:my_metric",
            ) from exc
    raise ConfigError(
        f"metric.name is {name!r}",
        f"use one of: {', '.join(METRICS)}, or module:function for your own",
    )


def top1_correct(logits: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """Whether each row's highest logit over the whole vocabulary is a correct answer."""
    top = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    return ((correct == top) & (correct >= 0)).any(dim=1)
