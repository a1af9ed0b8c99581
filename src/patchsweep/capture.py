"""Run the clean and corrupted prompts once and keep every activation the sweeps patch.

The patch stages read these caches instead of rerunning the source run. Prompts are
batched only with prompts of the same length, so no padding enters a forward pass.

A run's activations grow with the number of prompts (GPT-2 small, 20 tokens: ~3 MB a
prompt), so the capture stage never holds them all: it sizes chunks of prompts to a
memory budget and writes each chunk's rows straight into the output file
(:func:`capture_to_file`). :func:`capture_run` keeps everything in memory, for tests and
small jobs; both run the same per-chunk trace.

``capture.storage_dtype`` (float16 or bfloat16) halves the files of a float32 model: the
stored activations are rounded to it, and readers cast them back to the model's dtype.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from patchsweep.component_types import DEFAULT_CAPTURE, STORABLE, is_headed
from patchsweep.components import Architecture, Dimensions, prepare, read, read_raw, select
from patchsweep.errors import ConfigError, DataError
from patchsweep.io import TensorSpec, publish_together, stream_tensors
from patchsweep.models import LoadedModel
from patchsweep.tokenize import TokenizedPairs

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def return_freed_memory_to_os() -> None:
    """Have glibc serve allocations of 1 MiB or more by mmap, so that freeing returns them.

    By default glibc raises that threshold as large blocks are freed; a chunk's
    multi-MB activations then come from the heap and stay there once freed. On GPT-2
    small a chunk holding 138 MB peaked 440 MB above the baseline and stayed there; with
    the fixed threshold it peaked 270 MB (the estimate of :func:`prompt_bytes`) and went
    back. Process-wide, so only entry points call it. Does nothing without glibc.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 2**20)


def length_groups(lengths: torch.Tensor, max_rows: int) -> Iterator[torch.Tensor]:
    """Indices of prompts with equal length, in chunks of at most ``max_rows``."""
    for length in torch.unique(lengths).tolist():
        idx = torch.nonzero(lengths == length).flatten()
        yield from idx.split(max_rows)


@dataclass(frozen=True)
class CapturePlan:
    """What one capture stores and how many prompts share a forward pass."""

    components: tuple[str, ...]  # in STORABLE order, resid always included
    rows: int  # prompts per forward pass

    @classmethod
    def of(cls, components: Sequence[str], rows: int) -> CapturePlan:
        wanted = set(components) | {"resid"}
        return cls(tuple(c for c in STORABLE if c in wanted), rows)


def stored_specs(
    dims: Dimensions,
    components: Sequence[str],
    n: int,
    t: int,
    dtype: torch.dtype,
    scored: int | None = None,
) -> dict[str, TensorSpec]:
    """Shape and dtype of every stored tensor, known before the first forward pass.

    ``resid`` (N, L+1, T, d): block l's input at index l, the last block's output at L;
    ``attn_out`` and ``mlp_out`` (N, L, T, d); ``z``, ``q``, ``k``, ``v``
    (N, L, T, heads, d_head), split by head (k and v by key/value head); ``pattern``
    (N, L, T, heads, T): query position, head, key position (keys past a prompt's
    length are zero); ``logits`` (N, V) at each prompt's last position, float32, or
    (N, K, V) at ``scored`` positions per prompt.
    """
    specs = {}
    for name in components:
        layers = dims.n_layers + (name == "resid")
        width = (dims.heads_of(name), dims.d_head) if is_headed(name) else (dims.d_model,)
        if name == "pattern":
            width = (dims.n_heads, t)
        specs[name] = TensorSpec((n, layers, t, *width), dtype)
    specs["logits"] = logits_spec(dims, n, scored)
    return specs


def logits_spec(dims: Dimensions, n: int, scored: int | None = None) -> TensorSpec:
    """The logits the metric reads for ``n`` prompts: (N, V), or (N, K, V) at ``scored``
    = K positions per prompt (a per-position metric); float32."""
    positions = () if scored is None else (scored,)
    return TensorSpec((n, *positions, dims.vocab_size), torch.float32)


def plan_capture(
    dims: Dimensions,
    components: Sequence[str],
    width: int,
    dtype: torch.dtype,
    budget_mb: float,
    max_rows: int,
) -> CapturePlan:
    """As many prompts per forward pass as ``budget_mb`` holds, at most ``max_rows``.

    Raises:
        ConfigError: the budget cannot hold a single prompt of ``width`` tokens.
    """
    plan = CapturePlan.of(components, max_rows)
    need = prompt_bytes(dims, plan.components, width, dtype)
    rows = min(max_rows, int(budget_mb * 2**20 // need))
    if rows < 1:
        raise ConfigError(
            f"capture.memory_budget_mb={budget_mb} is too small for one prompt: a "
            f"{width}-token prompt needs {need / 2**20:.2f} MB ({', '.join(plan.components)})",
            f"set capture.memory_budget_mb to at least {math.ceil(need / 2**20)}, or store "
            "fewer capture.components",
        )
    return CapturePlan(plan.components, rows)


def prompt_bytes(dims: Dimensions, components: Sequence[str], t: int, dtype: torch.dtype) -> int:
    """Memory one prompt takes while its chunk is captured (an estimate from above).

    Measured on GPT-2 small (benchmarks/capture.py): a chunk's forward pass holds its
    modules' outputs beside the saved copies, and once a chunk is dropped about as much
    again stays allocated until the next forward pass ends, so a chunk peaks near three
    times its stored activations. Add the logits twice and the forward pass's
    temporaries: attention scores and about 32 × d_model values a token.
    """
    specs = stored_specs(dims, components, 1, t, dtype)
    stored = sum(spec.nbytes for name, spec in specs.items() if name != "logits")
    forward = t * (32 * dims.d_model + dims.n_heads * t) * dtype.itemsize
    return 3 * stored + 2 * specs["logits"].nbytes + forward


@dataclass
class Chunk:
    """One forward pass's activations, on the CPU in the model's dtype, not padded."""

    rows: torch.Tensor  # (B,) indices of its prompts
    layers: dict[str, list[torch.Tensor]]  # component → per stored layer (B, t, ...)
    logits: torch.Tensor  # (B, V) float32 at the last position


@torch.no_grad()
def capture_chunks(
    model: LoadedModel,
    ids: torch.Tensor,
    lengths: torch.Tensor,
    plan: CapturePlan,
    embed_delta: torch.Tensor | None = None,
    desc: str = "capture",
    progress: bool = True,
    score_positions: torch.Tensor | None = None,
) -> Iterator[Chunk]:
    """Trace equal-length chunks of prompts (right-padded with ``lengths``), one at a time.

    Each chunk is yielded as soon as it is traced, so a caller can file it away (at
    positions ``:t`` of each stored layer) before the next one runs. ``embed_delta``
    (N, T, d), if given, is added to the first block's input: the embedding noise of
    causal tracing. ``score_positions`` (N, K), if given, are where logits are read
    (−1 padded), for a per-position metric; else the last position.
    """
    groups = list(length_groups(lengths, plan.rows))
    for rows in tqdm(groups, desc=desc, unit="batch", disable=not progress, leave=False):
        length = int(lengths[rows[0]])
        delta = embed_delta[rows, :length].to(model.device) if embed_delta is not None else None
        batch = ids[rows, :length].to(model.device)
        scored = score_positions[rows].clamp(min=0) if score_positions is not None else None
        # No local keeps the chunk: the generator must not hold it through the next pass.
        yield Chunk(rows, *_trace(model, batch, plan.components, delta, scored, ids.shape[1]))


def capture_run(
    model: LoadedModel,
    ids: torch.Tensor,
    lengths: torch.Tensor,
    components: Sequence[str] = DEFAULT_CAPTURE,
    max_rows: int = 64,
    desc: str = "capture",
    progress: bool = True,
    embed_delta: torch.Tensor | None = None,
    score_positions: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Activations of every layer for a batch of prompts, held in memory.

    Returns the tensors of :func:`stored_specs` for the requested components (and always
    ``resid``) plus ``logits``. Memory grows with the number of prompts: the capture
    stage streams to disk with :func:`capture_to_file` instead.
    """
    plan = CapturePlan.of(components, max_rows)
    dtype = model.dtype
    scored = None if score_positions is None else score_positions.shape[1]
    n, t = ids.shape
    specs = stored_specs(model.dims, plan.components, n, t, dtype, scored)
    out = {name: torch.zeros(spec.shape, dtype=spec.dtype) for name, spec in specs.items()}
    chunks = capture_chunks(model, ids, lengths, plan, embed_delta, desc, progress, score_positions)
    for chunk in chunks:
        out["logits"][chunk.rows] = chunk.logits
        for name, values in chunk.layers.items():
            for layer, value in enumerate(values):
                out[name][chunk.rows, layer, : value.shape[1]] = value
    return out


def capture_to_file(
    path: Path,
    model: LoadedModel,
    ids: torch.Tensor,
    lengths: torch.Tensor,
    plan: CapturePlan,
    meta: Mapping[str, Any],
    logits: Callable[[torch.Tensor, torch.Tensor], None],
    extra: Mapping[str, torch.Tensor] | None = None,
    embed_delta: torch.Tensor | None = None,
    progress: bool = True,
    score_positions: torch.Tensor | None = None,
    storage: torch.dtype | None = None,
) -> None:
    """Capture one run straight into a safetensors file, one chunk of prompts at a time.

    The file holds the same bytes :func:`patchsweep.io.write_tensors` would write for
    :func:`capture_run`'s activations plus ``extra``, but memory holds one chunk, not the
    run. Each chunk's logits go to ``logits(rows, values)``. ``storage``, if given, is
    the dtype the activations are stored in (``extra`` must come in it already).

    Raises:
        DataError: a chunk holds NaN or inf, or values that overflow ``storage``; no
            file is left behind.
    """
    run = str(meta.get("run", "capture"))
    dtype = storage or model.dtype
    n, t = ids.shape
    specs = stored_specs(model.dims, plan.components, n, t, dtype)
    specs.pop("logits")
    specs.update({name: TensorSpec(tuple(v.shape), v.dtype) for name, v in (extra or {}).items()})
    with stream_tensors(path, specs, meta) as out:
        for name, value in (extra or {}).items():
            out.write_rows(name, torch.arange(len(value)), value)
        chunks = capture_chunks(
            model, ids, lengths, plan, embed_delta, f"capture {run}", progress, score_positions
        )
        for chunk in chunks:
            check_finite(chunk, run)
            logits(chunk.rows, chunk.logits)
            for name, values in chunk.layers.items():
                for layer, value in enumerate(values):  # positions ≥ t stay zero padding
                    value = as_stored(value, storage, f"the {run} run's {name}")
                    out.write_rows(name, chunk.rows, value, start=(layer,))
            del chunk  # else it stays alive beside the next chunk's forward pass


def as_stored(value: torch.Tensor, storage: torch.dtype | None, what: str) -> torch.Tensor:
    """``value`` rounded to the storage dtype (unchanged when there is none).

    float16 tops out at 65504: a residual stream with larger outliers (common in big
    models) would be stored as inf and silently poison every patch that reads it.

    Raises:
        DataError: a value overflows the storage dtype.
    """
    if storage is None or value.dtype == storage:
        return value
    stored = value.to(storage)
    if not bool(torch.isfinite(stored).all()):
        largest = float(value.abs().max())
        raise DataError(
            f"{what} holds values up to {largest:.6g} in magnitude, beyond the range of "
            f"capture.storage_dtype {str(storage).removeprefix('torch.')} "
            f"(at most {torch.finfo(storage).max:.6g})",
            "use capture.storage_dtype=bfloat16 (float32's range at lower precision), or "
            "null to store in the model's dtype",
        )
    return stored


def capture_pairs(
    model: LoadedModel,
    pairs: TokenizedPairs,
    plan: CapturePlan,
    activations: Mapping[str, Path],
    final_logits: Path,
    meta: Mapping[str, Any],
    noise: torch.Tensor | None = None,
    progress: bool = True,
    storage: torch.dtype | None = None,
) -> None:
    """Both runs of a dataset, streamed to ``activations[run]``; their logits to one file.

    ``noise`` (N, T, d), if given, corrupts the corrupted run's embeddings and is stored
    in its file as ``embed_delta``. Each file records ``meta`` (plus ``run``). The three
    files are published together once both runs succeeded: a failure in the corrupted
    run must not leave a new clean file beside the old corrupted one and old logits.
    ``storage``: the dtype the activations are stored in; None is the model's. The noise
    is rounded to it before the run, so that the corrupted run is exactly the one that
    the stored noise reproduces when the patch stages add it again.
    """
    dtype = storage or model.dtype
    if noise is not None and storage is not None:
        noise = noise.to(storage).to(noise.dtype)
    ids = {"clean": pairs.clean_ids, "corrupted": pairs.corrupted_ids}
    scored = pairs.score_positions
    k = None if scored is None else scored.shape[1]
    specs = {run: logits_spec(model.dims, pairs.n_pairs, k) for run in ids}
    outputs = (*activations.values(), final_logits)
    with publish_together(*outputs), stream_tensors(final_logits, specs, meta) as logits:
        for run, run_ids in ids.items():
            delta = noise if run == "corrupted" else None
            capture_to_file(
                activations[run],
                model,
                run_ids,
                pairs.lengths,
                plan,
                {**meta, "run": run},
                logits=partial(logits.write_rows, run),
                extra={"embed_delta": delta.to(dtype)} if delta is not None else None,
                embed_delta=delta,
                progress=progress,
                score_positions=scored,
                storage=storage,
            )
            log.info("captured the %s run", run)
    log.info("wrote %s", ", ".join(str(path) for path in outputs))


def check_finite(chunk: Chunk, run: str) -> None:
    """Refuse NaN or inf: the patch stages would silently average them into the results."""
    values = [(k, v) for k, layers in chunk.layers.items() for v in layers]
    for key, value in [*values, ("logits", chunk.logits)]:
        if not bool(torch.isfinite(value).all()):
            raise DataError(
                f"the {run} run produced NaN or inf in {key}",
                "use model.dtype=float32, or check the model weights",
            )


def _trace(
    model: LoadedModel,
    batch: torch.Tensor,
    wanted: Sequence[str],
    delta: torch.Tensor | None,
    scored: torch.Tensor | None,
    width: int,
) -> tuple[dict[str, list[torch.Tensor]], torch.Tensor]:
    """One forward pass: per wanted component, its value at every stored layer; logits
    at the last position, or (B, K, V) at ``scored``. Patterns' key axis is padded to
    ``width``, the stored prompt width."""
    arch, dims, lm = model.arch, model.dims, model.lm
    dtype = model.dtype
    per_layer: dict[str, list] = {name: [] for name in wanted}
    keep = 1 if scored is None else scored.to(model.device)
    with model.trace(batch, logits_to_keep=keep):
        points = {
            name: arch.hook_point("resid_pre" if name == "resid" else name) for name in wanted
        }
        for layer in range(dims.n_layers):
            for point in points.values():
                prepare(lm, point, layer)
            seen: dict[tuple, object] = {}  # a fused q/k/v output is read once
            if layer == 0 and delta is not None:
                first = arch.hook_point("resid_pre")
                seen[(first.module, first.io, first.ops)] = add_embedding_delta(lm, arch, delta)
            for name in wanted:
                point = points[name]
                key = (point.module, point.io, point.ops)
                if key not in seen:
                    seen[key] = read_raw(lm, point, layer)
                per_layer[name].append(select(seen[key], point, tuple(batch.shape)).clone().save())
            if "resid" in per_layer and layer == dims.n_layers - 1:
                last = read(lm, arch.hook_point("resid_post"), layer).clone().save()
                per_layer["resid"].append(last)
        logits = lm.output.logits.save()
    for name, values in per_layer.items():
        heads = dims.heads_of(name) if is_headed(name) else None
        for layer, value in enumerate(values):
            value = value.to("cpu", dtype)  # a no-op for a CPU model
            if name == "pattern":  # (B, T, heads, keys): pad the keys to the stored width
                value = torch.nn.functional.pad(value, (0, width - value.shape[-1]))
            elif heads is not None:
                value = value.unflatten(-1, (heads, -1))
            values[layer] = value
    logits = logits[:, -1] if scored is None else logits
    return per_layer, logits.float().cpu()


def add_embedding_delta(lm: Any, arch: Architecture, delta: torch.Tensor) -> Any:
    """Inside a trace: add ``delta`` to the first block's input in place; return it."""
    first_input = read(lm, arch.hook_point("resid_pre"), 0)
    first_input += delta
    return first_input
