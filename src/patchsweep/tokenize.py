"""Prompt pairs → aligned token ids, answer ids and named positions, validated.

Patching compares the clean and corrupted runs position by position, so the two prompts
of a pair must have the same token length, and each answer must be one next token.
Prompts of different lengths are stored right-padded with their lengths; the engine only
ever batches prompts of one length, so padding never enters a forward pass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from patchsweep.errors import DataError

if TYPE_CHECKING:  # the stages that only read tokens must not depend on the generators
    from patchsweep.datasets.base import PromptPair

log = logging.getLogger(__name__)

END = "END"


@dataclass
class TokenizedPairs:
    """Token ids of a dataset, right-padded to the longest prompt.

    Attributes:
        clean_ids: (N, T) clean prompt ids; positions ≥ ``lengths[i]`` are padding (0).
        corrupted_ids: (N, T) corrupted prompt ids, same lengths as clean.
        lengths: (N,) token length of each pair.
        correct_ids: (N, Kc) ids of the rewarded answers, −1 where a row has fewer.
        incorrect_ids: (N, Ki) ids of the penalised answers, −1 where a row has fewer.
        label_positions: label → (N,) token position of that label, −1 where absent.
        tokens: per pair, the clean prompt's token strings (for tick labels and logs).
        templates: per pair, the template that produced it.
        score_positions: (N, K) positions a per-position metric reads, −1 padded, or
            None for the final position only (see :func:`score_from_label`).
        score_targets: (N, K) the token each of those positions should predict.
    """

    clean_ids: torch.Tensor
    corrupted_ids: torch.Tensor
    lengths: torch.Tensor
    correct_ids: torch.Tensor
    incorrect_ids: torch.Tensor
    label_positions: dict[str, torch.Tensor]
    tokens: list[list[str]]
    templates: list[str]
    score_positions: torch.Tensor | None = None
    score_targets: torch.Tensor | None = None

    @property
    def n_pairs(self) -> int:
        return int(self.lengths.shape[0])

    def answers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """What the metric scores, (correct, incorrect): each scored position's next token
        when there are score positions, else the answer sets."""
        if self.score_targets is not None:
            return self.score_targets, self.incorrect_ids
        return self.correct_ids, self.incorrect_ids

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors to store; labels under ``label.<name>``."""
        out = {
            "clean_ids": self.clean_ids,
            "corrupted_ids": self.corrupted_ids,
            "lengths": self.lengths,
            "correct_ids": self.correct_ids,
            "incorrect_ids": self.incorrect_ids,
        }
        out.update({f"label.{k}": v for k, v in self.label_positions.items()})
        if self.score_positions is not None and self.score_targets is not None:
            out["score_positions"] = self.score_positions
            out["score_targets"] = self.score_targets
        return out

    @classmethod
    def from_tensors(
        cls, tensors: dict[str, torch.Tensor], tokens: list[list[str]], templates: list[str]
    ) -> TokenizedPairs:
        labels = {k.removeprefix("label."): v for k, v in tensors.items() if k.startswith("label.")}
        return cls(
            clean_ids=tensors["clean_ids"],
            corrupted_ids=tensors["corrupted_ids"],
            lengths=tensors["lengths"],
            correct_ids=tensors["correct_ids"],
            incorrect_ids=tensors["incorrect_ids"],
            label_positions=labels,
            tokens=tokens,
            templates=templates,
            score_positions=tensors.get("score_positions"),
            score_targets=tensors.get("score_targets"),
        )


def score_from_label(pairs: TokenizedPairs, label: str) -> TokenizedPairs:
    """Score every next-token prediction from ``label`` to the end of each prompt.

    Position t predicts the clean prompt's token t + 1, and the last position predicts
    the first correct answer: for induction, from the start of the repeat, every token
    the model can copy.

    Raises:
        DataError: the label is not defined for every pair.
    """
    where = pairs.label_positions.get(label)
    if where is None or bool((where < 0).any()):
        known = ", ".join(sorted(pairs.label_positions))
        raise DataError(
            f"dataset.score_from is {label!r}, which is not a position label of every pair",
            f"use one of the labels every pair has: {known}",
        )
    width = int((pairs.lengths - where).max())
    positions = torch.full((pairs.n_pairs, width), -1, dtype=torch.long)
    targets = torch.full((pairs.n_pairs, width), -1, dtype=torch.long)
    for i in range(pairs.n_pairs):
        first, length = int(where[i]), int(pairs.lengths[i])
        k = length - first
        positions[i, :k] = torch.arange(first, length)
        targets[i, : k - 1] = pairs.clean_ids[i, first + 1 : length]
        targets[i, k - 1] = pairs.correct_ids[i, 0]
    pairs.score_positions, pairs.score_targets = positions, targets
    return pairs


def tokenize_pairs(
    pairs: Sequence[PromptPair], tokenizer: Any, allow_unknown: bool = False
) -> TokenizedPairs:
    """Tokenize and validate prompt pairs.

    Args:
        pairs: The prompt pairs, in order.
        tokenizer: A Hugging Face tokenizer with offset mappings (a fast tokenizer).
        allow_unknown: Accept prompt words the tokenizer maps to its unknown token (they
            are patched as that one token) with a warning, instead of failing. Answers
            must be known tokens either way: a metric on ``<unk>`` scores nothing.

    Raises:
        DataError: no pairs; a prompt word outside the vocabulary (unless
            ``allow_unknown``); a pair whose prompts differ in token length; an answer
            that is not exactly one known token; a label that points at no token.
    """
    if not pairs:
        raise DataError("the dataset has no prompt pairs", "set dataset.n_pairs ≥ 1 or add pairs")
    unk_id = getattr(tokenizer, "unk_token_id", None)
    clean_rows, corrupted_rows, correct_rows, incorrect_rows = [], [], [], []
    tokens: list[list[str]] = []
    labels: dict[str, list[int]] = {}
    unknown: list[str] = []
    for index, pair in enumerate(pairs):
        where = pair.origin or f"pair {index}"
        clean, offsets, unknown_clean = _encode(
            tokenizer, pair.clean, where, "clean", allow_unknown
        )
        corrupted, _, unknown_corrupted = _encode(
            tokenizer, pair.corrupted, where, "corrupted", allow_unknown
        )
        unknown += unknown_clean + unknown_corrupted
        if len(clean) != len(corrupted):
            raise DataError(
                f"{where}: clean has {len(clean)} tokens but corrupted has "
                f"{len(corrupted)} ({pair.clean!r} vs {pair.corrupted!r})",
                "patching aligns the prompts position by position: make both prompts the "
                "same token length (e.g. swap names that are one token each)",
            )
        correct_rows.append(_answer_ids(tokenizer, pair.correct, where, "correct", unk_id))
        incorrect_rows.append(_answer_ids(tokenizer, pair.incorrect, where, "incorrect", unk_id))
        for name, offset in pair.labels.items():
            labels.setdefault(name, [-1] * len(pairs))[index] = _token_at(
                offsets, offset, where, name
            )
        clean_rows.append(clean)
        corrupted_rows.append(corrupted)
        tokens.append([_display(t) for t in tokenizer.convert_ids_to_tokens(clean)])
    if unknown:
        log.warning(
            "%d prompt word(s) are not in the model's vocabulary, e.g. %r: they are "
            "patched as the unknown token %r",
            len(set(unknown)),
            unknown[0],
            tokenizer.unk_token,
        )
    lengths = torch.tensor([len(r) for r in clean_rows], dtype=torch.long)
    labels[END] = (lengths - 1).tolist()
    return TokenizedPairs(
        clean_ids=_pad(clean_rows, 0),
        corrupted_ids=_pad(corrupted_rows, 0),
        lengths=lengths,
        correct_ids=_pad(correct_rows, -1),
        incorrect_ids=_pad(incorrect_rows, -1),
        label_positions={k: torch.tensor(v, dtype=torch.long) for k, v in labels.items()},
        tokens=tokens,
        templates=[p.template for p in pairs],
    )


def _encode(
    tokenizer: Any, text: str, where: str, which: str, allow_unknown: bool
) -> tuple[list[int], list, list[str]]:
    """Token ids, their character offsets, and the unknown words let through."""
    if not text.strip():
        raise DataError(f"{where}: the {which} prompt is empty", "give every pair a prompt")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    unknown = _unknown_words(tokenizer, text, ids, offsets)
    if unknown and not allow_unknown:
        raise DataError(
            f"{where}: the {which} prompt has word(s) not in the model's vocabulary: "
            f"{', '.join(map(repr, unknown))} (the tokenizer turns them into "
            f"{tokenizer.unk_token!r})",
            "use words in the model's vocabulary, or set dataset.allow_unknown_tokens=true "
            "to run with the unknown token in their place",
        )
    return ids, offsets, unknown


def _unknown_words(tokenizer: Any, text: str, ids: list[int], offsets: list) -> list[str]:
    """The words of ``text`` the tokenizer replaced by its unknown token, once each.

    A word-level tokenizer turns every word it lacks into the one ``<unk>``, so different
    names become the same token and patching them compares nothing; byte-level ones
    (GPT-2) never need it. A prompt that spells the unknown token out (``<unk>``, or
    GPT-2's ``<|endoftext|>``, which it also names its unknown token) meant it, so only
    tokens whose text differs from the token's own count.
    """
    unk_id = getattr(tokenizer, "unk_token_id", None)
    if unk_id is None:
        return []
    unk = getattr(tokenizer, "unk_token", None)
    words = [text[a:b] for i, (a, b) in zip(ids, offsets, strict=True) if i == unk_id]
    return list(dict.fromkeys(w for w in words if w != unk))


def _answer_ids(
    tokenizer: Any, answers: Sequence[str], where: str, which: str, unk_id: int | None
) -> list[int]:
    if not answers:
        raise DataError(f"{where} has no {which} answer", f"give at least one {which} answer")
    ids = []
    for answer in answers:
        encoded = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            pieces = tokenizer.convert_ids_to_tokens(encoded)
            raise DataError(
                f"{where}: {which} answer {answer!r} is {len(encoded)} tokens {pieces}",
                "the metric reads one next-token logit per answer: use an answer that is a "
                "single token for this tokenizer (GPT-2 style: with its leading space)",
            )
        if unk_id is not None and encoded[0] == unk_id:
            raise DataError(
                f"{where}: {which} answer {answer!r} is not in the model's vocabulary",
                "use a word the tokenizer knows (it maps this one to the unknown token)",
            )
        ids.append(encoded[0])
    return ids


def _token_at(offsets: list, char_offset: int, where: str, name: str) -> int:
    """The token whose character span holds ``char_offset`` (after leading spaces)."""
    for position, (start, end) in enumerate(offsets):
        if start <= char_offset < end or (start >= char_offset and end > start):
            return position
    raise DataError(
        f"{where}: label {name!r} points at character {char_offset}, past the prompt",
        "label offsets are character positions of the labelled word in the clean prompt",
    )


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def _display(token: str) -> str:
    """GPT-2 style byte tokens mark a leading space with Ġ; show it as a space."""
    return token.replace("Ġ", " ").replace("Ċ", "\\n")
