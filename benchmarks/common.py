"""What the benchmarks share: a random GPT-2 saved without the hub, and peak-RSS readings.

Imported by the scripts next to it (``python benchmarks/NAME.py`` puts this folder on
``sys.path``).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import resource
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import torch

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]


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
