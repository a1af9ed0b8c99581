"""Shared fixtures: tiny models built offline, never downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

WORDS = [
    "When",
    "After",
    "John",
    "Mary",
    "Tom",
    "Ann",
    "and",
    "went",
    "to",
    "the",
    "store",
    "park",
    ",",
    "gave",
    "a",
    "book",
    "drink",
    "ball",
    ".",
]


def make_tokenizer(words: list[str]):
    """A word-level tokenizer over ``words`` (one token each), no BOS, with an unknown token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, **{w: i + 1 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<unk>")


def perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> None:
    """Add noise to every parameter: fresh models have zero biases and unit LayerNorms,
    which would hide bugs in how those are handled."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def save_tiny_gpt2(folder: Path, n_layer: int = 2, n_head: int = 4, n_embd: int = 32) -> Path:
    """A random, perturbed GPT-2 with a word-level tokenizer, saved like a hub model."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = make_tokenizer(WORDS)
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        vocab_size=len(tokenizer),
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config)
    perturb(model)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The tests' models are toy-sized: a second intra-op thread gains nothing, and when
    the other core is busy every op waits for the descheduled thread. Measured on the
    2-core machine with one other process running: the one-pass-per-patch reference of a
    head sweep on the organism took 59 s of CPU with 2 threads, 6 s with 1. Only this
    process: the stages the tests start as subprocesses keep torch's default."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    return save_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_gpt2_dir):
    from patchsweep.config import ModelConfig
    from patchsweep.models import load_model

    return load_model(ModelConfig(name="tiny-gpt2", path=str(tiny_gpt2_dir)))


@pytest.fixture
def project(tmp_path, tiny_gpt2_dir, monkeypatch):
    """A scratch project (conf/, params.yaml) around the tiny model, as the working dir."""
    from project import make_project

    make_project(tmp_path, tiny_gpt2_dir)
    monkeypatch.chdir(tmp_path)
    return tmp_path
