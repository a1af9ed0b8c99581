"""The batched engine equals the one-pass-per-patch definition, for every component type
and direction, whatever the chunk size; and the method's invariants hold."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from reference import plain_logits, reference_sweep

from patchsweep.capture import capture_run
from patchsweep.component_types import is_headed
from patchsweep.config import SweepConfig
from patchsweep.datasets.base import PromptPair
from patchsweep.engine import PatchInputs, build_sites, run_patches
from patchsweep.metrics import logit_diff, mean_logprob
from patchsweep.tokenize import score_from_label, tokenize_pairs

COMPONENTS = ["resid_pre", "resid_post", "attn_out", "mlp_out", "z", "q", "k", "v", "pattern"]
# The fast path's two layouts: rows packed without padding (the default where the model
# allows a custom mask), and padded tiles (flash attention, short sliding windows).
LAYOUTS = {"packed": {}, "tiled": {"packing": False}}

PAIRS = [
    PromptPair(
        "When John and Mary went to the store , Mary gave a book to",
        "When Mary and John went to the store , John gave a book to",
        (" John",),
        (" Mary",),
        {"IO": 5, "S1": 14, "S2": 40},
        "a",
    ),
    PromptPair(
        "When Tom and Ann went to the park , Ann gave a ball to",
        "When Ann and Tom went to the park , Tom gave a ball to",
        (" Tom",),
        (" Ann",),
        {"IO": 5, "S1": 13, "S2": 37},
        "a",
    ),
    PromptPair(
        "After Tom and Mary went to the park , Mary gave",
        "After Mary and Tom went to the park , Tom gave",
        (" Tom", " a"),
        (" Mary",),
        {"IO": 6, "S1": 14, "S2": 38},
        "b",
    ),
]


@pytest.fixture(scope="module")
def setup(tiny_gpt2):
    pairs = tokenize_pairs(PAIRS, tiny_gpt2.tokenizer)
    everything = ("resid", "attn_out", "mlp_out", "z", "q", "k", "v", "pattern")
    clean = capture_run(tiny_gpt2, pairs.clean_ids, pairs.lengths, everything, progress=False)
    corrupted = capture_run(
        tiny_gpt2, pairs.corrupted_ids, pairs.lengths, everything, progress=False
    )
    return tiny_gpt2, pairs, {"clean": clean, "corrupted": corrupted}


def engine(model, pairs, caches, component, direction, positions, window=1, heads=None, **kwargs):
    sweep = SweepConfig(
        component=component, direction=direction, positions=positions, window=window, heads=heads
    )
    sites = build_sites("t", sweep, pairs, model.dims)
    source_run, target_run = (
        ("clean", "corrupted") if direction == "denoise" else ("corrupted", "clean")
    )
    inputs = PatchInputs.for_sweep(
        pairs,
        component,
        direction,
        source_run=caches[source_run],
        target_run=caches[target_run],
        # final-position logits: they stand for unchanged sites' metric (see below)
        target_logits=None if pairs.score_positions is not None else caches[target_run]["logits"],
    )
    metric = kwargs.pop("metric", logit_diff)
    return sites, run_patches(model, component, sites, inputs, metric, progress=False, **kwargs)


def reference(model, pairs, sites, component, direction, window=1):
    return reference_sweep(model, pairs, sites, component, direction, window)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("component", COMPONENTS)
@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_every_component_equals_one_pass_per_patch(setup, component, direction, layout):
    model, pairs, caches = setup
    sites, got = engine(model, pairs, caches, component, direction, "labels", **LAYOUTS[layout])
    want = reference(model, pairs, sites, component, direction)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("component", ["mlp_out", "attn_out", "resid_pre"])
def test_sliding_window_equals_one_pass_per_patch(setup, component, layout):
    """Restoring 2 consecutive layers at once (causal tracing's window)."""
    model, pairs, caches = setup
    kwargs = LAYOUTS[layout]
    sites, got = engine(model, pairs, caches, component, "denoise", "labels", window=2, **kwargs)
    want = reference(model, pairs, sites, component, "denoise", window=2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("component", ["resid_pre", "z", "v"])
def test_all_positions_equals_one_pass_per_patch(setup, component, layout):
    model, pairs, caches = setup
    sites, got = engine(model, pairs, caches, component, "denoise", "all", **LAYOUTS[layout])
    want = reference(model, pairs, sites, component, "denoise")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", [*LAYOUTS, "plain"])
@pytest.mark.parametrize("component", ["resid_pre", "z", "mlp_out"])
def test_a_metric_over_several_positions_equals_one_pass_per_patch(setup, component, layout):
    """Induction's mean log-prob: every next-token prediction from S2 on is scored, so
    patches after the first scored position still change the positions before them."""
    model, pairs, caches = setup
    scored = score_from_label(copy.copy(pairs), "S2")
    kwargs = {"fast": False} if layout == "plain" else LAYOUTS[layout]
    sites, got = engine(
        model, scored, caches, component, "denoise", "labels", metric=mean_logprob, **kwargs
    )
    want = reference_sweep(model, scored, sites, component, "denoise", metric=mean_logprob)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert got.std() > 0.01  # the sites differ: the scored positions were really read


# Pairs of one length (14 tokens) whose two prompts first differ at different positions:
# the first clause's names (1), the place (7), only the second subject (9), the object (12).
STAGGERED = [
    PromptPair(
        "When John and Mary went to the store , Mary gave a book to",
        "When Mary and John went to the store , John gave a book to",
        (" John",),
        (" Mary",),
        {},
        "a",
    ),
    PromptPair(
        "When Tom and Ann went to the store , Ann gave a ball to",
        "When Tom and Ann went to the park , Ann gave a ball to",
        (" Tom",),
        (" Ann",),
        {},
        "b",
    ),
    PromptPair(
        "When John and Mary went to the store , Mary gave a book to",
        "When John and Mary went to the store , John gave a book to",
        (" John",),
        (" Mary",),
        {},
        "c",
    ),
    PromptPair(
        "When Tom and Ann went to the park , Ann gave a ball to",
        "When Tom and Ann went to the park , Ann gave a drink to",
        (" Tom",),
        (" Ann",),
        {},
        "d",
    ),
]
FIRST_DIFFER = [1, 7, 9, 12]


@pytest.fixture(scope="module")
def staggered(tiny_gpt2):
    pairs = tokenize_pairs(STAGGERED, tiny_gpt2.tokenizer)
    everything = ("resid", "attn_out", "mlp_out", "z", "q", "k", "v", "pattern")
    caches = {
        run: capture_run(tiny_gpt2, ids, pairs.lengths, everything, progress=False)
        for run, ids in (("clean", pairs.clean_ids), ("corrupted", pairs.corrupted_ids))
    }
    return tiny_gpt2, pairs, caches


def _rows_run(model, pairs, caches, component, direction, positions, **kwargs):
    """The engine's sweep (two of the four heads, to keep the reference loop short), and
    the passes it ran."""
    from patchsweep.engine.accounting import recording_passes

    heads = [0, 3] if is_headed(component) else None
    with recording_passes() as passes:
        sites, got = engine(
            model, pairs, caches, component, direction, positions, heads=heads, **kwargs
        )
    return sites, got, passes


def test_the_staggered_pairs_first_differ_where_they_say(staggered):
    _, pairs, caches = staggered
    inputs = PatchInputs.for_sweep(
        pairs, "z", "denoise", source_run=caches["clean"], target_run=caches["corrupted"]
    )
    assert inputs.first_differ.tolist() == FIRST_DIFFER
    assert int(pairs.lengths.unique()) == 14


# Every component in both directions; the default tier runs one of each kind (the
# residual stream, a whole sublayer, heads with a key axis) in alternating directions,
# the slow tier the rest.
QUICK_SKIP_CASES = {("resid_pre", "denoise"), ("mlp_out", "noise"), ("pattern", "denoise")}
SKIP_CASES = [
    pytest.param(c, d, marks=() if (c, d) in QUICK_SKIP_CASES else pytest.mark.slow)
    for c in COMPONENTS
    for d in ("denoise", "noise")
]


@pytest.mark.parametrize(("component", "direction"), SKIP_CASES)
def test_patches_before_the_prompts_differ_are_not_run_and_still_exact(
    staggered, component, direction
):
    """Every position of every prompt: the sites before each prompt's first difference
    write what is already there, are not run, and score the unpatched target run."""
    model, pairs, caches = staggered
    sites, got, passes = _rows_run(model, pairs, caches, component, direction, "each")
    want = reference(model, pairs, sites, component, direction)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    before = sites.positions < torch.tensor(FIRST_DIFFER)  # (S, N)
    run = sum(shape.rows for shape in passes)
    if component == "resid_pre":  # the embeddings are also equal wherever the tokens are
        same = pairs.clean_ids == pairs.corrupted_ids  # (N, T)
        before |= (sites.layers[:, None] == 0) & same.T[sites.positions[:, 0]]
    assert run == int((~before).sum())
    target = caches["corrupted" if direction == "denoise" else "clean"]["logits"]
    unpatched = logit_diff(target, pairs.correct_ids, pairs.incorrect_ids)
    torch.testing.assert_close(got[before], unpatched.expand_as(got)[before], atol=0, rtol=0)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("component", "direction"), SKIP_CASES)
def test_patches_at_every_position_start_where_the_prompts_differ(
    staggered, component, direction, layout
):
    """A patch of every position at once computes each prompt from its first
    difference on (the cached target run stands in before it), with exact numbers."""
    model, pairs, caches = staggered
    kwargs = LAYOUTS[layout]
    sites, got, passes = _rows_run(model, pairs, caches, component, direction, "all", **kwargs)
    want = reference(model, pairs, sites, component, direction)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    patched = sum(shape.tokens for shape in passes if shape.layout != "prefix")
    length = int(pairs.lengths[0])
    assert patched < len(sites) * pairs.n_pairs * length  # not every position recomputed


@pytest.mark.parametrize(
    "component", ["attn_out", pytest.param("z", marks=pytest.mark.slow), "resid_pre"]
)
def test_windows_skip_before_the_prompts_differ_and_stay_exact(staggered, component):
    model, pairs, caches = staggered
    heads = [0, 3] if is_headed(component) else None
    sites, got = engine(model, pairs, caches, component, "noise", "each", window=2, heads=heads)
    want = reference(model, pairs, sites, component, "noise", window=2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_result_does_not_depend_on_chunking_or_the_fast_path(setup):
    model, pairs, caches = setup
    _, base = engine(model, pairs, caches, "z", "denoise", "labels")
    _, one_row = engine(model, pairs, caches, "z", "denoise", "labels", max_batch=1)
    _, tiled = engine(model, pairs, caches, "z", "denoise", "labels", packing=False, max_batch=3)
    _, tiny_budget = engine(model, pairs, caches, "z", "denoise", "labels", budget_mb=0.2)
    _, plain = engine(model, pairs, caches, "z", "denoise", "labels", fast=False, max_batch=5)
    torch.testing.assert_close(one_row, base, atol=1e-6, rtol=0)
    torch.testing.assert_close(tiled, base, atol=1e-5, rtol=0)
    torch.testing.assert_close(tiny_budget, base, atol=1e-6, rtol=0)
    torch.testing.assert_close(plain, base, atol=1e-5, rtol=0)


def test_whole_residual_stream_restores_the_clean_metric_at_every_layer(setup):
    model, pairs, caches = setup
    _, got = engine(model, pairs, caches, "resid_pre", "denoise", "all")
    clean = logit_diff(caches["clean"]["logits"], pairs.correct_ids, pairs.incorrect_ids)
    torch.testing.assert_close(got, clean.expand_as(got), atol=1e-5, rtol=0)
    _, noised = engine(model, pairs, caches, "resid_pre", "noise", "all")
    corrupted = logit_diff(caches["corrupted"]["logits"], pairs.correct_ids, pairs.incorrect_ids)
    torch.testing.assert_close(noised, corrupted.expand_as(noised), atol=1e-5, rtol=0)


def test_patching_nothing_gives_the_corrupted_metric(setup):
    """Source = target: every patch writes back what was there."""
    model, pairs, caches = setup
    same = {"clean": caches["corrupted"], "corrupted": caches["corrupted"]}
    _, got = engine(model, pairs, same, "attn_out", "denoise", "labels")
    corrupted = logit_diff(caches["corrupted"]["logits"], pairs.correct_ids, pairs.incorrect_ids)
    torch.testing.assert_close(got, corrupted.expand_as(got), atol=1e-5, rtol=0)


def test_capture_matches_a_plain_forward_pass(setup):
    model, pairs, caches = setup
    for i in range(pairs.n_pairs):
        n = int(pairs.lengths[i])
        want = plain_logits(model.hf, pairs.clean_ids[i, :n])
        torch.testing.assert_close(caches["clean"]["logits"][i], want, atol=1e-5, rtol=0)


def test_a_resumed_sweep_equals_a_fresh_one(setup, tmp_path, monkeypatch):
    """Half the chunks finished before a crash: the rerun computes only the rest."""
    from patchsweep.checkpoint import Checkpoint

    model, pairs, caches = setup
    _, fresh = engine(model, pairs, caches, "z", "denoise", "labels", max_batch=4)
    path = tmp_path / "ck.safetensors"
    partial = fresh.clone()
    done = torch.zeros(fresh.shape, dtype=torch.bool)
    done[: fresh.shape[0] // 2] = True
    partial[~done] = float("nan")
    Checkpoint(path, "k").save(partial, done, force=True)

    calls = []
    import patchsweep.engine.sweep as engine_module

    real = engine_module.packed_pass

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_module, "packed_pass", counting)

    def heads_with(checkpoint):
        kwargs = {"max_batch": 4, "checkpoint": checkpoint}
        return engine(model, pairs, caches, "z", "denoise", "labels", **kwargs)[1]

    resumed = heads_with(Checkpoint(path, "k"))
    resumed_passes = len(calls)
    other_key = heads_with(Checkpoint(tmp_path / "other.safetensors", "k2"))
    fresh_passes = len(calls) - resumed_passes
    torch.testing.assert_close(resumed, fresh, atol=0, rtol=0)
    torch.testing.assert_close(other_key, fresh, atol=0, rtol=0)
    assert 0 < resumed_passes < fresh_passes  # the resumed run skipped finished chunks
    # a checkpoint of other inputs is ignored, not mixed in
    Checkpoint(path, "k").save(partial, done, force=True)
    foreign = heads_with(Checkpoint(path, "another sweep"))
    torch.testing.assert_close(foreign, fresh, atol=0, rtol=0)


def test_a_remote_sweep_is_one_nnsight_session_per_prompt_length(setup, monkeypatch):
    """model.remote sends each length group's passes as one job (nnsight's serialised
    remote path, run here in-process with remote="local"), with the same numbers."""
    from nnsight.intervention.backends.local import LocalSimulationBackend

    model, pairs, caches = setup
    _, local = engine(model, pairs, caches, "z", "denoise", "labels", max_batch=4)
    jobs = []
    real_call = LocalSimulationBackend.__call__

    def counting(self, tracer):
        jobs.append(type(tracer).__name__)
        return real_call(self, tracer)

    monkeypatch.setattr(LocalSimulationBackend, "__call__", counting)
    remote = dataclasses.replace(model, remote=True, remote_target="local")
    _, sent = engine(remote, pairs, caches, "z", "denoise", "labels", max_batch=4)
    torch.testing.assert_close(sent, local, atol=1e-6, rtol=0)
    assert len(jobs) == len(torch.unique(pairs.lengths))  # not one job per chunk


@pytest.fixture(scope="module")
def organism():
    """The bundled IOI organism, with IOI pairs of one length, both runs captured."""
    from pathlib import Path

    from patchsweep.config import ModelConfig
    from patchsweep.datasets import generate
    from patchsweep.models import load_model

    folder = Path(__file__).resolve().parents[2] / "data" / "models" / "ioi-gpt2"
    if not (folder / "config.json").is_file():
        pytest.skip(f"no model organism at {folder} (train it with `dvc repro train_organism`)")
    model = load_model(ModelConfig(name="ioi-gpt2", path=str(folder)))
    pairs = tokenize_pairs(generate("ioi", 6, seed=1, split="test"), model.tokenizer)
    everything = ("resid", "attn_out", "mlp_out", "z", "q", "k", "v", "pattern")
    caches = {
        run: capture_run(model, ids, pairs.lengths, everything, progress=False)
        for run, ids in (("clean", pairs.clean_ids), ("corrupted", pairs.corrupted_ids))
    }
    return model, pairs, caches


@pytest.mark.parametrize("component", COMPONENTS)
@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_every_component_equals_one_pass_per_patch_on_the_organism(organism, component, direction):
    """The trained model, where patches have large effects (IO/S heads, S2 residual)."""
    model, pairs, caches = organism
    sites, got = engine(model, pairs, caches, component, direction, "labels")
    want = reference(model, pairs, sites, component, direction)
    # float32 noise scales with the metric: logit differences of about 15 here
    scale = max(1.0, float(want.abs().max()))
    torch.testing.assert_close(got, want, atol=1e-5 * scale, rtol=0)
    assert float(got.max() - got.min()) > 0.1  # the sites do move the metric
