"""The Python API: activation patching from a notebook, with the pipeline's numbers.

Four calls cover what a DVC experiment does, on data held in memory::

    import patchsweep as ps

    model = ps.load_model("data/models/ioi-gpt2")         # a folder or a hub id
    prompts = ps.load_prompts("ioi", model, n_pairs=64)    # a generator, a file, or pairs
    table = ps.sweep(model, prompts, {"component": "z", "positions": "all"})
    ps.plot(table, "figures/")                             # the pipeline's figures

``sweep`` returns the tidy table of ``results.csv`` (one row per site: raw metric,
normalised effect, s.e.m., prompts, bootstrap interval, normalisation; ``stats=`` takes
the keys of ``conf/stats/``, with the same defaults). It goes through the same functions
as the stages:
:func:`patchsweep.prompts.prepare_pairs` (tokenize), :func:`patchsweep.capture.capture_run`
(capture), :func:`patchsweep.engine.sweep.run_sweep` (patch) and
:func:`patchsweep.normalize.results_tables` (normalize), so a notebook and ``dvc repro``
agree to the last digit the tables keep. A dataset's own metric comes with it
(Greater-Than is scored by ``prob_diff``); pass ``metric=`` to override it.

Several sweeps over one dataset can share one capture: ``runs = ps.capture_runs(model,
prompts)``, then ``ps.sweep(model, prompts, spec, runs=runs)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from patchsweep.baselines import experiment_baselines, prompt_anchors
from patchsweep.capture import DEFAULT_CAPTURE, capture_run
from patchsweep.config import (
    Config,
    DatasetConfig,
    EngineConfig,
    ModelConfig,
    NoiseConfig,
    StatsConfig,
    SweepConfig,
    validate,
    validate_stats,
)
from patchsweep.datasets.base import PromptPair
from patchsweep.datasets.explicit import pairs_from_config
from patchsweep.datasets.tasks import metric_for, task_of, uses_noise
from patchsweep.engine.sweep import Runs, run_sweep, stored_key
from patchsweep.errors import ConfigError
from patchsweep.fingerprint import ensure_project_importable
from patchsweep.models import LoadedModel
from patchsweep.models import load_model as _load_model
from patchsweep.noise import corruption_noise
from patchsweep.normalize import results_tables
from patchsweep.prompts import prepare_pairs
from patchsweep.tokenize import TokenizedPairs
from patchsweep.validity import check_validity

FILE_SUFFIXES = (".csv", ".jsonl")


@dataclass
class Prompts:
    """A dataset ready to patch: its pairs, their tokens and how the task is scored.

    Attributes:
        name: Shown in figure titles.
        pairs: The prompt pairs (one row per noise draw when noise corrupts).
        tokens: Token ids, lengths, answers and named positions.
        metric: The metric the task is scored by (a built-in name or ``module:function``).
        noise: Embedding-noise corruption (``scale`` 0 = none).
    """

    name: str
    pairs: list[PromptPair]
    tokens: TokenizedPairs
    metric: str
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    dataset: DatasetConfig | None = None

    def __len__(self) -> int:
        return self.tokens.n_pairs

    def to_frame(self) -> pd.DataFrame:
        """One row per pair: clean and corrupted prompt, answers, template."""
        return pd.DataFrame(
            [
                {
                    "clean": p.clean,
                    "corrupted": p.corrupted,
                    "correct": list(p.correct),
                    "incorrect": list(p.incorrect),
                    "template": p.template,
                }
                for p in self.pairs
            ]
        )


def load_model(
    path: str | Path,
    *,
    name: str | None = None,
    revision: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    remote: bool = False,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a model for patching: a local folder, or a hub id (``openai-community/gpt2``).

    Args:
        name: Shown in tables and figure titles; the folder's or the id's last part.
        revision: Hub branch, tag or commit.
        dtype: float32 | bfloat16 | float16; metrics are always computed in float32.
        device: cpu | cuda | cuda:N | mps | auto.
        remote: Run traces on NDIF (a hub id; the key from ``NDIF_API_KEY``).
    """
    text = str(path)
    cfg = ModelConfig(
        name=name or Path(text.rstrip("/")).name,
        path=text,
        revision=revision,
        dtype=dtype,
        device=device,
        remote=remote,
        trust_remote_code=trust_remote_code,
    )
    return _load_model(cfg)


def load_prompts(
    source: str | Path | Sequence[PromptPair | Mapping[str, Any]],
    model: LoadedModel,
    *,
    n_pairs: int = 32,
    seed: int = 0,
    name: str | None = None,
    metric: str | None = None,
    score_from: str | None = None,
    noise: NoiseConfig | Mapping[str, Any] | None = None,
    allow_unknown_tokens: bool = False,
    **options: Any,
) -> Prompts:
    """Prompt pairs from a generator, a file or a list, tokenized for ``model``.

    Args:
        source: A generator name (``ioi``, ``greater_than``, ``factual``, ``induction``;
            its options as keyword arguments, e.g. ``corruption="swap"``), a ``.csv`` or
            ``.jsonl`` file of pairs, or pairs (``PromptPair`` objects or mappings with
            ``clean``, ``corrupted``, ``correct``, ``incorrect`` and optional ``labels``).
        n_pairs, seed: How many pairs a generator makes, and from which seed.
        metric, score_from, noise: The task's scoring; a generator's own by default
            (Greater-Than: ``prob_diff``; induction: ``mean_logprob`` from ``REP2``;
            factual: embedding noise on the subject, scored by ``prob``).
    """
    generator, given, options = _source(source, options)
    task = task_of(generator)
    if noise is None:
        noise = task.noise if uses_noise(generator, options) else {}
    noise_cfg = (
        noise if isinstance(noise, NoiseConfig) else _structured(NoiseConfig, noise, "noise")
    )
    if score_from is None and metric is None:
        score_from = task.score_from
    cfg = DatasetConfig(
        name=name or (generator if generator not in ("file", "pairs") else _file_name(source)),
        generator=generator,
        n_pairs=n_pairs,
        seed=seed,
        options=options,
        metric=metric or metric_for(generator, options),
        score_from=score_from,
        noise=noise_cfg,
        allow_unknown_tokens=allow_unknown_tokens,
    )
    prepared, tokens = prepare_pairs(cfg, model.tokenizer, given)
    return Prompts(cfg.name, prepared, tokens, str(cfg.metric), noise_cfg, cfg)


def capture_runs(
    model: LoadedModel,
    prompts: Prompts,
    components: Sequence[str] = DEFAULT_CAPTURE,
    *,
    max_rows: int = 64,
    progress: bool = True,
    seed: int = 0,
) -> Runs:
    """The clean and corrupted runs' activations and logits, held in memory.

    Args:
        components: Which activations to keep besides the residual stream (``z``,
            ``attn_out``, ``mlp_out``, ``q``, ``k``, ``v``, ``pattern``).
        seed: The torch seed the capture stage sets too.
    """
    torch.manual_seed(seed)
    pairs = prompts.tokens
    noise = corruption_noise(prompts.noise, pairs, model)
    scored = pairs.score_positions
    runs = {}
    for run, ids in (("clean", pairs.clean_ids), ("corrupted", pairs.corrupted_ids)):
        delta = noise if run == "corrupted" else None
        runs[run] = capture_run(
            model,
            ids,
            pairs.lengths,
            components,
            max_rows,
            desc=f"capture {run}",
            progress=progress,
            embed_delta=delta,
            score_positions=scored,
        )
        if delta is not None:
            runs[run]["embed_delta"] = delta.to(model.dtype)
    logits = {run: acts.pop("logits") for run, acts in runs.items()}
    return Runs(clean=runs["clean"], corrupted=runs["corrupted"], final_logits=logits)


def sweep(
    model: LoadedModel,
    prompts: Prompts,
    spec: SweepConfig | Mapping[str, Any] | None = None,
    *,
    runs: Runs | None = None,
    metric: str | None = None,
    engine: EngineConfig | Mapping[str, Any] | None = None,
    stats: StatsConfig | Mapping[str, Any] | None = None,
    per_prompt: bool = False,
    **keys: Any,
) -> pd.DataFrame:
    """Patch every site of one sweep or several; the tidy table of ``results.csv``.

    Args:
        spec: One sweep (``{"component": "z", "positions": "all"}``, a
            :class:`~patchsweep.config.SweepConfig`) or several by name (``{"heads":
            {...}, "resid": {...}}``); or give one sweep's keys as keyword arguments
            (``component="resid_pre", positions="each"``). Keys: component, direction
            (denoise | noise), positions (all | each | labels | auto), layers, heads,
            window.
        runs: Activations from :func:`capture_runs`; captured here when not given.
        metric: Overrides the dataset's metric.
        engine: Batching: memory_budget_mb, max_batch, progress.
        stats: Error bars: normalization (per_prompt | dataset), ci, bootstrap, seed.
        per_prompt: Return the per-prompt table (``per_prompt.csv``) instead.

    Returns:
        One row per site (or site × prompt), with the sweep's name in ``sweep``; the
        baselines (clean and corrupted metric, the normalisation and the prompts it left
        out, the validity checks: ``baselines.json``) in ``.attrs["baselines"]``.

    Raises:
        ValidityError: the engine does not reproduce the unpatched runs (see
            :mod:`patchsweep.validity`); nothing is returned.
    """
    sweeps = _sweeps(spec, keys)
    engine_cfg = (
        engine
        if isinstance(engine, EngineConfig)
        else _structured(EngineConfig, engine or {}, "engine")
    )
    stats_cfg = _structured(StatsConfig, stats or {}, "stats")
    validate_stats(stats_cfg)
    metric_name = metric or prompts.metric
    _validate(model, prompts, sweeps, metric_name, engine_cfg)
    ensure_project_importable()  # a module:function metric is found from the working folder
    if runs is None:
        needed = sorted({stored_key(s) for s in sweeps.values()} - {"resid"})
        runs = capture_runs(model, prompts, needed, progress=engine_cfg.progress)
    raw = pd.concat(
        [
            run_sweep(model, prompts.tokens, name, s, runs, metric_name, engine_cfg)
            for name, s in sweeps.items()
        ],
        ignore_index=True,
    )
    baselines = experiment_baselines(
        prompts.tokens, dict(runs.final_logits), metric_name, model.name, prompts.name
    )
    experiment = f"{model.name} on {prompts.name}"
    validity = check_validity(model, prompts.tokens, runs, metric_name, engine_cfg, experiment)
    anchors = prompt_anchors(prompts.tokens, dict(runs.final_logits), metric_name)
    table, prompt_table, normalization = results_tables(raw, anchors, stats_cfg)
    out = prompt_table if per_prompt else table
    out.attrs.update(
        baselines={**baselines, **normalization, "validity": validity},
        model=model.name,
        dataset=prompts.name,
        metric=metric_name,
    )
    return out


def plot(
    table: pd.DataFrame,
    out_dir: str | Path = "figures",
    *,
    model: str | None = None,
    dataset: str | None = None,
    metric: str | None = None,
    formats: Sequence[str] = ("png",),
    **style: Any,
) -> list[Path]:
    """Draw the pipeline's figures for a results table; returns the files written.

    Model, dataset and metric (for titles) default to those :func:`sweep` recorded in
    ``table.attrs``. ``style`` takes the keys of ``conf/plot/`` (width, height, dpi,
    cmap, annotate, …).
    """
    from patchsweep.plotting.figures import render_figures
    from patchsweep.plotting.style import ExperimentInfo, PlotStyle

    info = ExperimentInfo(
        model=model or table.attrs.get("model", "model"),
        dataset=dataset or table.attrs.get("dataset", "dataset"),
        metric=metric or table.attrs.get("metric", "metric"),
    )
    known = {f.name for f in fields(PlotStyle)}
    unknown = sorted(set(style) - known)
    if unknown:
        raise ConfigError(
            f"plot() got unknown style keys {unknown}", f"use any of: {', '.join(sorted(known))}"
        )
    return render_figures(table, info, PlotStyle(formats=list(formats), **style), Path(out_dir))


def _source(
    source: str | Path | Sequence[PromptPair | Mapping[str, Any]], options: dict[str, Any]
) -> tuple[str, list[PromptPair] | None, dict[str, Any]]:
    """(generator, the pairs given as objects or mappings, options)."""
    from patchsweep.datasets import GENERATORS

    if isinstance(source, (str, Path)):
        text = str(source)
        if text in GENERATORS:
            return text, None, dict(options)
        if Path(text).suffix in FILE_SUFFIXES:
            if not Path(text).is_file():
                raise ConfigError(
                    f"no prompt file at {Path(text).resolve()}",
                    "check the path (relative paths start at the working folder)",
                )
            return "file", None, {**options, "path": str(Path(text).resolve())}
        raise ConfigError(
            f"prompts {text!r} are neither a generator nor a .csv/.jsonl file",
            f"use one of: {', '.join(sorted(GENERATORS))}, or a prompt file",
        )
    pairs = [p for p in source if isinstance(p, PromptPair)]
    rows = [dict(p) for p in source if not isinstance(p, PromptPair)]
    if rows and pairs:
        raise ConfigError("prompts mix PromptPair objects and mappings", "give a list of one kind")
    return "pairs", pairs or pairs_from_config(rows, "prompts"), dict(options)


def _file_name(source: Any) -> str:
    return Path(str(source)).stem if isinstance(source, (str, Path)) else "pairs"


def _structured(schema: type, values: Any, what: str) -> Any:
    """``values`` checked against a config dataclass: unknown keys and bad types refused."""
    if isinstance(values, schema):
        return values
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), dict(values))
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        names = ", ".join(f.name for f in fields(schema))
        raise ConfigError(
            f"{what} {dict(values)} does not fit: {str(exc).splitlines()[0]}",
            f"use the keys {names} with values of their types",
        ) from exc


def _sweeps(spec: Any, keys: dict[str, Any]) -> dict[str, SweepConfig]:
    """Sweeps by name from a single spec, a mapping of specs, or keyword arguments."""
    if spec is None:
        spec = keys
    elif keys:
        raise ConfigError(
            "sweep() got both a spec and sweep keys as keyword arguments",
            "pass the sweep's keys in one place",
        )
    if isinstance(spec, SweepConfig):
        return {f"{spec.component}_{spec.direction}": spec}
    if "component" in spec:
        one = _structured(SweepConfig, spec, "sweep")
        return {f"{one.component}_{one.direction}": one}
    if not spec:
        raise ConfigError("no sweep given", 'pass e.g. {"component": "z", "positions": "all"}')
    return {str(name): _structured(SweepConfig, s, f"sweep {name}") for name, s in spec.items()}


def _validate(
    model: LoadedModel,
    prompts: Prompts,
    sweeps: dict[str, SweepConfig],
    metric: str,
    engine: EngineConfig,
) -> None:
    """The pipeline's own config checks, on the config this call amounts to."""
    dataset = prompts.dataset or DatasetConfig(name=prompts.name)
    dataset = DatasetConfig(**{**asdict(dataset), "noise": prompts.noise, "metric": metric})
    cfg = Config(
        model=ModelConfig(name=model.name, path=model.name),
        dataset=dataset,
        sweeps=sweeps,
        engine=engine,
    )
    cfg.metric.name = metric
    validate(cfg)
