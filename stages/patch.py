"""DVC stage patch: one sweep of one experiment.

Usage: python stages/patch.py MODEL DATASET SWEEP
"""

from patchsweep.cli import run_stage
from patchsweep.paths import ExperimentPaths
from patchsweep.steps import patch


def main(argv: list[str]) -> None:
    model, dataset, sweep = argv
    patch.run(ExperimentPaths(model, dataset), sweep)


if __name__ == "__main__":
    run_stage(main)
