"""The one map from (architecture, component type, layer) to a place in the model.

Patching needs, for every component type, the module that holds it, whether the
activation is the module's input or its output, which element of a tuple output it is,
which slice of a fused projection it is, and how it splits into heads. This module keeps
that knowledge in one table per architecture family, chosen from ``config.model_type``
rather than guessed from module names. What a component type is regardless of the model
(headed or not, where it is stored) is in :mod:`patchsweep.component_types`.

The tables follow TransformerLens's conventions: ``attn_out`` and ``mlp_out`` are what
the sublayer adds to the residual stream (after Gemma 2's post-norms), ``z`` is the input
of the attention output projection, and ``q``/``k`` are read before rotary embeddings.
Module paths are those of transformers 5's modeling files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from patchsweep.component_types import uses_kv_heads
from patchsweep.errors import ConfigError


@dataclass(frozen=True)
class HookPoint:
    """Where a component lives.

    Attributes:
        module: Module path with ``{layer}``.
        io: Read the module's input or its output.
        index: Element of a tuple output (attention modules return (out, weights)).
        part: For a fused q/k/v projection, which of ``parts`` equal slices of the last
            dimension this component is (GPT-2's ``c_attn``: q, k, v = parts 0, 1, 2).
        flat: The module sees every position of every prompt as one row, (batch·pos,
            width) instead of (batch, pos, width): OPT reshapes before its MLP. Reading
            it needs the (batch, pos) shape to unflatten (see :func:`select`).
        ops: For a value computed inside a function rather than by a module: the chain
            of nnsight ``.source`` operation names, from the module's forward down to
            the operation whose output it is (the attention pattern is a softmax inside
            the attention function).
        heads_first: The value is (batch, heads, pos, ...), as attention patterns are;
            :func:`select` returns it as (batch, pos, heads, ...) like other head
            components (a view, so writes reach the model).
    """

    module: str
    io: Literal["input", "output"]
    index: int | None = None
    part: int | None = None
    parts: int = 1
    flat: bool = False
    ops: tuple[str, ...] = ()
    heads_first: bool = False


@dataclass(frozen=True)
class Architecture:
    """Module paths of one architecture family.

    Attributes:
        family: A name for error messages and metadata.
        blocks: Path of the list of transformer blocks; each block's input is
            resid_pre and its output (a tensor in transformers 5) is resid_post.
        attn: Path (with ``{layer}``) of the attention module; the first element of its
            output tuple is attn_out.
        mlp: Path of the module whose output is mlp_out: the MLP itself, the norm after
            it (Gemma 2), or its down projection where there is no MLP module (OPT).
        o_proj: Path of the attention output projection; its input is z, the per-head
            attention outputs concatenated, split by head for head patching.
        qkv: Path of a fused q/k/v projection whose output is [q | k | v], or None.
        q_proj, k_proj, v_proj: Paths of separate q/k/v projections, or None. q and k
            are read before rotary embeddings, as TransformerLens's hook_q / hook_k.
        attn_out: Path of the module whose output is attn_out when a norm follows the
            attention before the residual add (Gemma 2); None reads ``attn``'s output.
        pattern: The ``.source`` operations, from ``attn``'s forward, whose output is
            the attention pattern (post-softmax, TransformerLens's hook_pattern), or
            None where patching it would not reach the model (e.g. a dtype cast after
            the softmax makes a copy).
        mlp_flat: ``mlp``'s output is (batch·pos, d_model) rows (OPT).
        rotary: Rotary position embeddings turn q and k between the stored values and
            the attention scores, so scores cannot be recomputed from the stored q and k
            (attribution's QK fix needs that).
        missing: Why components absent from this table are absent, for the error.
    """

    family: str
    blocks: str
    attn: str
    mlp: str
    o_proj: str
    qkv: str | None = None
    q_proj: str | None = None
    k_proj: str | None = None
    v_proj: str | None = None
    attn_out: str | None = None
    pattern: tuple[str, ...] | None = None
    mlp_flat: bool = False
    rotary: bool = True
    missing: str = ""

    def hook_point(self, component: str) -> HookPoint:
        """The hook point of a component type.

        Raises:
            ConfigError: the architecture does not expose this component.
        """
        points = self._points()
        if component not in points:
            why = f" ({self.missing})" if self.missing else ""
            if component == "pattern":
                having = ", ".join(n for n, a in ARCHITECTURES.items() if a.pattern)
                why = f" (it is patched inside the attention function; available for: {having})"
            raise ConfigError(
                f"component {component!r} is not available for {self.family} models{why}",
                f"use one of: {', '.join(points)}",
            )
        return points[component]

    def components(self) -> list[str]:
        """The component types this architecture exposes."""
        return list(self._points())

    def _points(self) -> dict[str, HookPoint]:
        block = f"{self.blocks}.{{layer}}"
        points = {
            "resid_pre": HookPoint(block, "input"),
            "resid_post": HookPoint(block, "output"),
            "attn_out": (
                HookPoint(self.attn_out, "output")
                if self.attn_out
                else HookPoint(self.attn, "output", 0)
            ),
            "mlp_out": HookPoint(self.mlp, "output", flat=self.mlp_flat),
            "z": HookPoint(self.o_proj, "input"),
        }
        if self.pattern:
            points["pattern"] = HookPoint(self.attn, "output", ops=self.pattern, heads_first=True)
        for part, name in enumerate("qkv"):
            separate = getattr(self, f"{name}_proj")
            if separate:
                points[name] = HookPoint(separate, "output")
            elif self.qkv:
                points[name] = HookPoint(self.qkv, "output", part=part, parts=3)
        return points


def _llama_like(family: str, **overrides: Any) -> Architecture:
    """Llama's layout, shared by Mistral, Qwen2, Gemma, Gemma 2 and Phi."""
    layer = "model.layers.{layer}"
    attn = f"{layer}.self_attn"
    fields: dict[str, Any] = {
        "family": family,
        "blocks": "model.layers",
        "attn": attn,
        "mlp": f"{layer}.mlp",
        "o_proj": f"{attn}.o_proj",
        "q_proj": f"{attn}.q_proj",
        "k_proj": f"{attn}.k_proj",
        "v_proj": f"{attn}.v_proj",
    }
    return Architecture(**{**fields, **overrides})


ARCHITECTURES: dict[str, Architecture] = {
    "gpt2": Architecture(
        family="gpt2",
        blocks="transformer.h",
        attn="transformer.h.{layer}.attn",
        mlp="transformer.h.{layer}.mlp",
        o_proj="transformer.h.{layer}.attn.c_proj",
        qkv="transformer.h.{layer}.attn.c_attn",
        # eager_attention_forward's softmax, called through `attention_interface`
        pattern=("attention_interface_1", "nn_functional_softmax_0"),
        rotary=False,
    ),
    "gpt_neox": Architecture(
        family="gpt_neox",
        blocks="gpt_neox.layers",
        attn="gpt_neox.layers.{layer}.attention",
        mlp="gpt_neox.layers.{layer}.mlp",
        o_proj="gpt_neox.layers.{layer}.attention.dense",
        # The engine patches a head as a contiguous slice of a component's last
        # dimension; NeoX's query_key_value output is [q_h0 k_h0 v_h0 | q_h1 ...], so
        # a component's heads are strided, not a slice, and in-place patching of a copy
        # would silently change nothing.
        missing="q, k and v are fused in query_key_value, interleaved per head",
    ),
    "llama": _llama_like("llama"),
    "mistral": _llama_like("mistral"),
    "qwen2": _llama_like("qwen2"),
    "gemma": _llama_like("gemma"),
    # Gemma 2 normalises each sublayer's output before adding it to the residual
    # stream; what a sublayer contributes is that norm's output.
    "gemma2": _llama_like(
        "gemma2",
        attn_out="model.layers.{layer}.post_attention_layernorm",
        mlp="model.layers.{layer}.post_feedforward_layernorm",
    ),
    # Attention and MLP run in parallel from one LayerNorm; the output projection is
    # `dense`.
    "phi": _llama_like("phi", o_proj="model.layers.{layer}.self_attn.dense"),
    # No MLP module: fc1/fc2 sit in the decoder layer, on (batch·pos, d) rows.
    "opt": Architecture(
        family="opt",
        blocks="model.decoder.layers",
        attn="model.decoder.layers.{layer}.self_attn",
        mlp="model.decoder.layers.{layer}.fc2",
        mlp_flat=True,
        rotary=False,
        o_proj="model.decoder.layers.{layer}.self_attn.out_proj",
        q_proj="model.decoder.layers.{layer}.self_attn.q_proj",
        k_proj="model.decoder.layers.{layer}.self_attn.k_proj",
        v_proj="model.decoder.layers.{layer}.self_attn.v_proj",
    ),
}


@dataclass(frozen=True)
class Dimensions:
    """Sizes read from the model config, under their many per-family names."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    vocab_size: int

    def heads_of(self, component: str) -> int:
        """How many heads a headed component splits into (k and v: the key/value heads)."""
        return self.n_kv_heads if uses_kv_heads(component) else self.n_heads


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
        n_kv_heads=getattr(hf_config, "num_key_value_heads", None) or n_heads,
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


def select(value: Any, point: HookPoint, shape: tuple[int, ...] | None = None) -> Any:
    """The component inside a module's input or output: a tuple element, a fused slice.

    Args:
        value: The module's whole input or output.
        point: Where the component sits in it.
        shape: (batch, pos) of the forward pass; needed only for a ``flat`` point, whose
            rows are unflattened into a view, so writes into the result reach the model.

    Raises:
        ConfigError: a flat point and no ``shape``.
    """
    if point.index is not None:
        value = value[point.index]
    if point.flat:
        if shape is None:
            raise ConfigError(
                f"{point.module} sees (batch·pos, width) rows and no (batch, pos) shape "
                "was given to unflatten them",
                "sweep another component for this model, or pass shape=(batch, pos) "
                "to patchsweep.components.read/select",
            )
        value = value.view(*shape[:2], value.shape[-1])
    if point.part is not None:
        width = value.shape[-1] // point.parts
        value = value[..., point.part * width : (point.part + 1) * width]
    if point.heads_first:
        value = value.transpose(1, 2)
    return value


def read_raw(root: Any, point: HookPoint, layer: int) -> Any:
    """The whole input or output of a hook point's module inside an nnsight trace."""
    module = resolve(root, point.module, layer)
    if point.ops:
        for op in point.ops:
            module = getattr(module.source, op)
        return module.output
    return module.input if point.io == "input" else module.output


def prepare(root: Any, point: HookPoint, layer: int) -> None:
    """Inside a trace, before the block runs: make a value inside a function readable.

    nnsight instruments a module's forward for ``.source`` when it is first touched,
    which must happen before the module starts; a trace that reads other values inside
    the same module first (q, k, v before the pattern) calls this at the block's start.
    """
    if point.ops:
        _ = resolve(root, point.module, layer).source


def read(root: Any, point: HookPoint, layer: int, shape: tuple[int, ...] | None = None) -> Any:
    """The activation at a hook point inside an nnsight trace (a tensor, patchable in place).

    ``shape`` is the (batch, pos) of the traced input, needed for ``flat`` points only.
    """
    return select(read_raw(root, point, layer), point, shape)
