"""DVC stage plot for one experiment.

Usage: python stages/plot.py MODEL DATASET
"""

from patchsweep.cli import run_stage
from patchsweep.paths import ExperimentPaths
from patchsweep.steps import plot


def main(argv: list[str]) -> None:
    model, dataset = argv
    plot.run(ExperimentPaths(model, dataset))


if __name__ == "__main__":
    run_stage(main)
