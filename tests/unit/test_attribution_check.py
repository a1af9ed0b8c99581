"""The agreement of an attribution ranking with exact patching, by hand on small tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from patchsweep.attribution_check import ranking_check, site_effects
from patchsweep.engine.verify import choose_sites

BASELINES = {"clean": 3.0, "corrupted": 1.0}  # normalised = (metric − 1) / 2


def raw(method: str, per_site: dict[int, list[float]]) -> pd.DataFrame:
    """A raw per-prompt table: site (layer l, head 0, all positions) → metric per prompt."""
    rows = [
        {"sweep": "s", "component": "z", "direction": "denoise", "layer": layer, "head": 0,
         "position": -1, "position_label": "all", "window": 1, "method": method,
         "prompt": i, "metric": value}
        for layer, values in per_site.items() for i, value in enumerate(values)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def metrics(effects: list[float]) -> dict[int, list[float]]:
    """Layer → the one prompt's raw metric whose normalised effect is ``effects[layer]``."""
    return {layer: [2 * effect + 1] for layer, effect in enumerate(effects)}


def test_site_effects_are_normalised_means_from_the_target_level():
    table = site_effects(raw("exact", {0: [1.0, 3.0], 1: [2.0, 2.0]}), BASELINES, "denoise")
    assert table["effect"].tolist() == [0.5, 0.5]
    noised = site_effects(raw("exact", {0: [1.0, 1.0]}), BASELINES, "noise")
    assert noised["effect"].tolist() == [-1.0]  # all of the clean behaviour lost


def test_correlations_recall_and_false_negatives_by_hand():
    # normalised effects: estimate 0.9, 0.5, 0.1, 0.0, 0.3; exact 1.0, 0.4, 0.6, 0.0, 0.2
    estimate = site_effects(raw("attribution", metrics([0.9, 0.5, 0.1, 0.0, 0.3])), BASELINES,
                            "denoise")  # fmt: skip
    exact = site_effects(raw("exact", metrics([1.0, 0.4, 0.6, 0.0, 0.2])), BASELINES, "denoise")
    verified = exact[exact["layer"].isin([0, 1, 4, 2])]  # top 3 by estimate + control 2
    check = ranking_check(estimate, verified, exact, top_k=3, large_effect=0.3)
    est, exa = np.array([0.9, 0.5, 0.1, 0.3]), np.array([1.0, 0.4, 0.6, 0.2])
    assert check["pearson"] == pytest.approx(np.corrcoef(est, exa)[0, 1], abs=1e-6)
    # ranks: estimate 4, 3, 1, 2; exact 4, 2, 3, 1
    assert check["spearman"] == pytest.approx(np.corrcoef([4, 3, 1, 2], [4, 2, 3, 1])[0, 1])
    # exact top 3: layers 0, 2, 1; ranking's top 3: layers 0, 1, 4 → 2 of 3 found
    assert check["recall_at_k"] == pytest.approx(2 / 3)
    # layer 2: exact 0.6 ≥ 0.3 and estimate 0.1 < 0.3: the one false negative
    assert [(f["layer"], f["exact"], f["estimate"]) for f in check["false_negatives"]] == [
        (2, 0.6, 0.1)
    ]
    assert check["k"] == 3 and check["n_sites"] == 5 and check["n_verified"] == 4
    assert check["max_abs_error"] == pytest.approx(0.5)


def test_without_an_exact_sweep_there_is_no_recall():
    estimate = site_effects(raw("attribution", {0: [3.0], 1: [1.0], 2: [2.0]}), BASELINES,
                            "denoise")  # fmt: skip
    verified = site_effects(raw("exact", {0: [3.0], 1: [1.0], 2: [2.0]}), BASELINES, "denoise")
    check = ranking_check(estimate, verified, None, top_k=2, large_effect=0.1)
    assert check["recall_at_k"] is None
    assert check["pearson"] == pytest.approx(1.0) and check["false_negatives"] == []


def test_choose_sites_takes_the_top_by_magnitude_and_a_seeded_control():
    effect = np.array([0.1, -0.9, 0.05, 0.5, 0.0, -0.2, 0.3])
    top, control = choose_sites(effect, top_k=3, control=2, seed=0)
    assert top.tolist() == [1, 3, 6]  # |−0.9|, 0.5, 0.3
    assert len(control) == 2 and not set(control) & set(top)
    again = choose_sites(effect, top_k=3, control=2, seed=0)[1]
    assert control.tolist() == again.tolist()
    assert choose_sites(effect, top_k=10, control=5, seed=0)[1].tolist() == []
