"""Time patching sweeps over a dataset of IOI pairs: TransformerLens, an nnsight loop and the
engine side by side, each speed-up printed beside the most any exact method could gain.

``patching.py`` times one prompt pair. Researchers average over many, and there
TransformerLens batches the prompts itself: one forward pass of N rows per site. This
script measures that setting on a GPT-2-small shape (12 layers, 12 heads, d_model 768,
vocabulary 50,257; random weights with Gaussian noise on every parameter, saved with a
word-level tokenizer and loaded like a hub model, as in ``patching.py``).

Datasets:

- N equal-length IOI pairs of 16 tokens (``--pairs``, default 8 and 32), from
  ``common.IOI_TEMPLATE`` ("When IO and S1 went to the big store today , S2 gave a book
  to"), in two corruption styles that move the first position where the two prompts of a
  pair differ: ``first_clause`` (IO and S1 replaced by two other names: first difference
  at token 1) and ``s2_only`` (only S2 swapped for IO: first difference at token 11).
  The project's IOI generator (``patchsweep.datasets.ioi``) has neither corruption (its
  ``swap`` and ``abc`` also change S2) and its templates vary in length, so the pairs are
  built here.
- A mixed-length IOI dataset (``--mixed-pairs``, default 32) from ``generate_ioi`` with
  the ``abc`` corruption: prompts of several token lengths, positions compared by their
  labels (IO, S1, S1+1, S2, END).

Sweeps, all denoising (clean activations patched into the corrupted run), logit
difference ``logit(IO) − logit(S)`` at the final position, raw values per site × prompt:

- ``resid_pre_layer_pos``: the residual stream at each block's input, one position at a
  time (layers × 16 sites); on the mixed dataset ``resid_pre_layer_label``, one labelled
  position at a time (layers × 5 sites);
- ``head_all_pos``: each head's output before the output projection (``z``) at every
  position at once (layers × heads sites).

Methods:

- ``tl``: TransformerLens 4.3's ``get_act_patch_resid_pre`` and
  ``get_act_patch_attn_head_out_all_pos`` (``reduce="none"``, per-prompt values) on a
  ``TransformerBridge`` over the N-row batch: ``run_with_cache`` on the clean prompts,
  then one forward of N rows per site. Equal-length datasets only: it has no notion of
  prompts of several lengths or of named positions.
- ``loop``: the batched nnsight loop a researcher writes: one trace of the clean prompts
  caching the component at every layer, then one ``model.trace`` per site over all N
  prompts that overwrites that site in every row from the cache (each row its own
  position on the mixed dataset). On the mixed dataset it runs per group of prompts of
  one length, since padded GPT-2 batches are a known source of wrong logits.
- ``engine``: this project, as the pipeline calls it: ``capture_run`` on the clean and the
  corrupted prompts, ``PatchInputs.for_sweep`` with the clean and target logits, and
  ``run_patches`` with ``conf/engine/default.yaml``'s memory budget.

Each method's time includes its own caching of the runs it reads. Every method runs
every sweep once untimed first: raw metrics of engine and loop must lie within 1e-4 of
TransformerLens's (of each other's on the mixed dataset), or the script stops with exit
status 1. Then ``--repeats`` timed rounds; within a round the methods of a sweep run back
to back in an order that rotates from round to round. Reported: median seconds, the
ratios TL ÷ engine and loop ÷ engine, and each ratio's exact-FLOP bound.

Cost model (``costs.py``, floating-point operations, a multiply-add counted as 2):

- TransformerLens and the loop: per prompt, one full forward of the clean prompt (the
  cache) and one of the corrupted prompt per site; a full forward runs every block at
  every position (``24·d² + 4·d·(p + 1)`` at position p, attention over p + 1 keys) and
  unembeds every position into the whole vocabulary (``2·d·V`` each).
- Any exact method: the clean and the corrupted run once each (logits of the 2 answers at
  the last position only), then per site and prompt only what the patch can change:
  nothing for a patch that writes the value already there (a position before the pair's
  first differing token; the embeddings where the two tokens agree); a residual patch at
  (L, p): blocks L and up at positions p and on; a head at layer L over all positions:
  from the first differing position on, its slice of the output projection and the MLP
  at layer L, then the blocks above; plus ``2·d·2`` for the metric's logits.

The bound printed beside a ratio is TL's (or the loop's) FLOPs ÷ that minimum: the
speed-up over that method an exact method would reach if its time followed its FLOPs. A
ratio is "within 25 %" of its bound when it reaches at least 75 % of it. A ratio can
exceed its bound: time does not follow FLOPs one to one (per-forward Python and hook
overhead; small matrix products run slower per FLOP than large ones).

Usage: ``python benchmarks/dataset.py [--pairs 8 32] [--corruptions first_clause s2_only]
[--mixed-pairs 32] [--repeats 3] [--threads N] [--quick] [--output PATH]``; results in
``benchmarks/results/dataset.json`` (``dataset-quick.json`` for ``--quick``).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # TL's sweeps draw a bar per call; read at import
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from common import (
    CORRUPTIONS,
    FULL_SHAPE,
    QUICK_SHAPE,
    REPO,
    boot_bridge,
    default_config,
    environment,
    first_difference,
    ioi_pairs,
    process_peak_mb,
    save_random_gpt2,
    warn_if_busy,
    word_tokenizer,
    write_report,
)
from costs import Shape, sweep_flops

from patchsweep.capture import capture_run
from patchsweep.component_types import COMPONENT_TYPES
from patchsweep.config import EngineConfig, ModelConfig, SweepConfig
from patchsweep.datasets.base import PromptPair
from patchsweep.datasets.ioi import generate_ioi
from patchsweep.engine import PatchInputs, Sites, build_sites, run_patches
from patchsweep.metrics import logit_diff
from patchsweep.models import LoadedModel, load_model
from patchsweep.tokenize import TokenizedPairs, tokenize_pairs

RESULTS = REPO / "benchmarks" / "results"
# Engine and loop compute the definition in float32 through other kernels and hook
# points than TransformerLens: their raw metrics must agree with its to this bound.
TOLERANCE = 1e-4
WITHIN_BOUND = 0.75  # a ratio "within 25 % of its bound" reaches at least this share
MIXED_CORRUPTION = "abc"  # generate_ioi's: three fresh names at IO, S1 and S2


@dataclass(frozen=True)
class Sweep:
    """One benchmarked sweep, denoising: the engine's component and positions, and the
    TransformerLens function that runs it (None where it has none)."""

    name: str
    component: str  # resid_pre | z
    positions: str  # each | all | labels (SweepConfig.positions)
    tl_function: str | None


EQUAL_SWEEPS = (
    Sweep("resid_pre_layer_pos", "resid_pre", "each", "get_act_patch_resid_pre"),
    Sweep("head_all_pos", "z", "all", "get_act_patch_attn_head_out_all_pos"),
)
MIXED_SWEEPS = (
    Sweep("resid_pre_layer_label", "resid_pre", "labels", None),
    Sweep("head_all_pos", "z", "all", None),
)


@dataclass
class Dataset:
    """One dataset of the benchmark and the methods timed on it."""

    name: str
    corruption: str
    pairs: TokenizedPairs
    sweeps: tuple[Sweep, ...]
    methods: tuple[str, ...]
    sites: dict[str, Sites]  # by sweep name, from the engine's build_sites


# --- the three methods -----------------------------------------------------------------


def engine(
    model: LoadedModel, sweep: Sweep, pairs: TokenizedPairs, sites: Sites, cfg: EngineConfig
) -> torch.Tensor:
    """(S, N) the pipeline's path: capture both runs (the component's store and the
    residual stream), then ``run_patches``; the capture is part of the time."""
    store = COMPONENT_TYPES[sweep.component].store
    caches = {
        run: capture_run(model, ids, pairs.lengths, (store,), progress=False)
        for run, ids in (("clean", pairs.clean_ids), ("corrupted", pairs.corrupted_ids))
    }
    inputs = PatchInputs.for_sweep(
        pairs,
        sweep.component,
        "denoise",
        source_run=caches["clean"],
        target_run=caches["corrupted"],
        clean_logits=caches["clean"]["logits"],
        target_logits=caches["corrupted"]["logits"],
    )
    return run_patches(
        model,
        sweep.component,
        sites,
        inputs,
        logit_diff,
        budget_mb=cfg.memory_budget_mb,
        max_batch=cfg.max_batch,
        progress=False,
    )


def _site(lm: Any, component: str, layer: int) -> Any:
    """The activation a component names, in nnsight: a block's input, or the input of
    the attention output projection, (batch, pos, n_head · d_head)."""
    block = lm.transformer.h[layer]
    return block.input if component == "resid_pre" else block.attn.c_proj.input


@torch.no_grad()
def nnsight_loop(
    model: LoadedModel, sweep: Sweep, pairs: TokenizedPairs, sites: Sites
) -> torch.Tensor:
    """(S, N) per group of prompts of one length: one trace of the clean prompts caching
    the component at every layer, then one trace of all corrupted prompts per site, each
    row patched at its own site; full logits, as a plain forward returns them."""
    lm, dims = model.lm, model.dims
    values = torch.full((len(sites), pairs.n_pairs), float("nan"))
    for length in torch.unique(pairs.lengths).tolist():
        rows = torch.nonzero(pairs.lengths == length).flatten()
        clean, corrupted = pairs.clean_ids[rows, :length], pairs.corrupted_ids[rows, :length]
        correct, incorrect = pairs.correct_ids[rows], pairs.incorrect_ids[rows]
        cache: dict[int, Any] = {}  # created outside the trace to stay visible after it
        with lm.trace(clean):
            for layer in range(dims.n_layers):
                cache[layer] = _site(lm, sweep.component, layer).clone().save()
        batch = torch.arange(len(rows))
        for s in range(len(sites)):
            layer, head = int(sites.layers[s]), int(sites.heads[s])
            positions = sites.positions[s, rows]
            source = cache[layer]
            with lm.trace(corrupted):
                act = _site(lm, sweep.component, layer)
                if head >= 0:  # one head's slice, every position
                    cols = slice(head * dims.d_head, (head + 1) * dims.d_head)
                    act[:, :, cols] = source[:, :, cols]
                elif bool((positions < 0).all()):  # every position
                    act[:] = source
                else:  # each row its own position
                    act[batch, positions] = source[batch, positions]
                logits = lm.output.logits[:, -1].save()
            values[s, rows] = logit_diff(logits, correct, incorrect)
    return values


@torch.no_grad()
def transformer_lens(bridge: Any, sweep: Sweep, pairs: TokenizedPairs) -> torch.Tensor:
    """(S, N) TL's cache of the clean prompts, then its patching function: one forward
    of all N corrupted prompts per site, per-prompt values kept (``reduce="none"``)."""
    from transformer_lens import patching

    assert sweep.tl_function is not None
    hook = {"resid_pre": "hook_resid_pre", "z": "hook_z"}[sweep.component]
    _, cache = bridge.run_with_cache(pairs.clean_ids, names_filter=lambda n: n.endswith(hook))

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logit_diff(logits[:, -1], pairs.correct_ids, pairs.incorrect_ids)

    result = getattr(patching, sweep.tl_function)(
        bridge, pairs.corrupted_ids, cache, metric, reduce="none"
    )
    return result.values.flatten(0, -2).cpu()  # (layer, pos | head, N) → (S, N)


# --- datasets --------------------------------------------------------------------------


def equal_length_prompts(n: int, corruption: str) -> list[PromptPair]:
    return ioi_pairs(n, seed=0, corruption=corruption)


def mixed_length_prompts(n: int) -> list[PromptPair]:
    return generate_ioi(n, seed=0, corruption=MIXED_CORRUPTION)


def build_datasets(
    model: LoadedModel, prompts: dict[str, tuple[str, list[PromptPair]]]
) -> list[Dataset]:
    """Tokenize each dataset and build its sites with the engine's ``build_sites``: the
    loop and TL patch the same sites in the same order."""
    datasets = []
    for name, (corruption, pairs_list) in prompts.items():
        pairs = tokenize_pairs(pairs_list, model.tokenizer)
        mixed = name.startswith("mixed")
        sweeps = MIXED_SWEEPS if mixed else EQUAL_SWEEPS
        sites = {
            s.name: build_sites(
                s.name,
                SweepConfig(component=s.component, direction="denoise", positions=s.positions),
                pairs,
                model.dims,
            )
            for s in sweeps
        }
        methods = ("loop", "engine") if mixed else ("tl", "loop", "engine")
        datasets.append(Dataset(name, corruption, pairs, sweeps, methods, sites))
    return datasets


def baselines(model: LoadedModel, pairs: TokenizedPairs) -> dict[str, list[float]]:
    """Unpatched clean and corrupted metrics per prompt, for scale."""
    out = {}
    for run, ids in (("clean", pairs.clean_ids), ("corrupted", pairs.corrupted_ids)):
        logits = capture_run(model, ids, pairs.lengths, ("resid",), progress=False)["logits"]
        out[run] = logit_diff(logits, pairs.correct_ids, pairs.incorrect_ids).tolist()
    return out


# --- reporting -------------------------------------------------------------------------


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference; infinite if either has a missing (NaN) value."""
    if bool(a.isnan().any() or b.isnan().any()):
        return float("inf")
    return float((a - b).abs().max())


def differences(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Engine and loop against TL where it ran, else the engine against the loop."""
    if "tl" in values:
        pairs = (("engine", "tl"), ("loop", "tl"), ("engine", "loop"))
    else:
        pairs = (("engine", "loop"),)
    return {f"{a}_vs_{b}": max_diff(values[a], values[b]) for a, b in pairs}


def checked(diffs: dict[str, float]) -> dict[str, bool]:
    """The bounded differences: each method against the reference (TL, else the loop)."""
    keys = ("engine_vs_tl", "loop_vs_tl") if "engine_vs_tl" in diffs else ("engine_vs_loop",)
    return {k: diffs[k] <= TOLERANCE for k in keys}


def summarise(
    dataset: Dataset,
    sweep: Sweep,
    values: dict[str, torch.Tensor],
    warm: dict[str, float],
    times: dict[str, list[float]],
    flops: dict[str, float],
) -> dict[str, Any]:
    seconds = {m: statistics.median(t) for m, t in times.items()} if times else {}
    diffs = differences(values)
    row: dict[str, Any] = {
        "component": sweep.component,
        "positions": sweep.positions,
        "direction": "denoise",
        "sites": len(dataset.sites[sweep.name]),
        "seconds": seconds,
        "seconds_all_repeats": times,
        "seconds_warmup": warm,
        "flops": flops,
        "max_abs_diff": diffs,
        "within_tolerance": checked(diffs),
        "metric_range": [float(values["engine"].min()), float(values["engine"].max())],
    }
    if seconds:
        others = [m for m in dataset.methods if m != "engine"]
        ratio = {f"{m}_over_engine": seconds[m] / seconds["engine"] for m in others}
        bound = {f"{m}_over_engine": flops[m] / flops["exact"] for m in others}
        row["ratio"] = ratio
        row["flop_bound"] = bound
        row["share_of_bound"] = {k: ratio[k] / bound[k] for k in ratio}
        row["within_25pct_of_bound"] = {k: ratio[k] >= WITHIN_BOUND * bound[k] for k in ratio}
    return row


def dataset_info(dataset: Dataset, base: dict[str, list[float]]) -> dict[str, Any]:
    pairs = dataset.pairs
    first = first_difference(pairs.clean_ids, pairs.corrupted_ids)
    lengths = torch.unique(pairs.lengths, return_counts=True)
    return {
        "pairs": pairs.n_pairs,
        "corruption": dataset.corruption,
        "corruption_detail": CORRUPTIONS.get(dataset.corruption, "generate_ioi's abc"),
        "tokens_by_length": dict(zip(*(t.tolist() for t in lengths), strict=True)),
        "first_difference": sorted(set(first.tolist())),
        "labels": sorted(pairs.label_positions),
        "example": {"clean": " ".join(pairs.tokens[0])},
        "clean_metric_mean": statistics.fmean(base["clean"]),
        "corrupted_metric_mean": statistics.fmean(base["corrupted"]),
        "sweeps": {},
    }


def _cell(row: dict[str, Any], method: str) -> str:
    """`ratio | bound | share, within?` for one method against the engine."""
    key = f"{method}_over_engine"
    ratio, bound = row["ratio"][key], row["flop_bound"][key]
    ok = "yes" if row["within_25pct_of_bound"][key] else "no"
    return f"{ratio:.1f}× | {bound:.1f}× | {row['share_of_bound'][key]:.0%} {ok}"


def markdown_tables(report: dict[str, Any]) -> str:
    """The results as markdown the README can quote."""
    lines = [
        "| pairs | corruption | first diff | sweep | sites | TL s | loop s | engine s "
        "| TL/engine | bound | of bound, ≥ 75 %? | loop/engine | bound | of bound, ≥ 75 %? "
        "| max abs diff engine−TL, loop−TL |",
        "|" + "---|" * 15,
    ]
    mixed = []
    for info in report["datasets"].values():
        for name, row in info["sweeps"].items():
            s, d = row["seconds"], row["max_abs_diff"]
            first = ",".join(map(str, info["first_difference"]))
            if "tl" not in s:
                mixed.append((info, name, row))
                continue
            lines.append(
                f"| {info['pairs']} | {info['corruption']} | {first} | {name} | {row['sites']} "
                f"| {s['tl']:.2f} | {s['loop']:.2f} | {s['engine']:.2f} | {_cell(row, 'tl')} "
                f"| {_cell(row, 'loop')} | {d['engine_vs_tl']:.1e}, {d['loop_vs_tl']:.1e} |"
            )
    if mixed:
        lines += [
            "",
            "| pairs | tokens: prompts | first diff | sweep | sites | loop s | engine s "
            "| loop/engine | bound | of bound, ≥ 75 %? | max abs diff engine−loop |",
            "|" + "---|" * 11,
        ]
        for info, name, row in mixed:
            s = row["seconds"]
            groups = ", ".join(f"{t}: {n}" for t, n in info["tokens_by_length"].items())
            first = ",".join(map(str, info["first_difference"]))
            lines.append(
                f"| {info['pairs']} | {groups} | {first} | {name} | {row['sites']} "
                f"| {s['loop']:.2f} | {s['engine']:.2f} | {_cell(row, 'loop')} "
                f"| {row['max_abs_diff']['engine_vs_loop']:.1e} |"
            )
    return "\n".join(lines)


def print_header(report: dict[str, Any]) -> None:
    env, model = report["environment"], report["model"]
    load = "/".join(f"{x:.1f}" for x in env["load_average_start"])
    end = "/".join(f"{x:.1f}" for x in report.get("load_average_end", []))
    print(
        f"\ntorch {env['torch']}, transformer-lens {env['transformer_lens']}, nnsight "
        f"{env['nnsight']}; {env['torch_threads']} torch threads; {env['cpu_model']} "
        f"({env['cpu_count']} cores); load average {load} → {end}"
    )
    print(
        f"model {model['shape']} ({model['parameter_mb']:.0f} MB of parameters); denoising, "
        f"logit difference; median of {report['repeats']} timed rounds after one warm-up; "
        f"engine memory_budget_mb {report['engine_config']['memory_budget_mb']}\n"
    )


def failures(report: dict[str, Any]) -> list[str]:
    return [
        f"{dataset} {sweep}: {key} = {row['max_abs_diff'][key]:.2e} > {TOLERANCE:.0e}"
        for dataset, info in report["datasets"].items()
        for sweep, row in info["sweeps"].items()
        for key, ok in row["within_tolerance"].items()
        if not ok
    ]


# --- main ------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    gc.collect()
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pairs",
        type=int,
        nargs="+",
        default=None,
        help="equal-length dataset sizes (default 8 32; --quick 2 4)",
    )
    parser.add_argument(
        "--corruptions",
        nargs="+",
        choices=sorted(CORRUPTIONS),
        default=list(CORRUPTIONS),
        help="corruption styles of the equal-length datasets (default both)",
    )
    parser.add_argument(
        "--mixed-pairs",
        type=int,
        default=None,
        help="pairs of the mixed-length dataset, 0 to leave it out (default 32; --quick 6)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up")
    parser.add_argument(
        "--quick", action="store_true", help="a 2-layer toy model and few pairs: does it run?"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch threads, the same for every method",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="JSON path (default benchmarks/results/dataset[-quick].json)",
    )
    args = parser.parse_args(argv)
    sizes = args.pairs or ([2, 4] if args.quick else [8, 32])
    mixed_pairs = args.mixed_pairs if args.mixed_pairs is not None else (6 if args.quick else 32)
    torch.set_num_threads(args.threads)
    warn_if_busy(args.threads)
    output = args.output or RESULTS / ("dataset-quick.json" if args.quick else "dataset.json")
    cfg = default_config(EngineConfig, "engine")
    env = environment(args.threads)

    prompts: dict[str, tuple[str, list[PromptPair]]] = {
        f"{n}-{c}": (c, equal_length_prompts(n, c)) for n in sizes for c in args.corruptions
    }
    if mixed_pairs:
        prompts[f"mixed-{mixed_pairs}"] = (MIXED_CORRUPTION, mixed_length_prompts(mixed_pairs))
    texts = [t for _, ps in prompts.values() for p in ps for t in (p.clean, p.corrupted)]
    with tempfile.TemporaryDirectory(prefix="patchsweep-bench-") as tmp:
        folder = Path(tmp)
        shape = QUICK_SHAPE if args.quick else FULL_SHAPE
        param_bytes = save_random_gpt2(folder, shape, word_tokenizer(texts))
        model = load_model(ModelConfig(name="gpt2-small-random", path=str(folder)))
        bridge = boot_bridge(folder, model.tokenizer)
    datasets = build_datasets(model, prompts)
    for dataset in datasets:
        if "tl" in dataset.methods and dataset.pairs.clean_ids.shape[1] != 16:
            raise RuntimeError(f"{dataset.name}: expected 16 tokens, got {dataset.pairs.tokens}")
    with torch.no_grad():
        bridge(datasets[0].pairs.clean_ids[:1])  # page in the bridge's copy of the weights
    cost = Shape.of(model.dims, model.hf.config)

    runners: dict[str, Callable[[Dataset, Sweep], torch.Tensor]] = {
        "tl": lambda d, s: transformer_lens(bridge, s, d.pairs),
        "loop": lambda d, s: nnsight_loop(model, s, d.pairs, d.sites[s.name]),
        "engine": lambda d, s: engine(model, s, d.pairs, d.sites[s.name], cfg),
    }
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
        },
        "engine_config": {"memory_budget_mb": cfg.memory_budget_mb, "max_batch": cfg.max_batch},
        "repeats": args.repeats,
        "tolerance": TOLERANCE,
        "within_bound_share": WITHIN_BOUND,
        "cost_model": (
            "FLOPs, multiply-add = 2; block at position p: 24·d² + 4·d·(p+1); full forward: "
            "every block at every position + 2·d·V per position; TL and loop: 1 + sites full "
            "forwards per prompt; exact: clean and corrupted runs (2 logit columns at the last "
            "position) + per site and prompt the blocks from the patched layer up at the "
            "positions from max(patched, first differing) on (z at its layer: the head's "
            "output-projection slice and the MLP), none for a patch that writes what is there"
        ),
        "datasets": {d.name: dataset_info(d, baselines(model, d.pairs)) for d in datasets},
    }

    values: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    warm: dict[tuple[str, str], dict[str, float]] = {}
    for dataset in datasets:
        for sweep in dataset.sweeps:
            key = (dataset.name, sweep.name)
            values[key], warm[key] = {}, {}
            for m in dataset.methods:
                values[key][m], warm[key][m] = timed(
                    lambda m=m, d=dataset, s=sweep: runners[m](d, s)
                )
                print(
                    f"warm-up {dataset.name:<18}{sweep.name:<23}{m:<8}{warm[key][m]:8.2f} s",
                    flush=True,
                )
    flops = {
        (d.name, s.name): sweep_flops(cost, s.component, d.sites[s.name], d.pairs)
        for d in datasets
        for s in d.sweeps
    }

    def fill(times: dict[tuple[str, str], dict[str, list[float]]]) -> None:
        for dataset in datasets:
            for sweep in dataset.sweeps:
                key = (dataset.name, sweep.name)
                report["datasets"][dataset.name]["sweeps"][sweep.name] = summarise(
                    dataset, sweep, values[key], warm[key], times.get(key, {}), flops[key]
                )

    fill({})
    bad = failures(report)
    if bad:
        report["load_average_end"] = list(os.getloadavg())
        write_report(output, report)
        print("\nRAW METRICS DISAGREE after the warm-up:\n  " + "\n  ".join(bad), file=sys.stderr)
        sys.exit(1)
    for name, info in report["datasets"].items():
        for sweep_name, row in info["sweeps"].items():
            diffs = "  ".join(f"{k} {v:.1e}" for k, v in row["max_abs_diff"].items())
            print(f"max abs diff {name:<18}{sweep_name:<23}{diffs}")
    print(f"warm-up: every method agrees within {TOLERANCE:g}", flush=True)

    times: dict[tuple[str, str], dict[str, list[float]]] = {
        (d.name, s.name): {m: [] for m in d.methods} for d in datasets for s in d.sweeps
    }
    for r in range(args.repeats):
        for dataset in datasets:
            for sweep in dataset.sweeps:
                key, ms = (dataset.name, sweep.name), dataset.methods
                for m in ms[r % len(ms) :] + ms[: r % len(ms)]:
                    _, seconds = timed(lambda m=m, d=dataset, s=sweep: runners[m](d, s))
                    times[key][m].append(seconds)
                print(
                    f"repeat {r + 1}/{args.repeats} {dataset.name:<18}{sweep.name:<23}"
                    + "  ".join(f"{m} {times[key][m][-1]:.2f} s" for m in ms),
                    flush=True,
                )
    if args.repeats:
        fill(times)
    report["load_average_end"] = list(os.getloadavg())
    report["peak_rss_process_mb"] = process_peak_mb()
    print_header(report)
    if args.repeats:
        report["markdown"] = markdown_tables(report)
        print(report["markdown"])
    print(f"\nall methods agree within {TOLERANCE:g} (raw metrics, every site × prompt)")
    write_report(output, report)
    return report


if __name__ == "__main__":
    main()
