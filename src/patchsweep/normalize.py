"""Raw metrics → normalised effects, mean ± s.e.m. and a bootstrap interval over prompts.

An effect is normalised as (m − corrupted) / (clean − corrupted): 0 means the patch left
the corrupted behaviour, 1 means it restored the clean one. Which clean and corrupted:

- ``per_prompt`` (the default) pairs each prompt with its own clean and corrupted metric.
  Prompts differ far more in their baseline (how confident the model is on them) than in
  how much of it a patch restores, and with dataset anchors that baseline spread lands in
  every site's error bar: a site where the patch does nothing still gets ± the spread of
  the clean metric. Paired, the error bar measures the patch.
- ``dataset`` anchors every prompt at the dataset's mean clean and corrupted metric. Being
  linear, the mean of these values is the normalised mean metric, which a paired mean is
  not (a mean of ratios); kept for comparison with earlier results.

The confidence interval is a percentile bootstrap that resamples prompts with replacement;
one draw of prompt indices is shared by every site, so intervals are comparable between
sites and reproducible from the seed.

Tables only: pandas and numpy, so that normalising and plotting never import the model
code (torch, nnsight, transformers), and rerun only when table code changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from patchsweep.columns import SITE_KEYS
from patchsweep.config import StatsConfig
from patchsweep.errors import DataError

# A prompt whose own clean − corrupted gap is under this fraction of the dataset's mean gap
# would multiply its metric's noise by over 1/MIN_PROMPT_GAP in a paired effect.
MIN_PROMPT_GAP = 0.01


@dataclass(frozen=True)
class Anchors:
    """Each prompt's clean and corrupted metric, indexed by the tables' ``prompt`` column."""

    clean: np.ndarray  # (N,) float64
    corrupted: np.ndarray  # (N,) float64


def results_tables(
    raw: pd.DataFrame, anchors: Anchors, stats: StatsConfig | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The results table (one row per site) and the per-prompt table of raw sweeps.

    Args:
        raw: Raw per-prompt metrics of one or more sweeps (the patch stage's tables).
        anchors: The experiment's per-prompt clean and corrupted metric.
        stats: Normalisation and bootstrap settings; the config's defaults when None.
    """
    stats = stats or StatsConfig()
    if stats.normalization == "dataset":
        clean, corrupted = anchors.clean.mean(), anchors.corrupted.mean()
        per_prompt = normalize(raw, clean, corrupted)
    else:
        per_prompt = normalize_paired(raw, anchors)
    table = aggregate(per_prompt)
    low, high = bootstrap_ci(per_prompt, stats.ci, stats.bootstrap, stats.seed)
    return table.assign(ci_low=low, ci_high=high, normalization=stats.normalization), per_prompt


def normalize(raw: pd.DataFrame, clean_mean: float, corrupted_mean: float) -> pd.DataFrame:
    """Add a ``normalized`` column with the dataset's mean metrics as the anchors."""
    out = raw.copy()
    out["normalized"] = (out["metric"] - corrupted_mean) / (clean_mean - corrupted_mean)
    return out


def normalize_paired(raw: pd.DataFrame, anchors: Anchors) -> pd.DataFrame:
    """Add a ``normalized`` column with each prompt's own clean and corrupted metric.

    Raises:
        DataError: some prompt's own gap is under :data:`MIN_PROMPT_GAP` of the dataset's
            mean gap. Its paired effect would be its metric noise blown up, and dropping it
            would quietly change which prompts a result is about, so it is refused; the
            dataset-anchored normalisation has no such division.
    """
    gap = anchors.clean - anchors.corrupted
    tiny = np.abs(gap) < MIN_PROMPT_GAP * abs(gap.mean())
    if tiny.any():
        raise DataError(
            f"{int(tiny.sum())} of {gap.size} prompts have a clean − corrupted gap under "
            f"{MIN_PROMPT_GAP:g} of the mean gap ({gap.mean():.4g}), e.g. prompt "
            f"{int(np.flatnonzero(tiny)[0])}: their per-prompt normalised effects are "
            "undefined or dominated by noise",
            "anchor at the dataset means with stats.normalization=dataset, or remove the "
            "prompts whose corruption does not change the behaviour",
        )
    prompt = raw["prompt"].to_numpy()
    out = raw.copy()
    out["normalized"] = (out["metric"].to_numpy() - anchors.corrupted[prompt]) / gap[prompt]
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


def bootstrap_ci(
    per_prompt: pd.DataFrame, ci: float, resamples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of each site's mean normalised effect.

    Resample ``b`` draws ``n`` prompt indices with replacement (row ``b`` of one
    ``Generator.integers(0, n, (resamples, n))`` call, shared by every site); its mean is
    ``counts @ values / n``, so memory grows with sites × resamples, not × prompts too.

    Returns:
        ``(low, high)``, one value per site in :func:`aggregate`'s order; NaN where a site
        has a single prompt (no spread to resample) or a missing value.
    """
    site = per_prompt.groupby(SITE_KEYS, sort=False, dropna=False).ngroup().to_numpy()
    prompt, prompts = pd.factorize(per_prompt["prompt"])
    values = np.full((site.max() + 1 if site.size else 0, prompts.size), np.nan)
    values[site, prompt] = per_prompt["normalized"].to_numpy(dtype=np.float64)  # (site, prompt)
    n_sites, n = values.shape
    if n < 2:
        nan = np.full(n_sites, np.nan)
        return nan, nan.copy()
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    counts = np.zeros((resamples, n))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
    means = values @ counts.T / n  # (site, resample)
    tail = 100 * (1 - ci) / 2
    low, high = np.percentile(means, [tail, 100 - tail], axis=1)
    return low, high
