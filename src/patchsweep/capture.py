"""Run the clean and corrupted prompts once and keep every activation the sweeps patch.

The patch stages read these caches instead of rerunning the source run. Prompts are
batched only with prompts of the same length, so no padding enters a forward pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
from tqdm.auto import tqdm

from patchsweep.components import read
from patchsweep.models import LoadedModel

log = logging.getLogger(__name__)

CAPTURED = ("resid", "attn_out", "mlp_out", "z")


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
    max_rows: int = 64,
    desc: str = "capture",
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Activations of every layer for a batch of prompts (right-padded with ``lengths``).

    Returns:
        ``resid`` (N, L+1, T, d): block l's input at index l, the last block's output at L;
        ``attn_out`` and ``mlp_out`` (N, L, T, d); ``z`` (N, L, T, H, d_head), the input
        of the attention output projection split by head; ``logits`` (N, V) at each
        prompt's last position, float32.
    """
    dims = model.dims
    n, t = ids.shape
    dtype = next(model.hf.parameters()).dtype
    out = {
        "resid": torch.zeros(n, dims.n_layers + 1, t, dims.d_model, dtype=dtype),
        "attn_out": torch.zeros(n, dims.n_layers, t, dims.d_model, dtype=dtype),
        "mlp_out": torch.zeros(n, dims.n_layers, t, dims.d_model, dtype=dtype),
        "z": torch.zeros(n, dims.n_layers, t, dims.n_heads, dims.d_head, dtype=dtype),
        "logits": torch.zeros(n, dims.vocab_size, dtype=torch.float32),
    }
    groups = list(length_groups(lengths, max_rows))
    for rows in tqdm(groups, desc=desc, unit="batch", disable=not progress, leave=False):
        length = int(lengths[rows[0]])
        batch = ids[rows, :length].to(model.device)
        saved = _trace_all(model, batch)
        for key, value in saved.items():
            if key == "logits":
                out[key][rows] = value.float().cpu()
            else:
                out[key][rows, :, :length] = value.cpu()
    return out


def _trace_all(model: LoadedModel, batch: torch.Tensor) -> dict[str, torch.Tensor]:
    arch, dims, lm = model.arch, model.dims, model.lm
    resid, attn, mlp, z = [], [], [], []
    b, t = batch.shape
    with lm.trace(batch, logits_to_keep=1):
        for layer in range(dims.n_layers):
            resid.append(read(lm, arch.hook_point("resid_pre"), layer).clone().save())
            z.append(read(lm, arch.hook_point("z"), layer).save())
            attn.append(read(lm, arch.hook_point("attn_out"), layer).save())
            mlp.append(read(lm, arch.hook_point("mlp_out"), layer).save())
            if layer == dims.n_layers - 1:
                resid.append(read(lm, arch.hook_point("resid_post"), layer).clone().save())
        logits = lm.output.logits[:, -1].save()
    return {
        "resid": torch.stack(resid, dim=1),
        "attn_out": torch.stack(attn, dim=1),
        "mlp_out": torch.stack(mlp, dim=1),
        "z": torch.stack(z, dim=1).view(b, dims.n_layers, t, dims.n_heads, dims.d_head),
        "logits": logits,
    }
