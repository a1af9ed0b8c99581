"""The ``patchsweep`` command: estimate a pipeline, run an experiment or one sweep,
summarize the last ``dvc repro``, or list DVC's experiments.

    patchsweep estimate                     every experiment of params.yaml, per stage
    patchsweep estimate -e organism/ioi     one experiment
    patchsweep run dataset=greater_than     one experiment outside DVC (Hydra overrides)
    patchsweep sweep ioi --model data/models/ioi-gpt2 --component z -o heads.csv
    patchsweep summary --since 1767225600   what dvc repro did since then (make repro's end)
    patchsweep exps [--csv] [-A]            dvc exp show, one row per revision × experiment

Errors are reported as the stages report them: the problem, the fix, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from patchsweep.cli import EXIT_USER_ERROR, setup_logging
from patchsweep.config import check_group_choices
from patchsweep.errors import ConfigError, PatchsweepError
from patchsweep.exps import add_arguments as add_exps_arguments
from patchsweep.summary import add_arguments as add_summary_arguments


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "run":  # Hydra parses its own command line
        return _run(args[1:])
    parser = _parser()
    ns = parser.parse_args(args)
    if ns.command is None:
        parser.print_help()
        return EXIT_USER_ERROR
    setup_logging()
    try:
        return int(ns.handler(ns) or 0)
    except PatchsweepError as exc:
        print(f"error: {exc.problem}\n  fix: {exc.fix}", file=sys.stderr)
        return EXIT_USER_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patchsweep", description="Activation-patching sweeps, reproducible with DVC."
    )
    sub = parser.add_subparsers(dest="command")

    est = sub.add_parser(
        "estimate",
        help="predict sites, passes, seconds, memory and disk per stage",
        description="Predict each stage's cost for the pipeline in params.yaml (run from "
        "the project root), calibrated by timing a few small forward passes.",
    )
    est.add_argument(
        "-e",
        "--experiment",
        action="append",
        metavar="MODEL/DATASET",
        help="only this experiment (repeatable); default: every one in params.yaml",
    )
    est.add_argument("--json", metavar="FILE", help="also write the estimate as JSON")
    est.set_defaults(handler=_estimate)

    sub.add_parser(
        "run",
        help="run one experiment outside DVC: patchsweep run [HYDRA OVERRIDES] (-m for many)",
        add_help=False,
    )

    sw = sub.add_parser(
        "sweep",
        help="run one sweep on a model and prompts, write its results table (CSV)",
        description="One sweep from the command line: the table of results.csv, "
        "without DVC. PROMPTS is a generator (ioi, greater_than, factual, induction) "
        "or a .csv/.jsonl file of prompt pairs.",
    )
    sw.add_argument("prompts", help="generator name or prompt file")
    sw.add_argument("--model", required=True, help="model folder or hub id")
    sw.add_argument(
        "--component",
        required=True,
        help="resid_pre | resid_post | attn_out | mlp_out | z | q | k | v | pattern",
    )
    sw.add_argument("--direction", default="denoise", help="denoise | noise")
    sw.add_argument("--positions", default="auto", help="all | each | labels | auto")
    sw.add_argument("--layers", type=int, nargs="+", help="layers to sweep (default: all)")
    sw.add_argument("--heads", type=int, nargs="+", help="heads to sweep (default: all)")
    sw.add_argument("--window", type=int, default=1, help="consecutive layers per patch")
    sw.add_argument(
        "--method",
        default="exact",
        help="exact | attribution (a gradient estimate of every site: one forward and one "
        "backward pass per chunk of prompts)",
    )
    sw.add_argument("--n-pairs", type=int, default=32, help="pairs a generator makes")
    sw.add_argument("--seed", type=int, default=0, help="generator seed")
    sw.add_argument("--metric", help="override the dataset's own metric")
    sw.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | mps | auto")
    sw.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    sw.add_argument("--per-prompt", action="store_true", help="one row per site × prompt")
    sw.add_argument("-o", "--output", default="results.csv", help="CSV file to write")
    sw.set_defaults(handler=_sweep)

    sm = sub.add_parser(
        "summary",
        help="one screen on the last dvc repro: stages ran, failed, up to date; experiments",
        description="What `dvc repro` did since --since (make repro prints it at the end): "
        "stages ran, up to date and failed, one line per experiment, then what needs "
        "attention. Run in the project root.",
    )
    add_summary_arguments(sm)
    sm.set_defaults(handler=_summary)

    ex = sub.add_parser(
        "exps",
        help="dvc exp show in 100 columns: baselines, validity, attribution r per experiment",
        description="`dvc exp show` as one row per revision (workspace, commits, DVC "
        "experiments) × experiment (model/dataset): sweeps, clean and corrupted baselines, "
        "validity checks, lowest attribution r (n sweeps). Run in the project root.",
    )
    add_exps_arguments(ex)
    ex.set_defaults(handler=_exps)
    return parser


def _estimate(ns: argparse.Namespace) -> int:
    from patchsweep.estimate import run_estimate

    run_estimate(ns.experiment, ns.json)
    return 0


def _exps(ns: argparse.Namespace) -> int:
    from patchsweep.exps import run

    return run(ns)


def _summary(ns: argparse.Namespace) -> int:
    from patchsweep.summary import run

    return run(ns.since, ns.dvc_status, ns.root)


def _sweep(ns: argparse.Namespace) -> int:
    from patchsweep import api
    from patchsweep.io import FULL_PRECISION, SIGNIFICANT_DIGITS, write_csv

    model = api.load_model(ns.model, device=ns.device, dtype=ns.dtype)
    prompts = api.load_prompts(ns.prompts, model, n_pairs=ns.n_pairs, seed=ns.seed)
    spec = {
        "component": ns.component,
        "direction": ns.direction,
        "positions": ns.positions,
        "layers": ns.layers,
        "heads": ns.heads,
        "window": ns.window,
        "method": ns.method,
    }
    table = api.sweep(model, prompts, spec, metric=ns.metric, per_prompt=ns.per_prompt)
    # a per-prompt table keeps float32's precision, as per_prompt.csv does
    write_csv(Path(ns.output), table, FULL_PRECISION if ns.per_prompt else SIGNIFICANT_DIGITS)
    print(f"wrote {ns.output}: {len(table)} rows", file=sys.stderr)
    return 0


def _run(overrides: list[str]) -> int:
    """``python -m patchsweep.run`` with the same overrides (Hydra owns ``sys.argv``)."""
    try:
        check_group_options(overrides, Path("conf"))
    except PatchsweepError as exc:
        print(f"error: {exc.problem}\n  fix: {exc.fix}", file=sys.stderr)
        return EXIT_USER_ERROR
    from patchsweep import run

    sys.argv = ["patchsweep run", *overrides]
    try:
        run.main()
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USER_ERROR
    return 0


def check_group_options(overrides: Sequence[str], conf: Path) -> None:
    """Refuse ``group=option`` where ``conf/group/option.yaml`` does not exist (Hydra
    would exit 1 with a stack of config-search details)."""
    if not (conf / "config.yaml").is_file():
        raise ConfigError(
            f"no {conf / 'config.yaml'} here ({Path.cwd()})",
            "run `patchsweep run` in the project root",
        )
    check_group_choices(overrides)
    for override in overrides:
        key, sep, value = override.lstrip("+").partition("=")
        if not sep or not (conf / key).is_dir():
            continue
        for option in filter(None, (o.strip() for o in value.strip("[]").split(","))):
            if not (conf / key / f"{option}.yaml").is_file():
                known = sorted(f.stem for f in (conf / key).glob("*.yaml"))
                raise ConfigError(
                    f"{key}={option}: there is no conf/{key}/{option}.yaml",
                    f"use one of: {', '.join(known)}",
                )


if __name__ == "__main__":
    sys.exit(main())
