"""Stage code: each stage's code fingerprint, ``data/code/<stage>.json``.

A fingerprint lists the content hash of every project file the stage can import (its
import closure, :mod:`patchsweep.code_closure`), and each stage in ``dvc.yaml`` depends on
its own fingerprint rather than on those files. An edit to a module changes exactly the
fingerprints of the stages that import it, so exactly those stages rerun; a file no stage
imports changes none, and nothing reruns after this stage.

Why not list the modules in ``dvc.yaml``: DVC reads and rewrites the whole of ``dvc.lock``
after every stage it runs, and thirty module entries a stage made the lock 580 kB, which
took DVC about four seconds a stage to parse and write, a third of ``make repro``.

This stage depends on the whole ``src/patchsweep`` folder, so ``dvc status`` names it after
any code edit. Run by DVC as ``python -m patchsweep.stages.code`` (no arguments).
"""

from __future__ import annotations

import logging
from pathlib import Path

from patchsweep.cli import run_stage, stage_args
from patchsweep.code_closure import PACKAGE, import_closure
from patchsweep.fingerprint import file_digest
from patchsweep.io import write_json
from patchsweep.paths import CODE_FINGERPRINTS

log = logging.getLogger(__name__)

SRC = Path("src")  # the project's source, relative to the repository root DVC runs in
STAGES = f"{PACKAGE}.stages"


def stage_names(src: Path) -> list[str]:
    """The stage modules: every module of the ``patchsweep.stages`` package but this
    one, which depends on every file instead."""
    folder = src.joinpath(*STAGES.split("."))
    return sorted(p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "code"))


def fingerprint(src: Path, stage: str) -> dict[str, object]:
    """The stage's module and the content hash of every file in its import closure,
    keyed by path relative to the repository root."""
    module = f"{STAGES}.{stage}"
    files = import_closure(src, module)
    root = src.parent
    return {
        "module": module,
        "files": {f.relative_to(root).as_posix(): file_digest(f) for f in sorted(files)},
    }


def run(src: Path = SRC, output: Path = CODE_FINGERPRINTS) -> None:
    """Write ``<output>/<stage>.json`` for every stage module under ``src``."""
    names = stage_names(src)
    for name in names:
        write_json(output / f"{name}.json", fingerprint(src, name))
    log.info("code fingerprints of %d stages in %s", len(names), output)


def main(argv: list[str]) -> None:
    """The DVC entry point: no arguments."""
    stage_args(argv, "code", "", 0)
    run()


if __name__ == "__main__":
    run_stage(main)
