"""The engine's raw metrics equal TransformerLens's ``patching`` functions, sweep by sweep.

TransformerLens is an independent implementation of the same method (hook points of its
own, one forward pass per patch), so agreement here checks the engine's choice of hook
points as well as its batching: resid_pre is block l's input, attn_out and mlp_out the
modules' outputs, z the per-head input of the attention output projection (TL's
``hook_z``), q/k/v the per-head projections (``hook_q``/``hook_k``/``hook_v``), and the
pattern the post-softmax attention (``hook_pattern``). TL boots on a separate copy of
the weights because its bridge replaces the Hugging Face model's submodules in place,
which would change the model nnsight traces.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # read once, when transformers is first imported

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformer_lens", reason="TransformerLens is a dev dependency (.[dev])")

from transformer_lens import patching as tl_patching

from patchsweep.capture import capture_run
from patchsweep.config import ModelConfig, SweepConfig
from patchsweep.datasets import generate
from patchsweep.datasets.base import PromptPair
from patchsweep.engine import PatchInputs, build_sites, run_patches
from patchsweep.metrics import logit_diff
from patchsweep.models import LoadedModel, load_model
from patchsweep.tokenize import TokenizedPairs, tokenize_pairs

ORGANISM = Path(__file__).resolve().parents[2] / "data" / "models" / "ioi-gpt2"
ATOL = 1e-4

# Equal token lengths: TL patches a whole batch per forward pass, without padding.
TINY_PAIRS = [
    PromptPair(
        "When John and Mary went to the store , Mary gave a book to",
        "When Mary and John went to the store , John gave a book to",
        (" John",),
        (" Mary",),
    ),
    PromptPair(
        "When Tom and Ann went to the park , Ann gave a ball to",
        "When Ann and Tom went to the park , Tom gave a ball to",
        (" Tom",),
        (" Ann",),
    ),
]


def _all_positions(corrupted: torch.Tensor, index: list[int], clean: torch.Tensor) -> torch.Tensor:
    """TL patch setter for index [layer]: the whole activation, every position at once."""
    corrupted[...] = clean
    return corrupted


def _layer_all_positions(activation_name: str) -> Callable[..., object]:
    def sweep(model, corrupted_tokens, clean_cache, patching_metric, **kwargs):
        return tl_patching.generic_activation_patch(
            model,
            corrupted_tokens,
            clean_cache,
            patching_metric,
            patch_setter=_all_positions,
            activation_name=activation_name,
            index_axis_names=("layer",),
            **kwargs,
        )

    return sweep


# engine component, engine positions, TL sweep, TL hook name, result axes after layer
SWEEPS = {
    "resid_pre_by_pos": (
        "resid_pre",
        "each",
        tl_patching.get_act_patch_resid_pre,
        "hook_resid_pre",
    ),
    "attn_out_by_pos": ("attn_out", "each", tl_patching.get_act_patch_attn_out, "hook_attn_out"),
    "mlp_out_by_pos": ("mlp_out", "each", tl_patching.get_act_patch_mlp_out, "hook_mlp_out"),
    "attn_out_all_pos": ("attn_out", "all", _layer_all_positions("attn_out"), "hook_attn_out"),
    "mlp_out_all_pos": ("mlp_out", "all", _layer_all_positions("mlp_out"), "hook_mlp_out"),
    "head_all_pos": ("z", "all", tl_patching.get_act_patch_attn_head_out_all_pos, "hook_z"),
    "head_by_pos": ("z", "each", tl_patching.get_act_patch_attn_head_out_by_pos, "hook_z"),
    "q_all_pos": ("q", "all", tl_patching.get_act_patch_attn_head_q_all_pos, "hook_q"),
    "k_all_pos": ("k", "all", tl_patching.get_act_patch_attn_head_k_all_pos, "hook_k"),
    "v_all_pos": ("v", "all", tl_patching.get_act_patch_attn_head_v_all_pos, "hook_v"),
    "q_by_pos": ("q", "each", tl_patching.get_act_patch_attn_head_q_by_pos, "hook_q"),
    "k_by_pos": ("k", "each", tl_patching.get_act_patch_attn_head_k_by_pos, "hook_k"),
    "v_by_pos": ("v", "each", tl_patching.get_act_patch_attn_head_v_by_pos, "hook_v"),
    "pattern_all_pos": (
        "pattern",
        "all",
        tl_patching.get_act_patch_attn_head_pattern_all_pos,
        "hook_pattern",
    ),
    "pattern_by_pos": (
        "pattern",
        "each",
        tl_patching.get_act_patch_attn_head_pattern_by_pos,
        "hook_pattern",
    ),
}
# TL's pattern-by-position sweep is indexed (layer, head, query position); the engine's
# head sweeps are (layer, position, head).
TL_AXES = {"pattern_by_pos": (0, 2, 1)}
CAPTURED = ("resid", "attn_out", "mlp_out", "z", "q", "k", "v", "pattern")
DIRECTIONS = ("denoise", "noise")
# On a GPT-2-small depth TL needs ~0.1 s per patch: a few sweeps that cover every hook point.
DEEP = [
    ("resid_pre_by_pos", "denoise"),
    ("head_all_pos", "denoise"),
    ("attn_out_all_pos", "noise"),
    ("mlp_out_by_pos", "noise"),
]


class Setup:
    """One model loaded twice (nnsight and TL), prompts, and both runs' engine caches."""

    def __init__(self, folder: Path, model: LoadedModel, pairs: TokenizedPairs) -> None:
        from transformer_lens.model_bridge import TransformerBridge
        from transformers import AutoModelForCausalLM

        self.model, self.pairs = model, pairs
        hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
        self.bridge = TransformerBridge.boot_transformers(
            str(folder), hf_model=hf, tokenizer=model.tokenizer
        )
        self.bridge.eval()
        self.caches = {
            run: capture_run(model, ids, pairs.lengths, CAPTURED, progress=False)
            for run, ids in (("clean", pairs.clean_ids), ("corrupted", pairs.corrupted_ids))
        }

    def engine(self, component: str, positions: str, direction: str) -> torch.Tensor:
        """The engine's (S, N) raw metric for one sweep."""
        sweep = SweepConfig(component=component, direction=direction, positions=positions)
        sites = build_sites("t", sweep, self.pairs, self.model.dims)
        source, target = (
            ("clean", "corrupted") if direction == "denoise" else ("corrupted", "clean")
        )
        inputs = PatchInputs.for_sweep(
            self.pairs,
            component,
            direction,
            source_run=self.caches[source],
            target_run=self.caches[target],
        )
        return run_patches(self.model, component, sites, inputs, logit_diff, progress=False)

    def transformer_lens(self, tl_sweep: Callable, hook: str, direction: str) -> torch.Tensor:
        """TL's raw metric for one sweep: (*index axes, N), one forward pass per patch."""
        clean, corrupted = self.pairs.clean_ids, self.pairs.corrupted_ids
        target, source = (corrupted, clean) if direction == "denoise" else (clean, corrupted)
        with torch.no_grad():
            _, source_cache = self.bridge.run_with_cache(
                source, names_filter=lambda name: name.endswith(hook)
            )
            result = tl_sweep(
                self.bridge,
                target,
                source_cache,
                lambda logits: logit_diff(
                    logits[:, -1], self.pairs.correct_ids, self.pairs.incorrect_ids
                ),
                reduce="none",
            )
        return result.values.cpu()

    def compare(self, name: str, direction: str) -> None:
        component, positions, tl_sweep, hook = SWEEPS[name]
        got = self.engine(component, positions, direction)
        want = self.transformer_lens(tl_sweep, hook, direction)
        if name in TL_AXES:
            want = want.permute(*TL_AXES[name], *range(len(TL_AXES[name]), want.dim()))
        torch.testing.assert_close(got, want.reshape(got.shape), atol=ATOL, rtol=0)
        # Guard against a vacuous pass: the sweep must move the metric somewhere.
        assert float(got.max() - got.min()) > 100 * ATOL


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Toy-sized matrices gain nothing from a second thread, and on a busy machine every
    op waits for the descheduled one (a 2-layer forward measured 2 ms, against 80 ms)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tiny_gpt2_dir, tiny_gpt2) -> Setup:
    return Setup(tiny_gpt2_dir, tiny_gpt2, tokenize_pairs(TINY_PAIRS, tiny_gpt2.tokenizer))


@pytest.fixture(scope="module")
def deep(tmp_path_factory) -> Setup:
    """GPT-2-small's depth and width (12 layers, 12 heads, d_model 768), toy vocabulary."""
    from conftest import save_tiny_gpt2

    folder = save_tiny_gpt2(tmp_path_factory.mktemp("deep-gpt2"), n_layer=12, n_head=12, n_embd=768)
    model = load_model(ModelConfig(name="deep-gpt2", path=str(folder)))
    return Setup(folder, model, tokenize_pairs(TINY_PAIRS, model.tokenizer))


def _same_length(pairs: list[PromptPair], tokenizer, limit: int) -> list[PromptPair]:
    """The pairs of the most common token length, at most ``limit`` of them."""
    lengths = [len(tokenizer(p.clean, add_special_tokens=False).input_ids) for p in pairs]
    common = max(set(lengths), key=lengths.count)
    return [p for p, n in zip(pairs, lengths, strict=True) if n == common][:limit]


@pytest.fixture(scope="module")
def organism() -> Setup:
    if not (ORGANISM / "config.json").is_file():
        pytest.skip(f"no model organism at {ORGANISM} (train it with `dvc repro train_organism`)")
    model = load_model(ModelConfig(name="ioi-gpt2", path=str(ORGANISM)))
    pairs = _same_length(generate("ioi", 64, seed=0, split="test"), model.tokenizer, limit=4)
    return Setup(ORGANISM, model, tokenize_pairs(pairs, model.tokenizer))


class TestTinyGPT2:
    """A random, perturbed 2-layer GPT-2: biases and LayerNorm weights are not trivial."""

    @pytest.mark.parametrize("direction", DIRECTIONS)
    @pytest.mark.parametrize("name", list(SWEEPS))
    def test_engine_equals_transformer_lens(self, tiny, name, direction):
        tiny.compare(name, direction)


class TestOrganism:
    """The bundled IOI organism, where the sweeps show real structure."""

    @pytest.mark.parametrize("direction", DIRECTIONS)
    @pytest.mark.parametrize("name", list(SWEEPS))
    def test_engine_equals_transformer_lens(self, organism, name, direction):
        organism.compare(name, direction)


@pytest.mark.slow
class TestDeepGPT2:
    """A random GPT-2-small-sized stack, where the engine skips up to 11 layers per chunk."""

    @pytest.mark.parametrize(("name", "direction"), DEEP)
    def test_engine_equals_transformer_lens(self, deep, name, direction):
        deep.compare(name, direction)
