"""DVC stage capture for one experiment.

Usage: python stages/capture.py MODEL DATASET
"""

from patchsweep.cli import run_stage
from patchsweep.paths import ExperimentPaths
from patchsweep.steps import capture


def main(argv: list[str]) -> None:
    model, dataset = argv
    capture.run(ExperimentPaths(model, dataset))


if __name__ == "__main__":
    run_stage(main)
