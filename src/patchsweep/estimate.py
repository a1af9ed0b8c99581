"""What a pipeline will cost before it runs: passes, seconds, memory and disk per stage.

Each patch stage is planned exactly as the engine will run it: the same sites, the same
rows (less those the engine skips because the patch would write what is already there),
and the same split into forward passes (:func:`patchsweep.engine.tiling.plan_group`). A
pass computes its tokens × the layers from its lowest patched one up; summed over a stage,
in units of one prompt's full forward pass, that is the stage's *forward-pass
equivalents* (the unit in which exact patching's cost is usually counted).

Seconds come from a calibration on this machine: timed forward passes of one row and of
a batch give the fixed cost of a pass and the cost of one full row, and a subprocess
times a stage's start-up (interpreter, imports, model load). Only calibration loads
weights, once per model; the rest reads configs and tokenizers.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from patchsweep.capture import plan_capture, prompt_bytes, stored_specs
from patchsweep.components import Architecture, Dimensions, architecture_for, dimensions_of
from patchsweep.config import Config, NoiseConfig, compose_config, to_object
from patchsweep.engine.accounting import PassShape
from patchsweep.engine.attribution import planned_passes
from patchsweep.engine.inputs import first_differences, writes_nothing_new
from patchsweep.engine.sites import Sites, build_sites
from patchsweep.engine.sweep import packable
from patchsweep.engine.tiling import all_rows, pass_shape, plan_group
from patchsweep.errors import ConfigError
from patchsweep.models import LoadedModel, hf_config, load_model, load_tokenizer, torch_dtype
from patchsweep.paths import ExperimentPaths
from patchsweep.prompts import prepare_pairs
from patchsweep.stages.compose import finish
from patchsweep.tokenize import TokenizedPairs

STAGE_IMPORTS = "import patchsweep.stages.patch, nnsight"  # what a model stage imports


@dataclass
class StageCost:
    """One stage's predicted cost."""

    stage: str
    sites: int = 0
    rows: int = 0  # patched rows (site × prompt) the engine runs
    passes: int = 0
    forward_equivalents: float = 0.0  # in full forward passes of one prompt
    seconds: float = 0.0
    peak_mb: float = 0.0  # working memory of the largest pass
    budget_mb: float = 0.0  # the budget that bounds it
    disk_mb: float = 0.0  # what the stage writes


@dataclass
class Calibration:
    """Seconds on this machine for one model."""

    pass_s: float  # a forward pass's fixed cost
    row_s: float  # one prompt's full forward pass, at ``length`` tokens
    length: int
    startup_s: float  # interpreter, imports and model load of a model stage

    def compute_s(self, passes: int, equivalents: float) -> float:
        return passes * self.pass_s + equivalents * self.row_s


@dataclass
class ExperimentCost:
    model: str
    dataset: str
    prompts: int
    stages: list[StageCost] = field(default_factory=list)


def experiments_of(root: Path) -> list[tuple[str, str]]:
    """Every (model, dataset) of ``params.yaml``, as dvc.yaml's matrix runs them."""
    params = yaml.safe_load((root / "params.yaml").read_text()) or {}
    return [(m, d) for m in params.get("model", {}) for d in params.get("dataset", {})]


def experiment_config(model: str, dataset: str, root: Path) -> Config:
    """The config one experiment's stages will read, composed without writing it."""
    exp = ExperimentPaths(model, dataset, root=root)
    cfg = compose_config([f"model={model}", f"dataset={dataset}"], root / "conf")
    return to_object(finish(exp, cfg))


STAGE_OF_METHOD = {"exact": "patch", "attribution": "attribute"}
# A backward pass costs about twice its forward pass.
ATTRIBUTION_PASS_COST = 3.0


def where_runs_differ(pairs: TokenizedPairs, noise: NoiseConfig) -> torch.Tensor:
    """(N,) where each pair's two runs first differ, as the engine will find it from the
    stored runs: the first different token, or the first noised one."""
    if noise.scale <= 0:
        return first_differences(pairs.clean_ids, pairs.corrupted_ids)
    positions = torch.arange(pairs.clean_ids.shape[1])
    start = pairs.label_positions[noise.labels[0]].unsqueeze(1)
    stop = pairs.label_positions[noise.labels[-1]].unsqueeze(1)
    return first_differences(
        pairs.clean_ids, pairs.corrupted_ids, (positions >= start) & (positions <= stop)
    )


def plan_sweep(
    name: str,
    cfg: Config,
    pairs: TokenizedPairs,
    dims: Dimensions,
    arch: Architecture,
    model_config: Any,
) -> tuple[Sites, list[PassShape]]:
    """A sweep's sites, and every pass the engine will run for them, prefix passes
    included (one per prompt length whose passes start late)."""
    sweep = cfg.sweeps[name]
    sites = build_sites(name, sweep, pairs, dims)
    if sweep.method == "attribution":
        passes = planned_passes(
            dims, pairs.lengths, sweep.component, cfg.engine.memory_budget_mb,
            cfg.engine.max_batch, sweep.grad_drop,
        )  # fmt: skip
        return sites, passes
    first_differ = where_runs_differ(pairs, cfg.dataset.noise)
    rows = all_rows(sites, pairs.lengths, first_differ)
    # the engine skips patches that write what is there: before the first position
    # where the two runs differ, every component is the same in both
    skipped = writes_nothing_new(rows.position, first_differ, rows.prompt, pairs.lengths)
    if sweep.component == "resid_pre" and sweep.window == 1 and cfg.dataset.noise.scale <= 0:
        # and the embeddings (resid_pre of layer 0) wherever the tokens are equal
        single = rows.position >= 0
        position = rows.position.clamp(min=0)
        same = pairs.clean_ids[rows.prompt, position] == pairs.corrupted_ids[rows.prompt, position]
        skipped |= single & (rows.layer == 0) & same
    bytes_per_value = torch_dtype(cfg.model.dtype).itemsize
    first_scored = _first_scored(pairs)
    shapes: list[PassShape] = []
    for length in torch.unique(pairs.lengths).tolist():
        members = torch.nonzero((pairs.lengths[rows.prompt] == length) & ~skipped).flatten()
        if len(members) == 0:
            continue
        packed = packable(arch, model_config, sweep.component, length)
        chunks = plan_group(
            rows, members, dims, length, cfg.engine.memory_budget_mb, cfg.engine.max_batch,
            bytes_per_value, packed,
        )  # fmt: skip
        group = [pass_shape(rows, c, dims, length, first_scored, packed, bytes_per_value)
                 for c in chunks]  # fmt: skip
        if any(shape.uses_prefix for shape in group):
            prompts = int((pairs.lengths == length).sum())
            shapes.append(PassShape("prefix", 0, prompts * length, dims.n_layers))
        shapes += group
    return sites, shapes


def _first_scored(pairs: TokenizedPairs) -> torch.Tensor:
    if pairs.score_positions is None:
        return pairs.lengths - 1
    scored = pairs.score_positions
    return torch.where(scored >= 0, scored, torch.iinfo(scored.dtype).max).min(1).values


def calibrate(cfg: Config, pairs: TokenizedPairs, root: Path) -> Calibration:
    """Time a stage's start-up and a few forward passes of this model on this machine."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", STAGE_IMPORTS], check=True, cwd=root)
    imports_s = time.perf_counter() - started
    import nnsight  # noqa: F401  (imported here untimed: the subprocess counted it)

    started = time.perf_counter()
    model = load_model(cfg.model)
    load_s = time.perf_counter() - started
    length = int(pairs.lengths.max())
    batch = min(16, cfg.engine.max_batch)
    ids = pairs.clean_ids[:1, :length].repeat(batch, 1)
    one = _median_pass_s(model, ids[:1])
    many = _median_pass_s(model, ids)
    row_s = max(many - one, 0.0) / (batch - 1)
    return Calibration(
        pass_s=max(one - row_s, 0.0), row_s=row_s, length=length, startup_s=imports_s + load_s
    )


def _median_pass_s(model: LoadedModel, ids: torch.Tensor, repeats: int = 5) -> float:
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            started = time.perf_counter()
            with model.trace(ids.to(model.device), logits_to_keep=1):
                model.lm.output.logits.save()
            times.append(time.perf_counter() - started)
    return statistics.median(times[1:])  # the first pass warms up


def estimate_experiment(
    model: str, dataset: str, root: Path, calibrations: dict[str, Calibration]
) -> ExperimentCost:
    """Every model stage of one experiment (calibrations filled in per model as needed)."""
    cfg = experiment_config(model, dataset, root)
    _, pairs = prepare_pairs(cfg.dataset, load_tokenizer(cfg.model))
    config = hf_config(cfg.model)
    dims, arch = dimensions_of(config), architecture_for(config)
    if cfg.model.path not in calibrations:
        calibrations[cfg.model.path] = calibrate(cfg, pairs, root)
    cal = calibrations[cfg.model.path]
    out = ExperimentCost(model, dataset, pairs.n_pairs)
    out.stages.append(_capture_cost(cfg, pairs, dims, cal))
    for name in cfg.sweeps:
        sites, shapes = plan_sweep(name, cfg, pairs, dims, arch, config)
        equivalents = forward_equivalents(shapes, dims, pairs)
        compute = cal.compute_s(len(shapes), equivalents * _scale(pairs, cal))
        patched = [s for s in shapes if s.layout != "prefix"]
        out.stages.append(
            StageCost(
                stage=f"{STAGE_OF_METHOD[cfg.sweeps[name].method]} {name}",
                sites=len(sites),
                rows=sum(s.rows for s in patched),
                passes=len(shapes),
                forward_equivalents=equivalents,
                seconds=cal.startup_s + compute,
                peak_mb=max((s.bytes for s in patched), default=0) / 2**20,
                budget_mb=cfg.engine.memory_budget_mb,
            )
        )
    return out


def forward_equivalents(shapes: list[PassShape], dims: Dimensions, pairs: TokenizedPairs) -> float:
    """Tokens × layers of the passes, in full forward passes of one (mean-length) prompt.
    An attribution pass, forward and backward, counts as three forward passes."""
    full = dims.n_layers * float(pairs.lengths.float().mean())
    weight = {"attribution": ATTRIBUTION_PASS_COST}
    return sum(s.token_layers * weight.get(s.layout, 1.0) for s in shapes) / full


def _scale(pairs: TokenizedPairs, cal: Calibration) -> float:
    """A row's cost at the dataset's mean length relative to the calibration length."""
    return float(pairs.lengths.float().mean()) / cal.length


def _capture_cost(
    cfg: Config, pairs: TokenizedPairs, dims: Dimensions, cal: Calibration
) -> StageCost:
    dtype = torch_dtype(cfg.model.dtype)
    width = int(pairs.lengths.max())
    scored = None if pairs.score_positions is None else pairs.score_positions.shape[1]
    # on disk in capture.storage_dtype; the logits stay float32 whatever it is
    stored = torch_dtype(cfg.capture.storage_dtype) if cfg.capture.storage_dtype else dtype
    specs = stored_specs(dims, cfg.capture.components, pairs.n_pairs, width, stored, scored)
    disk = 2 * sum(s.nbytes for s in specs.values())
    plan = plan_capture(
        dims, cfg.capture.components, width, dtype, cfg.capture.memory_budget_mb,
        cfg.capture.max_rows,
    )  # fmt: skip
    counts = torch.unique(pairs.lengths, return_counts=True)[1]
    passes = 2 * sum(math.ceil(int(n) / plan.rows) for n in counts)
    rows = 2 * pairs.n_pairs
    return StageCost(
        stage="capture",
        rows=rows,
        passes=passes,
        forward_equivalents=float(rows),
        seconds=cal.startup_s + cal.compute_s(passes, rows * _scale(pairs, cal)),
        peak_mb=plan.rows * prompt_bytes(dims, plan.components, width, dtype) / 2**20,
        budget_mb=cfg.capture.memory_budget_mb,
        disk_mb=disk / 2**20,
    )


def run_estimate(
    experiments: Sequence[str] | None = None, json_path: str | None = None, root: Path = Path(".")
) -> list[ExperimentCost]:
    """Print the estimate of every experiment (or those named ``model/dataset``)."""
    if not (root / "params.yaml").is_file():
        raise ConfigError(
            f"no params.yaml in {root.resolve()}", "run `patchsweep estimate` in the project root"
        )
    chosen = [_experiment(e) for e in experiments] if experiments else experiments_of(root)
    calibrations: dict[str, Calibration] = {}
    costs = [estimate_experiment(m, d, root, calibrations) for m, d in chosen]
    print(format_costs(costs, calibrations))
    if json_path:
        Path(json_path).write_text(
            json.dumps(
                {"calibration": {k: asdict(v) for k, v in calibrations.items()},
                 "experiments": [asdict(c) for c in costs]},
                indent=2,
            ) + "\n"
        )  # fmt: skip
    return costs


def _experiment(text: str) -> tuple[str, str]:
    model, sep, dataset = text.partition("/")
    if not sep or not model or not dataset:
        raise ConfigError(f"experiment {text!r} is not MODEL/DATASET", "e.g. -e organism/ioi")
    return model, dataset


def format_costs(costs: list[ExperimentCost], calibrations: dict[str, Calibration]) -> str:
    """The estimate as a table per experiment and a total."""
    lines = []
    for path, cal in calibrations.items():
        lines.append(
            f"calibration {path}: start-up {cal.startup_s:.1f} s, pass {cal.pass_s * 1e3:.1f} ms,"
            f" row {cal.row_s * 1e3:.2f} ms at {cal.length} tokens"
        )
    header = f"{'stage':<28}{'sites':>7}{'rows':>9}{'passes':>8}{'fwd eq.':>10}{'est. s':>9}"
    header += f"{'peak/budget MB':>17}{'disk MB':>9}"
    total_s, total_disk = 0.0, 0.0
    for cost in costs:
        noun = "prompt" if cost.prompts == 1 else "prompts"
        lines += ["", f"{cost.model}/{cost.dataset}: {cost.prompts} {noun}", header]
        for s in cost.stages:
            lines.append(
                f"{s.stage:<28}{s.sites:>7}{s.rows:>9}{s.passes:>8}{s.forward_equivalents:>10.1f}"
                f"{s.seconds:>9.1f}{f'{s.peak_mb:.0f}/{s.budget_mb:.0f}':>17}{s.disk_mb:>9.1f}"
            )
            total_s += s.seconds
            total_disk += s.disk_mb
    lines += ["", f"total: {total_s:.0f} s of model stages, {total_disk:.1f} MB of activations"]
    return "\n".join(lines)
