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

A prompt whose own clean − corrupted gap is almost nothing (under :data:`MIN_PROMPT_GAP`
of the dataset's mean gap) has no paired effect worth the name: its normalised value
divides its metric's noise by about zero. Such prompts are left out of every site's
statistics (its row of the results table, ``n_prompts`` included, is over the prompts
used), their per-prompt ``normalized`` is left empty, and :func:`results_tables` reports
which they were, for ``baselines.json``. When more than half of the prompts would be left
out, the result would be about another dataset than the one asked for, and it is refused.

The confidence interval is a percentile bootstrap that resamples prompts with replacement;
one draw of prompt indices is shared by every site, so intervals are comparable between
sites and reproducible from the seed.

Tables only: pandas and numpy, so that normalising and plotting never import the model
code (torch, nnsight, transformers), and rerun only when table code changes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from patchsweep.columns import SITE_KEYS
from patchsweep.config import StatsConfig
from patchsweep.errors import DataError

log = logging.getLogger(__name__)

# A prompt whose own |clean − corrupted| is under this fraction of the dataset's mean gap
# would multiply its metric's noise by over 1/MIN_PROMPT_GAP in a paired effect: left out.
MIN_PROMPT_GAP = 0.01
# Per-prompt normalisation is refused when more than this fraction of prompts is left out.
MAX_EXCLUDED = 0.5


@dataclass(frozen=True)
class Anchors:
    """Each prompt's clean and corrupted metric, indexed by the tables' ``prompt`` column."""

    clean: np.ndarray  # (N,) float64
    corrupted: np.ndarray  # (N,) float64


class ResultTables(NamedTuple):
    """What the normalize stage writes, from :func:`results_tables`."""

    table: pd.DataFrame  # results.csv: one row per site
    per_prompt: pd.DataFrame  # per_prompt.csv: one row per site × prompt
    normalization: dict[str, Any]  # for baselines.json: how, and which prompts left out


def results_tables(
    raw: pd.DataFrame, anchors: Anchors, stats: StatsConfig | None = None
) -> ResultTables:
    """The results table (one row per site) and the per-prompt table of raw sweeps.

    Args:
        raw: Raw per-prompt metrics of one or more sweeps (the patch stage's tables).
        anchors: The experiment's per-prompt clean and corrupted metric.
        stats: Normalisation and bootstrap settings; the config's defaults when None.

    Raises:
        DataError: per-prompt normalisation would leave out more than half of the prompts.
    """
    stats = stats or StatsConfig()
    if stats.normalization == "dataset":
        clean, corrupted = anchors.clean.mean(), anchors.corrupted.mean()
        per_prompt = normalize(raw, clean, corrupted)
        excluded = np.zeros(0, dtype=np.int64)
    else:
        excluded = tiny_gap_prompts(anchors)
        per_prompt = normalize_paired(raw, anchors, excluded)
    used = per_prompt[~per_prompt["prompt"].isin(excluded)]
    table = aggregate(used)
    low, high = bootstrap_ci(used, stats.ci, stats.bootstrap, stats.seed)
    table = table.assign(ci_low=low, ci_high=high, normalization=stats.normalization)
    return ResultTables(table, per_prompt, exclusion_record(anchors, stats, excluded))


def normalize(raw: pd.DataFrame, clean_mean: float, corrupted_mean: float) -> pd.DataFrame:
    """Add a ``normalized`` column with the dataset's mean metrics as the anchors."""
    out = raw.copy()
    out["normalized"] = (out["metric"] - corrupted_mean) / (clean_mean - corrupted_mean)
    return out


def normalize_paired(
    raw: pd.DataFrame, anchors: Anchors, excluded: np.ndarray | None = None
) -> pd.DataFrame:
    """Add a ``normalized`` column with each prompt's own clean and corrupted metric.

    Args:
        excluded: Prompts whose ``normalized`` is left empty (NaN), from
            :func:`tiny_gap_prompts`.
    """
    divisor = anchors.clean - anchors.corrupted
    if excluded is not None:
        divisor[excluded] = np.nan  # no division by ~0
    prompt = raw["prompt"].to_numpy()
    out = raw.copy()
    out["normalized"] = (out["metric"].to_numpy() - anchors.corrupted[prompt]) / divisor[prompt]
    return out


def tiny_gap_prompts(anchors: Anchors) -> np.ndarray:
    """The prompts whose own |clean − corrupted| is under :data:`MIN_PROMPT_GAP` of the
    dataset's mean gap, in order; a warning names how many.

    Raises:
        DataError: more than :data:`MAX_EXCLUDED` of the prompts are such prompts.
    """
    gap = anchors.clean - anchors.corrupted
    threshold = MIN_PROMPT_GAP * abs(gap.mean())
    tiny = np.flatnonzero(np.abs(gap) < threshold)
    if tiny.size > MAX_EXCLUDED * gap.size:
        raise DataError(
            f"{tiny.size} of {gap.size} prompts have a clean − corrupted gap of their own "
            f"under {MIN_PROMPT_GAP:g} of the mean gap ({gap.mean():.4g}): per-prompt "
            "normalisation would leave out more than half of the dataset",
            "normalise against the dataset's mean clean and corrupted metric: set "
            "stats.normalization: dataset (conf/stats/, or the override "
            "stats.normalization=dataset; in Python sweep(..., stats={'normalization': "
            "'dataset'})), or remove the prompts whose corruption does not change the "
            "behaviour",
        )
    if tiny.size:
        log.warning(
            "%d of %d prompts left out of the per-prompt normalised effects: their own "
            "clean − corrupted gap is under %g of the mean gap (%.4g), e.g. prompt %d "
            "(gap %.3g); they are listed in baselines.json",
            tiny.size,
            gap.size,
            MIN_PROMPT_GAP,
            gap.mean(),
            tiny[0],
            gap[tiny[0]],
        )
    return tiny


def exclusion_record(anchors: Anchors, stats: StatsConfig, excluded: np.ndarray) -> dict:
    """``baselines.json``'s account of the normalisation and the prompts it left out
    (ASCII text: the JSON is written with escapes for anything else)."""
    gap = anchors.clean - anchors.corrupted
    paired = stats.normalization == "per_prompt"
    return {
        "normalization": stats.normalization,
        "excluded_prompts": [int(i) for i in excluded],
        "excluded_gaps": [float(g) for g in gap[excluded]],
        "exclusion_threshold": float(MIN_PROMPT_GAP * abs(gap.mean())) if paired else None,
        "exclusion_rule": (
            f"a prompt whose own |clean - corrupted| is under {MIN_PROMPT_GAP:g} times the "
            "mean gap is left out of every site's statistics: its per-prompt normalised "
            "effect would divide by almost nothing"
            if paired
            else "none: every prompt is normalised by the dataset's mean gap"
        ),
    }


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
