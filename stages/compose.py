"""DVC stage compose: resolve conf/ for one experiment.

Usage: python stages/compose.py MODEL DATASET [HYDRA_OVERRIDE ...]
"""

from patchsweep.cli import run_stage
from patchsweep.paths import ExperimentPaths
from patchsweep.steps import compose


def main(argv: list[str]) -> None:
    model, dataset, *overrides = argv
    compose.run(ExperimentPaths(model, dataset), overrides)


if __name__ == "__main__":
    run_stage(main)
