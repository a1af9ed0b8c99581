"""Attribution patching equals its definition, (source − target activation) · gradient,
computed independently with plain hooks and autograd; and where the metric is linear in
the patched activation it equals exact patching."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from reference import attribution_reference, reference_sweep

from patchsweep.capture import capture_run
from patchsweep.config import SweepConfig
from patchsweep.datasets.base import PromptPair
from patchsweep.engine import PatchInputs, build_sites
from patchsweep.engine.attribution import check_attribution, run_attribution
from patchsweep.errors import ConfigError
from patchsweep.metrics import logit_diff, mean_logprob
from patchsweep.tokenize import score_from_label, tokenize_pairs

COMPONENTS = ["resid_pre", "resid_post", "attn_out", "mlp_out", "z", "q", "k", "v", "pattern"]
EVERYTHING = ("resid", "attn_out", "mlp_out", "z", "q", "k", "v", "pattern")

PAIRS = [
    PromptPair(
        "When John and Mary went to the store , Mary gave a book to",
        "When Mary and John went to the store , John gave a book to",
        (" John",), (" Mary",), {"IO": 5, "S1": 14, "S2": 40}, "a",
    ),
    PromptPair(
        "When Tom and Ann went to the park , Ann gave a ball to",
        "When Ann and Tom went to the park , Tom gave a ball to",
        (" Tom",), (" Ann",), {"IO": 5, "S1": 13, "S2": 37}, "a",
    ),
    PromptPair(
        "After Tom and Mary went to the park , Mary gave",
        "After Mary and Tom went to the park , Tom gave",
        (" Tom", " a"), (" Mary",), {"IO": 6, "S1": 14, "S2": 38}, "b",
    ),
]  # fmt: skip


@pytest.fixture(scope="module")
def setup(tiny_gpt2):
    pairs = tokenize_pairs(PAIRS, tiny_gpt2.tokenizer)
    runs = {
        run: capture_run(tiny_gpt2, ids, pairs.lengths, EVERYTHING, progress=False)
        for run, ids in (("clean", pairs.clean_ids), ("corrupted", pairs.corrupted_ids))
    }
    return tiny_gpt2, pairs, runs


def attribute(model, pairs, runs, component, direction, positions, window=1, **kwargs):
    sweep = SweepConfig(component=component, direction=direction, positions=positions,
                        window=window)  # fmt: skip
    sites = build_sites("t", sweep, pairs, model.dims)
    source, target = ("clean", "corrupted") if direction == "denoise" else ("corrupted", "clean")
    inputs = PatchInputs.for_sweep(
        pairs, component, direction, source_run=runs[source], target_run=runs[target]
    )
    metric = kwargs.pop("metric", logit_diff)
    result = run_attribution(model, component, sites, inputs, metric, progress=False, **kwargs)
    return sites, result


@pytest.mark.parametrize("component", COMPONENTS)
@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_every_component_equals_activation_difference_times_gradient(setup, component, direction):
    model, pairs, runs = setup
    sites, got = attribute(model, pairs, runs, component, direction, "labels", qk_fix=False)
    want = attribution_reference(model, pairs, sites, component, direction)
    torch.testing.assert_close(got.metric, want, atol=1e-5, rtol=0)
    assert got.passes == {"forward": 2, "backward": 2}  # one per prompt length


@pytest.mark.parametrize("component", ["q", "k"])
def test_qk_fix_equals_the_exact_pattern_change_times_the_pattern_gradient(setup, component):
    model, pairs, runs = setup
    sites, got = attribute(model, pairs, runs, component, "denoise", "labels", qk_fix=True)
    want = attribution_reference(model, pairs, sites, component, "denoise", qk_fix=True)
    torch.testing.assert_close(got.metric, want, atol=1e-5, rtol=0)
    _, plain = attribute(model, pairs, runs, component, "denoise", "labels", qk_fix=False)
    assert (got.metric - plain.metric).abs().max() > 1e-4  # the fix changes the estimate


@pytest.mark.parametrize("component", ["resid_pre", "z", "pattern"])
def test_every_position_and_windows_add_up_single_site_estimates(setup, component):
    model, pairs, runs = setup
    sites, got = attribute(model, pairs, runs, component, "denoise", "all", qk_fix=False)
    want = attribution_reference(model, pairs, sites, component, "denoise")
    torch.testing.assert_close(got.metric, want, atol=1e-5, rtol=0)
    if component != "pattern":
        sites, got = attribute(model, pairs, runs, component, "denoise", "labels", window=2)
        want = attribution_reference(model, pairs, sites, component, "denoise")
        torch.testing.assert_close(got.metric, want, atol=1e-5, rtol=0)


def test_a_metric_over_several_positions(setup):
    model, pairs, runs = setup
    scored = score_from_label(copy.copy(pairs), "S2")
    sites, got = attribute(model, scored, runs, "z", "denoise", "labels", metric=mean_logprob)
    want = attribution_reference(model, scored, sites, "z", "denoise", metric=mean_logprob)
    torch.testing.assert_close(got.metric, want, atol=1e-5, rtol=0)


def test_chunking_does_not_change_the_estimate(setup):
    model, pairs, runs = setup
    _, whole = attribute(model, pairs, runs, "mlp_out", "denoise", "labels")
    _, one = attribute(model, pairs, runs, "mlp_out", "denoise", "labels", max_batch=1)
    torch.testing.assert_close(one.metric, whole.metric, atol=1e-6, rtol=0)
    assert one.passes["forward"] == pairs.n_pairs


def test_the_target_metric_is_the_unpatched_run(setup):
    model, pairs, runs = setup
    _, got = attribute(model, pairs, runs, "attn_out", "denoise", "labels")
    corrupted = logit_diff(runs["corrupted"]["logits"], pairs.correct_ids, pairs.incorrect_ids)
    torch.testing.assert_close(got.target, corrupted, atol=1e-5, rtol=0)


def test_equals_exact_patching_where_the_metric_is_linear_in_the_activation(setup, tiny_gpt2_dir):
    """The last block's attn_out reaches the logits through its MLP and the final
    LayerNorm, neither linear. In a copy of the model whose last MLP outputs zero and
    whose final norm is the identity, the logit difference is linear in that activation,
    and the first-order estimate is exact."""
    from patchsweep.config import ModelConfig
    from patchsweep.models import load_model

    pairs = setup[1]
    model = load_model(ModelConfig(name="linear", path=str(tiny_gpt2_dir)))
    hf = model.hf
    last = hf.config.num_hidden_layers - 1
    with torch.no_grad():
        hf.transformer.h[last].mlp.c_proj.weight.zero_()
        hf.transformer.h[last].mlp.c_proj.bias.zero_()
    hf.transformer.ln_f.forward = lambda x: x
    runs = {
        run: capture_run(model, ids, pairs.lengths, EVERYTHING, progress=False)
        for run, ids in (("clean", pairs.clean_ids), ("corrupted", pairs.corrupted_ids))
    }
    sweep = SweepConfig(component="attn_out", positions="labels", layers=[last])
    sites = build_sites("t", sweep, pairs, model.dims)
    inputs = PatchInputs.for_sweep(
        pairs, "attn_out", "denoise", source_run=runs["clean"], target_run=runs["corrupted"]
    )
    got = run_attribution(model, "attn_out", sites, inputs, logit_diff, progress=False)
    exact = reference_sweep(model, pairs, sites, "attn_out", "denoise")
    torch.testing.assert_close(got.metric, exact, atol=1e-5, rtol=0)
    assert (exact - got.target).abs().max() > 0.01  # the patches did something
    # and the model is otherwise as nonlinear as before: an earlier layer's estimate is not
    sweep = SweepConfig(component="attn_out", positions="labels", layers=[0])
    sites = build_sites("t", sweep, pairs, model.dims)
    got = run_attribution(model, "attn_out", sites, inputs, logit_diff, progress=False)
    exact = reference_sweep(model, pairs, sites, "attn_out", "denoise")
    assert (got.metric - exact).abs().max() > 1e-3


def test_grad_drop_scores_every_site(setup):
    model, pairs, runs = setup
    sites, got = attribute(model, pairs, runs, "z", "denoise", "labels", grad_drop=True)
    assert got.grad_drop is not None and got.grad_drop.shape == got.metric.shape
    assert bool(torch.isfinite(got.grad_drop).all()) and bool((got.grad_drop >= 0).all())
    # the top layer's sites: cutting any block leaves their gradient, except their own
    # (which gives 0); the mean of L − 1 equal magnitudes over L − 1 is that magnitude
    top = sites.layers == model.dims.n_layers - 1
    change = (got.metric - got.target[None]).abs()
    torch.testing.assert_close(got.grad_drop[top], change[top], atol=1e-5, rtol=1e-5)


def test_qk_fix_is_refused_where_the_scores_cannot_be_recomputed(setup):
    model = setup[0]
    rotary = copy.copy(model)
    rotary.arch = dataclasses.replace(model.arch, rotary=True)
    with pytest.raises(ConfigError, match="qk_fix: false"):
        check_attribution(rotary, "q", qk_fix=True, name="atp_q")
    check_attribution(rotary, "q", qk_fix=False, name="atp_q")
    check_attribution(rotary, "z", qk_fix=True, name="atp_z")


def test_a_remote_model_gives_the_same_estimate(setup):
    """nnsight's serialised remote path (run here in-process with remote="local"): what
    NDIF would run, with the same numbers."""
    model, pairs, runs = setup
    _, local = attribute(model, pairs, runs, "k", "denoise", "labels")
    remote = dataclasses.replace(model, remote=True, remote_target="local")
    _, sent = attribute(remote, pairs, runs, "k", "denoise", "labels")
    torch.testing.assert_close(sent.metric, local.metric, atol=1e-6, rtol=0)


def test_a_killed_attribution_sweep_resumes_from_its_checkpoint(setup, tmp_path):
    """Finished chunks of prompts are kept; only the others are run again."""
    from patchsweep.checkpoint import Checkpoint

    model, pairs, runs = setup
    path = tmp_path / "atp.safetensors"
    _, full = attribute(model, pairs, runs, "z", "denoise", "labels", max_batch=1,
                        checkpoint=Checkpoint(path, "k", every_s=0))  # fmt: skip
    assert full.passes["forward"] == pairs.n_pairs
    # as if killed after the first prompt: its column done, marked so it can be told apart
    saved = Checkpoint(path, "k")
    table = torch.full((len(full.metric) + 1, pairs.n_pairs), float("nan"))
    done = saved.resume(table)
    done[:, 1:] = False
    table[:-1, 0] = 123.0
    saved.save(table, done, force=True)
    _, resumed = attribute(model, pairs, runs, "z", "denoise", "labels", max_batch=1,
                           checkpoint=Checkpoint(path, "k"))  # fmt: skip
    assert resumed.passes["forward"] == pairs.n_pairs - 1
    assert bool((resumed.metric[:, 0] == 123.0).all())
    torch.testing.assert_close(resumed.metric[:, 1:], full.metric[:, 1:], atol=1e-6, rtol=0)
    _, other = attribute(model, pairs, runs, "z", "denoise", "labels", max_batch=1,
                         checkpoint=Checkpoint(path, "another sweep"))  # fmt: skip
    torch.testing.assert_close(other.metric, full.metric, atol=1e-6, rtol=0)
