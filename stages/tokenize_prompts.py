"""DVC stage tokenize for one experiment (not named tokenize.py: a script of that name
would shadow the standard library module of the same name).

Usage: python stages/tokenize_prompts.py MODEL DATASET
"""

from patchsweep.cli import run_stage
from patchsweep.paths import ExperimentPaths
from patchsweep.steps import tokenize


def main(argv: list[str]) -> None:
    model, dataset = argv
    tokenize.run(ExperimentPaths(model, dataset))


if __name__ == "__main__":
    run_stage(main)
