"""Attribution patching (AtP): every site's patching effect from one forward and one
backward pass per chunk of prompts.

Patching a site replaces its target-run activation ``a`` with the source run's ``a'``.
To first order the metric then moves by ``(a' − a) · ∂metric/∂a``, the gradient taken in
the unpatched target run (Nanda 2023; Syed et al. 2023). One backward pass gives the
gradient at every layer and position at once, so a sweep of thousands of sites costs
about three forward passes per prompt instead of one patched row per site.

The estimate is reported as the metric the patch would give, ``target metric +
estimated change``, so the tables, normalisation and figures treat it like an exact
sweep's; the ``method`` column tells the two apart.

Where the first-order estimate is known to fail, AtP* (Kramár et al. 2024) helps:

- *QK fix*: a query or key patch changes the attention pattern through a softmax, which
  saturates. For q and k sites the pattern the patch would give is computed exactly from
  the queries and keys, and only the step from pattern to metric is linearised. It needs
  the attention pattern as a hook point and scores that are the plain product of the
  stored q and k (no rotary embedding between them).
- *GradDrop*: the gradient can cancel across paths, hiding a site with a large effect.
  With ``grad_drop`` each layer's residual contribution is cut from the backward pass in
  turn, and a site's score is the mean magnitude of its L estimates; a large score with
  a small estimate flags a possible false negative.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import nnsight
import torch
from tqdm.auto import tqdm

from patchsweep.capture import add_embedding_delta
from patchsweep.checkpoint import Checkpoint
from patchsweep.component_types import COMPONENT_TYPES, is_headed
from patchsweep.components import Dimensions, HookPoint, prepare, read_raw, resolve, select
from patchsweep.engine.accounting import PassShape, record_pass
from patchsweep.engine.inputs import PatchInputs
from patchsweep.engine.sites import Sites
from patchsweep.errors import ConfigError
from patchsweep.metrics import Metric
from patchsweep.models import LoadedModel

QK_COMPONENTS = ("q", "k")


@dataclass
class Attribution:
    """An attribution sweep's result.

    Attributes:
        metric: (S, N) the estimated metric after each site's patch.
        target: (N,) the unpatched target run's metric, as this pass computed it.
        grad_drop: (S, N) the GradDrop score (mean |estimate| with each layer's gradient
            path cut), or None when not asked for.
        passes: forward and backward passes run, by kind.
    """

    metric: torch.Tensor
    target: torch.Tensor
    grad_drop: torch.Tensor | None = None
    passes: dict[str, int] = field(default_factory=dict)


def check_attribution(model: LoadedModel, component: str, qk_fix: bool, name: str) -> None:
    """Refuse, before any work, what attribution cannot do for this model.

    Raises:
        ConfigError: the component has no hook point, or the QK fix is asked for where
            the pattern cannot be recomputed from the stored queries and keys.
    """
    model.arch.hook_point(component)  # raises with the components the model has
    if not (qk_fix and component in QK_COMPONENTS):
        return
    if model.arch.pattern is None or model.arch.rotary:
        why = (
            "it has no attention-pattern hook point"
            if model.arch.pattern is None
            else "its rotary embeddings sit between the stored q/k and the scores"
        )
        raise ConfigError(
            f"sweeps.{name}: the QK fix for {component} sites cannot be computed for "
            f"{model.arch.family} models ({why})",
            f"set sweeps.{name}.qk_fix: false for plain attribution patching of "
            f"{component}, or sweep z / v / attn_out instead",
        )


def run_attribution(
    model: LoadedModel,
    component: str,
    sites: Sites,
    inputs: PatchInputs,
    metric: Metric,
    *,
    qk_fix: bool = True,
    grad_drop: bool = False,
    budget_mb: float = 1024,
    max_batch: int = 256,
    progress: bool = True,
    desc: str = "attribute",
    checkpoint: Checkpoint | None = None,
) -> Attribution:
    """Estimate every site's patched metric from gradients in the target run.

    Args:
        model: The model; its weights are not changed (their gradients are switched off
            while the passes run).
        component: The component type of every site.
        sites: The sweep's S sites (windows and every-position sites add up the
            estimates of the single sites they patch, as a first-order estimate does).
        inputs: Target prompts, source activations (``inputs.source``) and answers.
        metric: Scores the logits; it must be differentiable.
        qk_fix: Recompute the attention pattern exactly for q and k sites (AtP*).
        grad_drop: Also compute the GradDrop score (L more backward passes per chunk).
        budget_mb: Memory one forward and backward pass may use.
        max_batch: Upper bound on prompts per pass.
        progress: Show a progress bar.
        desc: The progress bar's label.
        checkpoint: Where finished chunks of prompts are saved as the sweep goes, and
            read back from when a killed sweep is run again.
    """
    n_prompts, n_sites = int(inputs.lengths.shape[0]), len(sites)
    # One (S + 1 [+ S], N) table: each site's estimate, the target metric, and the
    # GradDrop scores, so that a checkpoint holds all of a finished chunk at once.
    rows = 2 * n_sites + 1 if grad_drop else n_sites + 1
    table = torch.full((rows, n_prompts), float("nan"))
    done = checkpoint.resume(table) if checkpoint else torch.zeros(table.shape, dtype=torch.bool)
    passes = {"forward": 0, "backward": 0}
    fix = qk_fix and component in QK_COMPONENTS
    n_layers = model.dims.n_layers
    bar = tqdm(total=n_prompts, desc=desc, unit="prompt", disable=not progress, leave=False)
    with _frozen_weights(model):
        for chunk in prompt_chunks(model.dims, inputs.lengths, budget_mb, max_batch):
            bar.update(len(chunk))
            if bool(done[:, chunk].all()):
                continue  # finished before the sweep was interrupted
            length = int(inputs.lengths[chunk[0]])
            contrib, target = _contributions(
                model, component, inputs, chunk, metric, fix, range(n_layers)
            )
            passes["forward"] += 1
            passes["backward"] += 1
            table[:n_sites, chunk] = target[None] + site_estimates(contrib, sites, chunk, length)
            table[n_sites, chunk] = target
            if grad_drop:
                scores = []
                for cut in range(n_layers):
                    cut_contrib, ran = _with_layer_cut(
                        model, component, inputs, chunk, metric, fix, contrib, cut
                    )
                    passes["forward"] += ran
                    passes["backward"] += ran
                    scores.append(site_estimates(cut_contrib, sites, chunk, length).abs())
                table[n_sites + 1 :, chunk] = torch.stack(scores).sum(0) / max(n_layers - 1, 1)
            done[:, chunk] = True
            if checkpoint:
                checkpoint.save(table, done)
    bar.close()
    drop = table[n_sites + 1 :] if grad_drop else None
    return Attribution(table[:n_sites], table[n_sites], drop, passes)


def site_estimates(
    contrib: torch.Tensor, sites: Sites, prompts: torch.Tensor, length: int
) -> torch.Tensor:
    """(S, B) each site's estimated metric change from per-element contributions.

    Args:
        contrib: (B, L, T, H) the estimated change from patching one (layer, position,
            head) alone; H is 1 for a whole component.
        sites: The sweep's sites; a site patching every position or a window of layers
            adds up its single sites' changes.
        prompts: (B,) which prompts the contributions are of.
        length: Their token length.
    """
    n_layers = contrib.shape[1]
    # every position at once: the sum over the prompt's positions
    cumulative = torch.cat([contrib, contrib[:, :, :length].sum(2, keepdim=True)], dim=2)
    head = sites.heads.clamp(min=0)
    positions = sites.positions[:, prompts]  # (S, B)
    slot = torch.where(positions >= 0, positions, length).clamp(max=length)
    batch = torch.arange(len(prompts))
    total = torch.zeros(len(sites), len(prompts), dtype=contrib.dtype)
    for offset in range(sites.window):
        layer = sites.layers + offset
        inside = layer < n_layers
        values = cumulative[
            batch[None, :], layer.clamp(max=n_layers - 1)[:, None], slot, head[:, None]
        ]  # (S, B)
        total += torch.where(inside[:, None], values, torch.zeros_like(values))
    return total


def prompt_chunks(
    dims: Dimensions, lengths: torch.Tensor, budget_mb: float, max_batch: int
) -> Iterator[torch.Tensor]:
    """Prompts of one length at a time, as many per pass as the memory budget allows."""
    for length in torch.unique(lengths).tolist():
        prompts = torch.nonzero(lengths == length).flatten()
        per_prompt = _prompt_bytes(dims, int(length))
        rows = max(1, min(max_batch, int(budget_mb * 2**20 // max(per_prompt, 1))))
        yield from prompts.split(rows)


def planned_passes(
    dims: Dimensions,
    lengths: torch.Tensor,
    component: str,
    budget_mb: float,
    max_batch: int,
    grad_drop: bool = False,
) -> list[PassShape]:
    """Every forward-and-backward pass :func:`run_attribution` runs, as it records them
    (what ``patchsweep estimate`` and the verify stage's cost report count)."""
    shapes = []
    cuts = [c for c in range(dims.n_layers) if c > 0 or component == "resid_pre"]
    for chunk in prompt_chunks(dims, lengths, budget_mb, max_batch):
        tokens = len(chunk) * int(lengths[chunk[0]])
        repeats = 1 + (len(cuts) if grad_drop else 0)
        shapes += [PassShape("attribution", len(chunk), tokens, dims.n_layers)] * repeats
    return shapes


def _prompt_bytes(dims: Dimensions, length: int) -> int:
    """Working memory of one prompt's forward and backward pass, in float32: what the
    backward pass keeps per layer (about 34 residual widths and 3 attention maps per
    position), plus the logits."""
    per_layer = length * (34 * dims.d_model + 3 * dims.n_heads * length) * 4
    return dims.n_layers * per_layer + length * dims.vocab_size * 4


@contextmanager
def _frozen_weights(model: LoadedModel) -> Iterator[None]:
    """No gradient for the weights while attributing (only activations need one): the
    backward pass then neither computes nor stores weight gradients."""
    params = [p for p in model.hf.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            yield
    finally:
        for p in params:
            p.requires_grad_(True)


@dataclass
class _Reading:
    """One hook point's tensor inside the trace: saved value, and its gradient later."""

    tensor: Any
    point: HookPoint  # what remains to select from it (no tuple index)
    grad: Any = None


def _with_layer_cut(
    model: LoadedModel,
    component: str,
    inputs: PatchInputs,
    prompts: torch.Tensor,
    metric: Metric,
    qk_fix: bool,
    uncut: torch.Tensor,
    cut: int,
) -> tuple[torch.Tensor, int]:
    """GradDrop's contributions with block ``cut``'s attention and MLP cut from the
    backward pass (its skip path kept), and the passes that took (0 or 1).

    Cutting a block changes the gradient only of what lies before it: sites in later
    layers keep their estimates, sites inside the cut block get none, and the block's
    input (resid_pre) keeps only its skip path.
    """
    out = uncut.clone()
    reads_own_input = component == "resid_pre"
    if not reads_own_input:
        out[:, cut] = 0
    layers = range(cut + 1 if reads_own_input else cut)
    if not len(layers):
        return out, 0
    before, _ = _contributions(model, component, inputs, prompts, metric, qk_fix, layers, cut)
    out[:, : len(layers)] = before
    return out, 1


def _contributions(
    model: LoadedModel,
    component: str,
    inputs: PatchInputs,
    prompts: torch.Tensor,
    metric: Metric,
    qk_fix: bool,
    layers: range,
    cut: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward and one backward pass over ``prompts`` (all of one length).

    Returns (B, len(layers), T, H) contributions of ``layers`` (which start at 0) and the
    (B,) target metric. ``cut`` stops the gradient through that block's attention and
    MLP (GradDrop), keeping the skip path; it comes after every layer read.
    """
    lm, arch, dims = model.lm, model.arch, model.dims
    length = int(inputs.lengths[prompts[0]])
    ids = inputs.target_ids[prompts, :length].to(model.device)
    shape = tuple(ids.shape)
    kind = COMPONENT_TYPES[component]
    names = ("q", "k", "pattern") if qk_fix else (component,)
    points = {name: arch.hook_point(name) for name in names}
    kwargs: dict[str, Any] = {"logits_to_keep": 1}
    if inputs.score_positions is not None:
        kwargs["logits_to_keep"] = inputs.score_positions[prompts].clamp(min=0).to(model.device)
    delta = None
    if inputs.target_delta is not None:
        delta = inputs.target_delta[prompts, :length].to(model.device)
    correct = inputs.correct[prompts].to(model.device)
    incorrect = inputs.incorrect[prompts].to(model.device)
    clean = (
        inputs.clean_logits[prompts].to(model.device) if inputs.clean_logits is not None else None
    )
    readings: list[dict[str, _Reading]] = [{} for _ in layers]
    saved: dict[str, Any] = {}
    with model.trace(ids, **kwargs):
        first = read_raw(lm, arch.hook_point("resid_pre"), 0)
        if delta is not None:
            first = add_embedding_delta(lm, arch, delta)
        if not first.requires_grad:
            first.requires_grad_(True)  # the weights need none; the activations do
        for layer in layers:
            for point in points.values():
                prepare(lm, point, layer)
            fused: dict[tuple, Any] = {}  # a fused q/k/v output is read once
            for name, point in points.items():
                key = (point.module, point.io, point.ops)
                if layer == 0 and name == "resid_pre":
                    raw = first
                elif key in fused:
                    raw = fused[key]
                else:
                    raw = read_raw(lm, point, layer)
                    if point.index is not None:
                        raw = raw[point.index]
                    fused[key] = raw
                readings[layer][name] = _Reading(raw.save(), replace(point, index=None))
        if cut is not None:
            block = resolve(lm, arch.blocks + ".{layer}", cut)
            start = block.input
            block.output = start + (block.output - start).detach()
        logits = lm.output.logits
        scored = logits if inputs.score_positions is not None else logits[:, -1]
        values = metric(scored.float(), correct, incorrect, clean)
        saved["metric"] = nnsight.save(values)
        with values.sum().backward():
            for layer in reversed(layers):
                grads: dict[int, Any] = {}  # one gradient per traced tensor
                for name in reversed(names):
                    reading = readings[layer][name]
                    ident = id(reading.tensor)
                    if ident not in grads:
                        grads[ident] = reading.tensor.grad.save()
                    reading.grad = grads[ident]
    record_pass("attribution", len(prompts), ids.numel(), dims.n_layers)
    target = saved["metric"].detach().float().cpu()
    per_layer = []
    for layer in layers:
        taken = {
            name: (
                _stored_form(r.tensor, r.point, shape, name, dims),
                _stored_form(r.grad, r.point, shape, name, dims),
            )
            for name, r in readings[layer].items()
        }
        per_layer.append(
            _layer_contribution(model, component, kind.keys, inputs, prompts, layer, taken, qk_fix)
        )
    return torch.stack(per_layer, dim=1), target


def _stored_form(
    value: Any, point: HookPoint, shape: tuple[int, ...], name: str, dims: Any
) -> torch.Tensor:
    """A traced value as capture stores it: (B, T, d), (B, T, heads, d_head), or
    (B, T, heads, keys) for patterns; float32 on the CPU."""
    if value is None:
        raise ConfigError(
            f"no gradient reached {name}: the metric does not depend on it in this model",
            "check the metric and the model's hook points (src/patchsweep/components.py)",
        )
    out = select(value.detach(), point, shape).float().cpu()
    if is_headed(name) and name != "pattern":
        out = out.unflatten(-1, (dims.heads_of(name), -1))
    return out


def _layer_contribution(
    model: LoadedModel,
    component: str,
    keys_axis: bool,
    inputs: PatchInputs,
    prompts: torch.Tensor,
    layer: int,
    taken: dict[str, tuple[torch.Tensor, torch.Tensor]],
    qk_fix: bool,
) -> torch.Tensor:
    """(B, T, H) the estimated metric change of patching each position (and head) of
    one layer alone."""
    length = int(inputs.lengths[prompts[0]])
    source = inputs.source[prompts, layer, :length].float()
    if keys_axis:
        source = source[..., :length]
    if qk_fix:
        return _qk_fixed(model, component, layer, source, taken)
    target, grad = taken[component]
    product = (source - target) * grad
    if is_headed(component):
        return product.sum(-1)  # (B, T, H): over d_head, or over keys for patterns
    return product.sum(-1, keepdim=True)  # (B, T, 1)


def _qk_fixed(
    model: LoadedModel,
    component: str,
    layer: int,
    source: torch.Tensor,
    taken: dict[str, tuple[torch.Tensor, torch.Tensor]],
) -> torch.Tensor:
    """AtP*'s QK fix: the exact attention pattern a q or k patch gives, then the linear
    step from pattern to metric.

    Scores are ``scaling · q · kᵀ`` plus the mask; the softmax forgets a constant per
    row, so the patched pattern is ``softmax(log A + Δscores)`` from the target pattern A.
    """
    q, _ = taken["q"]
    k, _ = taken["k"]
    pattern, pattern_grad = taken["pattern"]  # (B, T, H, T)
    scaling = float(resolve(model.hf, model.arch.attn, layer).scaling)
    n_heads, n_kv = q.shape[2], k.shape[2]
    group = n_heads // n_kv
    k_heads = k.repeat_interleave(group, dim=2)  # (B, T, H, d): each query head's key
    a = pattern.double()
    g = pattern_grad.double()
    if component == "q":
        shift = torch.einsum("bthd,bshd->bths", (source - q).double(), k_heads.double())
        patched = torch.softmax(a.log() + scaling * shift, dim=-1)
        return ((patched - a) * g).sum(-1).float()  # (B, T, H)
    # k at key position s: every query row t sees one score changed by δ[t, s]
    k_delta = (source - k).repeat_interleave(group, dim=2)  # (B, S, H, d)
    delta = scaling * torch.einsum("bthd,bshd->bths", q.double(), k_delta.double())
    grown = torch.expm1(delta.clamp(max=700.0))  # e^δ − 1
    denom = 1 + a * grown  # the row's new normaliser, relative to the old one
    row = (a * g).sum(-1, keepdim=True)  # Σ_s' A G per (t, h)
    effect = (1 / denom - 1) * row + a * g * grown / denom  # (B, T, H, S)
    by_key = effect.sum(1).transpose(1, 2)  # (B, S, H): over query rows
    batch, keys = by_key.shape[:2]
    return by_key.view(batch, keys, n_kv, group).sum(-1).float()  # (B, S, KV)
