"""One component map for every supported family: on a tiny random model of each, the
batched engine equals the one-pass-per-patch definition for every component it exposes.

Each model is built offline from its config (2 layers, d_model 32, 4 heads, 2 key/value
heads where the family has grouped-query attention), perturbed so zero biases and unit
norms hide nothing, saved with a word-level tokenizer and loaded through ``load_model``
exactly as a hub model would be. The default run covers every architecture × component
in one direction at the last layer and one head; ``-m slow`` runs the full cross product.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import WORDS, make_tokenizer, perturb
from reference import plain_logits, reference_sweep

from patchsweep.capture import capture_run
from patchsweep.component_types import HEADED_COMPONENTS as HEADED
from patchsweep.component_types import STORAGE
from patchsweep.components import ARCHITECTURES, HookPoint, select
from patchsweep.config import ModelConfig, SweepConfig
from patchsweep.datasets.base import PromptPair
from patchsweep.engine import PatchInputs, build_sites, run_patches
from patchsweep.errors import ConfigError
from patchsweep.metrics import logit_diff
from patchsweep.models import LoadedModel, load_model
from patchsweep.tokenize import TokenizedPairs, tokenize_pairs

SIZE = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4}
GQA = {**SIZE, "num_key_value_heads": 2, "intermediate_size": 64}


def _config(model_type: str, sliding_window: int | None = None) -> Any:
    """A tiny config of ``model_type``; ``sliding_window`` shorter than the prompts
    makes the sliding-window layers of Mistral and Gemma 2 matter."""
    import transformers as tf

    vocab = {"vocab_size": len(WORDS) + 1, "max_position_embeddings": 64}
    window = {"sliding_window": sliding_window} if sliding_window else {}
    builders: dict[str, Callable[[], Any]] = {
        "gpt2": lambda: tf.GPT2Config(
            n_layer=2, n_head=4, n_embd=32, vocab_size=vocab["vocab_size"], n_positions=64
        ),
        "gpt_neox": lambda: tf.GPTNeoXConfig(**SIZE, **vocab, intermediate_size=64),
        "llama": lambda: tf.LlamaConfig(**GQA, **vocab),
        "qwen2": lambda: tf.Qwen2Config(**GQA, **vocab),
        "mistral": lambda: tf.MistralConfig(**GQA, **vocab, **window),
        # head_dim ≠ d_model / n_heads, as in the real Gemma models
        "gemma": lambda: tf.GemmaConfig(**GQA, **vocab, head_dim=16),
        "gemma2": lambda: tf.Gemma2Config(**GQA, **vocab, head_dim=16, **window),
        "phi": lambda: tf.PhiConfig(**SIZE, **vocab, intermediate_size=64),
        "opt": lambda: tf.OPTConfig(
            **SIZE, **vocab, ffn_dim=64, word_embed_proj_dim=32, dropout=0.0
        ),
    }
    return builders[model_type]()


ARCHS = ["gpt2", "gpt_neox", "llama", "qwen2", "mistral", "gemma", "gemma2", "phi", "opt"]


def _offset(text: str, word: str, nth: int = 1) -> int:
    """Character offset of the nth whole-word occurrence of ``word`` in ``text``."""
    words = text.split(" ")
    starts = [sum(len(w) + 1 for w in words[:i]) for i, w in enumerate(words) if w == word]
    return starts[nth - 1]


def _pair(clean: str, corrupted: str, io: str, s: str, template: str) -> PromptPair:
    labels = {"IO": _offset(clean, io), "S2": _offset(clean, s, 2)}
    return PromptPair(clean, corrupted, (f" {io}",), (f" {s}",), labels, template)


PAIRS = [
    _pair(
        "When Tom and Ann went to the park , Ann gave a ball to",
        "When Ann and Tom went to the park , Tom gave a ball to",
        "Tom",
        "Ann",
        "a",
    ),
    _pair(  # shorter: a length group of its own
        "After John and Mary went to the store , Mary gave",
        "After Mary and John went to the store , John gave",
        "John",
        "Mary",
        "b",
    ),
]


@dataclass
class Setup:
    """A loaded tiny model with both runs of :data:`PAIRS` captured."""

    model: LoadedModel
    pairs: TokenizedPairs
    caches: dict[str, dict[str, torch.Tensor]]


def save_tiny(folder: Path, model_type: str, sliding_window: int | None = None) -> Path:
    """A random, perturbed model of ``model_type`` and a word-level tokenizer, saved."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(model_type, sliding_window))
    perturb(model)
    model.save_pretrained(folder)
    make_tokenizer(WORDS).save_pretrained(folder)
    return folder


def setup_for(folder: Path, name: str) -> Setup:
    model = load_model(ModelConfig(name=name, path=str(folder)))
    pairs = tokenize_pairs(PAIRS, model.tokenizer)
    store = {"resid"} | {STORAGE[c][0] for c in model.arch.components()}
    caches = {
        run: capture_run(model, ids, pairs.lengths, tuple(store), progress=False)
        for run, ids in (("clean", pairs.clean_ids), ("corrupted", pairs.corrupted_ids))
    }
    return Setup(model, pairs, caches)


_BUILT: dict[str, Setup] = {}


@pytest.fixture
def built(request, tmp_path_factory) -> Setup:
    """The architecture named by the test's ``arch`` parameter, built once a session."""
    arch = request.node.callspec.params["arch"]
    if arch not in _BUILT:
        folder = save_tiny(tmp_path_factory.mktemp(f"tiny-{arch}"), arch)
        _BUILT[arch] = setup_for(folder, f"tiny-{arch}")
    return _BUILT[arch]


def sweep(setup: Setup, sweep_cfg: SweepConfig, fast: bool = True) -> tuple[Any, torch.Tensor]:
    """The engine's (sites, metric) for one sweep."""
    model, pairs, caches = setup.model, setup.pairs, setup.caches
    sites = build_sites("t", sweep_cfg, pairs, model.dims)
    denoise = sweep_cfg.direction == "denoise"
    source, target = ("clean", "corrupted") if denoise else ("corrupted", "clean")
    inputs = PatchInputs.for_sweep(
        pairs,
        sweep_cfg.component,
        sweep_cfg.direction,
        source_run=caches[source],
        target_run=caches[target],
    )
    got = run_patches(
        model, sweep_cfg.component, sites, inputs, logit_diff, progress=False, fast=fast
    )
    return sites, got


def reference(setup: Setup, sites: Any, component: str, direction: str) -> torch.Tensor:
    """The same sweep, one forward pass per (site, prompt) with plain PyTorch hooks."""
    return reference_sweep(setup.model, setup.pairs, sites, component, direction)


def check_equals_reference(setup: Setup, sweep_cfg: SweepConfig, fast: bool = True) -> None:
    sites, got = sweep(setup, sweep_cfg, fast=fast)
    want = reference(setup, sites, sweep_cfg.component, sweep_cfg.direction)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def _mapped(arch: str) -> list[str]:
    return ARCHITECTURES[arch].components()


def _default_cases() -> list[Any]:
    """Every architecture × component it maps, one direction each, alternating so that
    each architecture and each component sees both directions."""
    cases = []
    for a, arch in enumerate(ARCHS):
        for c, component in enumerate(_mapped(arch)):
            direction = ("denoise", "noise")[(a + c) % 2]
            cases.append(pytest.param(arch, component, direction))
    return cases


def _all_cases() -> list[Any]:
    return [
        pytest.param(arch, component, direction)
        for arch in ARCHS
        for component in _mapped(arch)
        for direction in ("denoise", "noise")
    ]


@pytest.mark.parametrize(("arch", "component", "direction"), _default_cases())
def test_last_layer_one_head_equals_one_pass_per_patch(built, arch, component, direction):
    """Layer 1 exercises the skipped block below it; the last head a non-zero offset."""
    dims = built.model.dims
    heads = [dims.heads_of(component) - 1] if component in HEADED else None
    check_equals_reference(
        built,
        SweepConfig(
            component=component,
            direction=direction,
            positions="labels",
            layers=[dims.n_layers - 1],
            heads=heads,
        ),
    )


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "component", "direction"), _all_cases())
def test_every_site_equals_one_pass_per_patch(built, arch, component, direction):
    check_equals_reference(
        built, SweepConfig(component=component, direction=direction, positions="labels")
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_whole_residual_stream_restores_the_source_metric(built, arch):
    """Patching all of resid_pre at layer l, for every l, replays the source run."""
    pairs, caches = built.pairs, built.caches
    for i in range(pairs.n_pairs):  # the capture itself is a plain forward pass
        n = int(pairs.lengths[i])
        want = plain_logits(built.model.hf, pairs.clean_ids[i, :n])
        torch.testing.assert_close(caches["clean"]["logits"][i], want, atol=1e-5, rtol=0)
    for direction, source in (("denoise", "clean"), ("noise", "corrupted")):
        _, got = sweep(built, SweepConfig("resid_pre", direction=direction, positions="all"))
        expected = logit_diff(caches[source]["logits"], pairs.correct_ids, pairs.incorrect_ids)
        assert got.shape[0] == built.model.dims.n_layers
        torch.testing.assert_close(got, expected.expand_as(got), atol=1e-5, rtol=0)


@pytest.fixture(scope="module", params=["mistral", "gemma2"])
def short_window(request, tmp_path_factory) -> Setup:
    """A sliding window (3) shorter than the prompts (11 and 14 tokens)."""
    arch = request.param
    folder = save_tiny(tmp_path_factory.mktemp(f"window-{arch}"), arch, sliding_window=3)
    return setup_for(folder, f"window-{arch}")


def test_sliding_window_plain_path_equals_one_pass_per_patch(short_window):
    check_equals_reference(
        short_window,
        SweepConfig("resid_pre", positions="labels", layers=[1]),
        fast=False,
    )


def test_sliding_window_fast_path_equals_one_pass_per_patch(short_window):
    check_equals_reference(short_window, SweepConfig("resid_pre", positions="labels", layers=[1]))


class TestComponentMap:
    """What the map promises beyond the engine runs above."""

    def test_every_family_in_the_map_is_built_here(self):
        assert sorted(ARCHS) == sorted(ARCHITECTURES)

    def test_neox_q_k_v_say_why_they_are_missing(self):
        with pytest.raises(ConfigError, match="interleaved per head"):
            ARCHITECTURES["gpt_neox"].hook_point("q")

    def test_gemma2_sublayer_outputs_are_read_after_their_post_norms(self):
        arch = ARCHITECTURES["gemma2"]
        assert arch.hook_point("attn_out").module.endswith("post_attention_layernorm")
        assert arch.hook_point("mlp_out").module.endswith("post_feedforward_layernorm")

    def test_a_flat_point_is_unflattened_into_a_writable_view(self):
        rows = torch.zeros(2 * 5, 3)  # (batch·pos, d), as OPT's fc2 returns it
        point = HookPoint("model.decoder.layers.{layer}.fc2", "output", flat=True)
        view = select(rows, point, shape=(2, 5))
        view[1, 2] = 7.0
        assert view.shape == (2, 5, 3)
        assert bool((rows[1 * 5 + 2] == 7.0).all()) and float(rows.sum()) == 21.0
        with pytest.raises(ConfigError, match="batch, pos"):
            select(rows, point)


@pytest.mark.parametrize(("arch", "component", "direction"), _default_cases())
def test_attribution_equals_its_definition(built, arch, component, direction):
    """Attribution patching through the same component map: (source − target) · gradient
    at every layer, as a hand-written autograd computation gives it (plain AtP: the QK
    fix needs scores recomputable from q and k, GPT-2's and OPT's)."""
    from reference import attribution_reference

    from patchsweep.engine.attribution import run_attribution

    model, pairs, caches = built.model, built.pairs, built.caches
    heads = [model.dims.heads_of(component) - 1] if component in HEADED else None
    sweep_cfg = SweepConfig(
        component=component, direction=direction, positions="labels", heads=heads
    )
    sites = build_sites("t", sweep_cfg, pairs, model.dims)
    source, target = ("clean", "corrupted") if direction == "denoise" else ("corrupted", "clean")
    inputs = PatchInputs.for_sweep(
        pairs, component, direction, source_run=caches[source], target_run=caches[target]
    )
    got = run_attribution(model, component, sites, inputs, logit_diff, qk_fix=False,
                          progress=False)  # fmt: skip
    want = attribution_reference(model, pairs, sites, component, direction)
    torch.testing.assert_close(got.metric, want, atol=1e-5, rtol=0)
