"""What the benchmarks share: a random GPT-2 saved without the hub, the IOI-like prompt
pairs of one length, TransformerLens booted offline, the environment a run records, and
peak-RSS readings.

Imported by the scripts next to it (``python benchmarks/NAME.py`` puts this folder on
``sys.path``).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import hashlib
import json
import os
import platform
import random
import resource
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import torch

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
FULL_SHAPE: dict[str, int] = {}  # GPT2Config() defaults: 12 layers, 12 heads, 768, 50257
QUICK_SHAPE = {"n_layer": 2, "n_head": 4, "n_embd": 64}


def default_config(schema: type[T], group: str) -> T:
    """The settings the pipeline uses for a config group: conf/GROUP/default.yaml over
    its schema."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(schema)
    path = REPO / "conf" / group / "default.yaml"
    if path.is_file():
        cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
    return OmegaConf.to_object(cfg)


# --- the model -------------------------------------------------------------------------


def word_tokenizer(texts: Iterable[str]) -> Any:
    """A word-level tokenizer over the texts' words, so every name is one token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Whitespace()
    words = dict.fromkeys(w for text in texts for w, _ in pre.pre_tokenize_str(text))
    vocab = {"<unk>": 0, **{w: i + 1 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<unk>")


def save_random_gpt2(
    folder: Path, shape: dict[str, int], tokenizer: Any, scale: float = 0.1
) -> int:
    """A random GPT-2 saved with ``tokenizer`` like a hub model; returns its parameter bytes.

    Every parameter gets Gaussian noise because a fresh model's zero biases and unit
    LayerNorm weights would let a method that mishandles them agree by accident.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(**shape, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() * p.element_size() for p in model.parameters())


def boot_bridge(folder: Path, tokenizer: Any) -> Any:
    """TransformerLens's view of the saved model, built without the hub.

    ``boot_transformers`` with ``hf_model=`` reuses that model's config instead of
    fetching one; the default (non-compatibility) mode keeps the raw HF weights, so its
    activations are the HF model's. The bridge swaps the model's submodules in place, so
    it gets a copy of its own, loaded with the eager attention it requires.
    """
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = TransformerBridge.boot_transformers(str(folder), hf_model=hf, tokenizer=tokenizer)
    return bridge.eval()


# --- prompts ---------------------------------------------------------------------------

# 16 word-level tokens: When IO and S1 went to the big store today , S2 gave a book to.
IOI_TEMPLATE = "When {a} and {b} went to the big store today , {s} gave a book to"
IOI_NAMES = ("John", "Mary", "Tom", "Ann", "James", "Sarah", "David", "Emma")
IOI_NAMES += ("Paul", "Lucy", "Mark", "Kate", "Peter", "Alice", "Sam", "Rose")
# How the corrupted prompt differs from the clean one, and so where the two first differ.
CORRUPTIONS = {
    # The first clause's two names (IO and S1) replaced by two others: the corrupted
    # prompt carries no information about which name is the answer; first difference at
    # IO, the second token.
    "first_clause": "IO and S1 replaced by two other names",
    # Only the second mention of the subject swapped for IO: the first clause is shared,
    # and the prompts first differ at S2, token 11 of 0–15.
    "s2_only": "S2 replaced by IO",
}


def ioi_pairs(n: int, seed: int = 0, corruption: str = "first_clause") -> list[Any]:
    """``n`` distinct pairs of :data:`IOI_TEMPLATE`, names drawn with a seed.

    Every name is one token of a word-level tokenizer, so the pairs have one length and
    are compared position by position. The metric's answers are IO (correct) and S.
    """
    from patchsweep.datasets.base import PromptPair

    if corruption not in CORRUPTIONS:
        raise ValueError(f"corruption must be one of {sorted(CORRUPTIONS)}, got {corruption!r}")
    rng = random.Random(seed)
    pairs: list[PromptPair] = []
    seen: set[tuple[str, ...]] = set()
    while len(pairs) < n:
        io, s, a, b = names = tuple(rng.sample(IOI_NAMES, 4))
        key = names if corruption == "first_clause" else (io, s)
        if key in seen:
            continue
        seen.add(key)
        corrupted = (
            IOI_TEMPLATE.format(a=a, b=b, s=s)
            if corruption == "first_clause"
            else IOI_TEMPLATE.format(a=io, b=s, s=io)
        )
        pairs.append(
            PromptPair(
                clean=IOI_TEMPLATE.format(a=io, b=s, s=s),
                corrupted=corrupted,
                correct=(f" {io}",),
                incorrect=(f" {s}",),
            )
        )
    return pairs


def first_difference(clean: torch.Tensor, corrupted: torch.Tensor) -> torch.Tensor:
    """(N,) the first position where each pair's prompts differ; the padded width if
    they never do. No activation before it can differ between the runs (causal
    attention), so a patch there writes what is already there."""
    same = clean == corrupted
    return torch.where(same.all(1), clean.shape[1], (~same).int().argmax(1))


# --- the environment -------------------------------------------------------------------


def engine_hash() -> dict[str, str]:
    """The engine measured: the package imported (another tree than this one, maybe), and
    the first 16 hex digits of the hash of its ``engine/*.py`` in name order."""
    import patchsweep.engine

    folder = Path(patchsweep.engine.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        digest.update(path.read_bytes())
    return {"engine_path": str(folder), "engine_sha256": digest.hexdigest()[:16]}


def environment(threads: int) -> dict[str, Any]:
    """Versions, threads, CPU and load: what a timing depends on besides the code."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": installed("transformers"),
        "nnsight": installed("nnsight"),
        "transformer_lens": installed("transformer-lens"),
        "torch_threads": threads,
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "load_average_start": list(os.getloadavg()),
        # The engine changes under active development; this names the version measured.
        **engine_hash(),
    }


def warn_if_busy(threads: int) -> None:
    """Warn when other jobs would leave torch's threads waiting for a core.

    A torch thread that the OS deschedules stalls every parallel op's barrier: on a busy
    2-core machine one GPT-2 forward went from 0.09 s (1 thread) to 1.7 s (2).
    """
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if threads > 1 and load + threads > cores + 0.5:
        print(
            f"warning: load average {load:.1f} on {cores} cores; {threads} torch threads "
            "will contend with other jobs and time mostly waiting (try --threads 1)",
            file=sys.stderr,
        )


# --- measuring -------------------------------------------------------------------------


def status_mb(field: str) -> float | None:
    """A ``Vm*`` line of /proc/self/status in MiB (Linux only)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS, so a later method's RSS growth is its own."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # glibc only
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def process_peak_mb() -> float:
    """The process's peak RSS so far (getrusage reports KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measure_memory(fn: Callable[[], T]) -> tuple[T, dict[str, Any]]:
    """Run once; return its values and RSS before, peak during, and the peak's growth."""
    release_freed_memory()
    start = status_mb("VmRSS")
    isolated = reset_peak()
    values = fn()
    peak = status_mb("VmHWM") if isolated else None
    if peak is None:  # the process-wide high-water mark: an upper bound only
        peak = process_peak_mb()
    return values, {
        "rss_before_mb": start,
        "peak_rss_mb": peak,
        "peak_growth_mb": None if start is None else peak - start,
        "peak_is_per_method": isolated,
    }


def write_report(output: Path, report: dict[str, Any]) -> None:
    """Save a benchmark's figures as JSON and say where."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {output.relative_to(REPO) if output.is_relative_to(REPO) else output}")
