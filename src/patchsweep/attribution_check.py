"""How well an attribution ranking agrees with exact patching, from tables alone.

The verify stage exact-patches the ranking's top sites and a random control sample, and
this module compares the two: Pearson and Spearman correlation on the verified sites,
recall of the exact top k (where an exact sweep of the same sites exists), and the false
negatives, sites whose exact effect is large but whose estimate is small. Effects are
normalised (0 = corrupted behaviour, 1 = clean), measured from the target run's own
level, so a denoising and a noising sweep read alike: |effect| is how much the patch
moved the behaviour.

pandas and numpy only: normalize merges the checks without loading a model.
"""

from __future__ import annotations

import math

import pandas as pd

from patchsweep.normalize import aggregate, normalize

# What identifies a site within one sweep's table.
SITE = ["layer", "head", "position", "position_label", "window"]


def site_effects(raw: pd.DataFrame, baselines: dict, direction: str) -> pd.DataFrame:
    """One row per site, in the table's site order: ``normalized`` and ``effect``, the
    normalised change from the unpatched target run (corrupted = 0 when denoising,
    clean = 1 when noising)."""
    table = aggregate(normalize(raw, baselines["clean"], baselines["corrupted"]))
    table["effect"] = table["normalized"] - (0.0 if direction == "denoise" else 1.0)
    return table


def ranking_check(
    estimate: pd.DataFrame,
    verified: pd.DataFrame,
    exact: pd.DataFrame | None,
    top_k: int,
    large_effect: float,
) -> dict:
    """The agreement of an attribution ranking with exact patching.

    Args:
        estimate: :func:`site_effects` of the attribution sweep, every site.
        verified: :func:`site_effects` of its exact-patched sites.
        exact: :func:`site_effects` of an exact sweep over the same sites, or None.
        top_k: The ranking's k.
        large_effect: A false negative's exact |effect| is at least this, while its
            estimate is under half of it.
    """
    joined = verified[[*SITE, "effect"]].merge(
        estimate[[*SITE, "effect"]], on=SITE, suffixes=("_exact", "_estimate")
    )
    k = min(top_k, len(estimate))
    ranked = _top(estimate, k)
    reference = exact if exact is not None else verified
    both = reference[[*SITE, "effect"]].merge(
        estimate[[*SITE, "effect"]], on=SITE, suffixes=("_exact", "_estimate")
    )
    missed = both[
        (both["effect_exact"].abs() >= large_effect)
        & (both["effect_estimate"].abs() < 0.5 * both["effect_exact"].abs())
    ]
    return {
        "k": k,
        "n_sites": len(estimate),
        "n_verified": len(joined),
        "pearson": _correlation(joined, "pearson"),
        "spearman": _correlation(joined, "spearman"),
        "recall_at_k": (
            len(_top(exact, k).merge(ranked, on=SITE)) / k if exact is not None and k else None
        ),
        "max_abs_error": _number((joined["effect_estimate"] - joined["effect_exact"]).abs().max()),
        "false_negatives": [
            {
                "layer": int(row.layer),
                "head": int(row.head),
                "position_label": str(row.position_label),
                "exact": round(float(row.effect_exact), 6),
                "estimate": round(float(row.effect_estimate), 6),
            }
            for row in missed.sort_values("effect_exact", key=abs, ascending=False).itertuples()
        ],
    }


def _top(table: pd.DataFrame, k: int) -> pd.DataFrame:
    order = table["effect"].abs().sort_values(ascending=False, kind="stable").index[:k]
    return table.loc[order, SITE]


def _correlation(joined: pd.DataFrame, method: str) -> float | None:
    if len(joined) < 3:
        return None
    exact, estimate = joined["effect_exact"], joined["effect_estimate"]
    if method == "spearman":  # Pearson's r of the ranks (ties share their mean rank)
        exact, estimate = exact.rank(), estimate.rank()
    return _number(exact.corr(estimate))


def _number(value: object) -> float | None:
    number = float(value)  # type: ignore[arg-type]
    return None if math.isnan(number) else round(number, 6)
