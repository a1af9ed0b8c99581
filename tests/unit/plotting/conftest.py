"""Synthetic results tables shaped like the pipeline's, for the figure and layout tests.

Each dataset gets the sweeps the pipeline's default experiment runs (layer lines in both
directions, layer × position in both directions and with a window, layer × head, head ×
position, attribution sweeps with their check), at the sizes that stress a layout: many
positions, long tokens, 12 layers × 12 heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from patchsweep.plotting import (
    ExperimentInfo,
    FigurePlan,
    PlotStyle,
    plan_figures,
    split_attribution,
    split_sweeps,
)
from patchsweep.plotting.figures import draw_figure
from patchsweep.plotting.style import style_context


@dataclass(frozen=True)
class Dataset:
    """The shape of one experiment's table."""

    name: str
    n_layers: int
    n_heads: int
    labels: tuple[str, ...]  # position labels, as the engine writes them
    n_prompts: int


INDUCTION_LABELS = ("REP1", *(f"tok{i}" for i in range(1, 8)), "CURRENT1", "ANSWER1", "REP2",
                    *(f"tok{i}" for i in range(1, 8)), "END")  # fmt: skip
LONG_TOKENS = ("When", " Constantinople", " and", " Mary", " internationalisation", ",",
               " Mary", " gave", " a", " counterrevolutionaries", " to", " store")  # fmt: skip
DATASETS = {
    "ioi": Dataset("ioi", 2, 4, ("IO", "S1", "S1+1", "S2", "END"), 64),
    "induction": Dataset("induction", 2, 4, INDUCTION_LABELS, 64),  # 20 positions
    "long_tokens": Dataset("long_tokens", 2, 4, LONG_TOKENS, 1),
    "gpt2": Dataset("gpt2", 12, 12, ("IO", "S1", "S1+1", "S2", "END"), 100),
}


def _row(sweep, component, direction, layer, head, position, label, value, **extra):
    return {
        "sweep": sweep, "component": component, "direction": direction, "layer": layer,
        "head": head, "position": position, "position_label": label,
        "window": extra.get("window", 1), "method": extra.get("method", "exact"),
        "metric": 3.0 * value - 1.0, "normalized": value, "sem": extra.get("sem", 0.02),
        "n_prompts": extra.get("n_prompts", 64),
    }  # fmt: skip


def make_table(data: Dataset, seed: int = 0) -> pd.DataFrame:
    """Every sweep kind of the pipeline's experiment, for ``data``'s shape."""
    rng = np.random.default_rng(seed)
    n = {"n_prompts": data.n_prompts, "sem": 0.02 if data.n_prompts > 1 else float("nan")}
    layers, heads = range(data.n_layers), range(data.n_heads)
    positions = list(enumerate(data.labels))
    rows = []

    def effect(shape=()) -> np.ndarray:
        return np.clip(rng.normal(0.1, 0.35, shape), -0.4, 1.3)

    for component in ("resid_pre", "attn_out"):
        rows += [_row(f"{component}_layer", component, "denoise", lay, -1, -1, "all",
                      float(effect()), **n) for lay in layers]  # fmt: skip
    rows += [_row("noise_attn_out_layer", "attn_out", "noise", lay, -1, -1, "all",
                  1 - float(effect()), **n) for lay in layers]  # fmt: skip
    rows += [_row("mlp_out_windows", "mlp_out", "denoise", lay, -1, -1, "all", float(effect()),
                  window=window, **n) for window in (1, 3) for lay in layers]  # fmt: skip

    def by_position(sweep, component, direction, flip=False, **extra) -> list[dict]:
        return [
            _row(sweep, component, direction, lay, -1, p, label,
                 (1 - float(effect())) if flip else float(effect()), **{**n, **extra})
            for lay in layers
            for p, label in positions
        ]  # fmt: skip

    for component in ("resid_pre", "attn_out", "mlp_out"):
        rows += by_position(f"{component}_layer_pos", component, "denoise")
    rows += by_position("noise_resid_layer_pos", "resid_pre", "noise", flip=True)
    rows += by_position("attn_out_window", "attn_out", "denoise", window=2)
    rows += [_row("head", "z", "denoise", lay, h, -1, "all", float(effect()), **n)
             for lay in layers for h in heads]  # fmt: skip
    rows += [_row("head_pos", "z", "denoise", lay, h, p, label, float(effect()), **n)
             for lay in layers for h in heads for p, label in positions[-3:]]  # fmt: skip
    table = pd.DataFrame(rows)
    return pd.concat([table, _attribution_rows(table, rng)], ignore_index=True)


def _attribution_rows(table: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """atp_head (compared with head_pos) and atp_resid (verified sites only)."""
    parts = []
    for name, exact, verified in (
        ("atp_head", "head_pos", 4),
        ("atp_resid", "resid_pre_layer_pos", 3),
    ):
        sites = table[table["sweep"] == exact]
        estimate = sites.assign(
            sweep=name,
            method="attribution",
            normalized=0.8 * sites["normalized"] + rng.normal(0, 0.05, len(sites)),
        )
        parts += [estimate, sites.head(verified).assign(sweep=name)]
    return pd.concat(parts, ignore_index=True)


def make_checks(table: pd.DataFrame) -> dict[str, dict]:
    """``sweeps`` of attribution_check.json for :func:`make_table`'s attribution sweeps."""
    passes = {"attribution": {"forward": 1, "backward": 1}, "verification": {"forward": 4}}
    common = {"k": 3, "n_control": 1, "pearson": 0.95, "spearman": 0.9, "passes": passes}
    return {
        "atp_head": {**common, "component": "z", "direction": "denoise",
                     "compared_with": "head_pos", "recall_at_k": 0.67, "false_negatives": []},
        "atp_resid": {**common, "component": "resid_pre", "direction": "denoise",
                      "compared_with": None, "recall_at_k": None, "false_negatives": []},
    }  # fmt: skip


def info_for(data: Dataset) -> ExperimentInfo:
    return ExperimentInfo(model=f"{data.name}-model", dataset=data.name, metric="logit_diff")


@pytest.fixture(scope="session")
def layout_style() -> PlotStyle:
    """The pipeline's look (annotation decided as in the pipeline), at a low resolution."""
    return PlotStyle(dpi=40, formats=["png"])


@dataclass(frozen=True)
class Experiment:
    """One synthetic experiment: its shape, results table, attribution checks and names."""

    data: Dataset
    table: pd.DataFrame
    checks: dict[str, dict]
    info: ExperimentInfo


def make_experiment(name: str) -> Experiment:
    data = DATASETS[name]
    table = make_table(data)
    return Experiment(data, table, make_checks(table), info_for(data))


@pytest.fixture(scope="session", params=sorted(DATASETS))
def experiment(request) -> Experiment:
    """Each dataset shape in turn; tables are built once per session."""
    return make_experiment(request.param)


@pytest.fixture(scope="session")
def induction() -> Experiment:
    """20 positions whose labels mix roles with tokens of the first of 64 prompts."""
    return make_experiment("induction")


@pytest.fixture(scope="session")
def ioi() -> Experiment:
    """A 2-layer model, five role-labelled positions, 64 prompts."""
    return make_experiment("ioi")


@pytest.fixture(scope="session")
def drawn(experiment, layout_style) -> list[tuple[FigurePlan, Figure]]:
    """Every figure of ``experiment``, drawn once for the tests that only look at them."""
    sweeps = split_sweeps(experiment.table)
    attributed = split_attribution(experiment.table, experiment.checks)
    with style_context(layout_style):
        return [
            (plan, draw_figure(plan, sweeps, attributed, experiment.info, layout_style))
            for plan in plan_figures(experiment.table, experiment.info, experiment.checks)
        ]
