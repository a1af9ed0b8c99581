"""The shipped organism's circuits: what its model card names, recomputed from the weights.

Three computations must agree: ``circuits.json`` and the card (written when the model
was trained), the hook-based patch of :mod:`patchsweep.organism.circuit`, and the
pipeline's engine (``ps.sweep`` with the ``head_pos`` sweep). The structure test then
pins what makes the organism worth patching: IOI runs through heads in several layers,
heads at the names' positions acting before the heads at END.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from unittest import mock

import pytest
import yaml

os.environ["HF_HUB_OFFLINE"] = "1"

from transformers import AutoModelForCausalLM, AutoTokenizer

import patchsweep as ps
from patchsweep.organism import circuit
from patchsweep.organism.circuit import (
    ALL,
    CIRCUIT_DATASETS,
    CIRCUIT_POSITIONS,
    THRESHOLD,
    CircuitSite,
    find_circuit,
    head_position_effects,
)

ROOT = Path(__file__).resolve().parents[3]
MODEL_DIR = ROOT / "data" / "models" / "ioi-gpt2"
TASKS = tuple(CIRCUIT_DATASETS)


@pytest.fixture(scope="module")
def eager():
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, attn_implementation="eager")
    return model.eval(), AutoTokenizer.from_pretrained(MODEL_DIR)


@pytest.fixture(scope="module")
def recorded() -> dict[str, list[CircuitSite]]:
    raw = json.loads((MODEL_DIR / "circuits.json").read_text())
    return {task: [CircuitSite(**site) for site in sites] for task, sites in raw.items()}


@pytest.fixture(scope="module")
def hook_effects(eager) -> dict[str, tuple[dict, dict]]:
    """``head_position_effects`` of every task on the shipped weights, computed once: a
    patch of every head at every site, the most expensive step here."""
    model, tokenizer = eager
    return {task: head_position_effects(model, tokenizer, task) for task in TASKS}


@pytest.fixture(scope="module")
def recomputed(eager, hook_effects) -> dict[str, list[CircuitSite]]:
    """``find_circuit`` on the shipped weights. Its call of ``head_position_effects`` (same
    model, tokenizer and task) is answered from the ``hook_effects`` fixture instead of being
    computed a second time; everything after it is find_circuit's own code."""
    model, tokenizer = eager
    asked = []

    def computed(model_arg, tokenizer_arg, task):
        assert model_arg is model and tokenizer_arg is tokenizer
        asked.append(task)
        return hook_effects[task]

    with mock.patch.object(circuit, "head_position_effects", computed):
        found = {task: find_circuit(model, tokenizer, task) for task in TASKS}
    assert asked == list(TASKS)  # find_circuit took its effects from the call it makes
    return found


def test_circuit_datasets_are_the_pipelines(tmp_path):
    """The card describes the experiments `dvc repro` runs, not other prompts."""
    for task, options in CIRCUIT_DATASETS.items():
        cfg = yaml.safe_load((ROOT / "conf" / "dataset" / f"{task}.yaml").read_text())
        assert cfg["generator"] == task
        assert (cfg["n_pairs"], cfg["seed"]) == (options["n_pairs"], options["seed"])
        rest = {k: v for k, v in options.items() if k not in ("n_pairs", "seed")}
        assert cfg["options"] == rest


@pytest.mark.parametrize("task", TASKS)
def test_recorded_circuit_is_the_shipped_weights(task, recorded, recomputed):
    got, want = recomputed[task], recorded[task]
    assert [(s.layer, s.head, s.position) for s in got] == [
        (s.layer, s.head, s.position) for s in want
    ]
    for new, old in zip(got, want, strict=True):
        assert new.effect == pytest.approx(old.effect, abs=2e-4)
        assert (new.attends_to, new.role) == (old.attends_to, old.role)


@pytest.mark.parametrize("task", TASKS)
def test_card_names_every_site(task, recorded):
    card = (MODEL_DIR / "README.md").read_text()
    assert "## Circuits" in card
    for site in recorded[task]:
        row = f"| {site.name} | {site.position} | {site.effect:.3f} | {site.attends_to} |"
        assert row in card, row


@pytest.mark.parametrize("task", TASKS)
def test_engine_agrees_with_the_hook_patch(task, hook_effects):
    """The pipeline's engine and the plain-hook patch give the same effect at every site."""
    effects, _ = hook_effects[task]
    loaded = ps.load_model(MODEL_DIR, name="organism")
    options = dict(CIRCUIT_DATASETS[task])
    n_pairs, seed = options.pop("n_pairs"), options.pop("seed")
    prompts = ps.load_prompts(task, loaded, n_pairs=n_pairs, seed=seed, **options)
    everywhere = CIRCUIT_POSITIONS[task] == ALL
    positions = "all" if everywhere else "labels"
    spec = {"heads": {"component": "z", "direction": "denoise", "positions": positions}}
    table = ps.sweep(loaded, prompts, spec)
    engine = {
        (int(r.layer), int(r.head), ALL if everywhere else str(r.position_label)): r.normalized
        for r in table.itertuples()
    }
    assert set(engine) == set(effects)
    worst = max(abs(engine[site] - effects[site]) for site in effects)
    assert worst < 1e-4, worst


def test_ioi_circuit_spans_layers_and_positions(recorded):
    """IOI is not one head: several layers carry it, and heads at the names' positions
    act before the heads at END that produce the answer."""
    sites = recorded["ioi"]
    assert len({s.layer for s in sites}) >= 2
    at_end = [s for s in sites if s.position == "END"]
    earlier = [s for s in sites if s.position != "END"]
    assert at_end and earlier
    assert min(s.layer for s in earlier) < max(s.layer for s in at_end)
    assert {"name mover", "S-inhibition"} & {s.role for s in at_end}


def test_threshold_is_what_the_card_says():
    card = (MODEL_DIR / "README.md").read_text()
    assert f"|effect| ≥ {THRESHOLD}" in card
