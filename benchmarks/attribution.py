"""Time attribution patching against exact patching on a GPT-2-small shape, in one run.

Attribution patching (AtP) estimates a patch's effect to first order: the metric after
replacing the target run's activation ``a`` with the source run's ``a'`` is about
``metric + (a' − a) · ∂metric/∂a``, the gradient taken in the unpatched target run. One
forward and one backward pass give it for every site; exact patching needs one patched
row per site and prompt. Two sweeps, both denoising (clean into corrupted) on 16 IOI-like
prompt pairs of one length, logit-difference metric:

1. ``heads_x_pos``: every head's output (``z``) at every position, one at a time
   (12 layers × 16 positions × 12 heads = 2,304 sites).
2. ``resid_pre_x_pos``: the residual stream at each block's input, every position
   (12 × 16 = 192 sites).

Methods, all on the same weights and prompts:

- ``attribution``: ``capture_run`` for both runs, then ``run_attribution``.
- ``attribution+verify``: the same, then ``run_patches`` on the top 20 sites by |mean
  estimated effect| (``verify.choose_sites`` and ``verify.subset``): timed together.
- ``exact``: ``capture_run`` for both runs, then ``run_patches`` on every site.
- ``tl_exact``: TransformerLens 4.3's ``get_act_patch_attn_head_out_by_pos`` and
  ``get_act_patch_resid_pre``, batched over the prompts (one forward per site). Its cost
  per site is one full forward, whatever the site, so it is run on a seeded sample of
  ``--tl-patches`` sites and its time extrapolated to the sweep (a full run would take
  an hour for the heads here); its values are compared on that sample.
- ``tl_attribution``: attribution patching with TransformerLens hooks as in its
  attribution-patching demo: ``run_with_cache`` on clean, a forward with a caching hook
  and a backward with a gradient hook on corrupted, then (clean − corrupted) · gradient.

Every method runs each sweep once untimed first (its values are the ones checked), then
``--repeats`` timed rounds in a rotating order. A run whose warm-up took longer than
``--slow-s`` seconds (the exact heads sweep) is timed by that one run instead of being
repeated, and ``tl_exact`` runs once; the table says which. After the timings a float64
copy of the model computes the attribution estimate by plain autograd: the value both
float32 estimates round.

Usage: ``python benchmarks/attribution.py [--repeats N] [--quick] [--threads N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # TL's sweeps draw a bar per call; read at import
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import pandas as pd
import torch
from common import (
    FULL_SHAPE,
    QUICK_SHAPE,
    REPO,
    boot_bridge,
    default_config,
    environment,
    first_difference,
    ioi_pairs,
    measure_memory,
    process_peak_mb,
    save_random_gpt2,
    warn_if_busy,
    word_tokenizer,
    write_report,
)
from transformers import AutoModelForCausalLM

from patchsweep.capture import capture_run
from patchsweep.component_types import COMPONENT_TYPES
from patchsweep.config import EngineConfig, ModelConfig, SweepConfig
from patchsweep.engine import PatchInputs, Sites, build_sites, run_patches
from patchsweep.engine.accounting import PassShape, recording_passes
from patchsweep.engine.attribution import run_attribution
from patchsweep.engine.verify import choose_sites, subset
from patchsweep.metrics import logit_diff
from patchsweep.models import LoadedModel, load_model
from patchsweep.tokenize import TokenizedPairs, tokenize_pairs

RESULTS = REPO / "benchmarks" / "results"
METHODS = ("attribution", "attribution+verify", "exact", "tl_attribution", "tl_exact")
REPEATABLE = METHODS[:-1]  # tl_exact runs once, on a sample
ENGINE_METHODS = METHODS[:3]  # they read the capture stage's activations
# Both sides compute the same numbers through other kernels and hook points.
TOLERANCE = {"exact_vs_tl_exact": 1e-4}
# An attribution estimate is a sum of (source − target) × gradient terms, the gradient
# from a float32 backward through every layer above the site; its rounding error scales
# with the sum of the terms' absolute values (Σ|terms|, up to ~300 for the residual
# stream here, ~20 for a head), not with the metric. Each float32 estimate must lie
# within this share of Σ|terms| of the float64 autograd value (float32 keeps about 7
# digits; the backward through 12 layers loses one or two), and the engine's and
# TransformerLens's estimates within twice that of each other.
RELATIVE_TOLERANCE = 1e-5
# The verified sites' exact values against the full exact sweep's: the same engine in
# other chunks, so only float32 rounding of a different batch composition.
VERIFY_TOLERANCE = 1e-4
TARGETS = {"attribution": 20.0, "attribution+verify": 5.0}  # exact ÷ method, at least
CAPTURE_FORWARDS = 2  # every engine method captures the clean and the corrupted run


@dataclass(frozen=True)
class Sweep:
    """One benchmarked sweep: the engine's component and its TransformerLens spelling."""

    name: str
    component: str
    tl_hook: str  # blocks.{layer}.<this>
    tl_exact: str  # the transformer_lens.patching function
    tl_axes: tuple[str, ...]  # its index columns, in the engine's site order


SWEEPS = (
    Sweep(
        "heads_x_pos",
        "z",
        "attn.hook_z",
        "get_act_patch_attn_head_out_by_pos",
        ("layer", "pos", "head"),
    ),
    Sweep(
        "resid_pre_x_pos",
        "resid_pre",
        "hook_resid_pre",
        "get_act_patch_resid_pre",
        ("layer", "pos"),
    ),
)


@dataclass
class Outcome:
    """One method's run of one sweep."""

    values: torch.Tensor  # (S, N) metric per site and prompt; tl_exact: (k, N), its sample
    passes: dict[str, int]
    shapes: list[PassShape]  # the engine's passes as it recorded them (capture not included)
    target: torch.Tensor | None = None  # (N,) unpatched metric, where the method has it
    verified: tuple[np.ndarray, torch.Tensor] | None = None  # top sites, (k, N) exact
    parts_s: dict[str, float] = field(default_factory=dict)  # capture; tl_exact: cache, patches


# --- the engine ------------------------------------------------------------------------


def engine_inputs(
    model: LoadedModel, sweep: Sweep, pairs: TokenizedPairs
) -> tuple[Sites, PatchInputs, float]:
    """Capture both runs (the component's store only) and build the sweep's sites; and
    the seconds the capture took (the pipeline's capture stage, shared by every sweep)."""
    store = COMPONENT_TYPES[sweep.component].store
    start = time.perf_counter()
    caches = {
        run: capture_run(model, ids, pairs.lengths, (store,), progress=False)
        for run, ids in (("clean", pairs.clean_ids), ("corrupted", pairs.corrupted_ids))
    }
    config = SweepConfig(component=sweep.component, direction="denoise", positions="each")
    sites = build_sites(sweep.name, config, pairs, model.dims)
    inputs = PatchInputs.for_sweep(
        pairs,
        sweep.component,
        "denoise",
        source_run=caches["clean"],
        target_run=caches["corrupted"],
        target_logits=caches["corrupted"]["logits"],
    )
    return sites, inputs, time.perf_counter() - start


def exact(model: LoadedModel, sweep: Sweep, pairs: TokenizedPairs, cfg: EngineConfig) -> Outcome:
    sites, inputs, capture_s = engine_inputs(model, sweep, pairs)
    with recording_passes() as passes:
        values = run_patches(
            model,
            sweep.component,
            sites,
            inputs,
            logit_diff,
            budget_mb=cfg.memory_budget_mb,
            max_batch=cfg.max_batch,
            progress=False,
        )
    passes_run = {"forward": CAPTURE_FORWARDS + len(passes), "backward": 0}
    return Outcome(values, passes_run, passes, parts_s={"capture": capture_s})


def attribution(
    model: LoadedModel,
    sweep: Sweep,
    pairs: TokenizedPairs,
    cfg: EngineConfig,
    top_k: int = 0,
) -> Outcome:
    """``run_attribution``; with ``top_k``, then exact patches of its top sites."""
    sites, inputs, capture_s = engine_inputs(model, sweep, pairs)
    with recording_passes() as shapes:
        estimate = run_attribution(
            model,
            sweep.component,
            sites,
            inputs,
            logit_diff,
            budget_mb=cfg.memory_budget_mb,
            max_batch=cfg.max_batch,
            progress=False,
        )
    passes = {
        "forward": CAPTURE_FORWARDS + estimate.passes["forward"],
        "backward": estimate.passes["backward"],
    }
    outcome = Outcome(
        estimate.metric, passes, shapes, target=estimate.target, parts_s={"capture": capture_s}
    )
    if top_k:
        effect = (estimate.metric - estimate.target[None]).mean(1).numpy()
        top, _ = choose_sites(effect, top_k, control=0, seed=0)
        with recording_passes() as verify_passes:
            checked = run_patches(
                model,
                sweep.component,
                subset(sites, torch.as_tensor(top)),
                inputs,
                logit_diff,
                budget_mb=cfg.memory_budget_mb,
                max_batch=cfg.max_batch,
                progress=False,
            )
        passes["forward"] += len(verify_passes)
        shapes += verify_passes
        outcome.verified = (top, checked)
    return outcome


# --- TransformerLens -------------------------------------------------------------------


def tl_metric(pairs: TokenizedPairs) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-prompt logit difference at the final position, as TL's sweeps call it."""
    return lambda logits: logit_diff(logits[:, -1], pairs.correct_ids, pairs.incorrect_ids)


def sweep_shape(sweep: Sweep, bridge: Any, pairs: TokenizedPairs) -> tuple[int, ...]:
    """The sweep's index ranges in the engine's site order: (layers, positions[, heads])."""
    cfg = bridge.cfg
    shape = (cfg.n_layers, pairs.clean_ids.shape[1], cfg.n_heads)
    return shape[: len(sweep.tl_axes)]


@torch.no_grad()
def tl_exact(bridge: Any, sweep: Sweep, pairs: TokenizedPairs, sample: np.ndarray) -> Outcome:
    """TL's patching function on the sampled sites (engine site numbers), every prompt
    in each patched forward; the clean cache and the patches timed apart."""
    from transformer_lens import patching

    start = time.perf_counter()
    _, cache = bridge.run_with_cache(
        pairs.clean_ids, names_filter=lambda n: n.endswith(sweep.tl_hook)
    )
    cached = time.perf_counter()
    index = np.stack(np.unravel_index(sample, sweep_shape(sweep, bridge, pairs)), axis=1)
    result = getattr(patching, sweep.tl_exact)(
        bridge,
        pairs.corrupted_ids,
        cache,
        tl_metric(pairs),
        index_axis_names=None,  # the partial's full grid, replaced by the sample
        index_df=pd.DataFrame(index, columns=list(sweep.tl_axes)),
        reduce="none",
    )
    done = time.perf_counter()
    return Outcome(
        result.values.cpu(),  # (k, N)
        {"forward": 1 + len(sample), "backward": 0},
        [],
        parts_s={"cache": cached - start, "patches": done - cached},
    )


def tl_attribution(bridge: Any, sweep: Sweep, pairs: TokenizedPairs) -> Outcome:
    """Attribution patching as TL's demo writes it: hooks cache the corrupted run's
    activations on the way forward and their gradients on the way back."""
    layers = range(bridge.cfg.n_layers)
    names = [f"blocks.{layer}.{sweep.tl_hook}" for layer in layers]
    with torch.no_grad():
        _, clean = bridge.run_with_cache(pairs.clean_ids, names_filter=names)
    acts: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {}
    bridge.reset_hooks()
    for name in names:  # by our name: the bridge's hook.name is its canonical one
        bridge.add_hook(name, lambda a, hook, n=name: acts.__setitem__(n, a.detach()), "fwd")
        bridge.add_hook(name, lambda g, hook, n=name: grads.__setitem__(n, g.detach()), "bwd")
    with torch.enable_grad():
        value = tl_metric(pairs)(bridge(pairs.corrupted_ids))
        value.sum().backward()  # summed: each prompt's gradient is its own metric's
    bridge.reset_hooks()
    bridge.zero_grad(set_to_none=True)  # the demo's weights get gradients too; drop them
    missing = [n for n in names if n not in acts or n not in grads]
    if missing:
        raise RuntimeError(
            f"TransformerLens hooks did not fire for {missing}: forward hooks fired for "
            f"{sorted(acts)}, backward hooks for {sorted(grads)}"
        )
    per_layer = [((clean[n] - acts[n]) * grads[n]).sum(-1) for n in names]  # (N, T[, H])
    change = torch.stack(per_layer, dim=1).flatten(1).T  # (S, N) in the engine's order
    target = value.detach().cpu()
    passes = {"forward": 2, "backward": 1}
    return Outcome(target[None] + change.cpu(), passes, [], target=target)


def attribution_fp64(hf: Any, sweep: Sweep, pairs: TokenizedPairs) -> tuple[torch.Tensor, float]:
    """(S, N) the same estimate by plain autograd on a float64 copy of the model: the
    value both float32 implementations round; and the largest Σ|(clean − corrupted) ·
    gradient| over a site's terms, the scale of that rounding. Reads each block's input
    (resid_pre) or each output projection's input (z) with forward pre-hooks."""
    blocks = hf.transformer.h
    modules = [b if sweep.component == "resid_pre" else b.attn.c_proj for b in blocks]
    assert pairs.correct_ids.shape[1] == pairs.incorrect_ids.shape[1] == 1

    def run(ids: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        seen: list[torch.Tensor] = []
        hooks = [m.register_forward_pre_hook(lambda _, a: seen.append(a[0])) for m in modules]
        try:
            logits = hf(ids).logits[:, -1]  # float64: logit_diff would cast to float32
        finally:
            for hook in hooks:
                hook.remove()
        diff = logits.gather(1, pairs.correct_ids) - logits.gather(1, pairs.incorrect_ids)
        return seen, diff[:, 0]

    with torch.no_grad():
        clean, _ = run(pairs.clean_ids)
    with torch.enable_grad():
        acts, value = run(pairs.corrupted_ids)
        grads = torch.autograd.grad(value.sum(), acts)
    heads = head_split(sweep, hf)
    terms = [
        ((c - a) * g).detach().unflatten(-1, heads)
        for c, a, g in zip(clean, acts, grads, strict=True)
    ]  # (N, T, H, d_head) or (N, T, 1, d_model)
    change = torch.stack([t.sum(-1) for t in terms], dim=1).flatten(1).T  # (S, N)
    scale = max(float(t.abs().sum(-1).max()) for t in terms)
    return value.detach()[None] + change, scale


def flop_bound(sweep: Sweep, dims: Any, pairs: TokenizedPairs, top: np.ndarray) -> dict[str, Any]:
    """What any exact method must compute, in token-layers (one position through one
    block), and the speed-ups over the exact sweep that this allows each method.

    A patch at layer L, position p changes nothing at positions before p (causal
    attention) nor in layers below L, so at least (layers − L) × (T − p) token-layers
    per prompt; none where the patch writes what is already there: every activation at
    a position before the pair's first differing token, and the residual stream's
    layer 0 (the embeddings) wherever the two tokens agree. Attribution needs at least
    one forward and one backward of the target run through every layer, the backward
    of activation gradients costing about one forward: 2 × layers × T per prompt. The
    capture both methods read is left out, as in the sweep-stage timings.
    """
    clean, corrupted = pairs.clean_ids, pairs.corrupted_ids
    n_layers, length = dims.n_layers, clean.shape[1]
    same = clean == corrupted  # (N, T)
    first = first_difference(clean, corrupted)  # (N,)
    layer = torch.arange(n_layers)[:, None, None]
    pos = torch.arange(length)[None, :, None]
    noop = pos < first[None, None, :]  # (L, T, N)
    if sweep.component == "resid_pre":
        noop = noop | ((layer == 0) & same.T[None])
    cost = ((n_layers - layer) * (length - pos) * ~noop).flatten(0, 1)  # (L·T, N)
    if sweep.component == "z":
        cost = cost.repeat_interleave(dims.n_heads, dim=0)  # (layer, pos, head) order
    exact_all = int(cost.sum())
    verify = int(cost[torch.as_tensor(top)].sum())
    attribution = 2 * n_layers * length * clean.shape[0]
    return {
        "token_layers": {"exact": exact_all, "verify_top_k": verify, "attribution": attribution},
        "speedup_bound": {
            "attribution": exact_all / attribution,
            "attribution+verify": exact_all / (attribution + verify),
        },
    }


def engine_token_layers(shapes: list[PassShape]) -> int:
    """Token-layers the engine's recorded passes ran (forward; the prefix pass included)."""
    return sum(p.tokens * p.layers for p in shapes)


def head_split(sweep: Sweep, hf: Any) -> tuple[int, int]:
    """How the last axis splits: (heads, d_head) for z, (1, d_model) for the residual."""
    n_heads, width = hf.config.n_head, hf.config.n_embd
    return (n_heads, width // n_heads) if sweep.component == "z" else (1, width)


# --- reporting -------------------------------------------------------------------------


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.double().flatten().numpy(), b.double().flatten().numpy())[0, 1])


def summarise(
    sweep: Sweep,
    n_sites: int,
    times: dict[str, list[float]],
    captures: dict[str, list[float]],
    dims: Any,
    pairs: TokenizedPairs,
    warm: dict[str, float],
    how: dict[str, str],
    out: dict[str, Outcome],
    sample: np.ndarray,
    fp64: tuple[torch.Tensor, float],
    memory: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    seconds = {m: statistics.median(times[m]) for m in METHODS}
    sweep_seconds = {  # the same runs less their capture: what a sweep stage does
        m: statistics.median(t - c for t, c in zip(times[m], captures[m], strict=True))
        for m in ENGINE_METHODS
    }
    ex, atp = out["exact"], out["attribution"]
    target, verified = atp.target, out["attribution+verify"].verified
    assert target is not None and verified is not None
    top, checked = verified
    bound = flop_bound(sweep, dims, pairs, top)
    sweep_speedup = {m: sweep_seconds["exact"] / sweep_seconds[m] for m in ENGINE_METHODS}
    diffs = {
        "exact_vs_tl_exact": float((ex.values[sample] - out["tl_exact"].values).abs().max()),
        "attribution_vs_tl_attribution": float(
            (atp.values - out["tl_attribution"].values).abs().max()
        ),
        "verify_vs_exact": float((checked - ex.values[top]).abs().max()),
    }
    errors = {
        m: float((out[m].values.double() - fp64[0]).abs().max())
        for m in ("attribution", "tl_attribution")
    }
    rounding = RELATIVE_TOLERANCE * fp64[1]
    tolerance = {
        **TOLERANCE,
        "attribution_vs_tl_attribution": 2 * rounding,
        "verify_vs_exact": VERIFY_TOLERANCE,
    }
    checks = {k: v <= tolerance[k] for k, v in diffs.items()}
    checks.update({f"{m}_vs_fp64": e <= rounding for m, e in errors.items()})
    est, true = atp.values - target[None], ex.values - target[None]  # effects (S, N)
    top_true = choose_sites(true.mean(1).numpy(), len(top), 0, 0)[0]
    return {
        "component": sweep.component,
        "direction": "denoise",
        "positions": "each",
        "sites": n_sites,
        "prompts": int(target.numel()),
        "seconds": seconds,
        "timing": how,
        "seconds_all_repeats": times,
        "seconds_warmup": warm,
        "tl_exact_measured": {
            "patches": len(sample),
            **out["tl_exact"].parts_s,
        },
        "speedup_vs_exact": {m: seconds["exact"] / seconds[m] for m in METHODS},
        "sweep_seconds": sweep_seconds,
        "capture_seconds": {m: statistics.median(captures[m]) for m in ENGINE_METHODS},
        "speedup_vs_exact_sweep": sweep_speedup,
        "flop_bound": bound,
        "share_of_bound": {
            m: sweep_speedup[m] / bound["speedup_bound"][m] for m in bound["speedup_bound"]
        },
        "engine_token_layers": {
            m: engine_token_layers(out[m].shapes) for m in ("attribution+verify", "exact")
        },
        "speedup_vs_tl_exact": {m: seconds["tl_exact"] / seconds[m] for m in METHODS},
        "passes": {
            m: out[m].passes if m != "tl_exact" else {"forward": 1 + n_sites, "backward": 0}
            for m in METHODS
        },
        "engine_pass_shapes": {  # what the engine recorded, capture not included
            m: [[p.layout, p.rows, p.tokens, p.layers] for p in out[m].shapes]
            for m in ("attribution", "attribution+verify", "exact")
        },
        "max_abs_diff": diffs,
        "max_abs_error_vs_fp64": errors,
        "largest_abs_term_sum": fp64[1],
        "tolerance": tolerance,
        "within_tolerance": checks,
        "pearson_r": {
            "site_prompt": pearson(est, true),
            "site_mean": pearson(est.mean(1), true.mean(1)),
        },
        "top_k": {
            "k": len(top),
            "sites": [int(i) for i in top],
            "in_exact_top_k": len(set(top.tolist()) & set(top_true.tolist())),
        },
        "metric_range": [float(ex.values.min()), float(ex.values.max())],
        "memory": memory,
    }


def load(average: list[float]) -> str:
    return "/".join(f"{x:.1f}" for x in average)


def print_table(report: dict[str, Any]) -> None:
    env, model = report["environment"], report["model"]
    print(
        f"\ntorch {env['torch']}  threads {env['torch_threads']}  CPU {env['cpu_model']} "
        f"({env['cpu_count']} cores)  load average {load(env['load_average_start'])} → "
        f"{load(report['load_average_end'])}"
    )
    print(
        f"model {model['shape']}, {model['pairs']} prompt pairs of {model['tokens']} tokens, "
        f"denoising, logit difference; engine memory_budget_mb "
        f"{report['engine_config']['memory_budget_mb']}, max_batch "
        f"{report['engine_config']['max_batch']}\n"
    )
    head = (
        f"{'sweep':<17}{'method':<20}{'seconds':>9}{'exact/this':>11}{'TL exact/this':>14}"
        f"{'fwd':>7}{'bwd':>5}  timed by"
    )
    print(head)
    print("-" * (len(head) + 30))
    for name, row in report["sweeps"].items():
        for m in METHODS:
            p = row["passes"][m]
            print(
                f"{name:<17}{m:<20}{row['seconds'][m]:>9.2f}{row['speedup_vs_exact'][m]:>10.1f}×"
                f"{row['speedup_vs_tl_exact'][m]:>13.1f}×{p['forward']:>7}{p['backward']:>5}  "
                f"{row['timing'][m]}"
            )
    print(
        "tl_exact: its clean cache plus the measured seconds per patched forward × the "
        "sweep's sites (one forward each, whatever the site); fwd = what the full sweep runs"
    )
    print(
        "\nsweep stage (the engine methods less the capture of both runs, which the "
        "pipeline's capture stage does once for every sweep)"
    )
    head = f"{'sweep':<17}{'method':<20}{'seconds':>9}{'exact/this':>11}{'FLOP bound':>11}"
    print(head + f"{'of bound':>10}")
    for name, row in report["sweeps"].items():
        bound = row["flop_bound"]["speedup_bound"]
        for m in ENGINE_METHODS:
            cells = f"{bound[m]:>10.1f}×{row['share_of_bound'][m]:>9.0%}" if m in bound else ""
            print(
                f"{name:<17}{m:<20}{row['sweep_seconds'][m]:>9.2f}"
                f"{row['speedup_vs_exact_sweep'][m]:>10.1f}×{cells}"
            )
        t = row["flop_bound"]["token_layers"]
        print(
            f"  {'':<15}token-layers any exact method must run: all sites {t['exact']:,}, "
            f"the top {row['top_k']['k']} {t['verify_top_k']:,}; attribution at least "
            f"{t['attribution']:,}"
        )
    print("\nchecks (largest absolute difference of raw metric values)")
    for name, row in report["sweeps"].items():
        d, ok, r, top = row["max_abs_diff"], row["within_tolerance"], row["pearson_r"], row["top_k"]
        cells = "  ".join(f"{k} {v:.1e} {'ok' if ok[k] else 'FAIL'}" for k, v in d.items())
        print(f"  {name:<17}{cells}")
        e = row["max_abs_error_vs_fp64"]
        print(
            f"  {'':<17}float64 autograd reference: attribution off by {e['attribution']:.1e} "
            f"{'ok' if ok['attribution_vs_fp64'] else 'FAIL'}, tl_attribution by "
            f"{e['tl_attribution']:.1e} {'ok' if ok['tl_attribution_vs_fp64'] else 'FAIL'} "
            f"(tolerance {RELATIVE_TOLERANCE:g} × Σ|terms| = "
            f"{RELATIVE_TOLERANCE * row['largest_abs_term_sum']:.1e})"
        )
        print(
            f"  {'':<17}Pearson r attribution vs exact effect: {r['site_prompt']:.3f} per "
            f"site × prompt, {r['site_mean']:.3f} per site (mean over prompts); "
            f"{top['in_exact_top_k']} of the attribution top {top['k']} in the exact top {top['k']}"
        )
    print("\nacceptance")
    for check in report["acceptance"]:
        print(
            f"  {check['sweep']:<17}exact / {check['method']:<19}{check['ratio']:7.1f}× "
            f"(with capture {check['ratio_with_capture']:.1f}×; FLOP bound "
            f"{check['bound']:.1f}×)  target ≥ {check['target']:.0f}×  "
            f"{'PASS' if check['pass'] else 'FAIL'}"
        )


# --- main ------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per method")
    parser.add_argument("--pairs", type=int, default=16, help="prompt pairs (one length)")
    parser.add_argument("--top-k", type=int, default=20, help="sites attribution+verify checks")
    parser.add_argument(
        "--tl-patches", type=int, default=32, help="sites tl_exact runs per sweep (a sample)"
    )
    parser.add_argument(
        "--slow-s",
        type=float,
        default=60.0,
        help="a method whose warm-up took longer is timed by that run, not repeated",
    )
    parser.add_argument("--quick", action="store_true", help="a 2-layer toy model")
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch threads, the same for every method",
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON path")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warn_if_busy(args.threads)
    name = "attribution-quick.json" if args.quick else "attribution.json"
    output = args.output or RESULTS / name
    cfg = default_config(EngineConfig, "engine")
    prompts = ioi_pairs(args.pairs)
    env = environment(args.threads)  # before the load of the runs

    with tempfile.TemporaryDirectory(prefix="patchsweep-bench-") as tmp:
        folder = Path(tmp)
        tokenizer = word_tokenizer([t for p in prompts for t in (p.clean, p.corrupted)])
        param_bytes = save_random_gpt2(folder, QUICK_SHAPE if args.quick else FULL_SHAPE, tokenizer)
        model = load_model(ModelConfig(name="gpt2-small-random", path=str(folder)))
        bridge = boot_bridge(folder, model.tokenizer)
        # a third copy, made float64 after the timings: the reference for the estimates
        reference = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
    pairs = tokenize_pairs(prompts, model.tokenizer)
    with torch.no_grad():
        clean_metric, corrupted_metric = (
            logit_diff(model.hf(ids).logits[:, -1], pairs.correct_ids, pairs.incorrect_ids)
            for ids in (pairs.clean_ids, pairs.corrupted_ids)
        )
        bridge(pairs.clean_ids)  # page in the bridge's copy of the weights too

    n_sites = {s.name: int(np.prod(sweep_shape(s, bridge, pairs))) for s in SWEEPS}
    rng = np.random.default_rng(0)
    samples = {  # engine site numbers TL patches, the same in every run
        name: np.sort(rng.choice(n, size=min(args.tl_patches, n), replace=False))
        for name, n in n_sites.items()
    }
    methods: dict[str, Callable[[Sweep], Outcome]] = {
        "attribution": lambda s: attribution(model, s, pairs, cfg),
        "attribution+verify": lambda s: attribution(model, s, pairs, cfg, args.top_k),
        "exact": lambda s: exact(model, s, pairs, cfg),
        "tl_attribution": lambda s: tl_attribution(bridge, s, pairs),
        "tl_exact": lambda s: tl_exact(bridge, s, pairs, samples[s.name]),
    }
    out: dict[str, dict[str, Outcome]] = {s.name: {} for s in SWEEPS}
    memory: dict[str, dict[str, Any]] = {s.name: {} for s in SWEEPS}
    warm: dict[str, dict[str, float]] = {s.name: {} for s in SWEEPS}
    for sweep in SWEEPS:
        for m in sorted(methods, key=lambda m: m == "exact"):  # the slow one last
            run = methods[m]
            (result, memory[sweep.name][m]), seconds = timed(
                lambda run=run, sweep=sweep: measure_memory(lambda: run(sweep))
            )
            out[sweep.name][m], warm[sweep.name][m] = result, seconds
            print(f"warm-up {sweep.name:<17}{m:<20}{seconds:8.2f} s", flush=True)

    times: dict[str, dict[str, list[float]]] = {s.name: {} for s in SWEEPS}
    # the engine methods' capture seconds within each timed run, matched to ``times``
    captures: dict[str, dict[str, list[float]]] = {s.name: {} for s in SWEEPS}
    how: dict[str, dict[str, str]] = {s.name: {} for s in SWEEPS}
    repeated: dict[str, list[str]] = {}
    for sweep in SWEEPS:
        w, t, h = warm[sweep.name], times[sweep.name], how[sweep.name]
        parts, k = out[sweep.name]["tl_exact"].parts_s, len(samples[sweep.name])
        t["tl_exact"] = [parts["cache"] + parts["patches"] * n_sites[sweep.name] / k]
        h["tl_exact"] = (
            "one run" if k == n_sites[sweep.name] else f"one run of {k} sites, extrapolated"
        )
        for m in REPEATABLE:
            if w[m] > args.slow_s:
                t[m], h[m] = [w[m]], "one run (the warm-up)"
                captures[sweep.name][m] = [out[sweep.name][m].parts_s.get("capture", 0.0)]
        repeated[sweep.name] = [m for m in REPEATABLE if m not in t]
        for m in repeated[sweep.name]:
            t[m], h[m] = [], f"median of {args.repeats}"
            captures[sweep.name][m] = []
    for r in range(args.repeats):
        for sweep in SWEEPS:
            ms = repeated[sweep.name]
            if not ms:
                continue
            for m in ms[r % len(ms) :] + ms[: r % len(ms)]:
                result, seconds = timed(lambda m=m, s=sweep: methods[m](s))
                times[sweep.name][m].append(seconds)
                captures[sweep.name][m].append(result.parts_s.get("capture", 0.0))
            print(
                f"repeat {r + 1}/{args.repeats} {sweep.name:<17}"
                + "  ".join(f"{m} {times[sweep.name][m][-1]:.2f} s" for m in ms),
                flush=True,
            )

    reference.double().eval()
    fp64 = {s.name: attribution_fp64(reference, s, pairs) for s in SWEEPS}
    print("float64 attribution reference done", flush=True)

    report: dict[str, Any] = {
        "environment": env,
        "model": {
            "shape": {
                "n_layer": model.dims.n_layers,
                "n_head": model.dims.n_heads,
                "d_model": model.dims.d_model,
                "vocab_size": model.dims.vocab_size,
            },
            "parameter_mb": param_bytes / 2**20,
            "pairs": pairs.n_pairs,
            "tokens": pairs.clean_ids.shape[1],
            "clean_metric_mean": float(clean_metric.mean()),
            "corrupted_metric_mean": float(corrupted_metric.mean()),
        },
        "engine_config": {"memory_budget_mb": cfg.memory_budget_mb, "max_batch": cfg.max_batch},
        "repeats": args.repeats,
        "slow_s": args.slow_s,
        "tolerance": {
            **TOLERANCE,
            "verify_vs_exact": VERIFY_TOLERANCE,
            "attribution_vs_fp64": f"{RELATIVE_TOLERANCE:g} × Σ|terms| (per sweep)",
            "attribution_vs_tl_attribution": f"{2 * RELATIVE_TOLERANCE:g} × Σ|terms|",
        },
        "sweeps": {
            s.name: summarise(
                s,
                n_sites[s.name],
                times[s.name],
                captures[s.name],
                model.dims,
                pairs,
                warm[s.name],
                how[s.name],
                out[s.name],
                samples[s.name],
                fp64[s.name],
                memory[s.name],
            )
            for s in SWEEPS
        },
    }
    report["acceptance"] = [
        {
            "sweep": s,
            "method": m,
            "ratio": report["sweeps"][s]["speedup_vs_exact_sweep"][m],
            "ratio_with_capture": report["sweeps"][s]["speedup_vs_exact"][m],
            "bound": report["sweeps"][s]["flop_bound"]["speedup_bound"][m],
            "target": TARGETS[m],
            "pass": report["sweeps"][s]["speedup_vs_exact_sweep"][m] >= TARGETS[m],
        }
        for s, m in (
            ("heads_x_pos", "attribution"),
            ("heads_x_pos", "attribution+verify"),
            ("resid_pre_x_pos", "attribution+verify"),
        )
    ]
    report["load_average_end"] = list(os.getloadavg())
    report["peak_rss_process_mb"] = process_peak_mb()
    print_table(report)
    write_report(output, report)
    return report


if __name__ == "__main__":
    main()
