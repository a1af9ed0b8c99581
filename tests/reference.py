"""The method's definition, written independently of the engine: one forward pass per
patch, plain PyTorch hooks on the Hugging Face model, the source activation taken from
the source prompt's own plain run (never from the engine's captures). Slow and obviously
right; tests compare against it."""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import torch

from patchsweep.components import resolve, select


def _hook_module(hf, arch, component: str, layer: int):
    point = arch.hook_point(component)
    return resolve(hf, point.module, layer), point


def _activation(hf, arch, component: str, layer: int, ids: torch.Tensor) -> torch.Tensor:
    module, point = _hook_module(hf, arch, component, layer)
    seen = {}

    def grab_input(mod, args, kwargs):
        seen["x"] = (args[0] if args else next(iter(kwargs.values()))).clone()

    def grab_output(mod, args, output):
        seen["x"] = select(output, point, tuple(ids[None].shape)).clone()

    handle = (
        module.register_forward_pre_hook(grab_input, with_kwargs=True)
        if point.io == "input"
        else module.register_forward_hook(grab_output)
    )
    try:
        with torch.no_grad():
            hf(ids.unsqueeze(0))
    finally:
        handle.remove()
    return seen["x"][0]  # (T, width)


def patched_logits(
    hf,
    arch,
    n_heads: int,
    component: str,
    layer: int,
    head: int,
    position: int,
    target: torch.Tensor,
    source: torch.Tensor,
    window: int = 1,
    read_at: torch.Tensor | None = None,
    sources: dict[int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Final-position logits of ``target`` with one site taken from ``source``'s run.

    ``n_heads`` is the head count of this component (the key/value heads for k and v);
    ``window`` patches the same site in ``window`` consecutive layers from ``layer`` on;
    ``read_at`` (K,) returns the logits at those positions instead, (K, V). ``sources``
    keeps ``source``'s activations by layer for the next site of the same ``source`` and
    ``component`` (an unpatched run: the same whichever site is patched).
    """
    handles = []
    for at in range(layer, min(layer + window, hf.config.num_hidden_layers)):
        src = None if sources is None else sources.get(at)
        if src is None:
            src = _activation(hf, arch, component, at, source)
            if sources is not None:
                sources[at] = src
        module, point = _hook_module(hf, arch, component, at)
        handles.append(_install(module, point, src, n_heads, head, position))
    try:
        with torch.no_grad():
            logits = hf(target.unsqueeze(0)).logits[0].float()
        return logits[-1] if read_at is None else logits[read_at]
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _gpt2_attention(hf, on_pattern):
    """GPT-2's eager attention, restated from its definition, calling
    ``on_pattern(layer, pattern)`` on each (B, heads, q, k) pattern; it may edit it.

    Modules whose forward nnsight has instrumented (for ``.source``) run their plain
    class forward meanwhile, so that this reference stays independent of nnsight.
    """
    from transformers.models.gpt2 import modeling_gpt2

    instrumented = {m: m.__dict__.pop("forward") for m in hf.modules() if "forward" in m.__dict__}

    def attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
        scores = query @ key.transpose(-1, -2) * (scaling or query.shape[-1] ** -0.5)
        if attention_mask is not None:
            scores = scores + attention_mask
        pattern = scores.softmax(-1)
        on_pattern(module.layer_idx, pattern)
        return (pattern @ value).transpose(1, 2), pattern

    original = modeling_gpt2.eager_attention_forward
    modeling_gpt2.eager_attention_forward = attention
    try:
        yield
    finally:
        modeling_gpt2.eager_attention_forward = original
        for module, forward in instrumented.items():
            module.forward = forward


def patched_pattern_logits(
    hf, layer, head, position, target, source, window=1, read_at=None, sources=None
):
    """As :func:`patched_logits`, for a head's attention pattern (GPT-2 only): the
    query row ``position`` (every row if −1) of ``head`` taken from ``source``'s run.
    ``sources`` keeps that run's patterns (every layer) for the next site."""
    layers = range(layer, min(layer + window, hf.config.num_hidden_layers))
    seen = {} if sources is None else sources
    if not seen:
        record = _gpt2_attention(hf, lambda at, pattern: seen.setdefault(at, pattern.clone()))
        with record, torch.no_grad():
            hf(source.unsqueeze(0))
    rows = slice(None) if position < 0 else position

    def overwrite(at, pattern):
        if at in layers:
            pattern[0, head, rows] = seen[at][0, head, rows]

    with _gpt2_attention(hf, overwrite), torch.no_grad():
        logits = hf(target.unsqueeze(0)).logits[0].float()
    return logits[-1] if read_at is None else logits[read_at]


def _install(module, point, src, n_heads, head, position):
    def overwrite(full: torch.Tensor) -> torch.Tensor:
        full = full.clone()
        x = full.view(1, -1, full.shape[-1]) if point.flat else full  # (B·T, d) rows
        if point.part is not None:
            width = full.shape[-1] // point.parts
            x = full[..., point.part * width : (point.part + 1) * width]  # a view into full
        rows = slice(None) if position < 0 else position
        if head < 0:
            x[0, rows] = src[rows]
        else:
            d_head = x.shape[-1] // n_heads
            cols = slice(head * d_head, (head + 1) * d_head)
            x[0, rows, cols] = src[rows, cols]
        return full

    def pre(mod, args, kwargs):
        if args:
            return (overwrite(args[0]), *args[1:]), kwargs
        key = next(iter(kwargs))
        return args, {**kwargs, key: overwrite(kwargs[key])}

    def post(mod, args, output):
        if point.index is None:
            return overwrite(output)
        items = list(output)
        items[point.index] = overwrite(items[point.index])
        return tuple(items)

    if point.io == "input":
        return module.register_forward_pre_hook(pre, with_kwargs=True)
    return module.register_forward_hook(post)


def plain_logits(hf, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(ids.unsqueeze(0)).logits[0, -1].float()


def reference_sweep(
    model, pairs, sites, component: str, direction: str, window: int = 1, metric=None
) -> torch.Tensor:
    """(S, N) metric values of a whole sweep, one forward pass per (site, prompt).

    The metric is the logit difference unless given; with score positions in ``pairs``
    it gets the logits at those positions, (1, K, V), and each position's next token.
    The source activations come from the source prompt's own unpatched run, once per
    prompt and layer (not from the engine's captured runs).
    """
    from patchsweep.metrics import logit_diff

    metric = metric or logit_diff
    out = torch.empty(len(sites), pairs.n_pairs)
    # the source run's activations (patterns) of each prompt, by layer
    sources: list[dict] = [{} for _ in range(pairs.n_pairs)]
    for s in range(len(sites)):
        for i in range(pairs.n_pairs):
            n = int(pairs.lengths[i])
            clean, corrupted = pairs.clean_ids[i, :n], pairs.corrupted_ids[i, :n]
            target, source = (corrupted, clean) if direction == "denoise" else (clean, corrupted)
            scored = None
            correct, incorrect = pairs.correct_ids[i : i + 1], pairs.incorrect_ids[i : i + 1]
            if pairs.score_positions is not None:
                scored = pairs.score_positions[i][pairs.score_positions[i] >= 0]
                correct = pairs.score_targets[i : i + 1, : len(scored)]
            site = int(sites.layers[s]), int(sites.heads[s]), int(sites.positions[s, i])
            if component == "pattern":
                logits = patched_pattern_logits(
                    model.hf, *site, target, source, window=window, read_at=scored,
                    sources=sources[i],
                )  # fmt: skip
            else:
                logits = patched_logits(
                    model.hf, model.arch, model.dims.heads_of(component), component,
                    *site, target, source, window=window, read_at=scored, sources=sources[i],
                )  # fmt: skip
            out[s, i] = metric(logits[None], correct, incorrect)[0]
    return out


def _target_readings(hf, arch, component: str, target: torch.Tensor, metric, answers):
    """The target run's activations of ``component`` at every layer, with their
    gradients of the metric (plain hooks and autograd), and its attention patterns with
    theirs (GPT-2). ``answers`` are (correct, incorrect[, read_at])."""
    n_layers = hf.config.num_hidden_layers
    acts: dict[int, torch.Tensor] = {}
    patterns: dict[int, torch.Tensor] = {}
    handles = []
    for layer in range(n_layers):
        module, point = _hook_module(hf, arch, component, layer)

        def pre(mod, args, kwargs, layer=layer):
            x = args[0] if args else next(iter(kwargs.values()))
            x.retain_grad()
            acts[layer] = x

        def post(mod, args, output, layer=layer, point=point):
            x = output if point.index is None else output[point.index]
            x.retain_grad()
            acts[layer] = x

        handles.append(
            module.register_forward_pre_hook(pre, with_kwargs=True)
            if point.io == "input"
            else module.register_forward_hook(post)
        )

    def keep_pattern(layer, pattern):
        pattern.retain_grad()
        patterns[layer] = pattern

    context = _gpt2_attention(hf, keep_pattern) if arch.pattern else _nothing()
    correct, incorrect, read_at = answers
    try:
        with context, torch.enable_grad():
            embeds = hf.get_input_embeddings()(target.unsqueeze(0)).detach().requires_grad_()
            logits = hf(inputs_embeds=embeds).logits[0].float()
            scored = logits[-1][None] if read_at is None else logits[read_at][None]
            value = metric(scored, correct, incorrect)[0]
            value.backward()
        hf.zero_grad(set_to_none=True)
    finally:
        for handle in handles:
            handle.remove()
    return acts, patterns, float(value.detach())


@contextmanager
def _nothing():
    yield


def _source_pattern(hf, layer: int, ids: torch.Tensor) -> torch.Tensor:
    seen = {}
    with _gpt2_attention(hf, lambda at, p: seen.setdefault(at, p.clone())), torch.no_grad():
        hf(ids.unsqueeze(0))
    return seen[layer][0]  # (heads, T, T)


def _patched_pattern(hf, arch, component, layer, head, position, target, source_value):
    """The attention pattern at ``layer`` of the target run with one q or k site (head,
    position) overwritten by ``source_value`` (T, width): what the QK fix recomputes."""
    module, point = _hook_module(hf, arch, component, layer)
    n_heads = hf.config.num_attention_heads
    seen = {}
    handle = _install(module, point, source_value, n_heads, head, position)
    try:
        with _gpt2_attention(hf, lambda at, p: seen.setdefault(at, p.clone())), torch.no_grad():
            hf(target.unsqueeze(0))
    finally:
        handle.remove()
    return seen[layer][0]


def attribution_reference(
    model, pairs, sites, component: str, direction: str, metric=None, qk_fix: bool = False
) -> torch.Tensor:
    """(S, N) the attribution estimate of each site's patched metric, from its
    definition: target metric + Σ (source − target activation) · ∂metric/∂activation,
    one prompt at a time with plain hooks and autograd; the source activation is
    recomputed from the source prompt. With ``qk_fix`` (GPT-2, q and k) the pattern a
    patch gives is taken from actually running the patched model, and only the step from
    pattern to metric is linear: Σ (patched − target pattern) · ∂metric/∂pattern."""
    from patchsweep.metrics import logit_diff

    metric = metric or logit_diff
    hf, arch = model.hf, model.arch
    n_layers = hf.config.num_hidden_layers
    headed = component in ("z", "q", "k", "v")
    n_heads = model.dims.heads_of(component) if headed else 1
    out = torch.empty(len(sites), pairs.n_pairs)
    for i in range(pairs.n_pairs):
        n = int(pairs.lengths[i])
        clean, corrupted = pairs.clean_ids[i, :n], pairs.corrupted_ids[i, :n]
        target, source = (corrupted, clean) if direction == "denoise" else (clean, corrupted)
        correct, incorrect = pairs.correct_ids[i : i + 1], pairs.incorrect_ids[i : i + 1]
        read_at = None
        if pairs.score_positions is not None:
            read_at = pairs.score_positions[i][pairs.score_positions[i] >= 0]
            correct = pairs.score_targets[i : i + 1, : len(read_at)]
        watched = "q" if component == "pattern" else component
        acts, patterns, base = _target_readings(
            hf, arch, watched, target, metric, (correct, incorrect, read_at)
        )
        sources: dict[int, torch.Tensor] = {}  # the source run's activation, by layer
        for s in range(len(sites)):
            layer0, head, pos = (
                int(sites.layers[s]),
                int(sites.heads[s]),
                int(sites.positions[s, i]),
            )
            rows = range(n) if pos < 0 else [pos]
            total = 0.0
            for layer in range(layer0, min(layer0 + sites.window, n_layers)):
                if component == "pattern":
                    if layer not in sources:
                        sources[layer] = _source_pattern(hf, layer, source)
                    src = sources[layer][head]
                    tgt = patterns[layer][0, head].detach()
                    grad = patterns[layer].grad[0, head]
                    total += float(((src - tgt) * grad)[list(rows)].sum())
                    continue
                _, point = _hook_module(hf, arch, component, layer)
                point = dataclasses.replace(point, index=None)  # acts hold the element
                if layer not in sources:
                    sources[layer] = _activation(hf, arch, component, layer, source)
                src_full = sources[layer]  # (T, width)
                tgt_full = select(acts[layer].detach(), point, (1, n))[0]
                grad_full = select(acts[layer].grad, point, (1, n))[0]
                width = src_full.shape[-1] // n_heads
                cols = slice(head * width, (head + 1) * width) if headed else slice(None)
                for t in rows:
                    if qk_fix and component in ("q", "k"):
                        new = _patched_pattern(
                            hf, arch, component, layer, head, t, target, src_full
                        )
                        old, g = patterns[layer][0].detach(), patterns[layer].grad[0]
                        total += float(((new - old) * g).sum())
                    else:
                        delta = src_full[t, cols] - tgt_full[t, cols]
                        total += float((delta * grad_full[t, cols]).sum())
            out[s, i] = base + total
    return out
