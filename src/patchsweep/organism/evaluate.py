"""Held-out behaviour of the organism, one set of numbers per task.

The numbers are the ones patching experiments start from: how reliably the clean prompt
elicits the behaviour, and what the corrupted prompt leaves of it. All are computed at the
final prompt position, over the whole vocabulary, on the generators' ``test`` splits: IOI
name pairs and Greater-Than start years never seen in training. (Factual recall is scored
on the trained facts themselves, its task being memory; induction sequences are fresh
random draws.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from patchsweep.datasets import generate
from patchsweep.datasets.base import PromptPair
from patchsweep.datasets.factual import KNOWLEDGE_BASE, RELATIONS
from patchsweep.datasets.vocab import INDUCTION_POOL


@dataclass
class EvalConfig:
    """How many held-out prompts each task is scored on, and from which seed."""

    seed: int = 1_000_003  # generator seed of the evaluation prompts
    n_pairs: int = 1000  # prompts per task (factual accuracy uses every fact instead)
    induction_length: int = 8  # repeated-sequence length of the induction prompts


def token_id(tokenizer: PreTrainedTokenizerBase, word: str) -> int:
    """The single token id of ``word``; raises if it is not exactly one token."""
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(f"{word!r} is {len(ids)} tokens, expected 1")
    return ids[0]


@torch.no_grad()
def final_logits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    batch_size: int = 250,
    prepend_bos: bool = False,
) -> torch.Tensor:
    """Logits at each prompt's last token, shape ``(n_prompts, vocab)``.

    Prompts are right-padded: with a causal model and default position ids, padding after
    the last real token cannot change it. ``prepend_bos`` puts ``bos_token`` first, as
    TransformerLens does with string input.
    """
    rows = tokenizer(list(prompts), add_special_tokens=False).input_ids
    if prepend_bos:
        rows = [[tokenizer.bos_token_id, *row] for row in rows]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(len(r) for r in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)  # (B, T)
        for i, row in enumerate(chunk):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
        last = torch.tensor([len(r) - 1 for r in chunk])
        out.append(logits[torch.arange(len(chunk)), last].float())
    return torch.cat(out)


def _answer_ids(tokenizer: PreTrainedTokenizerBase, answers: Sequence[str]) -> torch.Tensor:
    return torch.tensor([token_id(tokenizer, a) for a in answers])


def evaluate_ioi(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PromptPair]
) -> dict[str, float]:
    """IOI accuracy and logit differences.

    Returns:
        ``accuracy`` (IO is the top token over the whole vocabulary), ``logit_diff`` (mean
        logit(IO) − logit(S) on clean prompts), ``corrupted_logit_diff`` (the same
        answers scored on the corrupted prompts) and ``bos_accuracy`` (accuracy with
        ``bos_token`` prepended, the input TransformerLens builds from strings).
    """
    io = _answer_ids(tokenizer, [p.correct[0] for p in pairs])
    s = _answer_ids(tokenizer, [p.incorrect[0] for p in pairs])
    rows = torch.arange(len(pairs))
    clean = final_logits(model, tokenizer, [p.clean for p in pairs])
    corrupted = final_logits(model, tokenizer, [p.corrupted for p in pairs])
    with_bos = final_logits(model, tokenizer, [p.clean for p in pairs], prepend_bos=True)
    return {
        "accuracy": (clean.argmax(-1) == io).float().mean().item(),
        "logit_diff": (clean[rows, io] - clean[rows, s]).mean().item(),
        "corrupted_logit_diff": (corrupted[rows, io] - corrupted[rows, s]).mean().item(),
        "bos_accuracy": (with_bos.argmax(-1) == io).float().mean().item(),
    }


def _prob_diff(
    logits: torch.Tensor, pairs: Sequence[PromptPair], tokenizer: PreTrainedTokenizerBase
) -> torch.Tensor:
    """Per prompt: total probability of ``correct`` minus total of ``incorrect``."""
    probs = logits.softmax(-1)
    ids: dict[str, int] = {}

    def mass(row: torch.Tensor, answers: Sequence[str]) -> torch.Tensor:
        for a in answers:
            if a not in ids:
                ids[a] = token_id(tokenizer, a)
        return row[[ids[a] for a in answers]].sum()

    return torch.stack(
        [mass(row, p.correct) - mass(row, p.incorrect) for row, p in zip(probs, pairs, strict=True)]
    )


def evaluate_greater_than(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PromptPair]
) -> dict[str, float]:
    """Greater-Than probability difference (mass on years > YY minus years ≤ YY).

    Returns:
        ``prob_diff`` and ``corrupted_prob_diff`` (means over prompts), and ``accuracy``
        (the top token over the whole vocabulary is a year greater than YY).
    """
    clean = final_logits(model, tokenizer, [p.clean for p in pairs])
    corrupted = final_logits(model, tokenizer, [p.corrupted for p in pairs])
    years = {token_id(tokenizer, f" {y:02d}"): y for y in range(100)}
    top = clean.argmax(-1).tolist()
    hits = [t in years and f" {years[t]:02d}" in p.correct for t, p in zip(top, pairs, strict=True)]
    return {
        "accuracy": sum(hits) / len(hits),
        "prob_diff": _prob_diff(clean, pairs, tokenizer).mean().item(),
        "corrupted_prob_diff": _prob_diff(corrupted, pairs, tokenizer).mean().item(),
    }


def evaluate_factual(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PromptPair]
) -> dict[str, float]:
    """Factual recall over the whole knowledge base, and logit differences on ``pairs``.

    Args:
        pairs: Factual pairs with the ``"replace"`` corruption.

    Returns:
        ``accuracy`` (the top token is the attribute, over every fact of the knowledge
        base), ``logit_diff`` (true attribute − the replacement subject's attribute, on
        clean prompts) and ``corrupted_logit_diff`` (the same on the replaced prompts).
    """
    facts = sorted(KNOWLEDGE_BASE.items())
    prompts = [RELATIONS[rel][0].format(SUBJECT=subj) for (subj, rel), _ in facts]
    answers = _answer_ids(tokenizer, [f" {attr}" for _, attr in facts])
    top = final_logits(model, tokenizer, prompts).argmax(-1)
    right = _answer_ids(tokenizer, [p.correct[0] for p in pairs])
    wrong = _answer_ids(tokenizer, [p.incorrect[0] for p in pairs])
    rows = torch.arange(len(pairs))
    clean = final_logits(model, tokenizer, [p.clean for p in pairs])
    corrupted = final_logits(model, tokenizer, [p.corrupted for p in pairs])
    return {
        "accuracy": (top == answers).float().mean().item(),
        "logit_diff": (clean[rows, right] - clean[rows, wrong]).mean().item(),
        "corrupted_logit_diff": (corrupted[rows, right] - corrupted[rows, wrong]).mean().item(),
    }


def evaluate_induction(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PromptPair]
) -> dict[str, float]:
    """Induction: how well the repeated copy is predicted, against chance.

    Returns:
        ``accuracy`` (the answer is the top token), ``answer_logprob`` and
        ``corrupted_answer_logprob`` (mean log-probability of the answer at the last
        position), ``repeat_logprob`` (mean log-probability of every token of the second
        copy after its first) and ``chance_logprob`` (−log of the pool size: a model that
        only knew "some content word comes next").
    """
    answers = _answer_ids(tokenizer, [p.correct[0] for p in pairs])
    rows = torch.arange(len(pairs))
    clean = final_logits(model, tokenizer, [p.clean for p in pairs]).log_softmax(-1)
    corrupted = final_logits(model, tokenizer, [p.corrupted for p in pairs]).log_softmax(-1)
    # Clean prompt + answer is the sequence twice: positions k .. 2k-2 predict the second
    # copy's tokens 2 .. k, which only an earlier occurrence can tell.
    full = torch.tensor(
        tokenizer([p.clean + p.correct[0] for p in pairs], add_special_tokens=False).input_ids
    )  # (N, 2k); every prompt has the same length
    k = full.shape[1] // 2
    repeat = []
    with torch.no_grad():
        for chunk in full.split(250):
            logp = model(input_ids=chunk).logits.float().log_softmax(-1)  # (B, 2k, V)
            targets = chunk[:, k + 1 :, None]  # (B, k-1, 1)
            repeat.append(logp[:, k:-1].gather(-1, targets).squeeze(-1))  # (B, k-1)
    return {
        "accuracy": (clean.argmax(-1) == answers).float().mean().item(),
        "answer_logprob": clean[rows, answers].mean().item(),
        "corrupted_answer_logprob": corrupted[rows, answers].mean().item(),
        "repeat_logprob": torch.cat(repeat).mean().item(),
        "chance_logprob": -math.log(len(INDUCTION_POOL)),
    }


def evaluate_all(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: EvalConfig | None = None
) -> dict[str, dict[str, float]]:
    """Every task's held-out numbers, keyed by generator name.

    IOI is scored on the test split with both corruptions: ``swap`` gives
    ``corrupted_logit_diff`` and ``abc`` gives ``abc_logit_diff``; ``train_accuracy`` on
    the train split shows whether held-out name pairs lag behind, and
    ``distractor_accuracy`` is the accuracy on the templates with a third name.
    """
    cfg = cfg or EvalConfig()
    n, seed = cfg.n_pairs, cfg.seed
    ioi = evaluate_ioi(model, tokenizer, generate("ioi", n, seed, split="test"))
    abc = evaluate_ioi(model, tokenizer, generate("ioi", n, seed, split="test", corruption="abc"))
    ioi["abc_logit_diff"] = abc["corrupted_logit_diff"]
    train = evaluate_ioi(model, tokenizer, generate("ioi", n, seed, split="train"))
    ioi["train_accuracy"] = train["accuracy"]
    distractor = generate("ioi", n, seed, split="test", distractor=True)
    ioi["distractor_accuracy"] = evaluate_ioi(model, tokenizer, distractor)["accuracy"]
    gt_pairs = generate("greater_than", n, seed, split="test")
    fact_pairs = generate("factual", n, seed, corruption="replace")
    ind_pairs = generate("induction", n, seed, length=cfg.induction_length)
    return {
        "ioi": ioi,
        "greater_than": evaluate_greater_than(model, tokenizer, gt_pairs),
        "factual": evaluate_factual(model, tokenizer, fact_pairs),
        "induction": evaluate_induction(model, tokenizer, ind_pairs),
    }
