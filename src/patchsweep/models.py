"""Load a causal LM by hub id or local directory, wrapped for nnsight.

The bundled model organism and ``openai-community/gpt2`` take the same path:
``AutoModelForCausalLM.from_pretrained`` then nnsight's ``LanguageModel`` around it.
With ``model.remote`` the weights stay on NDIF: nnsight builds a weightless copy of the
architecture from the hub id, and every trace must pass ``remote=True``
(:meth:`LoadedModel.trace` does), unless it runs inside a session, which is sent as one
job (:meth:`LoadedModel.session`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from patchsweep.components import Architecture, Dimensions, architecture_for, dimensions_of
from patchsweep.config import ModelConfig
from patchsweep.errors import ConfigError, ModelLoadError
from patchsweep.fingerprint import model_revision

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICES = ("cpu", "cuda", "cuda:N", "mps", "auto")

# tokenizer_config.json classes that mean "tokenizer.json is the whole tokenizer".
GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")


@dataclass
class LoadedModel:
    """A model ready for tracing, with what the stages need to know about it."""

    lm: Any  # nnsight LanguageModel
    hf: Any  # the transformers model inside it (weightless when remote)
    tokenizer: Any
    arch: Architecture
    dims: Dimensions
    name: str
    revision: str
    dtype: torch.dtype  # of the weights and every stored activation (metrics are fp32)
    device: str  # where inputs go: the device of the input embeddings
    remote: bool = False  # traces run on NDIF and must pass remote=True
    # What remote runs pass as nnsight's ``remote=``: True is NDIF; "local" runs nnsight's
    # serialised remote path in this process (how tests check the remote code path).
    remote_target: Any = True
    in_session: bool = False  # set while a session's block runs: its traces go with it

    @property
    def dtype_name(self) -> str:
        """The dtype as ``model.dtype`` names it: float32, bfloat16 or float16."""
        return str(self.dtype).removeprefix("torch.")

    def identity(self) -> dict[str, str]:
        """Metadata recorded in every activation file and checked by its readers."""
        return {"model": self.name, "revision": self.revision, "dtype": self.dtype_name}

    def trace(self, *inputs: Any, **kwargs: Any) -> Any:
        """``lm.trace``, sent to NDIF when the model is remote (unless inside a session,
        which is sent as a whole)."""
        if self.remote and not self.in_session:
            kwargs.setdefault("remote", self.remote_target)
        return self.lm.trace(*inputs, **kwargs)

    def session(self) -> Any:
        """An nnsight session: ``with model.session():`` around several ``model.trace``
        blocks runs them as one job (on NDIF when the model is remote; in place otherwise).

        Only values passed through ``nnsight.save`` leave the session. Returned, not
        wrapped: nnsight finds the block to run from the frame that enters it, so the
        caller's ``with`` must enter nnsight's tracer itself. The tracer marks the model
        as in a session while its block runs, so the traces inside are not sent alone.
        """
        from nnsight.tracing.tracer import Tracer  # imported here: see load_model

        model = self

        class Session(Tracer):
            def __exit__(self, *exc: Any) -> Any:
                model.in_session = True  # the block runs (or is sent) in __exit__
                try:
                    return super().__exit__(*exc)
                finally:
                    model.in_session = False

        remote = self.remote_target if self.remote else False
        return self.lm.session(remote=remote, tracer_cls=Session)


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype for a config name."""
    if name not in DTYPES:
        raise ConfigError(f"model.dtype is {name!r}", f"use one of: {', '.join(DTYPES)}")
    return DTYPES[name]


def check_device(device: str) -> None:
    """Fail before loading any weights when ``model.device`` is not usable here.

    Raises:
        ConfigError: an unknown device name, or hardware or a package this machine
            lacks; the message names the check that failed and the fix.
    """
    cuda = re.fullmatch(r"cuda(?::(\d+))?", device)
    if device == "cpu":
        return
    if device == "auto":
        if importlib.util.find_spec("accelerate") is None:
            raise ConfigError(
                "model.device is 'auto' (device_map='auto') but the accelerate package "
                "is not installed",
                "pip install accelerate, or name one device: cpu, cuda, cuda:N or mps",
            )
    elif cuda:
        _check_cuda(device, int(cuda.group(1) or 0))
    elif device == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(
                "model.device is 'mps' but torch.backends.mps.is_available() is False",
                "use cpu; mps needs Apple silicon and a macOS build of torch",
            )
    else:
        raise ConfigError(f"model.device is {device!r}", f"use one of: {', '.join(DEVICES)}")


def _check_cuda(device: str, index: int) -> None:
    if not torch.cuda.is_available():
        raise ConfigError(
            f"model.device is {device!r} but torch.cuda.is_available() is False",
            "use cpu, or install a CUDA build of torch",
        )
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(
            f"model.device is {device!r} but only {count} CUDA device(s) are visible",
            f"use cuda:0 to cuda:{count - 1}, or check CUDA_VISIBLE_DEVICES",
        )


def is_local(path: str) -> bool:
    """A path is local if it exists, or if it starts like one (./, /, ~, or data/)."""
    p = Path(path).expanduser()
    return p.exists() or path.startswith((".", "/", "~")) or Path(path.split("/")[0]).is_dir()


def load_tokenizer(cfg: ModelConfig) -> Any:
    """The model's tokenizer, with the same local/hub rules as the model.

    A local folder whose ``tokenizer_config.json`` names the generic fast tokenizer is
    loaded as exactly that: for some model types (qwen2, phi3, ...) transformers 5
    otherwise substitutes the type's own tokenizer class, which rebuilds the
    pre-tokenizer and breaks a custom vocabulary such as a word-level one.
    """
    _check_local(cfg)
    try:
        if _declares_generic_tokenizer(cfg.path):
            return PreTrainedTokenizerFast.from_pretrained(Path(cfg.path).expanduser())
        return AutoTokenizer.from_pretrained(
            cfg.path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
        )
    except OSError as exc:
        raise _hub_error(cfg, exc) from exc


def load_model(cfg: ModelConfig) -> LoadedModel:
    """Load the model and tokenizer named by ``cfg``, in eval mode, wrapped for nnsight.

    Raises:
        ConfigError: a bad dtype or device, an unsupported architecture, or a remote
            model given as a local folder.
        ModelLoadError: the model or its tokenizer cannot be found.
    """
    from nnsight import LanguageModel  # imported here: 2 s, and only model stages need it

    dtype = torch_dtype(cfg.dtype)
    if cfg.remote:
        return _load_remote(cfg, dtype, LanguageModel)
    check_device(cfg.device)
    _check_local(cfg)
    arch = architecture_for(hf_config(cfg))  # before the weights: fail fast
    tokenizer = load_tokenizer(cfg)
    hf = _load_weights(cfg, dtype)
    if cfg.device != "auto":
        hf.to(cfg.device)
    hf.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LanguageModel's deprecation notice
        lm = LanguageModel(hf, tokenizer=tokenizer)
    device = str(hf.get_input_embeddings().weight.device)
    revision = model_revision(cfg.path, cfg.revision)
    log.info(
        "loaded %s (%s) from %s on %s in %s", cfg.name, arch.family, cfg.path, device, cfg.dtype
    )
    return LoadedModel(
        lm=lm,
        hf=hf,
        tokenizer=tokenizer,
        arch=arch,
        dims=dimensions_of(hf.config),
        name=cfg.name,
        revision=revision,
        dtype=dtype,
        device=device,
    )


def _load_remote(cfg: ModelConfig, dtype: torch.dtype, language_model: type) -> LoadedModel:
    """A weightless local copy of a hub model whose traces run on NDIF.

    nnsight reads the NDIF API key from the NDIF_API_KEY environment variable. The
    device is NDIF's, so ``model.device`` is not checked; inputs are built on the CPU.
    """
    if is_local(cfg.path):
        raise ConfigError(
            f"model.remote is true but model.path {cfg.path!r} is a local folder",
            "NDIF runs only models it hosts, named by hub id: set model.path to such a "
            "hub id, or set model.remote: false",
        )
    tokenizer = load_tokenizer(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LanguageModel's deprecation notice
        lm = language_model(
            cfg.path,
            revision=cfg.revision,
            tokenizer=tokenizer,
            dtype=dtype,
            trust_remote_code=cfg.trust_remote_code,
        )
    hf = lm._module  # the meta-device skeleton nnsight builds from the hub config
    arch = architecture_for(hf.config)
    log.info("using %s (%s) remotely on NDIF in %s", cfg.path, arch.family, cfg.dtype)
    return LoadedModel(
        lm=lm,
        hf=hf,
        tokenizer=tokenizer,
        arch=arch,
        dims=dimensions_of(hf.config),
        name=cfg.name,
        revision=model_revision(cfg.path, cfg.revision),
        dtype=dtype,
        device="cpu",
        remote=True,
    )


def hf_config(cfg: ModelConfig) -> Any:
    try:
        return AutoConfig.from_pretrained(
            cfg.path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
        )
    except OSError as exc:
        raise _hub_error(cfg, exc) from exc


def _load_weights(cfg: ModelConfig, dtype: torch.dtype) -> Any:
    """The transformers model, with eager attention: TransformerLens runs eager too, and
    sdpa differs from it by ~1e-3 in fp32, so results would not compare across tools."""
    placement = {"device_map": "auto"} if cfg.device == "auto" else {}
    try:
        return AutoModelForCausalLM.from_pretrained(
            cfg.path,
            revision=cfg.revision,
            dtype=dtype,
            trust_remote_code=cfg.trust_remote_code,
            attn_implementation="eager",
            **placement,
        )
    except OSError as exc:
        raise _hub_error(cfg, exc) from exc


def _declares_generic_tokenizer(path: str) -> bool:
    config = Path(path).expanduser() / "tokenizer_config.json"
    if not config.is_file():
        return False
    try:
        declared = json.loads(config.read_text()).get("tokenizer_class")
    except (OSError, ValueError):
        return False
    return declared in GENERIC_TOKENIZERS


def _check_local(cfg: ModelConfig) -> None:
    if is_local(cfg.path) and not Path(cfg.path).expanduser().is_dir():
        raise ModelLoadError(
            f"model path {cfg.path!r} does not exist",
            "point model.path at a folder with config.json and weights (the bundled "
            "organism is data/models/ioi-gpt2), or at a hub id such as openai-community/gpt2",
        )


def _hub_error(cfg: ModelConfig, exc: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"cannot load {cfg.path!r}: {str(exc).splitlines()[0]}",
        "with no internet (or HF_HUB_OFFLINE=1) a hub model must already be in the local "
        "cache: download it once with internet, or set model.path to a local folder",
    )
