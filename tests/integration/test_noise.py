"""Causal tracing's noise corruption: the corrupted run is the clean prompt with Gaussian
noise on the subject's embeddings; every patched run must see the very same noise."""

from __future__ import annotations

import pytest
import torch
from reference import _activation as activation
from reference import _hook_module as hook_module
from reference import _install as install

from patchsweep.capture import capture_run
from patchsweep.components import resolve
from patchsweep.config import NoiseConfig, SweepConfig
from patchsweep.datasets.base import PromptPair
from patchsweep.engine import PatchInputs, build_sites, run_patches
from patchsweep.errors import DataError
from patchsweep.metrics import logit_diff
from patchsweep.noise import embedding_noise
from patchsweep.tokenize import tokenize_pairs

PROMPT = "When John and Mary went to the store , Mary gave a book to"
PAIRS = [PromptPair(PROMPT, PROMPT, (" John",), (" Mary",), {"SUBJ": 5, "SUBJ_LAST": 14}, "t")]


@pytest.fixture(scope="module")
def traced(tiny_gpt2):
    pairs = tokenize_pairs(PAIRS, tiny_gpt2.tokenizer)
    std = float(tiny_gpt2.hf.get_input_embeddings().weight.detach().std())
    delta = embedding_noise(pairs, NoiseConfig(scale=3.0), std, tiny_gpt2.dims.d_model)
    clean = capture_run(tiny_gpt2, pairs.clean_ids, pairs.lengths, progress=False)
    noised = capture_run(
        tiny_gpt2, pairs.corrupted_ids, pairs.lengths, progress=False, embed_delta=delta
    )
    return tiny_gpt2, pairs, delta, clean, noised


def test_noise_covers_exactly_the_labelled_span(traced):
    delta = traced[2]
    touched = delta.abs().sum(-1)[0] > 0
    assert touched.nonzero().flatten().tolist() == [1, 2, 3]  # John and Mary


def test_noise_changes_the_corrupted_run(traced):
    _, _, _, clean, noised = traced
    assert not torch.allclose(clean["logits"], noised["logits"])


@pytest.mark.parametrize("component", ["resid_pre", "mlp_out", "attn_out"])
def test_denoising_a_noised_run_equals_one_pass_per_patch(traced, component):
    model, pairs, delta, clean, noised = traced
    sweep = SweepConfig(component=component, positions="each")
    sites = build_sites("t", sweep, pairs, model.dims)
    inputs = PatchInputs.for_sweep(
        pairs, component, "denoise", source_run=clean, target_run={**noised, "embed_delta": delta}
    )
    got = run_patches(model, component, sites, inputs, logit_diff, progress=False)
    first_block = resolve(model.hf, model.arch.blocks + ".{layer}", 0)

    def add_noise(module, args, kwargs):
        if args:
            return (args[0] + delta[:, : args[0].shape[1]], *args[1:]), kwargs
        key = next(iter(kwargs))
        return args, {**kwargs, key: kwargs[key] + delta[:, : kwargs[key].shape[1]]}

    want = torch.empty_like(got)
    ids = pairs.clean_ids[0]
    for s in range(len(sites)):
        layer = int(sites.layers[s])
        source = activation(model.hf, model.arch, component, layer, ids)  # clean: no noise
        noise = first_block.register_forward_pre_hook(add_noise, with_kwargs=True)
        module, point = hook_module(model.hf, model.arch, component, layer)
        patch = install(module, point, source, model.dims.n_heads, -1, int(sites.positions[s, 0]))
        try:
            with torch.no_grad():
                logits = model.hf(ids[None]).logits[:, -1].float()
        finally:
            noise.remove()
            patch.remove()
        want[s, 0] = logit_diff(logits, pairs.correct_ids, pairs.incorrect_ids)[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_noise_needs_its_labels(tiny_gpt2):
    pairs = tokenize_pairs(
        [PromptPair(PROMPT, PROMPT, (" John",), (" Mary",), {}, "t")], tiny_gpt2.tokenizer
    )
    with pytest.raises(DataError, match="needs label 'SUBJ'"):
        embedding_noise(pairs, NoiseConfig(scale=3.0), 1.0, tiny_gpt2.dims.d_model)
