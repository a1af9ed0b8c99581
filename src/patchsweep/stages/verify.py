"""Stage verify: exact-patch the top of an attribution sweep's ranking, and a random
control sample of the rest, and measure how well the estimate agreed.

Run by DVC as ``python -m patchsweep.stages.verify MODEL DATASET SWEEP EXACT``, where
EXACT names an exact sweep over the same sites (its full table gives the recall of the
ranking's top k), or is SWEEP itself when there is none.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace

from patchsweep.attribution_check import ranking_check, site_effects
from patchsweep.baselines import experiment_baselines
from patchsweep.cli import run_stage, stage_args
from patchsweep.config import Config, load_config
from patchsweep.engine.attribution import planned_passes
from patchsweep.engine.verify import choose_sites, exact_patch_sites
from patchsweep.errors import ConfigError
from patchsweep.io import (
    FULL_PRECISION,
    publish_together,
    read_csv,
    write_csv,
    write_json,
)
from patchsweep.models import load_model
from patchsweep.paths import ExperimentPaths
from patchsweep.stored import load_tokenized
from patchsweep.sweep_runs import load_sweep_runs

log = logging.getLogger(__name__)
# What must agree between an attribution sweep and the exact sweep it is compared with.
SAME_SITES = ("component", "direction", "positions", "layers", "heads", "window")


def run(exp: ExperimentPaths, sweep_name: str, exact_name: str) -> None:
    """Write the sweep's verified exact table and its check (see module docstring)."""
    cfg = load_config(exp.config)
    sweep = cfg.sweeps.get(sweep_name)
    if sweep is None or sweep.method != "attribution":
        raise ConfigError(
            f"verify: {sweep_name!r} is not an attribution sweep of {exp.config}",
            "list only sweeps with method: attribution under attribution_sweep in params.yaml",
        )
    compared = None if exact_name == sweep_name else _exact_twin(cfg, sweep_name, exact_name)
    pairs, token_hash = load_tokenized(exp)
    model = load_model(cfg.model)
    runs = load_sweep_runs(exp, cfg, sweep_name, model.identity(), token_hash)
    logits = runs.final_logits
    baselines = experiment_baselines(
        pairs, logits, cfg.metric.name, cfg.model.name, cfg.dataset.name
    )
    estimate = site_effects(read_csv(exp.patch(sweep_name)), baselines, sweep.direction)
    top, control = choose_sites(
        estimate["effect"].to_numpy(), cfg.verify.top_k, cfg.verify.control, cfg.verify.seed
    )
    chosen = sorted([*top.tolist(), *control.tolist()])
    exact_sweep = replace(sweep, method="exact")
    table, passes = exact_patch_sites(
        model, pairs, sweep_name, exact_sweep, runs, cfg.metric.name, cfg.engine, chosen
    )
    verified = site_effects(table, baselines, sweep.direction)
    exact = None
    if compared is not None:
        exact = site_effects(read_csv(exp.patch(compared)), baselines, sweep.direction)
    check = ranking_check(estimate, verified, exact, cfg.verify.top_k, cfg.verify.large_effect)
    check = {
        "component": sweep.component,
        "direction": sweep.direction,
        "positions": sweep.positions,
        "compared_with": compared,
        **check,
        "n_control": len(control),
        "passes": _passes(cfg, sweep_name, pairs, model, passes, exact_sweep),
        "settings": asdict(cfg.verify),
    }
    with publish_together(exp.verified(sweep_name), exp.check(sweep_name)):
        write_csv(exp.verified(sweep_name), table, digits=FULL_PRECISION)  # raw, as patch's
        write_json(exp.check(sweep_name), check)
    log.info(
        "verify %s: %d of %d sites exact-patched; Pearson r %s, Spearman %s, recall@%d %s",
        sweep_name,
        check["n_verified"],
        check["n_sites"],
        check["pearson"],
        check["spearman"],
        check["k"],
        check["recall_at_k"],
    )


def _exact_twin(cfg: Config, sweep_name: str, exact_name: str) -> str:
    """Check that ``exact_name`` is an exact sweep over the same sites."""
    sweep, exact = cfg.sweeps[sweep_name], cfg.sweeps.get(exact_name)
    differs = [k for k in SAME_SITES if getattr(exact, k) != getattr(sweep, k)] if exact else []
    if exact is None or exact.method != "exact" or differs:
        why = (
            "is not a sweep of this experiment"
            if exact is None
            else ("is not an exact sweep" if exact.method != "exact" else f"differs in {differs}")
        )
        raise ConfigError(
            f"verify: {sweep_name} is to be compared with {exact_name!r}, which {why}",
            "in params.yaml's attribution_sweep, set `exact:` to an exact sweep with the same "
            f"{', '.join(SAME_SITES)} (listed under sweep:), or to the sweep's own name",
        )
    return exact_name


def _passes(cfg, sweep_name, pairs, model, verification, exact_sweep) -> dict:
    """Forward (and backward) passes of each method, for the cost comparison."""
    from patchsweep.estimate import plan_sweep  # the engine's own planner

    sweep = cfg.sweeps[sweep_name]
    attribution = planned_passes(
        model.dims, pairs.lengths, sweep.component, cfg.engine.memory_budget_mb,
        cfg.engine.max_batch, sweep.grad_drop,
    )  # fmt: skip
    full = replace(cfg, sweeps={sweep_name: exact_sweep})
    _, exact = plan_sweep(sweep_name, full, pairs, model.dims, model.arch, model.hf.config)
    return {
        "attribution": {"forward": len(attribution), "backward": len(attribution)},
        "verification": {
            "forward": len(verification),
            "rows": sum(p.rows for p in verification),
        },
        "exact_sweep": {"forward": len(exact), "rows": sum(p.rows for p in exact)},
    }


def main(argv: list[str]) -> None:
    """The DVC entry point: the experiment and sweeps named on the command line."""
    model, dataset, sweep, exact = stage_args(argv, "verify", "MODEL DATASET SWEEP EXACT", 4)
    run(ExperimentPaths(model, dataset), sweep, exact)


if __name__ == "__main__":
    run_stage(main)
