"""Metrics on hand-made logits, answer sets with padding, and custom metrics by import path."""

from __future__ import annotations

import math

import pytest
import torch

from patchsweep.errors import ConfigError
from patchsweep.metrics import get_metric, top1_correct

LOGITS = torch.tensor([[2.0, 0.0, -1.0, 1.0], [0.0, 3.0, 0.0, 0.0]])
CORRECT = torch.tensor([[0, -1], [1, 2]])  # row 1 has a set of two correct answers
INCORRECT = torch.tensor([[3], [0]])


def test_logit_diff_averages_each_answer_set():
    got = get_metric("logit_diff")(LOGITS, CORRECT, INCORRECT, None)
    torch.testing.assert_close(got, torch.tensor([2.0 - 1.0, (3.0 + 0.0) / 2 - 0.0]))


def test_probability_metrics_sum_over_the_answer_set():
    probs = LOGITS.softmax(-1)
    want_prob = torch.stack([probs[0, 0], probs[1, 1] + probs[1, 2]])
    torch.testing.assert_close(get_metric("prob")(LOGITS, CORRECT, INCORRECT, None), want_prob)
    torch.testing.assert_close(
        get_metric("logprob")(LOGITS, CORRECT, INCORRECT, None), want_prob.log()
    )
    want_diff = want_prob - torch.stack([probs[0, 3], probs[1, 0]])
    torch.testing.assert_close(get_metric("prob_diff")(LOGITS, CORRECT, INCORRECT, None), want_diff)


def test_neg_kl_is_zero_at_the_clean_run_and_negative_elsewhere():
    metric = get_metric("neg_kl")
    at_clean = metric(LOGITS, CORRECT, INCORRECT, LOGITS)
    torch.testing.assert_close(at_clean, torch.zeros(2))
    other = metric(LOGITS.flip(-1), CORRECT, INCORRECT, LOGITS)
    p, q = LOGITS.softmax(-1), LOGITS.flip(-1).softmax(-1)
    want = -(p * (p / q).log()).sum(-1)
    torch.testing.assert_close(other, want)
    assert bool((other < 0).all())


def test_custom_metric_by_import_path():
    metric = get_metric("math:fsum")
    assert metric is math.fsum


def test_unknown_metric_names_the_choices():
    with pytest.raises(ConfigError, match="logit_diff"):
        get_metric("logitdiff")
    with pytest.raises(ConfigError, match="cannot be imported"):
        get_metric("no_such_module:f")


def test_top1_correct_counts_any_answer_of_the_set():
    assert top1_correct(LOGITS, CORRECT).tolist() == [True, True]
    assert top1_correct(LOGITS, INCORRECT).tolist() == [False, False]


def test_config_knows_every_built_in_metric():
    """compose checks metric names without importing torch: its list must be complete."""
    from patchsweep.config import BUILTIN_METRICS
    from patchsweep.metrics import METRICS

    assert sorted(BUILTIN_METRICS) == sorted(METRICS)
