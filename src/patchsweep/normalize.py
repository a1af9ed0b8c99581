"""Raw metrics → normalised effects, mean ± s.e.m. over prompts.

normalized = (m − corrupted) / (clean − corrupted), with the dataset's mean clean and
corrupted metrics as the anchors: 0 means the patch left the corrupted behaviour, 1 means
it restored the clean one. Being linear, the mean of the normalised values is the
normalised mean, and the s.e.m. is that of the per-prompt normalised values.
"""

from __future__ import annotations

import logging
import math

import pandas as pd
import torch

from patchsweep.columns import SITE_KEYS
from patchsweep.errors import DataError

log = logging.getLogger(__name__)

RELATIVE_GAP_WARNING = 0.05


def baseline_stats(clean: torch.Tensor, corrupted: torch.Tensor) -> dict[str, float]:
    """Mean and s.e.m. of the clean and corrupted metric over prompts.

    Raises:
        DataError: the clean and corrupted means are equal, so normalising is undefined.
    """
    stats = {
        "clean": float(clean.mean()),
        "corrupted": float(corrupted.mean()),
        "clean_sem": _sem(clean),
        "corrupted_sem": _sem(corrupted),
    }
    gap = stats["clean"] - stats["corrupted"]
    scale = max(abs(stats["clean"]), abs(stats["corrupted"]), 1e-12)
    if abs(gap) <= 1e-7 * scale or gap == 0:
        raise DataError(
            f"the clean and corrupted metric are equal ({stats['clean']:.6g}): normalising "
            "by their difference is undefined",
            "the corruption does not change the behaviour: check the corrupted prompts and "
            "answers, or the model (a random model shows almost no effect)",
        )
    if abs(gap) < RELATIVE_GAP_WARNING * scale:
        log.warning(
            "clean − corrupted gap %.3g is tiny next to the metric (%.3g): normalised "
            "values will be noisy",
            gap,
            scale,
        )
    return stats


def normalize(raw: pd.DataFrame, clean_mean: float, corrupted_mean: float) -> pd.DataFrame:
    """Add a ``normalized`` column to a per-prompt table."""
    out = raw.copy()
    out["normalized"] = (out["metric"] - corrupted_mean) / (clean_mean - corrupted_mean)
    return out


def aggregate(per_prompt: pd.DataFrame) -> pd.DataFrame:
    """One row per site: mean raw metric, mean normalised effect, its s.e.m., n prompts."""
    grouped = per_prompt.groupby(SITE_KEYS, sort=False, dropna=False)
    table = grouped.agg(
        metric=("metric", "mean"),
        normalized=("normalized", "mean"),
        sem=("normalized", lambda s: _sem(torch.tensor(s.to_numpy()))),
        n_prompts=("normalized", "size"),
    ).reset_index()
    return table


def _sem(values: torch.Tensor) -> float:
    n = values.numel()
    return float(values.double().std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
