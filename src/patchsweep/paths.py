"""Where each stage reads and writes, for one experiment (one model × one dataset).

Intermediate files live under ``data/cache/<model>/<dataset>/``; what a researcher reads
(tables, baselines, figures, the report, the resolved config) under
``results/<model>/<dataset>/``. ``dvc.yaml`` spells the same paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from patchsweep.errors import ConfigError

RUNS = ("clean", "corrupted")
# Each stage's code fingerprint, <stage>.json (patchsweep.stages.code), relative to the
# repository root; dvc.yaml names each stage's own.
CODE_FINGERPRINTS = Path("data") / "code"
# Names that become folder or file names (models, datasets, sweeps): one plain word.
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_plain_name(kind: str, name: str) -> None:
    """Refuse a model, dataset or sweep name that could not safely be a folder name.

    These names become paths (``results/<model>/<dataset>/``, ``patch/<sweep>.csv``):
    ``../x``, ``a/b`` or an absolute path would read or write outside the project.
    """
    if not PLAIN_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(
            f"{kind} name {name!r} is not a plain name",
            f"name the {kind} with letters, digits, '_', '-' and '.' only (no '/', no "
            "'..'), e.g. my_dataset",
        )


@dataclass(frozen=True)
class ExperimentPaths:
    """File names of one experiment, relative to the project root.

    ``outputs`` is the folder (relative to ``root``) that holds ``results/`` and
    ``data/cache/``: the project root for DVC's stages, ``runs/`` for runs outside DVC
    (``python -m patchsweep.run``), so that those never overwrite DVC-tracked files.
    """

    model: str  # the conf/model option, e.g. "organism"
    dataset: str  # the conf/dataset option, e.g. "ioi"
    root: Path = Path(".")
    outputs: Path = Path(".")

    def __post_init__(self) -> None:
        check_plain_name("model", self.model)
        check_plain_name("dataset", self.dataset)

    @property
    def results(self) -> Path:
        return self.root / self.outputs / "results" / self.model / self.dataset

    @property
    def cache(self) -> Path:
        return self.root / self.outputs / "data" / "cache" / self.model / self.dataset

    @property
    def config(self) -> Path:
        return self.results / "config.yaml"

    @property
    def tokens(self) -> Path:
        return self.cache / "tokens.safetensors"

    @property
    def prompts(self) -> Path:
        return self.cache / "prompts.json"

    def activations(self, run: str) -> Path:
        return self.cache / "activations" / f"{run}.safetensors"

    @property
    def final_logits(self) -> Path:
        return self.cache / "final_logits.safetensors"

    @property
    def patch_dir(self) -> Path:
        return self.cache / "patch"

    def patch(self, sweep: str) -> Path:
        check_plain_name("sweep", sweep)
        return self.patch_dir / f"{sweep}.csv"

    def verified(self, sweep: str) -> Path:
        """The exact-patched sites of an attribution sweep (the verify stage's table)."""
        check_plain_name("sweep", sweep)
        return self.patch_dir / f"{sweep}.verified.csv"

    def check(self, sweep: str) -> Path:
        """How an attribution sweep's estimate agreed with exact patching."""
        check_plain_name("sweep", sweep)
        return self.patch_dir / f"{sweep}.check.json"

    @property
    def attribution_check(self) -> Path:
        """Every attribution sweep's check, merged by normalize."""
        return self.results / "attribution_check.json"

    def checkpoint(self, sweep: str) -> Path:
        """Finished chunks of a running sweep; not a DVC output, deleted on success."""
        check_plain_name("sweep", sweep)
        return self.cache / "checkpoints" / f"{sweep}.safetensors"

    @property
    def table(self) -> Path:
        return self.results / "results.csv"

    @property
    def per_prompt(self) -> Path:
        return self.results / "per_prompt.csv"

    @property
    def lines(self) -> Path:
        """One CSV per 1-D sweep (effect by layer): DVC ``plots`` for ``dvc plots diff``."""
        return self.results / "lines"

    @property
    def baselines(self) -> Path:
        return self.results / "baselines.json"

    @property
    def figures(self) -> Path:
        return self.results / "figures"
