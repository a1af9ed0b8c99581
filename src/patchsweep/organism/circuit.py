"""The organism's circuits: which heads, at which named positions, carry a task.

For a task, every attention head's output (its slice of the input to the attention
output projection, TransformerLens's ``z``) is patched from the clean run into the
corrupted one at every named position, one forward pass per site over all prompts of a
template, and the sites whose normalised effect reaches :data:`THRESHOLD` form the
circuit. It is the pipeline's ``head_pos`` sweep (``z``, denoise, ``positions: labels``,
per-prompt normalisation) written out with plain PyTorch hooks on the Hugging Face model,
so the training stage stays free of the patching engine, and the tests can hold the
engine's numbers to this independent computation and the model card to both.

Each site is described by where its head looks from that position (mean attention over
the clean prompts), which is what names a head's role in the IOI and induction
literature: a head at S2 attending to S1 detects the duplicate name, a head at END
attending to IO moves the name, a previous-token head feeds an induction head.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from patchsweep.datasets import generate
from patchsweep.datasets.base import PromptPair

# The pipeline's dataset of each task whose circuit the card describes: the generator
# options of conf/dataset/<task>.yaml (a test checks that they agree).
CIRCUIT_DATASETS: dict[str, dict[str, Any]] = {
    "ioi": {"n_pairs": 64, "seed": 0, "corruption": "swap", "split": "test"},
    "induction": {"n_pairs": 64, "seed": 0, "length": 8, "split": "test"},
}
# Where each task's heads are patched: at each named position (the pipeline's `head_pos`
# sweep), or at every position at once (its `head` sweep). Induction is read from the
# latter: its metric averages the predictions of the whole repeat, which no one position
# carries.
CIRCUIT_POSITIONS = {"ioi": "labels", "induction": "all"}
ALL = "all"  # the position name of a site patched at every position
# Induction is scored like the pipeline's dataset: the mean log-probability of every
# next-token prediction from the start of the repeat (label REP2) to the answer.
SCORE_FROM = {"induction": "REP2"}
THRESHOLD = 0.1  # |normalised effect| from which a head at a position is in the circuit
# A prompt whose own clean − corrupted gap is below this share of the mean gap is left
# out of the average, as the pipeline's per-prompt normalisation does.
MIN_GAP_SHARE = 0.01

# Role names by (task, query position, attended position), as the literature names them.
ROLES: dict[tuple[str, str, str], str] = {
    ("ioi", "S2", "S1"): "duplicate token",
    ("ioi", "S2", "S1+1"): "induction",
    ("ioi", "S1+1", "S1"): "previous token",
    ("ioi", "END", "IO"): "name mover",
    ("ioi", "END", "S2"): "S-inhibition",
    ("induction", "ANSWER1", "CURRENT1"): "previous token",
    ("induction", "END", "ANSWER1"): "induction",
}

GENERIC_ROLES = {"previous": "previous token", "after earlier copy": "induction"}


@dataclass(frozen=True)
class CircuitSite:
    """One head at one named position whose patch restores a share of the behaviour."""

    layer: int
    head: int
    position: str  # the named position (label) the head was patched at, or "all"
    effect: float  # mean normalised denoising effect there (clean = 1, corrupted = 0)
    attends_to: str  # the named position it attends to most from there (see _add_attention)
    attention: float  # the mean attention weight on that position
    role: str  # the role that attention pattern names, or "" when none does

    @property
    def name(self) -> str:
        return f"{self.layer}.{self.head}"


@dataclass
class _Group:
    """Prompts of one template: the same length and the same named positions."""

    clean: torch.Tensor  # (B, T) token ids
    corrupted: torch.Tensor  # (B, T)
    positions: dict[str, int]  # label -> token position, END included
    correct: torch.Tensor  # (B,) answer ids, or (B, K) targets from SCORE_FROM
    incorrect: torch.Tensor  # (B,) ids; unused when scoring from a label


def find_circuit(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: str,
    threshold: float = THRESHOLD,
) -> list[CircuitSite]:
    """The sites of ``task``'s circuit, ordered by layer, head and position.

    ``model`` must return attention weights (``attn_implementation="eager"``).
    """
    effects, attention = head_position_effects(model, tokenizer, task)
    sites = []
    for (layer, head, label), effect in sorted(effects.items()):
        if abs(effect) < threshold:
            continue
        target, weight = attention[layer, head, label]
        role = ROLES.get((task, label, target), GENERIC_ROLES.get(target, ""))
        sites.append(
            CircuitSite(layer, head, label, round(effect, 4), target, round(weight, 3), role)
        )
    return sites


def head_position_effects(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: str
) -> tuple[dict[tuple[int, int, str], float], dict[tuple[int, int, str], tuple[str, float]]]:
    """Every head × named position: its mean normalised effect, and where it attends most.

    Returns:
        ``effects[(layer, head, label)]`` and ``attention[(layer, head, label)] =
        (attended label or "previous", mean weight)``.
    """
    options = dict(CIRCUIT_DATASETS[task])
    pairs = generate(task, options.pop("n_pairs"), options.pop("seed"), **options)
    groups = _groups(pairs, tokenizer, SCORE_FROM.get(task))
    n_layer, n_head = model.config.n_layer, model.config.n_head
    per_prompt: dict[tuple[int, int, str], list[torch.Tensor]] = defaultdict(list)
    gaps, attention_sums = [], defaultdict(float)
    everywhere = CIRCUIT_POSITIONS[task] == ALL
    with torch.no_grad():
        for group in groups:
            clean_z, attentions, clean_metric = _run(model, group.clean, group)
            _, _, corrupted_metric = _run(model, group.corrupted, group)
            gap = clean_metric - corrupted_metric
            gaps.append(gap)
            sites = {ALL: slice(None)} if everywhere else group.positions
            for layer in range(n_layer):
                for head in range(n_head):
                    for label, pos in sites.items():
                        patch = (layer, head, pos, clean_z)
                        patched = _run(model, group.corrupted, group, patch)[2]
                        per_prompt[layer, head, label].append((patched - corrupted_metric) / gap)
                        for query, named, weight in _queries(group, label, task):
                            site = (layer, head, label)
                            att = attentions[layer][:, head]  # (B, T, T)
                            _add_attention(attention_sums, att, site, query, named, group, weight)
    gap = torch.cat(gaps)
    keep = gap.abs() >= MIN_GAP_SHARE * gap.mean().abs()
    effects = {site: float(torch.cat(values)[keep].mean()) for site, values in per_prompt.items()}
    return effects, _strongest(attention_sums, len(pairs))


def _groups(
    pairs: Sequence[PromptPair], tokenizer: PreTrainedTokenizerBase, score_from: str | None
) -> list[_Group]:
    """Tokenize the pairs and batch them by template (same length, same label positions)."""
    by_layout: dict[tuple, list[tuple]] = defaultdict(list)
    for pair in pairs:
        clean = tokenizer(pair.clean, add_special_tokens=False, return_offsets_mapping=True)
        corrupted = tokenizer(pair.corrupted, add_special_tokens=False).input_ids
        starts = [start for start, _ in clean.offset_mapping]
        positions = {label: starts.index(offset) for label, offset in pair.labels.items()}
        positions["END"] = len(clean.input_ids) - 1
        correct = tokenizer(pair.correct[0], add_special_tokens=False).input_ids
        incorrect = tokenizer(pair.incorrect[0], add_special_tokens=False).input_ids
        if score_from is not None:  # every next token from the label on, then the answer
            correct = clean.input_ids[positions[score_from] + 1 :] + correct
        layout = (len(clean.input_ids), tuple(sorted(positions.items())))
        by_layout[layout].append((clean.input_ids, corrupted, correct, incorrect))
    groups = []
    for (_, positions), rows in by_layout.items():
        clean, corrupted, correct, incorrect = (
            torch.tensor(column) for column in zip(*rows, strict=True)
        )
        groups.append(
            _Group(clean, corrupted, dict(positions), correct.squeeze(-1), incorrect.squeeze(-1))
        )
    return groups


def _run(
    model: PreTrainedModel,
    ids: torch.Tensor,
    group: _Group,
    patch: tuple[int, int, int, list[torch.Tensor]] | None = None,
) -> tuple[list[torch.Tensor], tuple[torch.Tensor, ...], torch.Tensor]:
    """One forward pass: every layer's ``z`` (the output projection's input), the
    attention weights and the per-prompt metric; ``patch = (layer, head, position,
    source z per layer)`` overwrites one head's ``z`` at one position first."""
    blocks = model.transformer.h
    head_dim = model.config.n_embd // model.config.n_head
    z: list[torch.Tensor] = []

    def hook(layer: int):
        def pre(_module: Any, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
            if patch is not None and patch[0] == layer:
                _, head, pos, source = patch
                x = args[0].clone()  # (B, T, d_model): heads side by side
                cols = slice(head * head_dim, (head + 1) * head_dim)
                x[:, pos, cols] = source[layer][:, pos, cols]
                z.append(x)
                return (x, *args[1:])
            z.append(args[0])
            return None

        return pre

    handles = [
        block.attn.c_proj.register_forward_pre_hook(hook(i)) for i, block in enumerate(blocks)
    ]
    try:
        out = model(input_ids=ids, output_attentions=True)
    finally:
        for handle in handles:
            handle.remove()
    return z, out.attentions, _metric(out.logits.float(), group)


def _metric(logits: torch.Tensor, group: _Group) -> torch.Tensor:
    """Per prompt: logit(correct) − logit(incorrect) at the last position, or the mean
    log-probability of the targets from the score position on."""
    if group.correct.dim() == 2:
        k = group.correct.shape[1]
        logp = logits[:, -k:].log_softmax(-1)  # (B, K, V): positions predicting the targets
        return logp.gather(-1, group.correct[..., None]).squeeze(-1).mean(-1)
    last = logits[:, -1]
    rows = torch.arange(last.shape[0])
    return last[rows, group.correct] - last[rows, group.incorrect]


def _queries(group: _Group, site: str, task: str) -> list[tuple[int, Mapping[str, int], float]]:
    """The query positions whose attention describes a site, with the named positions to
    look for and each query's weight: the site's own position, or for a site patched
    everywhere the positions the metric scores (no names: there are none per position).
    """
    if site != ALL:
        return [(group.positions[site], group.positions, 1.0)]
    start = group.positions[SCORE_FROM.get(task, "END")]
    queries = range(start, group.clean.shape[1])
    return [(query, {}, 1 / len(queries)) for query in queries]


def _add_attention(
    sums: dict[tuple[int, int, str, str], float],
    attention: torch.Tensor,
    site: tuple[int, int, str],
    query: int,
    named: Mapping[str, int],
    group: _Group,
    weight: float,
) -> None:
    """Add ``weight`` × one head's attention (``(B, T, T)``) from ``query`` to each earlier
    named position, to the previous token and to the token after an earlier copy of the
    current one (where an induction head looks) when those have no name, and to the rest.
    """
    earlier = {name: pos for name, pos in named.items() if pos <= query}
    weights = attention[:, query]  # (B, T)
    ids = group.clean
    for row in range(ids.shape[0]):
        keys = dict(earlier)
        if query > 0 and query - 1 not in keys.values():
            keys["previous"] = query - 1
        copies = (ids[row, :query] == ids[row, query]).nonzero().flatten().tolist()
        if copies and copies[-1] + 1 not in keys.values():
            keys["after earlier copy"] = copies[-1] + 1
        for name, pos in keys.items():
            sums[(*site, name)] += weight * float(weights[row, pos])
        rest = weights[row].sum() - weights[row, list(keys.values())].sum()
        sums[(*site, "elsewhere")] += weight * float(rest)


def _strongest(
    sums: Mapping[tuple[int, int, str, str], float], n_prompts: int
) -> dict[tuple[int, int, str], tuple[str, float]]:
    best: dict[tuple[int, int, str], tuple[str, float]] = {}
    for (layer, head, label, name), total in sums.items():
        mean = total / n_prompts
        if (layer, head, label) not in best or mean > best[layer, head, label][1]:
            best[layer, head, label] = (name, mean)
    return best


def circuits_to_json(circuits: Mapping[str, list[CircuitSite]]) -> dict[str, list[dict]]:
    """``metrics.json``'s ``circuits`` entry."""
    return {task: [asdict(site) for site in sites] for task, sites in circuits.items()}
