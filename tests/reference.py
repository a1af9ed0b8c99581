"""The method's definition, written independently of the engine: one forward pass per
patch, plain PyTorch hooks on the Hugging Face model, the source activation recomputed
from the source prompt every time. Slow and obviously right; tests compare against it."""

from __future__ import annotations

import torch

from patchsweep.components import resolve


def _hook_module(hf, arch, component: str, layer: int):
    point = arch.hook_point(component)
    return resolve(hf, point.module, layer), point


def _activation(hf, arch, component: str, layer: int, ids: torch.Tensor) -> torch.Tensor:
    module, point = _hook_module(hf, arch, component, layer)
    seen = {}

    def grab_input(mod, args, kwargs):
        seen["x"] = (args[0] if args else next(iter(kwargs.values()))).clone()

    def grab_output(mod, args, output):
        value = output[point.index] if point.index is not None else output
        seen["x"] = value.clone()

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
) -> torch.Tensor:
    """Final-position logits of ``target`` with one site taken from ``source``'s run."""
    src = _activation(hf, arch, component, layer, source)
    module, point = _hook_module(hf, arch, component, layer)

    def overwrite(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        rows = slice(None) if position < 0 else position
        if head < 0:
            x[0, rows] = src[rows]
        else:
            d_head = x.shape[-1] // n_heads
            cols = slice(head * d_head, (head + 1) * d_head)
            x[0, rows, cols] = src[rows, cols]
        return x

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

    handle = (
        module.register_forward_pre_hook(pre, with_kwargs=True)
        if point.io == "input"
        else module.register_forward_hook(post)
    )
    try:
        with torch.no_grad():
            return hf(target.unsqueeze(0)).logits[0, -1].float()
    finally:
        handle.remove()


def plain_logits(hf, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(ids.unsqueeze(0)).logits[0, -1].float()
