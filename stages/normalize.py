"""DVC stage normalize for one experiment.

Usage: python stages/normalize.py MODEL DATASET
"""

from patchsweep.cli import run_stage
from patchsweep.paths import ExperimentPaths
from patchsweep.steps import normalize


def main(argv: list[str]) -> None:
    model, dataset = argv
    normalize.run(ExperimentPaths(model, dataset))


if __name__ == "__main__":
    run_stage(main)
