"""Run the clean and corrupted prompts once and keep every activation the sweeps patch.

The patch stages read these caches instead of rerunning the source run. Prompts are
batched only with prompts of the same length, so no padding enters a forward pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import torch
from tqdm.auto import tqdm

from patchsweep.components import HEADED, Architecture, read, read_raw, select
from patchsweep.models import LoadedModel

log = logging.getLogger(__name__)

# What can be stored, in the order a block computes it. "resid" holds the residual stream
# at every block boundary; it is always stored (the engine starts from it).
STORABLE = ("resid", "q", "k", "v", "z", "attn_out", "mlp_out")
DEFAULT_CAPTURE = ("resid", "z", "attn_out", "mlp_out")

# Where each sweep component is stored, and which of the stored layers it is.
STORAGE = {
    "resid_pre": ("resid", slice(0, -1)),
    "resid_post": ("resid", slice(1, None)),
    "attn_out": ("attn_out", slice(None)),
    "mlp_out": ("mlp_out", slice(None)),
    "z": ("z", slice(None)),
    "q": ("q", slice(None)),
    "k": ("k", slice(None)),
    "v": ("v", slice(None)),
}


def length_groups(lengths: torch.Tensor, max_rows: int) -> Iterator[torch.Tensor]:
    """Indices of prompts with equal length, in chunks of at most ``max_rows``."""
    for length in torch.unique(lengths).tolist():
        idx = torch.nonzero(lengths == length).flatten()
        yield from idx.split(max_rows)


@torch.no_grad()
def capture_run(
    model: LoadedModel,
    ids: torch.Tensor,
    lengths: torch.Tensor,
    components: Sequence[str] = DEFAULT_CAPTURE,
    max_rows: int = 64,
    desc: str = "capture",
    progress: bool = True,
    embed_delta: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Activations of every layer for a batch of prompts (right-padded with ``lengths``).

    Returns:
        ``resid`` (N, L+1, T, d): block l's input at index l, the last block's output at L;
        ``attn_out`` and ``mlp_out`` (N, L, T, d); ``z``, ``q``, ``k``, ``v``
        (N, L, T, heads, d_head), split by head (k and v by key/value head);
        ``logits`` (N, V) at each prompt's last position, float32. Only the requested
        components (and always ``resid``) are returned.

    ``embed_delta`` (N, T, d), if given, is added to the first block's input: the
    embedding noise of causal tracing.
    """
    wanted = [c for c in STORABLE if c in set(components) | {"resid"}]
    dims = model.dims
    n, t = ids.shape
    dtype = next(model.hf.parameters()).dtype
    out = {name: torch.zeros(0) for name in wanted}
    out["logits"] = torch.zeros(n, dims.vocab_size, dtype=torch.float32)
    groups = list(length_groups(lengths, max_rows))
    for rows in tqdm(groups, desc=desc, unit="batch", disable=not progress, leave=False):
        length = int(lengths[rows[0]])
        delta = embed_delta[rows, :length].to(model.device) if embed_delta is not None else None
        saved = _trace(model, ids[rows, :length].to(model.device), wanted, delta)
        for key, value in saved.items():
            if key == "logits":
                out[key][rows] = value.float().cpu()
                continue
            if out[key].numel() == 0:  # allocate once the per-layer shape is known
                out[key] = torch.zeros(n, value.shape[1], t, *value.shape[3:], dtype=dtype)
            out[key][rows, :, :length] = value.cpu()
    return out


def _trace(
    model: LoadedModel, batch: torch.Tensor, wanted: list[str], delta: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    arch, dims, lm = model.arch, model.dims, model.lm
    per_layer: dict[str, list] = {name: [] for name in wanted}
    with model.trace(batch, logits_to_keep=1):
        for layer in range(dims.n_layers):
            seen: dict[tuple[str, str], object] = {}  # a fused q/k/v output is read once
            if layer == 0 and delta is not None:
                first = arch.hook_point("resid_pre")
                seen[(first.module, first.io)] = add_embedding_delta(lm, arch, delta)
            for name in wanted:
                point = arch.hook_point("resid_pre" if name == "resid" else name)
                key = (point.module, point.io)
                if key not in seen:
                    seen[key] = read_raw(lm, point, layer)
                per_layer[name].append(select(seen[key], point, tuple(batch.shape)).clone().save())
            if "resid" in per_layer and layer == dims.n_layers - 1:
                last = read(lm, arch.hook_point("resid_post"), layer).clone().save()
                per_layer["resid"].append(last)
        logits = lm.output.logits[:, -1].save()
    b, t = batch.shape
    out = {}
    for name, values in per_layer.items():
        stacked = torch.stack(values, dim=1)  # (B, L, T, width)
        if name in HEADED:
            heads = dims.heads_of(name)
            stacked = stacked.view(b, len(values), t, heads, stacked.shape[-1] // heads)
        out[name] = stacked
    out["logits"] = logits
    return out


def add_embedding_delta(lm, arch: Architecture, delta: torch.Tensor):
    """Inside a trace: add ``delta`` to the first block's input in place; return it."""
    first_input = read(lm, arch.hook_point("resid_pre"), 0)
    first_input += delta
    return first_input
