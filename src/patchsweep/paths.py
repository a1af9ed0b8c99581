"""Where each stage reads and writes, for one experiment (one model × one dataset).

Intermediate files live under ``data/cache/<model>/<dataset>/``; what a researcher reads
(tables, baselines, figures, the report, the resolved config) under
``results/<model>/<dataset>/``. ``dvc.yaml`` spells the same paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RUNS = ("clean", "corrupted")


@dataclass(frozen=True)
class ExperimentPaths:
    """File names of one experiment, relative to the project root."""

    model: str  # the conf/model option, e.g. "organism"
    dataset: str  # the conf/dataset option, e.g. "ioi"
    root: Path = Path(".")

    @property
    def results(self) -> Path:
        return self.root / "results" / self.model / self.dataset

    @property
    def cache(self) -> Path:
        return self.root / "data" / "cache" / self.model / self.dataset

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
        return self.patch_dir / f"{sweep}.csv"

    def checkpoint(self, sweep: str) -> Path:
        """Finished chunks of a running sweep; not a DVC output, deleted on success."""
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
