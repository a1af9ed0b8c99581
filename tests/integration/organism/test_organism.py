"""The model organism: tokenizer, training determinism, the stage, and the shipped model."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

from transformers import AutoModelForCausalLM, AutoTokenizer

from patchsweep.datasets import generate
from patchsweep.datasets.vocab import POOLS
from patchsweep.organism.evaluate import (
    evaluate_factual,
    evaluate_greater_than,
    evaluate_induction,
)
from patchsweep.organism.tokenizer import build_tokenizer, vocabulary
from patchsweep.organism.train import TrainConfig, task_counts, train

ROOT = Path(__file__).resolve().parents[3]
MODEL_DIR = ROOT / "data" / "models" / "ioi-gpt2"
TINY = {
    "steps": 3,
    "batch_size": 16,
    "n_layer": 1,
    "n_head": 2,
    "d_model": 32,
    "warmup_steps": 1,
    "num_threads": 1,
}
TINY_OVERRIDES = [f"train.{k}={v}" for k, v in TINY.items()] + ["eval.n_pairs=20"]


@pytest.fixture(scope="module")
def shipped():
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR)
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    return model.eval(), tokenizer


def _load_stage():
    return importlib.import_module("patchsweep.stages.train_organism")


class TestTokenizer:
    """Word-level: one token per word, offsets, no BOS."""

    def test_every_pool_word_is_one_token_with_or_without_space(self):
        tok = build_tokenizer()
        for pool in POOLS.values():
            for word in pool:
                bare = tok(word, add_special_tokens=False).input_ids
                spaced = tok(f" {word}", add_special_tokens=False).input_ids
                assert bare == spaced and len(bare) == 1 and bare[0] != tok.unk_token_id

    def test_no_bos_and_offsets(self):
        tok = build_tokenizer()
        text = "When Mary and John went to the store, John gave a drink to"
        enc = tok(text, return_offsets_mapping=True)
        assert len(enc.input_ids) == len(text.replace(",", " ,").split())
        assert tok.bos_token_id not in enc.input_ids
        assert [text[a:b] for a, b in enc.offset_mapping][:2] == ["When", "Mary"]
        assert tok.decode(enc.input_ids) == text

    def test_shipped_tokenizer_matches_the_vocabulary(self, shipped):
        """Editing a word pool without retraining must fail here."""
        _, tok = shipped
        assert tok.convert_ids_to_tokens(list(range(len(tok)))) == vocabulary()
        assert tok("John", add_special_tokens=False).input_ids == [vocabulary().index("John")]


class TestTraining:
    """Batch composition and determinism from the seed."""

    def test_task_counts_fill_the_batch(self):
        counts = task_counts({"a": 0.5, "b": 0.3, "c": 0.2, "d": 0.0}, 64)
        assert sum(counts.values()) == 64 and "d" not in counts
        assert counts["a"] == 32

    def test_same_seed_same_weights(self):
        one = train(TrainConfig(**TINY), log=None).model.state_dict()
        two = train(TrainConfig(**TINY), log=None).model.state_dict()
        other = train(TrainConfig(**TINY, seed=1), log=None).model.state_dict()
        assert all(torch.equal(one[k], two[k]) for k in one)
        assert not all(torch.equal(one[k], other[k]) for k in one)


class TestStage:
    """patchsweep.stages.train_organism: acceptance gate and atomic write."""

    def test_failing_model_leaves_the_old_one(self, tmp_path, capsys):
        out = tmp_path / "model"
        out.mkdir()
        (out / "marker").write_text("old")
        status = _load_stage().main([*TINY_OVERRIDES, f"output_dir={out}"])
        assert status == 1
        assert "NOT written" in capsys.readouterr().err
        assert [p.name for p in out.iterdir()] == ["marker"]
        assert [p.name for p in tmp_path.iterdir()] == ["model"]

    def test_passing_model_replaces_the_old_one(self, tmp_path):
        out = tmp_path / "model"
        out.mkdir()
        (out / "marker").write_text("old")
        status = _load_stage().main(
            [
                *TINY_OVERRIDES,
                f"output_dir={out}",
                "acceptance.min_ioi_accuracy=0",
                "acceptance.min_ioi_logit_diff=-100",
            ]
        )
        assert status == 0
        names = {p.name for p in out.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= names
        assert set(json.loads((out / "circuits.json").read_text())) == {"ioi", "induction"}
        assert "marker" not in names
        assert [p.name for p in tmp_path.iterdir()] == ["model"]
        metrics = json.loads((out / "metrics.json").read_text())
        assert set(metrics) == {"ioi", "greater_than", "factual", "induction"}
        assert AutoModelForCausalLM.from_pretrained(out).config.n_layer == 1

    def test_unknown_train_key_fails(self):
        with pytest.raises(Exception, match="nope"):
            _load_stage().load_config(["+train.nope=1"])


class TestShippedModel:
    """data/models/ioi-gpt2 meets the acceptance criteria, measured here from scratch."""

    def test_files_and_size(self):
        for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md"):
            assert (MODEL_DIR / name).is_file()
        assert (MODEL_DIR / "model.safetensors").stat().st_size <= 10 * 2**20
        card = (MODEL_DIR / "README.md").read_text()
        assert "python -m patchsweep.stages.train_organism" in card

    def test_held_out_ioi(self, shipped):
        model, tok = shipped
        pairs = generate("ioi", 400, seed=2024, split="test")
        correct, logit_diffs = 0, []
        for length in sorted({len(tok(p.clean).input_ids) for p in pairs}):
            group = [p for p in pairs if len(tok(p.clean).input_ids) == length]
            ids = torch.tensor([tok(p.clean).input_ids for p in group])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[:, -1]  # (B, V)
            for row, p in zip(logits, group, strict=True):
                io = tok(p.correct[0], add_special_tokens=False).input_ids[0]
                s = tok(p.incorrect[0], add_special_tokens=False).input_ids[0]
                correct += int(row.argmax()) == io
                logit_diffs.append(float(row[io] - row[s]))
        assert correct / len(pairs) >= 0.95
        assert sum(logit_diffs) / len(logit_diffs) >= 2.0

    def test_other_tasks_well_above_chance(self, shipped):
        model, tok = shipped
        gt = evaluate_greater_than(model, tok, generate("greater_than", 200, 2024))
        assert gt["prob_diff"] > 0.5 and gt["prob_diff"] > gt["corrupted_prob_diff"]
        fact = evaluate_factual(model, tok, generate("factual", 200, 2024, corruption="replace"))
        assert fact["accuracy"] > 0.9 and fact["logit_diff"] > 2
        ind = evaluate_induction(model, tok, generate("induction", 200, 2024))
        assert ind["repeat_logprob"] > ind["chance_logprob"] + 3
        assert ind["answer_logprob"] > ind["corrupted_answer_logprob"] + 2

    def test_metrics_file_records_acceptance(self):
        metrics = json.loads((MODEL_DIR / "metrics.json").read_text())
        assert metrics["ioi"]["accuracy"] >= 0.95 and metrics["ioi"]["logit_diff"] >= 2
