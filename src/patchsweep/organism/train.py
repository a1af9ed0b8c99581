"""Train the model organism: a small GPT-2 on the project's synthetic tasks.

Every training sequence is one clean prompt from a generator's ``train`` split followed by
its answer (for Greater-Than, one random year above YY), and the loss is the next-token
loss at every position, so the model also learns the prompts' own structure. Each batch
mixes the tasks in fixed proportions (:attr:`TrainConfig.task_mix`).

Runs are deterministic from :attr:`TrainConfig.seed` on a given machine: the data comes
from seeded ``random.Random`` streams, the weights from ``torch.manual_seed``, and torch
is held to deterministic kernels and a fixed thread count (a different thread count
changes float summation order and hence the last bits of the weights).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from patchsweep.datasets import generate
from patchsweep.datasets.base import PromptPair
from patchsweep.organism.tokenizer import build_tokenizer


def _default_task_mix() -> dict[str, float]:
    # The order is part of the data stream (tasks are drawn in this order each step), and
    # conf/train_organism.yaml's keys merge into it: a new task goes last.
    return {
        "ioi": 0.1,
        "greater_than": 0.1,
        "factual": 0.1,
        "induction": 0.4,
        "ioi_distractor": 0.3,
    }


@dataclass
class TrainConfig:
    """Everything that determines the trained weights."""

    seed: int = 0  # seeds the data streams and the weight initialisation
    n_layer: int = 4  # transformer blocks
    n_head: int = 8  # attention heads per block
    d_model: int = 128  # residual stream width (GPT-2's n_embd); MLP is 4x this
    n_positions: int = 64  # longest sequence the model accepts
    steps: int = 5000  # optimiser steps
    batch_size: int = 64  # sequences per step, split over tasks by task_mix
    lr: float = 2e-3  # AdamW peak learning rate
    warmup_steps: int = 100  # linear warm-up from 0 to lr
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    grad_clip: float = 1.0  # max global gradient norm
    bos_prob: float = 0.5  # chance of starting a sequence with <|endoftext|> (TL adds it)
    induction_min_length: int = 3  # shortest repeated sequence in induction examples
    induction_max_length: int = 16  # longest repeated sequence in induction examples
    # Most unrepeated words before an induction example's first copy (0: none, and no
    # draw from the data stream). Without a prefix the answer is always halfway along the
    # sequence, a position a head can find without a previous-token head.
    induction_max_prefix: int = 0
    num_threads: int = 1  # torch CPU threads; part of the determinism contract
    log_every: int = 250  # steps between loss reports
    task_mix: dict[str, float] = field(default_factory=_default_task_mix)  # batch shares


@dataclass
class TrainResult:
    """A trained organism and how its training went."""

    model: GPT2LMHeadModel
    tokenizer: PreTrainedTokenizerFast
    final_loss: float  # mean loss over the last log_every steps
    seconds: float  # wall-clock training time (not part of any artefact: it varies)


def task_counts(mix: dict[str, float], batch_size: int) -> dict[str, int]:
    """Split a batch over tasks in proportion to ``mix`` (largest-remainder rounding)."""
    total = sum(mix.values())
    exact = {task: batch_size * share / total for task, share in mix.items()}
    counts = {task: math.floor(x) for task, x in exact.items()}
    by_remainder = sorted(exact, key=lambda t: (counts[t] - exact[t], t))
    for task in by_remainder[: batch_size - sum(counts.values())]:
        counts[task] += 1
    return {task: n for task, n in counts.items() if n > 0}


# Training tasks that are a generator with options; any other task is a generator's name.
TASK_GENERATORS: dict[str, tuple[str, dict[str, object]]] = {
    "ioi_distractor": ("ioi", {"distractor": True}),
}


def training_texts(cfg: TrainConfig, rng: random.Random) -> dict[str, list[str]]:
    """One batch of training sequences (prompt + answer) per task, from the train splits."""
    texts: dict[str, list[str]] = {}
    for task, n in task_counts(cfg.task_mix, cfg.batch_size).items():
        generator, options = TASK_GENERATORS.get(task, (task, {}))
        if task == "induction":
            pairs = [induction_example(cfg, rng) for _ in range(n)]
        else:
            pairs = generate(generator, n, rng.randrange(2**32), split="train", **options)
        texts[task] = [pair.clean + rng.choice(pair.correct) for pair in pairs]
    return texts


def induction_example(cfg: TrainConfig, rng: random.Random) -> PromptPair:
    """One induction pair of random length (and random prefix, if configured)."""
    seed = rng.randrange(2**32)
    length = rng.randint(cfg.induction_min_length, cfg.induction_max_length)
    prefix = rng.randint(0, cfg.induction_max_prefix) if cfg.induction_max_prefix else 0
    return generate("induction", 1, seed, split="train", length=length, prefix=prefix)[0]


def encode_batch(
    texts: list[str], tokenizer: PreTrainedTokenizerFast, rng: random.Random, bos_prob: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input ids, attention mask and labels (``-100`` on padding)."""
    eos = tokenizer.eos_token_id
    rows = []
    for ids in tokenizer(texts, add_special_tokens=False).input_ids:
        rows.append([eos, *ids] if rng.random() < bos_prob else ids)
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), eos, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        labels[i, : len(row)] = torch.tensor(row)
    return input_ids, mask, labels


def batch_loss_backward(
    model: GPT2LMHeadModel, batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
) -> float:
    """Accumulate gradients of the mean next-token loss over several padded batches.

    Each task is its own padded batch, so short prompts (factual recall) are not padded to
    the length of the longest (induction): the padding would cost as much as real tokens.
    Returns the mean loss per predicted token.
    """
    n_targets = sum(int((labels[:, 1:] != -100).sum()) for _, _, labels in batches)
    total = 0.0
    for input_ids, mask, labels in batches:
        logits = model(input_ids=input_ids, attention_mask=mask).logits  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), reduction="sum"
        )
        (loss / n_targets).backward()
        total += loss.item()
    return total / n_targets


def build_model(cfg: TrainConfig, tokenizer: PreTrainedTokenizerFast) -> GPT2LMHeadModel:
    """A freshly initialised GPT-2 of the configured shape, without dropout."""
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=cfg.n_positions,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to ``lr * min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def train(cfg: TrainConfig, log: Callable[[str], None] | None = print) -> TrainResult:
    """Train an organism from scratch.

    Args:
        cfg: Model shape, optimiser and data settings.
        log: Where progress lines go (``None`` for silence).

    Returns:
        The trained model (in eval mode), its tokenizer and training statistics.
    """
    with deterministic_torch(cfg.num_threads):
        return _train(cfg, log)


@contextmanager
def deterministic_torch(num_threads: int) -> Iterator[None]:
    """Deterministic kernels and a fixed thread count, restored afterwards.

    Restoring matters when training runs inside a larger process (the tests): the
    caller's thread count and determinism setting are not ours to change for good.
    """
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train(cfg: TrainConfig, log: Callable[[str], None] | None) -> TrainResult:
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)

    tokenizer = build_tokenizer(model_max_length=cfg.n_positions)
    model = build_model(cfg, tokenizer)
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay
    )
    start = time.perf_counter()
    recent: list[float] = []
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step)
        batches = [
            encode_batch(texts, tokenizer, rng, cfg.bos_prob)
            for texts in training_texts(cfg, rng).values()
        ]
        longest = max(ids.shape[1] for ids, _, _ in batches)
        if longest > cfg.n_positions:
            raise ValueError(f"a training sequence has {longest} tokens > n_positions")
        optimizer.zero_grad(set_to_none=True)
        loss = batch_loss_backward(model, batches)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        recent = [*recent[-(cfg.log_every - 1) :], loss]
        if log is not None and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps):
            mean, elapsed = sum(recent) / len(recent), time.perf_counter() - start
            log(f"step {step + 1}/{cfg.steps}  loss {mean:.4f}  {elapsed:.0f} s")
    model.eval()
    return TrainResult(
        model=model,
        tokenizer=tokenizer,
        final_loss=sum(recent) / max(1, len(recent)),
        seconds=time.perf_counter() - start,
    )
