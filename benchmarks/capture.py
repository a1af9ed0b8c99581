"""Peak memory of the capture stage, streamed to disk, against the in-memory path it replaced.

The capture stage runs every clean and corrupted prompt once and stores every activation
the sweeps patch: on a GPT-2-small shape with the default components (resid, z,
attn_out, mlp_out) that is ~3 MB per 20-token prompt and run. The stage now captures
chunks of prompts sized to ``capture.memory_budget_mb`` and writes each chunk into the
output file before the next runs (``patchsweep.capture.capture_pairs``), so its peak
memory should not depend on the number of prompts. The path it replaced
(``capture_run`` for each run, then ``write_tensors``) held whole runs in memory.

Like the capture stage, the script first has glibc serve allocations of 1 MiB or more by
mmap (``return_freed_memory_to_os``); the in-memory jobs run with that too.

Both paths run here on the same random GPT-2-small-shaped model (12 layers, 12 heads,
d_model 768, vocabulary 50,257; no hub: saved to a temporary folder with a word-level
tokenizer built from the prompts) and the same IOI pairs from the project's generator,
writing to a temporary folder. "RSS before the model" is read after a 2-layer toy model
has been built, loaded and traced once and dropped (so the program's code is loaded), and
before the full model is built. Each job's peak RSS is the kernel's high-water mark
(VmHWM), reset before the job through /proc/self/clear_refs. The check printed for the
streamed path is

    peak RSS ≤ RSS before the model was built + model parameters + capture.memory_budget_mb

Usage: ``python benchmarks/capture.py [--stream 250 1000] [--in-memory 250 1000]
[--quick] [--threads N]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from common import (
    REPO,
    default_config,
    measure_memory,
    release_freed_memory,
    save_random_gpt2,
    status_mb,
    word_tokenizer,
    write_report,
)

from patchsweep.capture import (
    capture_pairs,
    capture_run,
    plan_capture,
    return_freed_memory_to_os,
)
from patchsweep.config import CaptureConfig, ModelConfig
from patchsweep.datasets.ioi import generate_ioi
from patchsweep.io import write_tensors
from patchsweep.models import LoadedModel, load_model
from patchsweep.tokenize import TokenizedPairs, tokenize_pairs

RESULTS = REPO / "benchmarks" / "results"
FULL_SHAPE: dict[str, int] = {}  # GPT2Config() defaults: 12 layers, 12 heads, 768, 50257
QUICK_SHAPE = {"n_layer": 2, "n_head": 4, "n_embd": 64}
META = {"model": "gpt2-small-random", "tokens_hash": "benchmark", "seed": 0}
FILES = ("clean.safetensors", "corrupted.safetensors", "final_logits.safetensors")


def ioi_pairs(n: int) -> tuple[list[Any], Any]:
    """``n`` IOI pairs and a word-level tokenizer that holds every word in them."""
    prompts = generate_ioi(n, seed=0)
    texts = [t for p in prompts for t in (p.clean, p.corrupted, *p.correct, *p.incorrect)]
    return prompts, word_tokenizer(texts)


def subset(pairs: TokenizedPairs, n: int) -> TokenizedPairs:
    """The first ``n`` pairs, trimmed to their own longest prompt."""
    tensors = {k: v[:n] for k, v in pairs.to_tensors().items()}
    width = int(tensors["lengths"].max())
    for key in ("clean_ids", "corrupted_ids"):
        tensors[key] = tensors[key][:, :width].contiguous()
    return TokenizedPairs.from_tensors(tensors, pairs.tokens[:n], pairs.templates[:n])


def load_random_model(tokenizer: Any, shape: dict[str, int]) -> tuple[LoadedModel, int]:
    """The random GPT-2, loaded like a hub model and traced once; its parameter bytes.

    The trace pages in every weight and loads the code that tracing runs, so that no job
    pays for either.
    """
    with tempfile.TemporaryDirectory(prefix="patchsweep-bench-") as tmp:
        param_bytes = save_random_gpt2(Path(tmp), shape, tokenizer)
        model = load_model(ModelConfig(name=META["model"], path=tmp))
    capture_run(model, torch.tensor([[1, 2, 3]]), torch.tensor([3]), progress=False)
    release_freed_memory()
    return model, param_bytes


# --- the two paths ---------------------------------------------------------------------


def streamed(model: LoadedModel, pairs: TokenizedPairs, folder: Path, cfg: CaptureConfig) -> int:
    """The capture stage's path; returns the rows per forward pass it chose."""
    plan = plan_capture(
        model.dims,
        cfg.components,
        pairs.clean_ids.shape[1],
        model.dtype,
        cfg.memory_budget_mb,
        cfg.max_rows,
    )
    activations = {run: folder / f"{run}.safetensors" for run in ("clean", "corrupted")}
    capture_pairs(model, pairs, plan, activations, folder / FILES[2], META, progress=False)
    return plan.rows


def in_memory(model: LoadedModel, pairs: TokenizedPairs, folder: Path, cfg: CaptureConfig) -> int:
    """The stage as it was: each run captured whole in memory, then written."""
    logits = {}
    for run, ids in (("clean", pairs.clean_ids), ("corrupted", pairs.corrupted_ids)):
        acts = capture_run(model, ids, pairs.lengths, cfg.components, cfg.max_rows, progress=False)
        logits[run] = acts.pop("logits")
        write_tensors(folder / f"{run}.safetensors", acts, {**META, "run": run})
    write_tensors(folder / FILES[2], logits, META)
    return cfg.max_rows


PATHS: dict[str, Callable[[LoadedModel, TokenizedPairs, Path, CaptureConfig], int]] = {
    "streamed": streamed,
    "in-memory": in_memory,
}


def run_job(
    path: str, model: LoadedModel, pairs: TokenizedPairs, cfg: CaptureConfig
) -> dict[str, Any]:
    """One capture of both runs into a fresh folder: time, bytes written and peak RSS."""
    with tempfile.TemporaryDirectory(prefix="patchsweep-capture-") as tmp:
        start = time.perf_counter()
        rows, memory = measure_memory(lambda: PATHS[path](model, pairs, Path(tmp), cfg))
        seconds = time.perf_counter() - start
        written = sum((Path(tmp) / name).stat().st_size for name in FILES)
    release_freed_memory()
    return {
        "path": path,
        "pairs": pairs.n_pairs,
        "tokens": 2 * int(pairs.lengths.sum()),
        "max_tokens": int(pairs.clean_ids.shape[1]),
        "rows_per_pass": rows,
        "bytes_written": written,
        "seconds": seconds,
        **memory,
    }


# --- reporting -------------------------------------------------------------------------


def bound_check(report: dict[str, Any]) -> None:
    """Add, per job, the budget inequality and whether it holds."""
    bound = report["rss_before_model_mb"] + report["parameter_mb"] + report["memory_budget_mb"]
    report["bound_mb"] = bound
    for job in report["jobs"]:
        job["within_bound"] = job["peak_rss_mb"] <= bound


def growth_per_pair(jobs: list[dict[str, Any]], path: str) -> float | None:
    """Peak RSS growth per extra pair between the smallest and largest job of a path (MB)."""
    mine = sorted((j for j in jobs if j["path"] == path), key=lambda j: j["pairs"])
    if len(mine) < 2 or mine[0]["pairs"] == mine[-1]["pairs"]:
        return None
    first, last = mine[0], mine[-1]
    return (last["peak_rss_mb"] - first["peak_rss_mb"]) / (last["pairs"] - first["pairs"])


def print_table(report: dict[str, Any]) -> None:
    print(
        f"\nmodel {report['shape']}: {report['parameter_mb']:.0f} MB of parameters; "
        f"capture.components {report['components']}, capture.memory_budget_mb "
        f"{report['memory_budget_mb']:g}, capture.max_rows {report['max_rows']}; "
        f"torch threads {report['threads']}"
    )
    print(
        f"RSS before the model {report['rss_before_model_mb']:.0f} MB, with it loaded "
        f"{report['rss_with_model_mb']:.0f} MB\n"
    )
    head = (
        f"{'path':<11}{'pairs':>6}{'tokens':>8}{'rows/pass':>10}{'GB written':>11}"
        f"{'s':>7}{'RSS before MB':>14}{'peak RSS MB':>12}{'≤ bound':>8}"
    )
    print(head)
    print("-" * len(head))
    for job in report["jobs"]:
        print(
            f"{job['path']:<11}{job['pairs']:>6}{job['tokens']:>8}{job['rows_per_pass']:>10}"
            f"{job['bytes_written'] / 1e9:>11.2f}{job['seconds']:>7.1f}"
            f"{job['rss_before_mb']:>14.0f}{job['peak_rss_mb']:>12.0f}"
            f"{'yes' if job['within_bound'] else 'NO':>8}"
        )
    print(
        f"\nbound: peak RSS ≤ RSS before model {report['rss_before_model_mb']:.0f} + model "
        f"{report['parameter_mb']:.0f} + capture.memory_budget_mb "
        f"{report['memory_budget_mb']:g} = {report['bound_mb']:.0f} MB "
        "(for the in-memory path the same bound is shown for contrast)"
    )
    for path, slope in report["peak_growth_mb_per_pair"].items():
        if slope is not None:
            print(f"{path}: peak RSS grows {slope:.2f} MB per extra pair")


# --- main ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", type=int, nargs="+", default=[250, 1000], help="pair counts")
    parser.add_argument(
        "--in-memory", type=int, nargs="*", default=[250, 1000], help="pair counts (0 or more)"
    )
    parser.add_argument("--quick", action="store_true", help="a 2-layer toy model, 50/200 pairs")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", type=Path, default=None, help="JSON path")
    args = parser.parse_args(argv)
    return_freed_memory_to_os()  # as the capture stage does; the in-memory jobs get it too
    if args.quick:
        args.stream, args.in_memory = [50, 200], [50, 200]
    torch.set_num_threads(args.threads)
    output = args.output or RESULTS / ("capture-quick.json" if args.quick else "capture.json")
    cfg = default_config(CaptureConfig, "capture")

    prompts, tokenizer = ioi_pairs(max(args.stream + args.in_memory))
    # A 2-layer toy first: the code it loads (transformers' GPT-2, nnsight, kernels) is
    # the program's, not the model's, and would otherwise count as the model's memory.
    load_random_model(tokenizer, QUICK_SHAPE)  # and dropped
    release_freed_memory()
    rss_before_model = status_mb("VmRSS")
    model, param_bytes = load_random_model(tokenizer, QUICK_SHAPE if args.quick else FULL_SHAPE)
    pairs = tokenize_pairs(prompts, model.tokenizer)
    report: dict[str, Any] = {
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "load_average_start": list(os.getloadavg()),
        },
        "shape": dataclasses.asdict(model.dims),
        "parameter_mb": param_bytes / 2**20,
        "components": list(cfg.components),
        "memory_budget_mb": cfg.memory_budget_mb,
        "max_rows": cfg.max_rows,
        "threads": args.threads,
        "rss_before_model_mb": rss_before_model,
        "rss_with_model_mb": status_mb("VmRSS"),
        "jobs": [],
    }
    for path, counts in (("streamed", args.stream), ("in-memory", args.in_memory)):
        for count in counts:
            job = run_job(path, model, subset(pairs, count), cfg)
            report["jobs"].append(job)
            print(f"{path:<10}{count:>6} pairs {job['seconds']:6.1f} s", flush=True)
    bound_check(report)
    report["peak_growth_mb_per_pair"] = {p: growth_per_pair(report["jobs"], p) for p in PATHS}
    report["environment"]["load_average_end"] = list(os.getloadavg())
    print_table(report)
    write_report(output, report)
    return report


if __name__ == "__main__":
    main()
