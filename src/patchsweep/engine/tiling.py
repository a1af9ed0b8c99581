"""Which patched rows share a forward pass: the memory cap and the cost model.

A sweep is S sites × N prompts = S·N rows, each one patched forward run. Rows of one
prompt length are split into chunks, one forward pass each. Every chunk is cut to the
memory budget; within that, rows that start late (a high layer, a late position) are
kept together, because a pass costs what its lowest layer and earliest position cost:
the blocks below and the positions before are fed from the cached target run.

The constants below are measured, not derived: changing them changes how rows are
grouped, never a number the sweep computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from patchsweep.components import Dimensions
from patchsweep.engine.accounting import PassShape
from patchsweep.engine.inputs import patch_starts
from patchsweep.engine.packing import pack
from patchsweep.engine.sites import Sites
from patchsweep.errors import ConfigError

# Cost of one forward pass's fixed overhead, in units of one full-length row's compute;
# used to pick tile shapes. Measured on CPU for GPT-2-small shapes (benchmarks/): padded
# tiles, and packed passes, where it also stands for the better matrix-kernel efficiency
# of larger passes (1 → 3 took a layer × position sweep from 1.02 s to 0.92 s).
PASS_OVERHEAD_ROWS = 0.5
PACKED_PASS_OVERHEAD_ROWS = 3.0


@dataclass
class Rows:
    """Every (site, prompt) pair of a sweep: one patched forward row each, R of them.

    Attributes:
        site: (R,) the row's site.
        prompt: (R,) the row's prompt.
        layer: (R,) the site's (first) patched layer.
        position: (R,) the position patched in this prompt, −1 for every position.
        start: (R,) the first position the patch can change: ``position``, or for a
            row patched at every position its prompt's first differing position
            (:func:`~patchsweep.engine.inputs.patch_starts`). A pass computes a row
            from here on; the positions before are the unpatched target run's.
    """

    site: torch.Tensor
    prompt: torch.Tensor
    layer: torch.Tensor
    position: torch.Tensor
    start: torch.Tensor


def all_rows(sites: Sites, lengths: torch.Tensor, first_differ: torch.Tensor | None) -> Rows:
    """The rows of a sweep, site-major.

    Args:
        first_differ: (N,) where each prompt's two runs first differ, or None (unknown:
            a row patched at every position starts at 0).
    """
    site, prompt = torch.meshgrid(
        torch.arange(len(sites)), torch.arange(int(lengths.shape[0])), indexing="ij"
    )
    site, prompt = site.flatten(), prompt.flatten()
    position = sites.positions[site, prompt]
    start = patch_starts(position, first_differ, prompt)
    return Rows(site, prompt, sites.layers[site], position, start)


def rows_per_pass(
    dims: Dimensions, length: int, budget_mb: float, max_batch: int, bytes_per_value: int
) -> int:
    """How many patched rows fit one forward pass within the activation memory budget.

    A row's peak working memory is :func:`row_bytes`.

    Raises:
        ConfigError: not even one row fits the budget.
    """
    per_row = row_bytes(dims, length, bytes_per_value)
    rows = int(budget_mb * 2**20 // per_row)
    if rows < 1:
        raise ConfigError(
            f"engine.memory_budget_mb={budget_mb} is too small for one row "
            f"(a {length}-token prompt needs about {per_row / 2**20:.1f} MB)",
            f"raise engine.memory_budget_mb to at least {per_row / 2**20 + 1:.0f}",
        )
    return min(rows, max_batch)


def row_bytes(dims: Dimensions, length: int, bytes_per_value: int) -> int:
    """A padded row's peak working memory: one block's activations (residual, q/k/v,
    attention scores, MLP hidden), its source slice and its final logits."""
    per_row = length * (12 * dims.d_model + 2 * dims.n_heads * length) * bytes_per_value
    return per_row + 4 * dims.vocab_size + length * dims.d_model * bytes_per_value


def tiles(
    rows: Rows, members: torch.Tensor, n_layers: int, length: int, cap: int, fast: bool
) -> list[torch.Tensor]:
    """Split rows of one prompt length into padded chunks, each run as one forward pass.

    A chunk costs its rows × (layers from its lowest patched layer) × (positions from its
    earliest patched position), plus a fixed overhead. Rows are tiled into blocks of
    ``g_l`` layers × ``g_p`` positions, with the block shape chosen by that cost model.
    Without ``fast`` every pass runs every layer and position: chunks of ``cap`` rows.
    """
    layer = rows.layer[members]
    pos = rows.start[members]
    if not fast:
        return list(members.split(cap))
    best: tuple[float, list[torch.Tensor]] | None = None
    for g_l in (1, 2, 3, 4, 6, 8, 12, n_layers):
        for g_p in (1, 2, 4, 8, 16, length):
            chunks = _tile_with(members, layer, pos, g_l, g_p, cap)
            cost = sum(
                PASS_OVERHEAD_ROWS
                + len(c)
                * (n_layers - int(rows.layer[c].min()))
                / n_layers
                * (length - int(rows.start[c].min()))
                / length
                for c in chunks
            )
            if best is None or cost < best[0]:
                best = (cost, chunks)
    assert best is not None  # the loops run at least once
    return best[1]


def _tile_with(
    members: torch.Tensor, layer: torch.Tensor, pos: torch.Tensor, g_l: int, g_p: int, cap: int
) -> list[torch.Tensor]:
    tile_l = layer // g_l
    tile_p = pos // g_p  # pos: each row's start, never negative
    key = (tile_l * 100_000 + tile_p) * 1_000_000_000
    order = torch.argsort(key + torch.arange(len(members)), stable=True)
    chunks: list[torch.Tensor] = []
    start = 0
    ordered_key = key[order]
    boundaries = torch.nonzero(ordered_key[1:] != ordered_key[:-1]).flatten() + 1
    for end in [*boundaries.tolist(), len(order)]:
        chunks.extend(members[order[start:end]].split(cap))
        start = end
    return chunks


def packed_tiles(
    rows: Rows,
    members: torch.Tensor,
    dims: Dimensions,
    length: int,
    budget_bytes: float,
    max_rows: int,
    bytes_per_value: int,
) -> list[torch.Tensor]:
    """Split rows of one prompt length into packed chunks within the memory budget.

    A packed chunk costs its tokens × (layers from its lowest patched layer), plus a
    fixed overhead per pass. Rows are grouped into blocks of ``g_l`` consecutive layers
    (a wider block wastes the layers between its lowest and each row's own, a narrower
    one pays more passes), with ``g_l`` chosen by that cost model; within a block, rows
    of one prompt stay together so that they share bins.
    """
    n_layers = dims.n_layers
    layer = rows.layer[members]
    prompt = rows.prompt[members]
    tokens = length - rows.start[members]
    per_token, per_row = _packed_bytes(dims, length, bytes_per_value)
    best: tuple[float, list[torch.Tensor]] | None = None
    for g_l in sorted({1, 2, 3, 4, 6, 8, 12, n_layers}):
        block = layer // g_l
        order = torch.argsort(block * (int(prompt.max()) + 1) + prompt, stable=True)
        cost_so_far = torch.cumsum(tokens[order] * per_token + per_row, 0)
        block_ends = torch.nonzero(block[order][1:] != block[order][:-1]).flatten() + 1
        chunks: list[torch.Tensor] = []
        start = 0
        for end in [*block_ends.tolist(), len(order)]:
            while start < end:
                spent = float(cost_so_far[start - 1]) if start else 0.0
                fits = int(torch.searchsorted(cost_so_far[:end], spent + budget_bytes, right=True))
                stop = min(max(fits, start + 1), start + max_rows)
                chunks.append(order[start:stop])
                start = stop
        full_row = length * n_layers
        cost = sum(
            PACKED_PASS_OVERHEAD_ROWS
            + int(tokens[c].sum()) * (n_layers - int(layer[c].min())) / full_row
            for c in chunks
        )
        if best is None or cost < best[0]:
            best = (cost, [members[c] for c in chunks])
    assert best is not None  # the loop runs at least once
    return best[1]


def _packed_bytes(dims: Dimensions, length: int, bytes_per_value: int) -> tuple[int, int]:
    """Working memory of a packed pass, per token and per row: a block's activations,
    attention scores and mask over (cached + own) keys, the cached keys and values per
    bin, and each row's final logits (float32)."""
    keys = 2 * length
    per_token = 12 * dims.d_model + (2 * dims.n_heads + 1) * keys
    per_token += 2 * dims.n_layers * dims.n_kv_heads * dims.d_head  # the bin's cache
    return per_token * bytes_per_value, 4 * dims.vocab_size


def plan_group(
    rows: Rows,
    members: torch.Tensor,
    dims: Dimensions,
    length: int,
    budget_mb: float,
    max_batch: int,
    bytes_per_value: int,
    packed: bool,
    fast: bool = True,
) -> list[torch.Tensor]:
    """The chunks (one forward pass each) of the rows ``members``, all of one length:
    packed within the memory budget, or padded tiles of at most the rows that fit."""
    cap = rows_per_pass(dims, length, budget_mb, max_batch, bytes_per_value)
    if packed:
        return packed_tiles(rows, members, dims, length, budget_mb * 2**20, cap, bytes_per_value)
    return tiles(rows, members, dims.n_layers, length, cap, fast)


def pass_shape(
    rows: Rows,
    chunk: torch.Tensor,
    dims: Dimensions,
    length: int,
    first_scored: torch.Tensor,
    packed: bool,
    bytes_per_value: int,
) -> PassShape:
    """What the fast path's pass over ``chunk`` will compute (see
    :mod:`patchsweep.engine.passes`): from each row's patched position (packed) or the
    chunk's earliest (padded), and from the chunk's lowest patched layer.

    Args:
        first_scored: (N,) the earliest position each prompt's metric reads.
    """
    prompts, row_starts = rows.prompt[chunk], rows.start[chunk]
    layers = dims.n_layers - int(rows.layer[chunk].min())
    if packed:
        starts = torch.minimum(row_starts, first_scored[prompts])
        n_bins, width = pack(prompts, starts, length).shape
        per_token, per_row = _packed_bytes(dims, length, bytes_per_value)
        tokens = n_bins * width
        memory = tokens * per_token + len(chunk) * per_row
        return PassShape("packed", len(chunk), tokens, layers, memory, bool((starts > 0).any()))
    start = min(int(row_starts.min()), int(first_scored[prompts].min()))
    memory = len(chunk) * row_bytes(dims, length, bytes_per_value)
    return PassShape("padded", len(chunk), len(chunk) * (length - start), layers, memory, start > 0)
