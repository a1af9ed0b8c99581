"""The component types a sweep can patch, and what each one is: the one table.

Config validation, capture, the engine and the figures all need to know, per component
type, whether it splits into heads (and into which heads: key/value heads under grouped
attention), which stored activation holds it and which of the stored layers it is, and
how figures describe it. They read it here, so adding or changing a component type is
one row. Plain Python on purpose: the light stages (compose, normalize, plot) import it
without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ComponentType:
    """One component type.

    Attributes:
        name: As written in ``sweeps.<name>.component`` and in the tables.
        store: The stored activation it is read from (a ``capture.components`` name).
        layers: Which of the stored layers it is: ``resid`` holds the L + 1 block
            boundaries, block l's input at index l, so resid_pre is [0, L) and
            resid_post [1, L + 1).
        step: Where a block computes it, from its input (0) to its output; orders the
            stored activations.
        headed: It splits into heads, and ``sweeps.<name>.heads`` applies.
        kv_heads: Its heads are the key/value heads (grouped-query attention).
        keys: Its last axis is key positions, stored padded to the longest prompt.
        captured_by_default: Its store is in the default ``capture.components``.
        label: How a figure legend or a report describes it.
    """

    name: str
    store: str
    step: int
    label: str
    layers: slice = field(default_factory=lambda: slice(None), hash=False)
    headed: bool = False
    kv_heads: bool = False
    keys: bool = False
    captured_by_default: bool = False

    @property
    def offset(self) -> int:
        """The stored layer index of layer 0."""
        return int(self.layers.start or 0)


# In the order sweeps, choices and figure panels list them.
_TABLE = (
    ComponentType(
        "resid_pre",
        store="resid",
        step=0,
        layers=slice(0, -1),
        captured_by_default=True,
        label="resid_pre (residual stream before the block)",
    ),
    ComponentType(
        "resid_post",
        store="resid",
        step=8,
        layers=slice(1, None),
        captured_by_default=True,
        label="resid_post (residual stream after the block)",
    ),
    ComponentType(
        "attn_out",
        store="attn_out",
        step=6,
        captured_by_default=True,
        label="attn_out (attention-layer output)",
    ),
    ComponentType(
        "mlp_out",
        store="mlp_out",
        step=7,
        captured_by_default=True,
        label="mlp_out (MLP output)",
    ),
    ComponentType(
        "z", store="z", step=5, headed=True, captured_by_default=True, label="z (head outputs)"
    ),
    ComponentType("q", store="q", step=1, headed=True, label="q (head queries)"),
    ComponentType("k", store="k", step=2, headed=True, kv_heads=True, label="k (head keys)"),
    ComponentType("v", store="v", step=3, headed=True, kv_heads=True, label="v (head values)"),
    ComponentType(
        "pattern",
        store="pattern",
        step=4,
        headed=True,
        keys=True,
        label="pattern (attention patterns)",
    ),
)

COMPONENT_TYPES: dict[str, ComponentType] = {c.name: c for c in _TABLE}


def is_headed(name: str) -> bool:
    """Whether a component type (or the stored activation of that name) splits into heads."""
    kind = COMPONENT_TYPES.get(name)
    return kind is not None and kind.headed


def uses_kv_heads(name: str) -> bool:
    """Whether a component type's heads are the key/value heads."""
    kind = COMPONENT_TYPES.get(name)
    return kind is not None and kind.kv_heads


def _in_block_order(stores: set[str]) -> tuple[str, ...]:
    first = {s: min(c.step for c in _TABLE if c.store == s) for s in stores}
    return tuple(sorted(first, key=first.__getitem__))


# Derived views, for code that wants a list rather than a row.
COMPONENTS = tuple(COMPONENT_TYPES)
HEADED_COMPONENTS = tuple(c.name for c in _TABLE if c.headed)
# What the capture stage can store, in the order a block computes it. "resid" holds the
# residual stream at every block boundary; it is always stored (the engine starts from it).
STORABLE = _in_block_order({c.store for c in _TABLE})
DEFAULT_CAPTURE = _in_block_order({c.store for c in _TABLE if c.captured_by_default})
# Where each component type is stored, and which of the stored layers it is.
STORAGE = {c.name: (c.store, c.layers) for c in _TABLE}
# How figures and reports describe each component type.
COMPONENT_LABELS = {c.name: c.label for c in _TABLE}
