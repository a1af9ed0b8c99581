"""What half-precision activation storage (``capture.storage_dtype``) costs in accuracy.

The capture stage can store the clean and corrupted activations in float16 or bfloat16
instead of the model's float32: half the disk. Readers cast them back to float32, so
every patch then writes a rounded source value and starts from a rounded target residual
stream. This script measures what that rounding does to the results, on the bundled
model organism (``data/models/ioi-gpt2``, loaded offline) and the pipeline's own
settings: for each dataset, the config ``conf/`` composes for it (prompts, capture,
engine and stats keys) and the sweeps ``params.yaml`` runs on it (the exact sweeps, plus
the attribution sweeps for the datasets listed under ``attributed``).

Per dataset and storage dtype (float32, float16, bfloat16) it runs the capture stage's
writer (``capture_pairs``) into a temporary folder, reads the files back through the
patch stages' reader (``load_activations``: checks, then the cast to the model's dtype),
and runs every sweep with ``ps.sweep`` on those runs (its validity checks included).
Printed side by side: activation bytes stored per prompt pair (both runs' files; the
float32 final logits come on top), and per sweep the max and median absolute difference
of the normalised effect from float32 storage, and the worst raw-metric difference.

Usage: ``python benchmarks/storage_dtype.py [--datasets ioi induction factual]
[--threads 1] [--output benchmarks/results/storage_dtype.txt]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pandas as pd
import torch
import yaml
from common import REPO

import patchsweep as ps
from patchsweep.capture import capture_pairs, plan_capture
from patchsweep.config import Config, compose_config, to_object
from patchsweep.engine.sweep import Runs
from patchsweep.io import read_tensors, tensor_hash
from patchsweep.models import LoadedModel, torch_dtype
from patchsweep.noise import corruption_noise
from patchsweep.paths import RUNS, ExperimentPaths
from patchsweep.stored import expected_meta, load_activations, storage_meta

STORAGE: tuple[str | None, ...] = (None, "float16", "bfloat16")  # None: the model's float32
DATASETS = ("ioi", "induction", "factual")  # factual: a noise corruption
OUTPUT = "storage_dtype.txt"


def pipeline_config(dataset: str) -> Config:
    """The composed config of organism × ``dataset``, with the sweeps params.yaml runs."""
    cfg = to_object(compose_config([f"dataset={dataset}"], REPO / "conf"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    names = list(params["sweep"])
    if dataset in params.get("attributed", {}):
        names += [s["name"] for s in params["attribution_sweep"]]
    cfg.sweeps = {name: cfg.sweeps[name] for name in names}
    cfg.engine.progress = False
    return cfg


def load_prompts(cfg: Config, model: LoadedModel) -> ps.Prompts:
    """The dataset as the tokenize stage builds it, through the Python API."""
    d = cfg.dataset
    return ps.load_prompts(
        d.generator,
        model,
        n_pairs=d.n_pairs,
        seed=d.seed,
        name=d.name,
        metric=d.metric or cfg.metric.name,
        score_from=d.score_from,
        noise=d.noise,
        **d.options,
    )


def stored_runs(
    model: LoadedModel, prompts: ps.Prompts, cfg: Config, storage: str | None, root: Path
) -> tuple[Runs, int]:
    """Capture both runs to files as the capture stage does, read them back as the patch
    stages do; the runs and the activation files' bytes."""
    exp = ExperimentPaths("organism", prompts.name, root=root)
    pairs = prompts.tokens
    plan = plan_capture(
        model.dims,
        cfg.capture.components,
        pairs.clean_ids.shape[1],
        model.dtype,
        cfg.capture.memory_budget_mb,
        cfg.capture.max_rows,
    )
    tokens = tensor_hash(pairs.clean_ids, pairs.corrupted_ids)
    meta = {**model.identity(), "tokens_hash": tokens, "seed": cfg.seed, **storage_meta(storage)}
    torch.manual_seed(cfg.seed)
    noise = corruption_noise(prompts.noise, pairs, model)
    files = {run: exp.activations(run) for run in RUNS}
    exp.activations(RUNS[0]).parent.mkdir(parents=True, exist_ok=True)
    dtype = torch_dtype(storage) if storage else None
    capture_pairs(
        model, pairs, plan, files, exp.final_logits, meta, noise, progress=False, storage=dtype
    )
    expected = expected_meta(model.identity(), tokens, storage)
    acts = {run: load_activations(exp, run, None, expected) for run in RUNS}
    runs = Runs(
        clean=acts["clean"],
        corrupted=acts["corrupted"],
        final_logits=read_tensors(exp.final_logits, ["clean", "corrupted"]),
        storage_dtype=dtype,
    )
    return runs, sum(path.stat().st_size for path in files.values())


def site_differences(base: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """Per site: |Δ normalised effect| and |Δ raw metric| of ``other`` from ``base``."""
    keys = ["sweep", "component", "direction", "layer", "head", "position", "window", "method"]
    joined = base.merge(other, on=keys, suffixes=("", "_half"), validate="one_to_one")
    if len(joined) != len(base):
        raise SystemExit("the half-precision sweep has other sites than the float32 one")
    return pd.DataFrame(
        {
            "sweep": joined["sweep"],
            "effect": (joined["normalized_half"] - joined["normalized"]).abs(),
            "metric": (joined["metric_half"] - joined["metric"]).abs(),
        }
    )


def per_sweep(diffs: pd.DataFrame) -> pd.DataFrame:
    """Sites, max and median |Δ normalised effect| and max |Δ raw metric| of each sweep."""
    return diffs.groupby("sweep", sort=False).agg(
        sites=("effect", "size"),
        max_effect=("effect", "max"),
        median_effect=("effect", "median"),
        max_metric=("metric", "max"),
    )


def run_dataset(model: LoadedModel, dataset: str, out: list[str]) -> None:
    """Every storage dtype on one dataset; its lines of the report."""
    cfg = pipeline_config(dataset)
    prompts = load_prompts(cfg, model)
    tables: dict[str | None, pd.DataFrame] = {}
    sizes: dict[str | None, int] = {}
    for storage in STORAGE:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            runs, sizes[storage] = stored_runs(model, prompts, cfg, storage, Path(tmp))
        metric = prompts.metric
        tables[storage] = ps.sweep(
            model, prompts, cfg.sweeps, runs=runs, metric=metric, engine=cfg.engine,
            stats=cfg.stats,
        )  # fmt: skip
        print(f"  {dataset} {storage or 'float32'}: {time.perf_counter() - start:.1f} s")
    n = len(prompts)
    out += ["", f"{dataset}: {n} pairs, metric {prompts.metric}, {len(cfg.sweeps)} sweeps"]
    line = "activation bytes per pair: " + ", ".join(
        f"{s or 'float32'} {sizes[s] / n:,.0f} ({sizes[s] / sizes[None]:.3f}×)" for s in STORAGE
    )
    out.append(line)
    diffs = {s: site_differences(tables[None], tables[s]) for s in STORAGE if s}
    sweeps = {s: per_sweep(d) for s, d in diffs.items()}
    head = f"{'sweep':<24}{'sites':>6}"
    for s in diffs:
        head += f"  {s + ' |Δeffect| max':>24}{'median':>9}{'|Δmetric| max':>15}"
    out.append(head)
    first = next(iter(sweeps.values()))
    for sweep in first.index:
        row = f"{sweep:<24}{int(first.loc[sweep, 'sites']):>6}"
        for table in sweeps.values():
            r = table.loc[sweep]
            row += f"  {r.max_effect:>24.2e}{r.median_effect:>9.1e}{r.max_metric:>15.2e}"
        out.append(row)
    for s, d in diffs.items():
        out.append(
            f"all {len(d)} sites, {s}: |Δeffect| max {d.effect.max():.2e}, median "
            f"{d.effect.median():.1e}; |Δmetric| max {d.metric.max():.2e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--output", type=Path, default=REPO / "benchmarks/results/storage_dtype.txt"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = ps.load_model(REPO / "data/models/ioi-gpt2", name="ioi-gpt2")
    out: list[str] = []
    for dataset in args.datasets:
        run_dataset(model, dataset, out)
    cpu = platform.processor() or platform.machine()
    header = [
        f"# benchmarks/storage_dtype.py: capture.storage_dtype float16 / bfloat16 against "
        f"float32 storage on the organism ({model.dims.n_layers} layers, "
        f"{model.dims.n_heads} heads, d_model {model.dims.d_model}); {os.cpu_count()}-core "
        f"CPU ({cpu}), torch {torch.__version__}, {args.threads} thread(s), "
        f"{time.perf_counter() - start:.0f} s",
        "# |Δeffect|: |normalised effect − its value from float32 storage| per site; "
        "|Δmetric|: the same for the raw metric (mean over prompts)",
    ]
    text = "\n".join(header + out) + "\n"
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
