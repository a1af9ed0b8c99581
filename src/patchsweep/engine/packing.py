"""Packed patch passes: every patched row as a segment of one sequence, no padding.

A row patched at position p of a T-token prompt changes nothing before p: its positions
< p are the unpatched target run's. The padded fast path (see :mod:`patchsweep.engine`)
starts a whole chunk at its earliest patched position, so rows patched later in the
prompt still recompute the positions between; on a layer × position sweep that is about
half of all the work. Here each row instead contributes only its own positions p..T−1,
and the rows of a chunk are laid end to end in sequences of T slots ("bins"):

- each token keeps its true position (``position_ids``), so positional embeddings and
  rotary phases are those of the row's own prompt;
- a 4D attention mask lets a token see its own segment up to itself, plus the first p
  keys of its prompt's unpatched run, which come from the target run's key/value cache
  (each bin holds one prompt's rows, and its cache prefix is that prompt's run);
- logits are computed only at each segment's last token (or its scored positions).

Bins are as wide as the prompt, so attention costs what it costs unpacked.

The numbers are those of one forward pass per patch: the same inputs meet the same keys
and values; only the order of floating-point sums may differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# The unembedding of fewer than 16 rows takes a slower CPU matrix kernel than 16 rows do
# (GPT-2 small, 2 threads: 15 rows 22 ms, 16 rows 12 ms); packed passes therefore read
# at least this many places and drop the extra ones.
MIN_UNEMBED_ROWS = 16


@dataclass(frozen=True)
class Bins:
    """How a chunk's rows lie in B packed sequences ("bins") of W = T slots each.

    Every bin holds segments of one prompt only, so its cache prefix is that prompt's
    unpatched run. Slots no segment fills attend only to themselves and are never read.

    Attributes:
        prompt: (B, W) the prompt of each slot (its bin's prompt).
        position: (B, W) each slot's position in its prompt (0 in an empty slot).
        row: (B, W) the chunk row each slot belongs to, −1 if empty.
        first: (R, 2) (bin, slot) of each row's first token: its patched position.
        last: (R, 2) (bin, slot) of each row's last token, where its logits are read.
    """

    prompt: torch.Tensor
    position: torch.Tensor
    row: torch.Tensor
    first: torch.Tensor
    last: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.row.shape[0]), int(self.row.shape[1]))


def pack(prompts: torch.Tensor, starts: torch.Tensor, length: int) -> Bins:
    """Pack rows (prompt, first position) into bins of ``length`` slots.

    A row covers positions start..length−1. Within each prompt, segments are placed
    longest first, each bin then topped up with the shortest segments that still fit;
    with a layer × position sweep that fills nearly every slot.
    """
    sizes = (length - starts).tolist()
    placement: list[tuple[int, int]] = [(0, 0)] * len(sizes)  # (bin, offset) per row
    n_bins = 0
    for prompt in torch.unique(prompts).tolist():
        members = torch.nonzero(prompts == prompt).flatten().tolist()
        members.sort(key=lambda r: -sizes[r])
        lo, hi = 0, len(members) - 1
        while lo <= hi:
            used = sizes[members[lo]]
            placement[members[lo]] = (n_bins, 0)
            lo += 1
            while lo <= hi and used + sizes[members[hi]] <= length:
                placement[members[hi]] = (n_bins, used)
                used += sizes[members[hi]]
                hi -= 1
            n_bins += 1
    where = torch.tensor(placement, dtype=torch.long).reshape(-1, 2)
    size = torch.tensor(sizes, dtype=torch.long)
    row = torch.full((n_bins, length), -1, dtype=torch.long)
    position = torch.zeros((n_bins, length), dtype=torch.long)
    bin_prompt = torch.zeros(n_bins, dtype=torch.long)
    for r in range(len(sizes)):  # rows are few per pass; slices, not per-token work
        b, o = int(where[r, 0]), int(where[r, 1])
        row[b, o : o + sizes[r]] = r
        position[b, o : o + sizes[r]] = torch.arange(int(starts[r]), length)
        bin_prompt[b] = prompts[r]
    last = where.clone()
    last[:, 1] += size - 1
    return Bins(
        prompt=bin_prompt[:, None].expand(n_bins, length),
        position=position,
        row=row,
        first=where,
        last=last,
    )


def attention_mask(
    bins: Bins, starts: torch.Tensor, prefix: bool, dtype: torch.dtype
) -> torch.Tensor:
    """The additive (B, 1, W, K) mask: 0 where a slot may attend, the dtype's min elsewhere.

    Keys are the bin's prompt's cached run (W positions, if ``prefix``) followed by the
    bin's own W slots. A slot sees its own row's slots up to itself, and the cached keys
    before its row's first position. An empty slot sees only itself.
    """
    width = bins.shape[1]
    slot = torch.arange(width)
    same_row = bins.row[:, :, None] == bins.row[:, None, :]
    causal = slot[None, :] <= slot[:, None]
    own = (same_row & causal) & (bins.row[:, :, None] >= 0)
    own |= torch.eye(width, dtype=torch.bool)[None]
    allowed = own
    if prefix:
        row_start = torch.where(bins.row >= 0, starts[bins.row.clamp(min=0)], 0)
        before_row = slot[None, None, :] < row_start[:, :, None]
        allowed = torch.cat([before_row, own], dim=2)
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def read_places(
    bins: Bins, length: int, scored: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a packed pass reads logits, and how to gather them back per row.

    Args:
        bins: The chunk's layout.
        length: The prompts' length.
        scored: (R, K) each row's score positions (−1 padded), or None for the last
            position only.

    Returns:
        The (B, W) boolean ``logits_to_keep``, and an index into its (bin, slot)
        ordered output: (R,) for the last position only, (R, K) with score positions
        (a row's scored positions end its segment; −1 padding repeats a real one and
        is ignored by the metric, which sees the −1 in its targets).
    """
    n_bins, width = bins.shape
    last_flat = bins.last[:, 0] * width + bins.last[:, 1]
    if scored is None:
        wanted = last_flat[:, None]
    else:
        valid = scored >= 0
        back = (length - 1) - torch.where(valid, scored, length - 1)  # steps back from last
        wanted = last_flat[:, None] - back
    read_at = torch.zeros(n_bins * width, dtype=torch.bool)
    read_at[wanted.flatten()] = True
    short = MIN_UNEMBED_ROWS - int(read_at.sum())
    if short > 0:  # also read a few unused places: see MIN_UNEMBED_ROWS
        read_at[torch.nonzero(~read_at).flatten()[:short]] = True
    rank = torch.cumsum(read_at.long(), 0) - 1
    gather = rank[wanted]
    return read_at.view(n_bins, width), gather if scored is not None else gather[:, 0]


def supports_packing(config: Any, length: int) -> bool:
    """Whether a model (by its transformers config) honours a custom 4D mask and
    explicit positions.

    Eager and SDPA attention take the mask as given; flash kernels take none. A sliding
    window shorter than the prompt lives in the model's own mask, which a custom mask
    replaces, so such models use the tiled path.
    """
    if "flash" in str(getattr(config, "_attn_implementation", "")):
        return False
    window = getattr(config, "sliding_window", None)
    return window is None or window >= length
