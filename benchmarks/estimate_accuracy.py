"""How close `patchsweep estimate` comes to the stages' measured wall times.

Every stage logs ``stage <name> <args> done in <s> s`` when it ends. Run the estimate,
then the pipeline with its log kept, then this script on both::

    patchsweep estimate --json estimate.json
    dvc repro --force 2>&1 | tee repro.log        # or make repro on a fresh clone
    python benchmarks/estimate_accuracy.py estimate.json repro.log

It prints, per model stage, the estimate, the measured time and their ratio, and the
worst ratio in each direction.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

DONE = re.compile(r"stage (\w+) (\S+) (\S+)(?: (\S+))? done in ([\d.]+) s")


def measured_times(log: Path) -> dict[tuple[str, str, str], float]:
    """(model, dataset, stage label) → seconds, from a repro log."""
    times = {}
    for line in log.read_text(errors="replace").splitlines():
        found = DONE.search(line)
        if found:
            stage, model, dataset, sweep, seconds = found.groups()
            label = f"patch {sweep}" if stage == "patch" else stage
            times[(model, dataset, label)] = float(seconds)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("estimate", type=Path, help="the JSON of `patchsweep estimate --json`")
    parser.add_argument("log", type=Path, help="the log of a `dvc repro` that ran the stages")
    args = parser.parse_args()
    estimate = json.loads(args.estimate.read_text())
    times = measured_times(args.log)
    ratios = []
    print(f"{'experiment':<22}{'stage':<28}{'estimate s':>11}{'measured s':>11}{'ratio':>7}")
    for experiment in estimate["experiments"]:
        for stage in experiment["stages"]:
            key = (experiment["model"], experiment["dataset"], stage["stage"])
            if key not in times:
                continue
            ratio = stage["seconds"] / times[key]
            ratios.append(ratio)
            name = f"{experiment['model']}/{experiment['dataset']}"
            print(f"{name:<22}{stage['stage']:<28}{stage['seconds']:>11.1f}"
                  f"{times[key]:>11.1f}{ratio:>7.2f}")  # fmt: skip
    if not ratios:
        raise SystemExit("no stage of the estimate appears in the log")
    print(
        f"\n{len(ratios)} stages: estimate / measured median {statistics.median(ratios):.2f}, "
        f"range {min(ratios):.2f}–{max(ratios):.2f}"
    )


if __name__ == "__main__":
    main()
