"""Typed schemas for every config group, and the one way to compose them.

``conf/`` is the single source of truth. Hydra composes it against these dataclasses in
struct mode, so a misspelled key or a wrong type fails at compose time with the key's
name, instead of silently falling back to a default deep inside a sweep.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from patchsweep.component_types import COMPONENTS, DEFAULT_CAPTURE, HEADED_COMPONENTS, STORABLE
from patchsweep.errors import ConfigError
from patchsweep.paths import check_plain_name

DIRECTIONS = ("denoise", "noise")
# exact: one patched forward pass per site; attribution: a gradient estimate of every
# site from one forward and one backward pass (see patchsweep.engine.attribution)
METHODS = ("exact", "attribution")
# Built-in metrics of final-position logits only (mean_logprob also takes several).
FINAL_POSITION_METRICS = ("logit_diff", "logprob", "prob", "prob_diff", "neg_kl")
BUILTIN_METRICS = (*FINAL_POSITION_METRICS, "mean_logprob")  # patchsweep.metrics.METRICS
POSITION_MODES = ("all", "each", "labels", "auto")
CONFIG_GROUPS = (
    "model",
    "dataset",
    "sweep",
    "metric",
    "engine",
    "stats",
    "plot",
    "capture",
    "verify",
)
# capture.storage_dtype: half-precision storage of activations (null = the model's dtype)
STORAGE_DTYPES = ("float16", "bfloat16")
NORMALIZATIONS = ("per_prompt", "dataset")  # patchsweep.normalize: whose clean and corrupted
# Resolvers that copy the environment into the config, and so into git-tracked files.
ENVIRONMENT_RESOLVERS = ("oc.env",)


@dataclass
class ModelConfig:
    """Which model to load and where it runs."""

    name: str = MISSING  # short id used in folder names and figure titles
    path: str = MISSING  # hub id ("openai-community/gpt2") or local directory
    revision: str | None = None  # hub revision (branch, tag or commit); None = default
    dtype: str = "float32"  # float32 | bfloat16 | float16; metrics are always fp32
    device: str = "cpu"  # cpu | cuda | cuda:N | mps
    trust_remote_code: bool = False  # never on unless the config says so explicitly
    remote: bool = False  # run traces on NDIF (path must be a hub id; key from NDIF_API_KEY)


@dataclass
class NoiseConfig:
    """Gaussian-noise corruption of causal tracing (Meng et al., 2022).

    The corrupted run is the clean prompt with noise added to the token embeddings from
    the ``labels[0]`` position to the ``labels[-1]`` position (the subject), scaled by
    the standard deviation of the embedding matrix. Each pair is run with ``samples``
    independent draws, averaged like prompts.
    """

    scale: float = 0.0  # k × embedding std; 0 = no noise (ROME uses 3)
    samples: int = 1  # noise draws per pair
    seed: int = 0  # noise seed: same seed, same draws
    labels: list[str] = field(default_factory=lambda: ["SUBJ", "SUBJ_LAST"])


@dataclass
class DatasetConfig:
    """Where the prompt pairs come from."""

    name: str = MISSING  # short id used in folder names and figure titles
    generator: str = "ioi"  # a generator registered in patchsweep.datasets, or "pairs"
    n_pairs: int = 32  # how many pairs the generator makes
    seed: int = 0  # generator seed: same seed, same prompts
    options: dict[str, Any] = field(default_factory=dict)  # generator-specific options
    metric: str | None = None  # the metric this task is scored by; None = metric.name
    # Score every next-token prediction from this position label to the end (the clean
    # prompt's own next tokens, then the answer) instead of the final position only; for
    # per-position metrics such as mean_logprob (induction: the repeated tokens).
    score_from: str | None = None
    noise: NoiseConfig = field(default_factory=NoiseConfig)  # embedding-noise corruption
    # Let prompt words outside the model's vocabulary through as its unknown token (a
    # warning) instead of failing; answers must be in the vocabulary regardless.
    allow_unknown_tokens: bool = False
    # Explicit pairs, used when generator == "pairs": each a mapping with clean,
    # corrupted, correct, incorrect and optional labels {name: word or word#k}.
    pairs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SweepConfig:
    """One patching sweep: a component type, a direction and the sites to patch."""

    # a name in patchsweep.component_types: resid_pre | resid_post | attn_out | mlp_out,
    # or per head: z | q | k | v | pattern
    component: str = MISSING
    direction: str = "denoise"  # denoise: clean into corrupted; noise: corrupted into clean
    positions: str = "auto"  # all (patch every position at once) | each | labels | auto
    layers: list[int] | None = None  # (first) layers to sweep; None = every layer
    heads: list[int] | None = None  # heads to sweep (z, q, k, v); None = every head
    window: int = 1  # restore this many consecutive layers at once (ROME's causal tracing)
    method: str = "exact"  # exact | attribution (a gradient estimate, checked by verify)
    qk_fix: bool = True  # attribution of q/k: recompute the attention pattern (AtP*)
    grad_drop: bool = False  # attribution: also score each site by GradDrop (AtP*)


@dataclass
class VerifyConfig:
    """How the verify stage checks an attribution sweep against exact patching."""

    top_k: int = 20  # exact-patch the ranking's top k sites (by |estimated effect|)
    control: int = 10  # and this many other sites, drawn at random, as a control
    seed: int = 0  # of the control sample
    # false negatives: sites whose exact |normalised effect| is at least this large while
    # the estimate is under half of it
    large_effect: float = 0.1


@dataclass
class CaptureConfig:
    """Which activations the capture stage stores (the residual stream always)."""

    # any of resid, q, k, v, pattern, z, attn_out, mlp_out: what the sweeps patch
    components: list[str] = field(default_factory=lambda: list(DEFAULT_CAPTURE))
    # Memory one chunk of prompts may take while it is captured; each chunk is written to
    # disk before the next, so memory does not grow with the number of prompts.
    memory_budget_mb: float = 512
    max_rows: int = 64  # upper bound on prompts per forward pass, whatever the budget
    # float16 | bfloat16: store activations in half precision (half the disk); readers
    # cast them back to the model's dtype. None = the model's dtype, no rounding.
    storage_dtype: str | None = None


@dataclass
class MetricConfig:
    """The behaviour metric read at the final position."""

    name: str = "logit_diff"  # logit_diff: mean logit of correct minus incorrect answers


@dataclass
class EngineConfig:
    """How the patch engine batches its work."""

    memory_budget_mb: float = 1024  # activation memory one batched forward pass may use
    max_batch: int = 256  # upper bound on rows per forward pass, whatever the budget
    progress: bool = True  # show a progress bar with ETA
    checkpoint_every_s: float = 5.0  # save finished chunks this often (0 = after each)


@dataclass
class StatsConfig:
    """How the normalize stage turns per-prompt metrics into effects with error bars."""

    # per_prompt: each prompt against its own clean and corrupted metric (paired);
    # dataset: every prompt against the dataset's mean clean and corrupted metric
    normalization: str = "per_prompt"
    ci: float = 0.95  # confidence level of the bootstrap interval [ci_low, ci_high]
    bootstrap: int = 1000  # resamples of the prompts (with replacement)
    seed: int = 0  # numpy seed of the resampling: same seed, same intervals


@dataclass
class PlotConfig:
    """Figure style. Only the plot stage reads it."""

    width: float = 4.0  # inches per panel
    height: float = 3.0  # inches per panel
    dpi: int = 200
    font_family: str = "DejaVu Sans"
    font_size: float = 9.0
    cmap: str = "RdBu_r"  # diverging, centred at 0
    annotate: str = "auto"  # auto | true | false: write values into cells
    annotate_fmt: str = ".2f"
    formats: list[str] = field(default_factory=lambda: ["png", "pdf"])
    top_k: int = 5  # components listed per sweep in the report


@dataclass
class InputsConfig:
    """Content hashes of the files outside conf/ that shape results (written by compose).

    DVC cannot name these files per experiment in dvc.yaml, so the stages declare these
    hashes as params instead: editing the file changes its hash and reruns exactly the
    stages that read it. Never set by hand; compose overwrites them.
    """

    prompts: str | None = None  # the dataset's prompt file (generator: file)
    model: str | None = None  # a local model folder (every file), or the hub commit
    metric: str | None = None  # the source file of a module:function metric


@dataclass
class Config:
    """One experiment: one model on one dataset, with its sweeps."""

    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    sweeps: dict[str, SweepConfig] = field(default_factory=dict)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    metric: MetricConfig = field(default_factory=MetricConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    plot: PlotConfig = field(default_factory=PlotConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    seed: int = 0  # torch seed, recorded in outputs
    inputs: InputsConfig = field(default_factory=InputsConfig)


def register_schemas() -> None:
    """Register the schema so ``conf/config.yaml`` can list it first in its defaults."""
    store = ConfigStore.instance()
    store.store(name="patchsweep_schema", node=Config)


def default_config_dir() -> Path:
    """``conf/`` of the checkout the stages run in (the working directory)."""
    return Path.cwd() / "conf"


def compose_config(overrides: Sequence[str] = (), config_dir: Path | None = None) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra overrides, validated against the schema.

    Raises:
        ConfigError: an unknown key, a wrong type, or an unknown config group option;
            the message names the key and how to fix it.
    """
    register_schemas()
    config_dir = (config_dir or default_config_dir()).resolve()
    if not (config_dir / "config.yaml").is_file():
        raise ConfigError(
            f"no config.yaml in {config_dir}",
            "run from the project root, or pass the folder that holds conf/config.yaml",
        )
    check_group_choices(overrides)
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(
            f"the config does not compose: {_first_line(exc)}",
            "check the key's spelling and type against src/patchsweep/config.py "
            "(new keys need a schema field); config group options are the files in conf/",
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"a config file is not valid YAML: {' '.join(str(exc).split())}",
            "fix the file and line named above (each key once per mapping)",
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{_undecodable(config_dir) or 'a file in ' + str(config_dir)} is not UTF-8 ({exc})",
            "save the file as UTF-8",
        ) from exc
    check_known_keys(cfg)
    check_no_environment(cfg)
    validate(to_object(cfg))
    return cfg


def check_group_choices(overrides: Sequence[str]) -> None:
    """Refuse a config group choice (``model=…``, ``dataset=…``) that is a path.

    Hydra would load ``conf/dataset/../../x.yaml``, a file outside ``conf/``.
    """
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if sep and key in CONFIG_GROUPS:
            for choice in value.strip("[]").split(","):
                if choice.strip():
                    check_plain_name(f"{key} option", choice.strip())


def check_known_keys(cfg: DictConfig) -> None:
    """Refuse keys the schema does not have, however they got in.

    Hydra's ``+key=value`` (which its own error message suggests for a misspelt key)
    adds a key even to a structured config, where it would be silently ignored.
    """
    try:
        OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.to_container(cfg))
    except OmegaConfBaseException as exc:
        raise ConfigError(
            f"the config has a key the schema does not know: {_first_line(exc)}",
            "check the key's spelling against src/patchsweep/config.py (a `+key=` "
            "override adds a new key; the schema's keys need no `+`)",
        ) from exc


def check_no_environment(cfg: DictConfig) -> None:
    """Refuse ``${oc.env:…}``: it would copy an environment value (a token, say) into
    the git-tracked ``config.yaml`` and the reports, and make results depend on the
    shell they ran in rather than on files DVC tracks."""
    for where, value in _strings(OmegaConf.to_container(cfg, resolve=False)):
        if any(f"${{{name}:" in value.replace(" ", "") for name in ENVIRONMENT_RESOLVERS):
            raise ConfigError(
                f"{where} is {value!r}, which reads an environment variable",
                "write the value into conf/ (or pass it as an override); environment "
                "values are not resolved into tracked files. Credentials such as "
                "NDIF_API_KEY and HF_TOKEN are read from the environment by the "
                "libraries themselves and need no config key",
            )


def _strings(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{where}[{i}]")
    elif isinstance(node, str):
        yield where, node


def _undecodable(config_dir: Path) -> str | None:
    """The first file under ``config_dir`` that is not valid UTF-8."""
    for path in sorted(config_dir.rglob("*.yaml")):
        try:
            path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            return str(path)
    return None


def load_config(path: Path) -> Config:
    """Read a resolved config written by the compose stage, checked against the schema."""
    if not path.is_file():
        raise ConfigError(f"no resolved config at {path}", "run `dvc repro` (stage compose)")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path))
    except OmegaConfBaseException as exc:
        raise ConfigError(
            f"{path} does not match the schema: {_first_line(exc)}",
            "rerun the compose stage (`dvc repro`) so the file is regenerated from conf/",
        ) from exc
    assert isinstance(merged, DictConfig)  # a Config node merged into stays a mapping
    cfg = to_object(merged)
    validate(cfg)
    return cfg


def to_object(cfg: DictConfig) -> Config:
    """Turn a composed DictConfig into the typed :class:`Config`."""
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, Config)
    return obj


def validate(cfg: Config) -> None:
    """Check what types alone cannot: choices, ranges and required pieces."""
    if not cfg.sweeps:
        raise ConfigError("no sweeps are configured", "add at least one entry under sweeps:")
    for name, sweep in cfg.sweeps.items():
        check_plain_name("sweep", name)
        where = f"sweeps.{name}"
        _check_choice(f"{where}.component", sweep.component, COMPONENTS)
        _check_choice(f"{where}.direction", sweep.direction, DIRECTIONS)
        _check_choice(f"{where}.positions", sweep.positions, POSITION_MODES)
        _check_choice(f"{where}.method", sweep.method, METHODS)
        if sweep.grad_drop and sweep.method != "attribution":
            raise ConfigError(
                f"{where}.grad_drop is set but method is {sweep.method!r}",
                f"GradDrop scores attribution sweeps: set {where}.method: attribution, or "
                "remove grad_drop",
            )
        if sweep.heads is not None and sweep.component not in HEADED_COMPONENTS:
            raise ConfigError(
                f"{where}.heads is set but component is {sweep.component!r}",
                f"heads apply to {', '.join(HEADED_COMPONENTS)}; remove heads or change "
                "the component",
            )
        if sweep.window < 1:
            raise ConfigError(f"{where}.window is {sweep.window}", "use a window of 1 or more")
        for key in ("layers", "heads"):
            values = getattr(sweep, key)
            if values is not None and not values:
                raise ConfigError(f"{where}.{key} is an empty list", f"use null for all {key}")
    for name in cfg.capture.components:
        _check_choice("capture.components", name, STORABLE)
    if cfg.capture.memory_budget_mb <= 0 or cfg.capture.max_rows < 1:
        raise ConfigError(
            "capture.memory_budget_mb and capture.max_rows must be positive",
            "use e.g. capture.memory_budget_mb=512 capture.max_rows=64",
        )
    check_storage_dtype(cfg.capture.storage_dtype)
    if cfg.dataset.noise.scale < 0 or cfg.dataset.noise.samples < 1:
        raise ConfigError(
            "dataset.noise.scale must be ≥ 0 and dataset.noise.samples ≥ 1",
            "e.g. dataset.noise.scale=3 dataset.noise.samples=4 (scale 0 turns noise off)",
        )
    if cfg.dataset.n_pairs < 1:
        raise ConfigError("dataset.n_pairs must be at least 1", "set dataset.n_pairs: 1 or more")
    metric = cfg.dataset.metric or cfg.metric.name
    if cfg.dataset.score_from is not None and metric in FINAL_POSITION_METRICS:
        raise ConfigError(
            f"dataset.score_from scores several positions, but metric {metric!r} reads the "
            "final position only",
            "use metric mean_logprob (or a module:function metric that takes (B, K, V) "
            "logits), or remove dataset.score_from",
        )
    if cfg.verify.top_k < 1 or cfg.verify.control < 0 or cfg.verify.large_effect <= 0:
        raise ConfigError(
            "verify.top_k must be ≥ 1, verify.control ≥ 0 and verify.large_effect > 0",
            "use e.g. verify.top_k=20 verify.control=10 verify.large_effect=0.1",
        )
    if cfg.engine.memory_budget_mb <= 0 or cfg.engine.max_batch < 1:
        raise ConfigError(
            "engine.memory_budget_mb and engine.max_batch must be positive",
            "use e.g. engine.memory_budget_mb=1024 engine.max_batch=256",
        )
    validate_stats(cfg.stats)


def check_storage_dtype(name: str | None) -> None:
    """Refuse a storage dtype other than the half-precision ones: float32 storage of a
    float32 model is what null already does, and anything else would not halve the disk."""
    if name is not None and name not in STORAGE_DTYPES:
        raise ConfigError(
            f"capture.storage_dtype is {name!r}",
            f"use one of: {', '.join(STORAGE_DTYPES)} (half the disk of float32), or null "
            "to store activations in the model's dtype",
        )


def validate_stats(stats: StatsConfig) -> None:
    """Check the statistics settings (also for the Python API, which has no compose)."""
    _check_choice("stats.normalization", stats.normalization, NORMALIZATIONS)
    if not 0 < stats.ci < 1:
        raise ConfigError(
            f"stats.ci is {stats.ci}: a confidence level is a fraction between 0 and 1",
            "use e.g. stats.ci=0.95",
        )
    if stats.bootstrap < 1:
        raise ConfigError(
            f"stats.bootstrap is {stats.bootstrap}: the interval needs resamples",
            "use e.g. stats.bootstrap=1000 (more resamples, steadier interval ends)",
        )


def _check_choice(key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} is {value!r}", f"use one of: {', '.join(choices)}")


def _first_line(exc: Exception) -> str:
    """The informative part of a Hydra/OmegaConf error: its lines up to the full key."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    kept = [line for line in lines if not line.startswith(("object_type", "reference_type"))]
    return " ".join(kept) if kept else type(exc).__name__
