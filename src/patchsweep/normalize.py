"""Raw metrics → normalised effects, mean ± s.e.m. over prompts.

normalized = (m − corrupted) / (clean − corrupted), with the dataset's mean clean and
corrupted metrics as the anchors: 0 means the patch left the corrupted behaviour, 1 means
it restored the clean one. Being linear, the mean of the normalised values is the
normalised mean, and the s.e.m. is that of the per-prompt normalised values.

Tables only: pandas and numpy, so that normalising and plotting never import the model
code (nnsight, transformers), and rerun only when table code changes.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from patchsweep.columns import SITE_KEYS


def results_tables(raw: pd.DataFrame, baselines: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The results table (one row per site) and the per-prompt table of raw sweeps.

    Args:
        raw: Raw per-prompt metrics of one or more sweeps (the patch stage's tables).
        baselines: The experiment's ``clean`` and ``corrupted`` mean metric.
    """
    per_prompt = normalize(raw, baselines["clean"], baselines["corrupted"])
    return aggregate(per_prompt), per_prompt


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
        sem=("normalized", sem),
        n_prompts=("normalized", "size"),
    ).reset_index()
    return table


def sem(values: pd.Series) -> float:
    """Standard error of the mean (n − 1 in the variance); NaN for a single value."""
    data = values.to_numpy(dtype=np.float64)
    n = data.size
    return float(data.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
