"""DVC stage: train the model organism, check it, and write its directory atomically.

Usage (from the repository root)::

    python -m patchsweep.stages.train_organism [hydra overrides, e.g. train.seed=1 train.steps=500]

Composes ``conf/train_organism.yaml`` with the overrides, trains, evaluates on held-out
prompts, and refuses (exit status 1, old model untouched) when IOI falls below the
``acceptance`` thresholds. Otherwise the model, tokenizer, model card, ``metrics.json``
and ``circuits.json`` (the heads and positions that carry IOI and induction, found by
patching the saved model: :mod:`patchsweep.organism.circuit`) are written into a
temporary sibling directory that then replaces ``output_dir``, so readers never see a
half-written model.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer

from patchsweep.organism.card import render_card
from patchsweep.organism.circuit import (
    CIRCUIT_DATASETS,
    CircuitSite,
    circuits_to_json,
    find_circuit,
)
from patchsweep.organism.evaluate import EvalConfig, evaluate_all
from patchsweep.organism.train import TrainConfig, deterministic_torch, train

CONFIG_NAME = "train_organism"


def load_config(overrides: list[str]) -> DictConfig:
    """Compose the stage's config; ``train`` and ``eval`` are checked against their schemas."""
    with initialize_config_dir(config_dir=str(Path.cwd() / "conf"), version_base=None):
        cfg = compose(config_name=CONFIG_NAME, overrides=overrides)
    cfg.train = OmegaConf.merge(OmegaConf.structured(TrainConfig), cfg.train)
    cfg.eval = OmegaConf.merge(OmegaConf.structured(EvalConfig), cfg.eval)
    return cfg


def acceptance_failures(
    metrics: Mapping[str, Mapping[str, float]], acceptance: Mapping[str, float]
) -> list[str]:
    """Why the model must not ship (empty when it passes)."""
    ioi = metrics["ioi"]
    failures = []
    if ioi["accuracy"] < acceptance["min_ioi_accuracy"]:
        failures.append(
            f"held-out IOI accuracy {ioi['accuracy']:.4f} < {acceptance['min_ioi_accuracy']}"
        )
    if ioi["logit_diff"] < acceptance["min_ioi_logit_diff"]:
        failures.append(
            f"held-out IOI logit diff {ioi['logit_diff']:.4f} < {acceptance['min_ioi_logit_diff']}"
        )
    return failures


def make_readable(directory: Path) -> None:
    """Give the staged directory ordinary permissions.

    ``mkdtemp`` creates it private (0700) and some writers create private files; the
    model is a shared artefact, so use what the umask allows for a new file or folder.
    """
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.iterdir():
        path.chmod(0o666 & ~umask)


def replace_dir(staged: Path, target: Path) -> None:
    """Move ``staged`` to ``target``, replacing an existing directory there.

    A directory cannot be renamed over a non-empty one, so the old one is first renamed
    aside and removed only after the new one is in place (and put back on failure).
    """
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    try:
        staged.rename(target)
    except BaseException:
        if old.exists():
            old.rename(target)
        raise
    if old.exists():
        shutil.rmtree(old)


def saved_circuits(model_dir: Path) -> dict[str, list[CircuitSite]]:
    """The circuits of the model as written to ``model_dir`` (reloaded, so they describe
    the saved weights, with the eager attention that returns attention weights)."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return {task: find_circuit(model, tokenizer, task) for task in CIRCUIT_DATASETS}


def main(argv: list[str] | None = None) -> int:
    """Run the stage; returns the process exit status."""
    overrides = sys.argv[1:] if argv is None else list(argv)
    cfg = load_config(overrides)
    train_cfg: TrainConfig = OmegaConf.to_object(cfg.train)  # type: ignore[assignment]
    eval_cfg: EvalConfig = OmegaConf.to_object(cfg.eval)  # type: ignore[assignment]

    result = train(train_cfg)
    print(f"trained in {result.seconds:.0f} s, final loss {result.final_loss:.4f}", flush=True)
    with deterministic_torch(train_cfg.num_threads):  # same bits in metrics.json every run
        metrics = evaluate_all(result.model, result.tokenizer, eval_cfg)
    metrics = {task: {k: round(v, 6) for k, v in m.items()} for task, m in metrics.items()}
    print(json.dumps(metrics, indent=2), flush=True)

    failures = acceptance_failures(metrics, cfg.acceptance)
    if failures:
        print(
            "train_organism: the organism fails acceptance, model NOT written: "
            + "; ".join(failures),
            file=sys.stderr,
        )
        return 1

    out_dir = Path(cfg.output_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        result.model.save_pretrained(staged)
        result.tokenizer.save_pretrained(staged)
        command = shlex.join(["python", "-m", "patchsweep.stages.train_organism", *overrides])
        with deterministic_torch(train_cfg.num_threads):
            circuits = saved_circuits(staged)
        card = render_card(
            result.model, result.tokenizer, train_cfg, eval_cfg, metrics, command, circuits
        )
        (staged / "README.md").write_text(card, encoding="utf-8")
        (staged / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        circuits_json = json.dumps(circuits_to_json(circuits), indent=2) + "\n"
        (staged / "circuits.json").write_text(circuits_json)
        make_readable(staged)
        replace_dir(staged, out_dir)
    finally:
        if staged.exists():
            shutil.rmtree(staged)
    print(f"wrote {out_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
