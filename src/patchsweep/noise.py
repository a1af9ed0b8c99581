"""Embedding noise for causal tracing: the corruption is noise, not another prompt.

ROME's causal tracing corrupts the subject by adding Gaussian noise, k times the spread
of the embeddings, to its token embeddings, and averages over several draws. Here the
noise is drawn once, stored with the corrupted activations, and added at the input of
the first block wherever the corrupted run is recomputed, so every patched run sees
exactly the same corruption as the captured one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from patchsweep.config import NoiseConfig
from patchsweep.errors import DataError
from patchsweep.tokenize import TokenizedPairs

if TYPE_CHECKING:
    from patchsweep.models import LoadedModel

log = logging.getLogger(__name__)


def embedding_noise(
    pairs: TokenizedPairs, cfg: NoiseConfig, embed_std: float, d_model: int
) -> torch.Tensor:
    """(N, T, d_model) noise on each pair's labelled span, zero elsewhere."""
    first, last = cfg.labels[0], cfg.labels[-1]
    for label in (first, last):
        where = pairs.label_positions.get(label)
        if where is None or bool((where < 0).any()):
            raise DataError(
                f"noise corruption needs label {label!r} in every pair",
                f"set dataset.noise.labels to labels the dataset provides "
                f"(it has: {sorted(pairs.label_positions)})",
            )
    n, t = pairs.clean_ids.shape
    generator = torch.Generator().manual_seed(cfg.seed)
    noise = torch.randn(n, t, d_model, generator=generator) * (cfg.scale * embed_std)
    positions = torch.arange(t)
    start = pairs.label_positions[first].unsqueeze(1)
    stop = pairs.label_positions[last].unsqueeze(1)
    span = (positions >= start) & (positions <= stop)  # (N, T)
    return noise * span.unsqueeze(-1)


def with_noise_samples(pairs: list, samples: int) -> list:
    """Each pair repeated ``samples`` times in a row: one row per noise draw."""
    return [pair for pair in pairs for _ in range(samples)]


def corruption_noise(
    cfg: NoiseConfig, pairs: TokenizedPairs, model: LoadedModel
) -> torch.Tensor | None:
    """The corrupted run's embedding noise (N, T, d), or None when noise is off."""
    if cfg.scale <= 0:
        return None
    embed_std = float(model.hf.get_input_embeddings().weight.detach().float().std())
    log.info(
        "corrupting with embedding noise: %g × std %.3g on %s..%s, %d draw(s)",
        cfg.scale,
        embed_std,
        cfg.labels[0],
        cfg.labels[-1],
        cfg.samples,
    )
    return embedding_noise(pairs, cfg, embed_std, model.dims.d_model)
