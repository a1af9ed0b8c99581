"""Paired and dataset-anchored normalisation, and the bootstrap interval of the mean."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from patchsweep.columns import SITE_KEYS
from patchsweep.config import StatsConfig
from patchsweep.errors import DataError
from patchsweep.normalize import Anchors, bootstrap_ci, results_tables

REPO = Path(__file__).resolve().parents[2]


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
    paired = results_tables(raw_table(metric), anchors, StatsConfig()).table
    unpaired = results_tables(raw_table(metric), anchors, StatsConfig("dataset")).table
    # a constant fraction per prompt: paired effects are exact and their interval a point
    assert paired["normalized"].to_numpy() == pytest.approx([0.0, 0.25, 0.5, 1.0])
    paired_width = (paired["ci_high"] - paired["ci_low"]).to_numpy()
    unpaired_width = (unpaired["ci_high"] - unpaired["ci_low"]).to_numpy()
    assert paired_width.max() < 1e-12
    assert (unpaired_width > 0.1).all()
    assert (paired["sem"] < unpaired["sem"]).all()


def test_a_no_effect_site_has_a_much_narrower_paired_interval():
    """A site that restores nothing, up to a little noise (2% of each prompt's own gap),
    on prompts whose baselines vary a lot: anchored at the dataset means, every prompt's
    corrupted metric lands in the error bar; paired, only the noise does."""
    anchors, _ = varying_baselines(n=40)
    gap = anchors.clean - anchors.corrupted
    noise = np.random.default_rng(5).normal(0.0, 0.02, gap.size)
    noise -= noise.mean()  # no effect on average: the paired mean is exactly 0
    metric = (anchors.corrupted + noise * gap)[None, :]
    paired = results_tables(raw_table(metric), anchors).table.iloc[0]
    unpaired = results_tables(raw_table(metric), anchors, StatsConfig("dataset")).table.iloc[0]
    for row in (paired, unpaired):
        assert row["ci_low"] < row["normalized"] < row["ci_high"]
    assert paired["normalized"] == pytest.approx(0.0, abs=1e-12)
    paired_width = paired["ci_high"] - paired["ci_low"]
    unpaired_width = unpaired["ci_high"] - unpaired["ci_low"]
    assert 0 < paired_width < unpaired_width / 5


def test_the_stats_config_file_and_the_api_share_the_defaults():
    conf = yaml.safe_load((REPO / "conf" / "stats" / "default.yaml").read_text())
    assert conf == asdict(StatsConfig())


def test_dataset_normalisation_is_the_normalised_mean_metric():
    anchors, metric = varying_baselines()
    table = results_tables(raw_table(metric), anchors, StatsConfig("dataset")).table
    clean, corrupted = anchors.clean.mean(), anchors.corrupted.mean()
    expected = (metric.mean(axis=1) - corrupted) / (clean - corrupted)
    assert table["normalized"].to_numpy() == pytest.approx(expected)
    assert set(table["normalization"]) == {"dataset"}


def test_results_table_columns_keep_their_order_and_add_the_interval():
    anchors, metric = varying_baselines()
    table, per_prompt, _ = results_tables(raw_table(metric), anchors)
    assert list(table.columns) == [
        *SITE_KEYS, "metric", "normalized", "sem", "n_prompts", "ci_low", "ci_high",
        "normalization",
    ]  # fmt: skip
    assert set(table["normalization"]) == {"per_prompt"}
    assert len(per_prompt) == metric.size and "normalized" in per_prompt


def test_paired_effect_uses_each_prompts_own_anchors():
    anchors = Anchors(np.array([2.0, 10.0]), np.array([0.0, 4.0]))
    table, per_prompt, _ = results_tables(raw_table(np.array([[1.0, 5.0]])), anchors)
    # (1 − 0)/(2 − 0) = 0.5 and (5 − 4)/(10 − 4) = 1/6, by hand
    assert per_prompt["normalized"].tolist() == pytest.approx([0.5, 1 / 6])
    assert table["normalized"].iloc[0] == pytest.approx((0.5 + 1 / 6) / 2)


def tiny_gap_anchors() -> Anchors:
    """Ten prompts with gaps 2, 4, …, 20, except prompt 3, whose gap is 0.05, and prompt
    7, whose gap is 0: the mean gap is 8.605, and both are under 1% of it (0.08605)."""
    corrupted = np.arange(10, dtype=np.float64)
    gap = 2.0 * np.arange(1, 11)
    gap[3], gap[7] = 0.05, 0.0
    return Anchors(corrupted + gap, corrupted)


def test_prompts_without_a_gap_of_their_own_are_left_out_of_every_site(caplog):
    anchors = tiny_gap_anchors()
    gap = anchors.clean - anchors.corrupted
    # site 0: every prompt halfway to its clean metric; site 1: noise on the excluded ones
    metric = np.stack([anchors.corrupted + 0.5 * gap, anchors.corrupted + 0.25 * gap])
    metric[1, [3, 7]] = [50.0, -50.0]
    with caplog.at_level("WARNING", logger="patchsweep.normalize"):
        table, per_prompt, record = results_tables(raw_table(metric), anchors)
    assert "2 of 10 prompts left out" in caplog.text
    # by hand, over the 8 prompts used: the mean, its s.e.m. (0: no spread), the raw mean
    used = [0, 1, 2, 4, 5, 6, 8, 9]
    assert table["normalized"].tolist() == pytest.approx([0.5, 0.25])
    assert table["sem"].tolist() == pytest.approx([0.0, 0.0], abs=1e-12)
    assert table["metric"].tolist() == pytest.approx(metric[:, used].mean(axis=1).tolist())
    assert table["n_prompts"].tolist() == [8, 8]
    assert (table["ci_high"] - table["ci_low"]).abs().max() < 1e-12  # no spread to resample
    # per_prompt.csv keeps every row; the left-out prompts have no normalised effect
    assert len(per_prompt) == metric.size
    empty = per_prompt[per_prompt["normalized"].isna()]
    assert sorted(set(empty["prompt"])) == [3, 7] and len(empty) == 4
    assert record == {
        "normalization": "per_prompt",
        "excluded_prompts": [3, 7],
        "excluded_gaps": pytest.approx([0.05, 0.0]),
        "exclusion_threshold": pytest.approx(0.08605),
        "exclusion_rule": record["exclusion_rule"],
    }
    assert "under 0.01 times the mean gap" in record["exclusion_rule"]


def test_dataset_normalisation_leaves_no_prompt_out():
    anchors = tiny_gap_anchors()
    table, _, record = results_tables(
        raw_table(np.ones((1, 10))), anchors, StatsConfig(normalization="dataset")
    )
    assert table["n_prompts"].tolist() == [10] and np.isfinite(table["normalized"]).all()
    assert record["excluded_prompts"] == [] and record["exclusion_threshold"] is None
    assert record["normalization"] == "dataset"


def test_half_the_prompts_without_a_gap_are_left_out_more_are_refused():
    # gaps 0, 0, 4, 4: mean 2, so two of four are under 0.02 — exactly half, left out
    half = Anchors(np.array([0.0, 1.0, 4.0, 5.0]), np.array([0.0, 1.0, 0.0, 1.0]))
    table, _, record = results_tables(raw_table(np.full((1, 4), 2.0)), half)
    assert record["excluded_prompts"] == [0, 1] and table["n_prompts"].tolist() == [2]
    # gaps 0, 0, 0, 4: three of four
    most = Anchors(np.array([0.0, 1.0, 2.0, 5.0]), np.array([0.0, 1.0, 2.0, 1.0]))
    with pytest.raises(DataError, match="3 of 4 prompts") as err:
        results_tables(raw_table(np.ones((1, 4))), most)
    assert "stats.normalization: dataset" in err.value.fix
    table, _, _ = results_tables(raw_table(np.ones((1, 4))), most, StatsConfig("dataset"))
    assert np.isfinite(table["normalized"]).all()


def test_one_prompt_has_no_spread():
    anchors = Anchors(np.array([2.0]), np.array([0.0]))
    table = results_tables(raw_table(np.array([[1.0], [2.0]])), anchors).table
    assert table["normalized"].tolist() == [0.5, 1.0]
    assert table[["sem", "ci_low", "ci_high"]].isna().all().all()


def test_intervals_repeat_with_the_seed_and_change_with_another():
    anchors, metric = varying_baselines()
    metric = metric + np.random.default_rng(2).normal(0, 0.5, metric.shape)
    first = results_tables(raw_table(metric), anchors, StatsConfig(seed=3)).table
    again = results_tables(raw_table(metric), anchors, StatsConfig(seed=3)).table
    other = results_tables(raw_table(metric), anchors, StatsConfig(seed=4)).table
    assert first["ci_low"].tolist() == again["ci_low"].tolist()
    assert first["ci_low"].tolist() != other["ci_low"].tolist()
