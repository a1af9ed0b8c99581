"""The method's definition, written independently of the engine: one forward pass per
patch, plain PyTorch hooks on the Hugging Face model, the source activation recomputed
from the source prompt every time. Slow and obviously right; tests compare against it."""

from __future__ import annotations

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
) -> torch.Tensor:
    """Final-position logits of ``target`` with one site taken from ``source``'s run.

    ``n_heads`` is the head count of this component (the key/value heads for k and v);
    ``window`` patches the same site in ``window`` consecutive layers from ``layer`` on.
    """
    handles = []
    for at in range(layer, min(layer + window, hf.config.num_hidden_layers)):
        src = _activation(hf, arch, component, at, source)
        module, point = _hook_module(hf, arch, component, at)
        handles.append(_install(module, point, src, n_heads, head, position))
    try:
        with torch.no_grad():
            return hf(target.unsqueeze(0)).logits[0, -1].float()
    finally:
        for handle in handles:
            handle.remove()


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
    model, pairs, sites, component: str, direction: str, window: int = 1
) -> torch.Tensor:
    """(S, N) logit differences of a whole sweep, one forward pass per (site, prompt)."""
    from patchsweep.metrics import logit_diff

    out = torch.empty(len(sites), pairs.n_pairs)
    for s in range(len(sites)):
        for i in range(pairs.n_pairs):
            n = int(pairs.lengths[i])
            clean, corrupted = pairs.clean_ids[i, :n], pairs.corrupted_ids[i, :n]
            target, source = (corrupted, clean) if direction == "denoise" else (clean, corrupted)
            logits = patched_logits(
                model.hf, model.arch, model.dims.heads_of(component), component,
                int(sites.layers[s]), int(sites.heads[s]), int(sites.positions[s, i]),
                target, source, window=window,
            )  # fmt: skip
            out[s, i] = logit_diff(
                logits[None], pairs.correct_ids[i : i + 1], pairs.incorrect_ids[i : i + 1]
            )[0]
    return out
