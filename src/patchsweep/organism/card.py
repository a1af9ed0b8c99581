"""The organism's model card: what it is, what it was trained on, how well it does.

The card is written from the same objects that produced the weights (the config, the
generators' templates, the measured metrics), so it cannot drift from the artefact. It
contains nothing that varies between identical runs (no timings, no dates), which keeps
the model directory byte-identical when the stage reruns with the same seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from patchsweep.datasets import factual, greater_than, ioi
from patchsweep.datasets.vocab import POOLS
from patchsweep.organism.circuit import THRESHOLD, CircuitSite
from patchsweep.organism.evaluate import EvalConfig
from patchsweep.organism.train import TrainConfig

_METRIC_DOCS = {
    ("ioi", "accuracy"): "IO is the top token over the whole vocabulary",
    ("ioi", "logit_diff"): "mean logit(IO) − logit(S), clean prompts",
    ("ioi", "corrupted_logit_diff"): "same answers on the swap-corrupted prompts",
    ("ioi", "abc_logit_diff"): "same answers on the ABC-corrupted prompts",
    ("ioi", "bos_accuracy"): "accuracy with <|endoftext|> prepended (TransformerLens)",
    ("ioi", "train_accuracy"): "accuracy on train-split name pairs, for comparison",
    ("ioi", "distractor_accuracy"): "accuracy on templates with a third name (trained on too)",
    ("greater_than", "accuracy"): "the top token is a year > YY",
    ("greater_than", "prob_diff"): "mean p(years > YY) − p(years ≤ YY), clean prompts",
    ("greater_than", "corrupted_prob_diff"): "the same on the 01-corrupted prompts",
    ("factual", "accuracy"): "the top token is the attribute, over every fact",
    ("factual", "logit_diff"): "true attribute − replacement subject's attribute",
    ("factual", "corrupted_logit_diff"): "the same on subject-replaced prompts",
    ("induction", "accuracy"): "the answer (token to copy) is the top token",
    ("induction", "answer_logprob"): "mean log p(answer) at the last position",
    ("induction", "corrupted_answer_logprob"): "the same with the first copy replaced",
    ("induction", "repeat_logprob"): "mean log p of the second copy's tokens 2 … k",
    ("induction", "chance_logprob"): "−log(pool size): no copying at all",
}


def _metrics_table(metrics: Mapping[str, Mapping[str, float]]) -> list[str]:
    lines = ["| task | metric | value | meaning |", "|---|---|---|---|"]
    for task, values in metrics.items():
        for name, value in values.items():
            lines.append(
                f"| {task} | {name} | {value:.4f} | {_METRIC_DOCS.get((task, name), '')} |"
            )
    return lines


_CIRCUIT_INTRO = {
    "ioi": "the `ioi` experiment's 64 swap-corrupted test pairs, each head patched at each"
    " named position (`head_pos`)",
    "induction": "the `induction` experiment's 64 prompts, scored over the whole repeat (from"
    " REP2), so each head is patched at every position at once (`head`: position *all*), and"
    " its attention is read from the repeat's positions",
}


def _reading(sites: Sequence[CircuitSite]) -> str:
    """The circuit in one line, in the order its sites act: by layer, named by position."""
    steps: dict[tuple[int, str], list[str]] = {}
    for site in sorted(sites, key=lambda s: (s.layer, s.position, s.head)):
        steps.setdefault((site.layer, site.position), []).append(site.name)
    return " → ".join(
        f"layer {layer} at {position} ({', '.join(names)})"
        for (layer, position), names in steps.items()
    )


def _circuit_section(circuits: Mapping[str, Sequence[CircuitSite]]) -> list[str]:
    """The card's circuits: every head × site with a large patching effect."""
    lines = [
        "## Circuits",
        "",
        "Found by patching: each head's output (`z`) is restored from the clean run into",
        "the corrupted one, one head at a time, at a named position or at every position",
        "(per-prompt normalisation: clean = 1, corrupted = 0). Sites with",
        f"|effect| ≥ {THRESHOLD} are listed, with where the head looks from there: its mean",
        "attention on the clean prompts, *previous* being the token before, *after earlier",
        "copy* the token after the current token's earlier occurrence, *elsewhere* none of",
        "the named positions. The tests recompute this table from the shipped weights, with",
        "an independent hook-based patch and with the pipeline's engine, and hold this card",
        "and `circuits.json` to it.",
        "",
    ]
    for task, sites in circuits.items():
        lines += [
            f"**{task}** — {_CIRCUIT_INTRO.get(task, task)}:",
            "",
            "| head | position | effect | attends to | attention | role |",
            "|---|---|---|---|---|---|",
            *(
                f"| {s.name} | {s.position} | {s.effect:.3f} | {s.attends_to} | "
                f"{s.attention:.2f} | {s.role} |"
                for s in sites
            ),
            "",
            f"In the order the sites act: {_reading(sites)}." if sites else "No site reaches it.",
            "",
        ]
    return lines


def render_card(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_cfg: TrainConfig,
    eval_cfg: EvalConfig,
    metrics: Mapping[str, Mapping[str, float]],
    command: str,
    circuits: Mapping[str, Sequence[CircuitSite]] | None = None,
) -> str:
    """The model card as Markdown (with the Hugging Face metadata header)."""
    cfg = model.config
    n_params = sum(p.numel() for p in model.parameters())
    pools = ", ".join(f"{name} {len(words)}" for name, words in POOLS.items())
    settings = asdict(train_cfg)
    settings["task_mix"] = ", ".join(f"{k} {v}" for k, v in train_cfg.task_mix.items())
    hyper = "\n".join(f"| {k} | {v} |" for k, v in settings.items())
    ioi_templates = "\n".join(f"{i + 1}. `{t} {{IO}}`" for i, t in enumerate(ioi.BABA_TEMPLATES))
    distractor_templates = "\n".join(
        f"{i + 1}. `{t} {{IO}}`" for i, t in enumerate(ioi.DISTRACTOR_BABA_TEMPLATES)
    )
    relations = "\n".join(
        f"- {rel}: `{template}` (→ one of {len(pool)})"
        for rel, (template, pool) in factual.RELATIONS.items()
    )
    return "\n".join(
        [
            "---",
            "library_name: transformers",
            "tags: [mechanistic-interpretability, activation-patching, toy-model, gpt2]",
            "---",
            "",
            "# ioi-gpt2: patchsweep's model organism",
            "",
            "A small GPT-2 trained from scratch inside the project on synthetic tasks —",
            "Indirect Object Identification (IOI), Greater-Than, factual recall and induction —",
            "so that activation patching has real circuits to find without any download. It",
            "loads like any hub GPT-2:",
            "",
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            'model = AutoModelForCausalLM.from_pretrained("data/models/ioi-gpt2")',
            'tokenizer = AutoTokenizer.from_pretrained("data/models/ioi-gpt2")',
            "```",
            "",
            "## Architecture",
            "",
            f"GPT2LMHeadModel: {cfg.n_layer} layers, {cfg.n_head} heads of dimension "
            f"{cfg.n_embd // cfg.n_head}, d_model {cfg.n_embd}, MLP {4 * cfg.n_embd}, "
            f"{cfg.n_positions} positions, vocabulary {cfg.vocab_size}, tied embeddings, no "
            f"dropout; {n_params:,} parameters, float32 safetensors.",
            "",
            "## Vocabulary and tokenizer",
            "",
            f"Word-level (`tokenizers` WordLevel, {len(tokenizer)} tokens): `<|endoftext|>`",
            "(eos, pad, and the bos GPT-2 names, though tokenization never adds it), `<unk>`,",
            f"punctuation, the word pools ({pools}) and the templates' words. Whitespace and",
            'punctuation split tokens, so `" John"` and `"John"` are the same single token;',
            "every name, place, object, year half and attribute is exactly one token, and",
            "`decode` joins tokens with spaces (a single token decodes without its space).",
            "",
            "## Tasks",
            "",
            "Each training sequence is one clean prompt of a generator's `train` split plus",
            "its answer; the loss is on every next token. Batch shares: "
            + ", ".join(f"{task} {share}" for task, share in train_cfg.task_mix.items())
            + ".",
            "",
            "**IOI** (`patchsweep.datasets.ioi`): the IOI paper's 15 templates, each in ABBA",
            "and BABA order. The test split holds out about a fifth of the unordered name",
            "pairs (every name occurs in training; no pair of a test prompt does).",
            "",
            ioi_templates,
            "",
            "`ioi_distractor` (the same generator, `distractor=True`) adds a third name",
            "{C}, mentioned once, before or after the pair. Counting names, or taking the",
            "earliest or the latest ones, no longer finds IO there: the pair has to be found",
            "as a pair and S removed from it, which takes several layers.",
            "",
            distractor_templates,
            "",
            f"**Greater-Than** (`patchsweep.datasets.greater_than`): `{greater_than.TEMPLATE}`",
            "with the year written as two tokens (century, two digits); trained on a random",
            "end year above YY. The test split holds out a fifth of the (century, YY) pairs.",
            "",
            "**Factual recall** (`patchsweep.datasets.factual`): a fixed knowledge base of",
            f"{len(factual.KNOWLEDGE_BASE)} facts about invented subjects:",
            "",
            relations,
            "",
            "**Induction** (`patchsweep.datasets.induction`): a random sequence of distinct",
            f"content words (lengths {train_cfg.induction_min_length}–"
            f"{train_cfg.induction_max_length} in training, {eval_cfg.induction_length} in",
            "evaluation) followed by its repeat."
            + (
                f" In training it follows 0–{train_cfg.induction_max_prefix} unrepeated words,"
                " so that where the earlier copy sits varies and must be found by content."
                if train_cfg.induction_max_prefix
                else ""
            ),
            "",
            "Labels, corruptions and answer conventions of every task are in the",
            "generators' module docstrings; generators default to the `test` split.",
            "",
            "## Held-out results",
            "",
            f"{eval_cfg.n_pairs} prompts per task from the test splits, generator seed "
            f"{eval_cfg.seed} (factual accuracy: every fact once). Also in `metrics.json`.",
            "",
            *_metrics_table(metrics),
            "",
            *_circuit_section(circuits or {}),
            "## Training",
            "",
            "AdamW (betas 0.9, 0.98), linear warm-up then cosine decay, gradient clipping;",
            "deterministic from the seed on a given machine (seeded data streams,",
            "`torch.manual_seed`, deterministic algorithms, fixed thread count).",
            "",
            "| setting | value |",
            "|---|---|",
            hyper,
            "",
            "## Limitations",
            "",
            "- A toy: it knows only its vocabulary (other words become `<unk>`) and",
            "  these templates, not English.",
            f"- A fraction {train_cfg.bos_prob} of training sequences starts with",
            "  `<|endoftext|>`, so prompts work with or without it (`bos_accuracy`); the",
            "  metrics above are measured without it, as the pipeline feeds prompts.",
            f"- Sequences longer than {cfg.n_positions} tokens are out of range; induction",
            f"  was trained on {2 * train_cfg.induction_min_length}–"
            f"{2 * train_cfg.induction_max_length + train_cfg.induction_max_prefix} token"
            " sequences.",
            "- Each task is learned in a phase change whose step depends on the seed:",
            "  another seed passes the IOI gate but may not finish learning induction (or",
            "  another task) within these steps; read its `metrics.json` before using it.",
            "- Retraining gives identical weights with the same torch build, thread count",
            "  and CPU type; other platforms may differ in the last bits.",
            "",
            "## Reproduce",
            "",
            "From the repository root, in the project's environment (`pip install -e .`):",
            "",
            "```bash",
            command,
            "```",
            "",
            "The stage refuses to write the model when held-out IOI falls below the",
            "`acceptance` thresholds of `conf/train_organism.yaml`.",
            "",
        ]
    )
