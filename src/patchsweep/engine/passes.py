"""One forward pass over a chunk of patched rows, in either of the two layouts.

Both layouts run the chunk's target prompts once, feed the blocks below the chunk's
lowest patched layer from the target run's cached residual stream, and at each patched
layer write every row's source value at its own site. They differ in how rows lie in
the batch:

- padded: one batch row per patched row, all starting at the chunk's earliest patched
  position (the target run's cached keys and values stand in for the positions before);
- packed: rows laid end to end in bins (:mod:`patchsweep.engine.packing`), each from its
  own patched position.

Each layout turns its rows into a plan, one :class:`LayerPatch` per layer: the places
(batch row, position) written there, the head each place takes and the value it gets.
One setter, :func:`write_patch`, applies a plan in both layouts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from patchsweep.capture import add_embedding_delta
from patchsweep.component_types import COMPONENT_TYPES, ComponentType, is_headed
from patchsweep.components import read, resolve
from patchsweep.engine.accounting import record_pass
from patchsweep.engine.inputs import PatchInputs
from patchsweep.engine.packing import Bins, attention_mask, pack, read_places
from patchsweep.engine.prefix import PrefixCache
from patchsweep.engine.sites import Sites
from patchsweep.models import LoadedModel


@dataclass(frozen=True)
class LayerPatch:
    """What one forward pass writes at one layer: P places, each with its source value.

    Attributes:
        layer: The layer written.
        rows: (P,) each place's batch row (a bin, when packed).
        positions: (P,) its index on the pass's sequence axis (a slot, when packed).
        heads: (P,) the head it takes, for components split into heads (else −1).
        values: (P, ...) the source value written there: (P, d), (P, heads, d_head), or
            (P, heads, keys) for attention patterns.
    """

    layer: int
    rows: torch.Tensor
    positions: torch.Tensor
    heads: torch.Tensor
    values: torch.Tensor


# The signature both layouts share, as the sweep calls them:
# (model, component, sites, inputs, sites s, prompts i, prefix cache) → logits.
Pass = Callable[
    [LoadedModel, str, Sites, PatchInputs, torch.Tensor, torch.Tensor, PrefixCache | None],
    torch.Tensor,
]


def write_patch(act: Any, patch: LayerPatch, n_heads: int) -> None:
    """Write a layer's patch into its activation, in place, in either layout.

    Args:
        act: The activation inside the trace: (B, T, d), or (B, T, heads, keys) for
            attention patterns.
        patch: What to write where.
        n_heads: The heads the component splits into, each place taking its own one;
            0 for a whole component.
    """
    if n_heads:
        if act.dim() == 3:  # (B, T, heads, d_head): a view, so writes reach the model
            act = act.view(act.shape[0], act.shape[1], n_heads, act.shape[-1] // n_heads)
        if len(patch.rows):
            places = torch.arange(len(patch.heads), device=patch.heads.device)
            act[patch.rows, patch.positions, patch.heads] = patch.values[places, patch.heads]
    elif len(patch.rows):
        act[patch.rows, patch.positions] = patch.values


def _run_plan(
    model: LoadedModel,
    component: str,
    plan: list[LayerPatch],
    resid: torch.Tensor | None,
    noise: torch.Tensor | None,
    shape: tuple[int, ...],
) -> None:
    """Inside a trace: enter at the plan's lowest layer, then write every layer's patch.

    Args:
        resid: (B, lowest, T, d) the target run's residual stream after each block below
            the lowest patched layer, which those blocks return instead of running; None
            runs every block.
        noise: (B, T, d) the target run's embedding noise, when the pass runs from the
            embeddings; else None.
        shape: (B, T) of the traced input.
    """
    lm, arch = model.lm, model.arch
    if resid is not None:
        for block in range(resid.shape[1]):
            resolve(lm, arch.blocks + ".{layer}", block).skip(resid[:, block])
    noised = add_embedding_delta(lm, arch, noise) if noise is not None else None
    point = arch.hook_point(component)
    n_heads = model.dims.heads_of(component) if is_headed(component) else 0
    for patch in plan:
        first_input = noised is not None and component == "resid_pre" and patch.layer == 0
        act = noised if first_input else read(lm, point, patch.layer, shape)
        write_patch(act, patch, n_heads)


def padded_pass(
    model: LoadedModel,
    component: str,
    sites: Sites,
    inputs: PatchInputs,
    s: torch.Tensor,
    i: torch.Tensor,
    prefix: PrefixCache | None,
) -> torch.Tensor:
    """One forward pass over rows (site s[k], prompt i[k]), a batch row each.

    ``prefix`` None runs every layer at every position (the plain path). Returns (B, V)
    final logits, or (B, K, V) at the score positions.
    """
    device = model.device
    length = int(inputs.lengths[i[0]])
    row_layers, row_heads = sites.layers[s], sites.heads[s]
    row_pos = sites.positions[s, i]
    fast = prefix is not None
    # Positions before `start` and blocks below `lowest` are as in the target run.
    row_starts = inputs.patch_starts(row_pos, i)
    start = min(int(row_starts.min()), int(inputs.first_scored(i).min())) if fast else 0
    lowest = int(row_layers.min()) if fast and inputs.target_resid is not None else 0
    batch = inputs.target_ids[i, start:length].to(device)
    kwargs: dict[str, Any] = {}
    if start and prefix is not None:
        kwargs["past_key_values"] = prefix.for_rows(i, start)
    if inputs.score_positions is not None:
        scored = inputs.score_positions[i]
        kwargs["logits_to_keep"] = (scored - start).clamp(min=0).to(device)
    else:
        kwargs["logits_to_keep"] = 1
    kind = COMPONENT_TYPES[component]
    plan = _padded_plan(inputs, kind, sites.window, row_layers, row_heads, row_pos, i, start)
    plan = [_on(device, patch) for patch in plan]
    resid = (
        inputs.target_resid[i, 1 : lowest + 1, start:length].to(device)
        if lowest and inputs.target_resid is not None
        else None
    )  # (B, lowest, T − start, d)
    noise = (
        inputs.target_delta[i, start:length].to(device)
        if inputs.target_delta is not None and lowest == 0
        else None
    )
    record_pass("padded", len(s), batch.numel(), model.dims.n_layers - lowest)
    with model.trace(batch, **kwargs):
        _run_plan(model, component, plan, resid, noise, tuple(batch.shape))
        logits = model.lm.output.logits.save()  # (B, K, V); K = 1 unless scored
    return logits.float() if inputs.score_positions is not None else logits[:, -1].float()


def packed_pass(
    model: LoadedModel,
    component: str,
    sites: Sites,
    inputs: PatchInputs,
    s: torch.Tensor,
    i: torch.Tensor,
    prefix: PrefixCache | None,
) -> torch.Tensor:
    """One packed forward pass over rows (site s[k], prompt i[k]); returns (R, V) logits,
    or (R, K, V) at the score positions. Needs ``prefix`` for rows that start late."""
    device = model.device
    length = int(inputs.lengths[i[0]])
    row_layers, row_heads, row_pos = sites.layers[s], sites.heads[s], sites.positions[s, i]
    starts = torch.minimum(inputs.patch_starts(row_pos, i), inputs.first_scored(i))
    bins = pack(i, starts, length)
    lowest = int(row_layers.min()) if inputs.target_resid is not None else 0
    use_prefix = bool((starts > 0).any())
    scored = inputs.score_positions[i] if inputs.score_positions is not None else None
    read_at, gather = read_places(bins, length, scored)
    kwargs: dict[str, Any] = {
        "attention_mask": attention_mask(bins, starts, use_prefix, model.dtype).to(device),
        "position_ids": bins.position.to(device),
        "logits_to_keep": read_at.to(device),
    }
    if use_prefix:
        assert prefix is not None, "packed passes run on the fast path, with a prefix cache"
        kwargs["past_key_values"] = prefix.for_rows(bins.prompt[:, 0], length)
    ids = inputs.target_ids[bins.prompt, bins.position].to(device)
    resid = (
        inputs.target_resid[bins.prompt, 1 : lowest + 1, bins.position].to(device).movedim(2, 1)
        if lowest and inputs.target_resid is not None
        else None
    )  # (B, lowest, W, d)
    noise = (
        inputs.target_delta[bins.prompt, bins.position].to(device)
        if inputs.target_delta is not None and lowest == 0
        else None
    )
    plan = _packed_plan(inputs, sites.window, bins, row_layers, row_heads, row_pos)
    plan = [_on(device, patch) for patch in plan]
    record_pass("packed", len(s), ids.numel(), model.dims.n_layers - lowest)
    with model.trace(ids, **kwargs):
        _run_plan(model, component, plan, resid, noise, tuple(ids.shape))
        logits = model.lm.output.logits.save()  # (places read, V), in (bin, slot) order
    return logits.float()[gather.to(logits.device)]


def _on(device: str, patch: LayerPatch) -> LayerPatch:
    return LayerPatch(
        patch.layer,
        patch.rows.to(device),
        patch.positions.to(device),
        patch.heads.to(device),
        patch.values.to(device),
    )


def _layer_range(inputs: PatchInputs, window: int, row_layers: torch.Tensor) -> range:
    """The layers a chunk patches: from its lowest row's layer to its highest row's
    window end, within the model."""
    n_layers = inputs.source.shape[1]
    return range(int(row_layers.min()), min(int(row_layers.max()) + window, n_layers))


def _padded_plan(
    inputs: PatchInputs,
    kind: ComponentType,
    window: int,
    row_layers: torch.Tensor,
    row_heads: torch.Tensor,
    row_pos: torch.Tensor,
    prompts: torch.Tensor,
    start: int,
) -> list[LayerPatch]:
    """Per patched layer: the rows patched there and the source values they take.

    A row patched at one position writes that position; a row patched at every
    position writes each from ``start`` on (positions counted from ``start``): before
    it, where the chunk's prompts are the same in both runs, the cached target run
    already holds the source values.
    """
    plan = []
    length = int(inputs.lengths[prompts[0]])
    for layer in _layer_range(inputs, window, row_layers):
        at = torch.nonzero((row_layers <= layer) & (layer < row_layers + window)).flatten()
        whole = at[row_pos[at] < 0]
        single = at[row_pos[at] >= 0]
        single_pos = row_pos[single]
        whole_values = inputs.source[prompts[whole], layer, start:length].flatten(0, 1)
        single_values = inputs.source[prompts[single], layer, single_pos]
        values = _joined(whole_values, single_values)
        if kind.keys:  # stored with keys padded to the longest prompt
            values = values[..., :length]
        width = length - start
        plan.append(
            LayerPatch(
                layer,
                rows=torch.cat([whole.repeat_interleave(width), single]),
                positions=torch.cat([torch.arange(width).repeat(len(whole)), single_pos - start]),
                heads=torch.cat([row_heads[whole].repeat_interleave(width), row_heads[single]]),
                values=values,
            )
        )
    return plan


def _joined(first: torch.Tensor, then: torch.Tensor) -> torch.Tensor:
    """``torch.cat([first, then])``, without the copy when either is empty."""
    if not len(first):
        return then
    return first if not len(then) else torch.cat([first, then])


def _packed_plan(
    inputs: PatchInputs,
    window: int,
    bins: Bins,
    row_layers: torch.Tensor,
    row_heads: torch.Tensor,
    row_pos: torch.Tensor,
) -> list[LayerPatch]:
    """Per patched layer: the (bin, slot) places patched there, their source values and
    heads. A row patched at one position patches its first slot; a row patched at every
    position, its whole segment."""
    plan = []
    filled = bins.row >= 0
    row = bins.row.clamp(min=0)
    slot_layer, slot_pos = row_layers[row], row_pos[row]
    patched_here = filled & ((slot_pos < 0) | (bins.position == slot_pos))
    for layer in _layer_range(inputs, window, row_layers):
        active = (slot_layer <= layer) & (layer < slot_layer + window) & patched_here
        at_bin, at_slot = torch.nonzero(active, as_tuple=True)
        values = inputs.source[bins.prompt[at_bin, at_slot], layer, bins.position[at_bin, at_slot]]
        heads = row_heads[row[at_bin, at_slot]]
        plan.append(LayerPatch(layer, at_bin, at_slot, heads, values))
    return plan
