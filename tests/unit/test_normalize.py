"""Paired and dataset-anchored normalisation, and the bootstrap interval of the mean."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from patchsweep.columns import SITE_KEYS
from patchsweep.config import StatsConfig
from patchsweep.errors import DataError
from patchsweep.normalize import Anchors, bootstrap_ci, results_tables


def raw_table(metric: np.ndarray) -> pd.DataFrame:
    """A per-prompt table of one sweep: metric is (sites, prompts), one layer per site."""
    n_sites, n_prompts = metric.shape
    return pd.DataFrame(
        {
            "sweep": "s",
            "component": "resid_pre",
            "direction": "denoise",
            "layer": np.repeat(np.arange(n_sites), n_prompts),
            "head": -1,
            "position": -1,
            "position_label": "",
            "window": 1,
            "method": "exact",
            "prompt": np.tile(np.arange(n_prompts), n_sites),
            "metric": metric.ravel(),
        }
    )


def varying_baselines(n: int = 12) -> tuple[Anchors, np.ndarray]:
    """Prompts whose clean and corrupted metric vary a lot; site k restores fraction k/4."""
    rng = np.random.default_rng(1)
    corrupted = rng.normal(-3.0, 2.0, n)
    clean = corrupted + rng.uniform(4.0, 12.0, n)
    fractions = np.array([0.0, 0.25, 0.5, 1.0])
    metric = corrupted + fractions[:, None] * (clean - corrupted)
    return Anchors(clean, corrupted), metric


def test_bootstrap_matches_a_loop_over_resamples():
    """Each resample's prompt indices from the seeded Generator, its mean, then the
    percentiles by linear interpolation between order statistics, all by hand."""
    values = np.array([[0.1, 0.5, 0.2, 0.9, 0.4], [1.0, 2.0, 4.0, 3.0, 5.0]])
    table = raw_table(values).rename(columns={"metric": "normalized"})
    resamples, ci = 200, 0.9
    low, high = bootstrap_ci(table, ci, resamples, seed=7)

    rng = np.random.default_rng(7)
    means = np.empty((2, resamples))
    for b in range(resamples):
        idx = rng.integers(0, 5, size=5)
        for site in range(2):
            means[site, b] = sum(values[site, i] for i in idx) / 5
    for site in range(2):
        ordered = sorted(means[site])
        for q, got in ((0.05, low[site]), (0.95, high[site])):
            pos = q * (resamples - 1)
            below = int(pos)
            expected = ordered[below] + (pos - below) * (ordered[below + 1] - ordered[below])
            assert got == pytest.approx(expected, abs=1e-12)
    assert (low < values.mean(axis=1)).all() and (values.mean(axis=1) < high).all()


def test_paired_intervals_are_narrower_where_the_baseline_varies():
    anchors, metric = varying_baselines()
    paired, _ = results_tables(raw_table(metric), anchors, StatsConfig())
    unpaired, _ = results_tables(raw_table(metric), anchors, StatsConfig(normalization="dataset"))
    # a constant fraction per prompt: paired effects are exact and their interval a point
    assert paired["normalized"].to_numpy() == pytest.approx([0.0, 0.25, 0.5, 1.0])
    paired_width = (paired["ci_high"] - paired["ci_low"]).to_numpy()
    unpaired_width = (unpaired["ci_high"] - unpaired["ci_low"]).to_numpy()
    assert paired_width.max() < 1e-12
    assert (unpaired_width > 0.1).all()
    assert (paired["sem"] < unpaired["sem"]).all()


def test_dataset_normalisation_is_the_normalised_mean_metric():
    anchors, metric = varying_baselines()
    table, _ = results_tables(raw_table(metric), anchors, StatsConfig(normalization="dataset"))
    clean, corrupted = anchors.clean.mean(), anchors.corrupted.mean()
    expected = (metric.mean(axis=1) - corrupted) / (clean - corrupted)
    assert table["normalized"].to_numpy() == pytest.approx(expected)
    assert set(table["normalization"]) == {"dataset"}


def test_results_table_columns_keep_their_order_and_add_the_interval():
    anchors, metric = varying_baselines()
    table, per_prompt = results_tables(raw_table(metric), anchors)
    assert list(table.columns) == [
        *SITE_KEYS, "metric", "normalized", "sem", "n_prompts", "ci_low", "ci_high",
        "normalization",
    ]  # fmt: skip
    assert set(table["normalization"]) == {"per_prompt"}
    assert len(per_prompt) == metric.size and "normalized" in per_prompt


def test_paired_effect_uses_each_prompts_own_anchors():
    anchors = Anchors(np.array([2.0, 10.0]), np.array([0.0, 4.0]))
    table, per_prompt = results_tables(raw_table(np.array([[1.0, 5.0]])), anchors)
    # (1 − 0)/(2 − 0) = 0.5 and (5 − 4)/(10 − 4) = 1/6, by hand
    assert per_prompt["normalized"].tolist() == pytest.approx([0.5, 1 / 6])
    assert table["normalized"].iloc[0] == pytest.approx((0.5 + 1 / 6) / 2)


def test_a_prompt_without_a_gap_is_refused_with_the_fix():
    anchors = Anchors(np.array([2.0, 3.0, 4.0]), np.array([0.0, 3.0, 1.0]))
    with pytest.raises(DataError, match="1 of 3 prompts") as err:
        results_tables(raw_table(np.ones((1, 3))), anchors)
    assert "stats.normalization=dataset" in err.value.fix
    table, _ = results_tables(raw_table(np.ones((1, 3))), anchors, StatsConfig("dataset"))
    assert np.isfinite(table["normalized"]).all()


def test_one_prompt_has_no_spread():
    anchors = Anchors(np.array([2.0]), np.array([0.0]))
    table, _ = results_tables(raw_table(np.array([[1.0], [2.0]])), anchors)
    assert table["normalized"].tolist() == [0.5, 1.0]
    assert table[["sem", "ci_low", "ci_high"]].isna().all().all()


def test_intervals_repeat_with_the_seed_and_change_with_another():
    anchors, metric = varying_baselines()
    metric = metric + np.random.default_rng(2).normal(0, 0.5, metric.shape)
    first, _ = results_tables(raw_table(metric), anchors, StatsConfig(seed=3))
    again, _ = results_tables(raw_table(metric), anchors, StatsConfig(seed=3))
    other, _ = results_tables(raw_table(metric), anchors, StatsConfig(seed=4))
    assert first["ci_low"].tolist() == again["ci_low"].tolist()
    assert first["ci_low"].tolist() != other["ci_low"].tolist()
