"""How each generator's task is scored, so a dataset's own metric goes with it.

A task is more than its prompts: Greater-Than is read by the probability of the years
above the start year (``prob_diff``), induction by the mean log-probability of the whole
repeat, factual recall with embedding noise as its corruption. The pipeline's
``conf/dataset/*.yaml`` and the Python API (:func:`patchsweep.load_prompts`) both start
from these defaults (a test keeps the two in step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Task:
    """A generator's scoring conventions.

    Attributes:
        metric: The metric the task is scored by.
        score_from: Score every next-token prediction from this label to the end.
        noise: Embedding-noise settings (``patchsweep.config.NoiseConfig`` fields) used
            when the generator's ``corruption`` option is ``"noise"``.
        noise_metric: The metric under noise corruption, which has no counterfactual
            answer to compare against (factual recall: the true attribute's probability).
    """

    metric: str = "logit_diff"
    score_from: str | None = None
    noise: dict[str, Any] = field(default_factory=dict)
    noise_metric: str | None = None


TASKS: dict[str, Task] = {
    "ioi": Task(),
    "greater_than": Task(metric="prob_diff"),
    "induction": Task(metric="mean_logprob", score_from="REP2"),
    "factual": Task(
        noise_metric="prob",
        noise={"scale": 3.0, "samples": 4, "seed": 0, "labels": ["SUBJ", "SUBJ_LAST"]},
    ),
}
CORRUPTION_DEFAULTS = {"factual": "noise"}  # the generator's default ``corruption`` option


def task_of(generator: str) -> Task:
    """The scoring conventions of a generator (plain logit difference if it has none)."""
    return TASKS.get(generator, Task())


def uses_noise(generator: str, options: dict[str, Any]) -> bool:
    """Whether the generator's pairs are corrupted by embedding noise, not by new tokens."""
    return options.get("corruption", CORRUPTION_DEFAULTS.get(generator)) == "noise"


def metric_for(generator: str, options: dict[str, Any]) -> str:
    """The metric a generator's pairs are scored by, given its options."""
    task = task_of(generator)
    if uses_noise(generator, options) and task.noise_metric:
        return task.noise_metric
    return task.metric
