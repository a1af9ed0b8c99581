"""The one map from (architecture, component type, layer) to a place in the model.

Patching needs, for every component type, the module that holds it, whether the
activation is the module's input or its output, which element of a tuple output it is,
and how it splits into heads. This module keeps that knowledge in one table per
architecture family, chosen from ``config.model_type`` rather than guessed from names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from patchsweep.errors import ConfigError


@dataclass(frozen=True)
class HookPoint:
    """Where a component lives: ``module`` (with ``{layer}``), input or output, tuple index."""

    module: str
    io: Literal["input", "output"]
    index: int | None = None


@dataclass(frozen=True)
class Architecture:
    """Module paths of one architecture family.

    Attributes:
        family: A name for error messages and metadata.
        blocks: Path of the list of transformer blocks.
        attn: Path (with ``{layer}``) of the attention module; its output tuple's first
            element is attn_out.
        mlp: Path of the MLP whose output is mlp_out.
        o_proj: Path of the attention output projection; its input is z, the per-head
            attention outputs concatenated, split by head for head patching.
    """

    family: str
    blocks: str
    attn: str
    mlp: str
    o_proj: str

    def hook_point(self, component: str) -> HookPoint:
        """The hook point of a component type."""
        block = f"{self.blocks}.{{layer}}"
        points = {
            "resid_pre": HookPoint(block, "input"),
            "resid_post": HookPoint(block, "output"),
            "attn_out": HookPoint(self.attn, "output", 0),
            "mlp_out": HookPoint(self.mlp, "output"),
            "z": HookPoint(self.o_proj, "input"),
        }
        return points[component]


_LLAMA_LIKE = Architecture(
    family="llama",
    blocks="model.layers",
    attn="model.layers.{layer}.self_attn",
    mlp="model.layers.{layer}.mlp",
    o_proj="model.layers.{layer}.self_attn.o_proj",
)

ARCHITECTURES: dict[str, Architecture] = {
    "gpt2": Architecture(
        family="gpt2",
        blocks="transformer.h",
        attn="transformer.h.{layer}.attn",
        mlp="transformer.h.{layer}.mlp",
        o_proj="transformer.h.{layer}.attn.c_proj",
    ),
    "gpt_neox": Architecture(
        family="gpt_neox",
        blocks="gpt_neox.layers",
        attn="gpt_neox.layers.{layer}.attention",
        mlp="gpt_neox.layers.{layer}.mlp",
        o_proj="gpt_neox.layers.{layer}.attention.dense",
    ),
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "phi": Architecture(
        family="phi",
        blocks="model.layers",
        attn="model.layers.{layer}.self_attn",
        mlp="model.layers.{layer}.mlp",
        o_proj="model.layers.{layer}.self_attn.dense",
    ),
}


@dataclass(frozen=True)
class Dimensions:
    """Sizes read from the model config, under their many per-family names."""

    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    vocab_size: int


def architecture_for(hf_config: Any) -> Architecture:
    """The architecture table for a transformers config.

    Raises:
        ConfigError: the model type has no table; lists the supported ones.
    """
    model_type = getattr(hf_config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ConfigError(
            f"architecture {model_type!r} is not supported",
            f"use one of: {', '.join(sorted(ARCHITECTURES))}; or add its module paths to "
            "ARCHITECTURES in src/patchsweep/components.py",
        )
    return ARCHITECTURES[model_type]


def dimensions_of(hf_config: Any) -> Dimensions:
    """Layer, head and width sizes of a transformers config."""
    d_model = hf_config.hidden_size
    n_heads = hf_config.num_attention_heads
    d_head = getattr(hf_config, "head_dim", None) or d_model // n_heads
    return Dimensions(
        n_layers=hf_config.num_hidden_layers,
        n_heads=n_heads,
        d_model=d_model,
        d_head=d_head,
        vocab_size=hf_config.vocab_size,
    )


def resolve(root: Any, path: str, layer: int) -> Any:
    """Walk ``path`` (with ``{layer}`` filled in) from a model or an nnsight envoy."""
    node = root
    for part in path.format(layer=layer).split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def read(root: Any, point: HookPoint, layer: int) -> Any:
    """The activation at a hook point inside an nnsight trace (a tensor, patchable in place)."""
    module = resolve(root, point.module, layer)
    value = module.input if point.io == "input" else module.output
    return value[point.index] if point.index is not None else value
