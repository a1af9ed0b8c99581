"""Load a causal LM by hub id or local directory, wrapped for nnsight.

The bundled model organism and ``openai-community/gpt2`` take the same path:
``AutoModelForCausalLM.from_pretrained`` then nnsight's ``LanguageModel`` around it.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from patchsweep.components import Architecture, Dimensions, architecture_for, dimensions_of
from patchsweep.config import ModelConfig
from patchsweep.errors import ConfigError, ModelLoadError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    """A model ready for tracing, with what the stages need to know about it."""

    lm: Any  # nnsight LanguageModel
    hf: Any  # the transformers model inside it
    tokenizer: Any
    arch: Architecture
    dims: Dimensions
    name: str
    revision: str
    dtype: str
    device: str

    def identity(self) -> dict[str, str]:
        """Metadata recorded in every activation file and checked by its readers."""
        return {"model": self.name, "revision": self.revision, "dtype": self.dtype}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype for a config name."""
    if name not in DTYPES:
        raise ConfigError(f"model.dtype is {name!r}", f"use one of: {', '.join(DTYPES)}")
    return DTYPES[name]


def is_local(path: str) -> bool:
    """A path is local if it exists, or if it starts like one (./, /, ~, or data/)."""
    p = Path(path).expanduser()
    return p.exists() or path.startswith((".", "/", "~")) or Path(path.split("/")[0]).is_dir()


def load_tokenizer(cfg: ModelConfig) -> Any:
    """The model's tokenizer, with the same local/hub rules as the model."""
    _check_local(cfg)
    try:
        return AutoTokenizer.from_pretrained(
            cfg.path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
        )
    except OSError as exc:
        raise _hub_error(cfg, exc) from exc


def load_model(cfg: ModelConfig) -> LoadedModel:
    """Load the model and tokenizer named by ``cfg``, in eval mode, wrapped for nnsight."""
    from nnsight import LanguageModel  # imported here: 2 s, and only model stages need it

    _check_local(cfg)
    dtype = torch_dtype(cfg.dtype)
    tokenizer = load_tokenizer(cfg)
    try:
        hf = AutoModelForCausalLM.from_pretrained(
            cfg.path,
            revision=cfg.revision,
            dtype=dtype,
            trust_remote_code=cfg.trust_remote_code,
            attn_implementation="eager",
        )
    except OSError as exc:
        raise _hub_error(cfg, exc) from exc
    arch = architecture_for(hf.config)
    hf.to(cfg.device).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LanguageModel's deprecation notice
        lm = LanguageModel(hf, tokenizer=tokenizer)
    revision = cfg.revision or _local_revision(cfg.path) or "main"
    log.info(
        "loaded %s (%s) from %s on %s in %s", cfg.name, arch.family, cfg.path, cfg.device, cfg.dtype
    )
    return LoadedModel(
        lm=lm,
        hf=hf,
        tokenizer=tokenizer,
        arch=arch,
        dims=dimensions_of(hf.config),
        name=cfg.name,
        revision=revision,
        dtype=cfg.dtype,
        device=cfg.device,
    )


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


def _local_revision(path: str) -> str | None:
    """A content hash of a local model's weights, so retrained weights are noticed."""
    folder = Path(path).expanduser()
    weights = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not weights:
        return None
    digest = hashlib.sha256()
    for file in weights:
        digest.update(file.read_bytes())
    return "sha256:" + digest.hexdigest()[:16]
