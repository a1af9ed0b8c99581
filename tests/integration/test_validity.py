"""The validity checks pass on a working engine, with and without a noise corruption, and
fail loudly when a patch is a silent no-op or a pass adds what it should not."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch

import patchsweep.engine.passes as passes
from patchsweep.capture import capture_run
from patchsweep.config import EngineConfig, NoiseConfig
from patchsweep.datasets.base import PromptPair
from patchsweep.engine import Runs
from patchsweep.errors import ValidityError
from patchsweep.metrics import logit_diff, prob_diff
from patchsweep.noise import embedding_noise
from patchsweep.tokenize import tokenize_pairs
from patchsweep.validity import (
    answer_accuracy,
    check_validity,
    deviation,
    empty_patch_check,
    whole_resid_check,
)

PAIRS = [
    PromptPair(
        "When John and Mary went to the store , Mary gave a book to",
        "When Mary and John went to the store , John gave a book to",
        (" John",),
        (" Mary",),
        {"SUBJ": 5, "SUBJ_LAST": 14},
        "a",
    ),
    PromptPair(
        "When Tom and Ann went to the park , Ann gave a ball to",
        "When Ann and Tom went to the park , Tom gave a ball to",
        (" Tom",),
        (" Ann",),
        {"SUBJ": 5, "SUBJ_LAST": 13},
        "a",
    ),
    PromptPair(  # another length: a pass of its own
        "After Tom and Mary went to the park , Mary gave",
        "After Mary and Tom went to the park , Tom gave",
        (" Tom",),
        (" Mary",),
        {"SUBJ": 6, "SUBJ_LAST": 14},
        "b",
    ),
]
ENGINE = EngineConfig(progress=False)


def _runs(model, pairs, noise=None) -> Runs:
    clean = capture_run(model, pairs.clean_ids, pairs.lengths, progress=False)
    corrupted = capture_run(
        model, pairs.corrupted_ids, pairs.lengths, progress=False, embed_delta=noise
    )
    if noise is not None:
        corrupted = {**corrupted, "embed_delta": noise}
    logits = {"clean": clean["logits"], "corrupted": corrupted["logits"]}
    return Runs(clean=clean, corrupted=corrupted, final_logits=logits)


@pytest.fixture(scope="module")
def swapped(tiny_gpt2):
    pairs = tokenize_pairs(PAIRS, tiny_gpt2.tokenizer)
    return tiny_gpt2, pairs, _runs(tiny_gpt2, pairs)


@pytest.fixture(scope="module")
def noised(tiny_gpt2):
    """Causal tracing: the corrupted run is the clean prompt with noise on SUBJ..SUBJ_LAST."""
    same = [PromptPair(p.clean, p.clean, p.correct, p.incorrect, p.labels, p.template)
            for p in PAIRS]  # fmt: skip
    pairs = tokenize_pairs(same, tiny_gpt2.tokenizer)
    std = float(tiny_gpt2.hf.get_input_embeddings().weight.detach().std())
    delta = embedding_noise(pairs, NoiseConfig(scale=3.0), std, tiny_gpt2.dims.d_model)
    return tiny_gpt2, pairs, _runs(tiny_gpt2, pairs, delta)


def _metric(runs: Runs, pairs, run: str) -> torch.Tensor:
    return logit_diff(runs.final_logits[run], pairs.correct_ids, pairs.incorrect_ids)


@pytest.mark.parametrize("case", ["swapped", "noised"])
def test_checks_pass_on_the_working_engine(case, request):
    model, pairs, runs = request.getfixturevalue(case)
    gap = (_metric(runs, pairs, "clean") - _metric(runs, pairs, "corrupted")).abs()
    assert float(gap.min()) > 1e-2  # else a no-op patch could pass unnoticed
    report = check_validity(model, pairs, runs, "logit_diff", ENGINE, "tiny on t")
    for name in ("resid_layer0_denoise", "resid_layer0_noise"):
        assert report[name]["passed"]
        assert report[name]["max_deviation"] <= report[name]["tolerance"]
    assert report["resid_layer0_denoise"]["expected"] == "clean"
    assert report["resid_layer0_noise"]["expected"] == "corrupted"
    assert report["empty_patch_corrupted"]["expected"] == "corrupted"
    assert report["empty_patch_clean"]["expected"] == "clean"
    assert report["passed"] is True
    # the tolerance is float32 round-off, far below the gap a broken hook would leave
    assert max(report[k]["tolerance"] for k in report if k.startswith(("resid", "empty"))) < (
        float(gap.min()) / 10
    )


def test_noised_run_differs_from_clean_so_check_one_sees_the_noise(noised):
    """Noising writes the stored noised embedding: without it the clean run comes back."""
    model, pairs, runs = noised
    check = whole_resid_check(model, pairs, runs, "logit_diff", "noise", ENGINE)
    assert check.passed
    no_delta = Runs(
        clean=runs.clean,
        corrupted={**runs.corrupted, "resid": runs.clean["resid"]},
        final_logits=runs.final_logits,
    )
    wrong = whole_resid_check(model, pairs, no_delta, "logit_diff", "noise", ENGINE)
    assert not wrong.passed


def test_a_no_op_patch_fails_check_one(swapped, monkeypatch):
    model, pairs, runs = swapped
    monkeypatch.setattr(passes, "write_patch", lambda act, patch, n_heads: None)
    with pytest.raises(ValidityError) as info:
        check_validity(model, pairs, runs, "logit_diff", ENGINE, "tiny on t")
    message = str(info.value)
    assert "tiny on t" in message
    assert "resid_layer0_denoise" in message
    want = float((_metric(runs, pairs, "clean") - _metric(runs, pairs, "corrupted")).abs().max())
    # the largest deviation: the whole clean − corrupted gap (to float32 noise: the pass
    # recomputes the corrupted run from where the prompts differ, cached keys before)
    found = re.search(r"deviates by up to ([0-9.e+-]+)", message)
    assert found is not None, message
    assert float(found.group(1)) == pytest.approx(want, abs=1e-5)
    assert "passes.py" in message  # where to look


def test_a_pass_that_loses_the_noise_fails_check_two(noised, monkeypatch):
    """A pass that forgets to re-add the target's embedding noise scores the clean run."""
    model, pairs, runs = noised
    original = passes._run_plan

    def forgetful(model, component, plan, resid, noise, shape):
        return original(model, component, plan, resid, None, shape)

    monkeypatch.setattr(passes, "_run_plan", forgetful)
    check = empty_patch_check(model, pairs, runs, "logit_diff", "corrupted", ENGINE)
    assert not check.passed
    with pytest.raises(ValidityError, match="empty_patch_corrupted"):
        check_validity(model, pairs, runs, "logit_diff", ENGINE, "tiny on t")


def test_a_pass_that_skips_with_the_wrong_residual_fails_check_two(swapped, monkeypatch):
    """The last-layer empty site feeds the cached residual stream to the upper blocks."""
    model, pairs, runs = swapped
    original = passes._run_plan

    def shifted(model, component, plan, resid, noise, shape):
        return original(model, component, plan, None if resid is None else resid * 2, noise, shape)

    monkeypatch.setattr(passes, "_run_plan", shifted)
    assert not empty_patch_check(model, pairs, runs, "logit_diff", "clean", ENGINE).passed


def test_deviation_treats_nan_as_equal_only_to_nan():
    got = torch.tensor([1.0, float("nan"), float("nan"), 2.0])
    want = torch.tensor([1.5, float("nan"), 0.0, 2.0])
    assert deviation(got, want).tolist() == [0.5, 0.0, float("inf"), 0.0]


def test_accuracy_follows_the_metric(swapped):
    _, pairs, runs = swapped
    got = answer_accuracy(pairs, runs.final_logits, "logit_diff")
    for run in ("clean", "corrupted"):
        want = (_metric(runs, pairs, run) > 0).double().mean()
        assert got[run] == pytest.approx(float(want))
    assert got["definition"] == "logit_diff > 0"
    by_prob = answer_accuracy(pairs, runs.final_logits, "prob")
    for run in ("clean", "corrupted"):
        mass = prob_diff(runs.final_logits[run], pairs.correct_ids, pairs.incorrect_ids)
        assert by_prob[run] == pytest.approx(float((mass > 0).double().mean()))
    undefined = answer_accuracy(pairs, runs.final_logits, "neg_kl")
    assert undefined["clean"] is None and undefined["corrupted"] is None
    assert undefined["definition"].startswith("not defined")


def test_half_precision_storage_sets_the_tolerance(swapped):
    """Runs read from float16 storage carry its round-off into the checks: they pass at
    float16's tolerance (still below the smallest clean − corrupted gap), and fail at
    float32's, so the runs must say how they were stored."""
    model, pairs, runs = swapped
    rounded = {
        run: {k: v.half().float() for k, v in getattr(runs, run).items() if k != "logits"}
        for run in ("clean", "corrupted")
    }
    half = Runs(**rounded, final_logits=runs.final_logits, storage_dtype=torch.float16)
    report = check_validity(model, pairs, half, "logit_diff", ENGINE, "tiny on t")
    checks = [v for k, v in report.items() if k.startswith(("resid", "empty"))]
    assert report["passed"] and {c["tolerance"] for c in checks} == {1e-2}
    gap = (_metric(runs, pairs, "clean") - _metric(runs, pairs, "corrupted")).abs()
    assert float(gap.min()) > 1e-2
    with pytest.raises(ValidityError):  # declared as never rounded, the rounding fails them
        check_validity(model, pairs, replace(half, storage_dtype=None), "logit_diff", ENGINE, "t")
