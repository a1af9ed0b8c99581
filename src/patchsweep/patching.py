"""The patch engine: many patch sites per forward pass, each row patched at its own site.

Activation patching asks, for each site (layer, position, head), how much of the clean
behaviour returns when the corrupted run's activation at that site is replaced by the
clean run's (denoising), or how much is lost when the clean run's is replaced by the
corrupted run's (noising). The definition is one forward pass per site. Here the sites of
a sweep are stacked along the batch dimension instead: every row runs the same target
prompt and, at its own layer, overwrites its own site with the cached source activation.
One forward pass then serves a whole chunk of sites, and the numbers are the same.

Savings keep each pass small without changing a single number:
- a row patched at layer l leaves layers below l exactly as in the cached target run, so
  the blocks below the chunk's lowest layer are skipped and fed the cached residual;
- a row patched at position p leaves positions before p as in the target run: each row
  computes only its own positions p..T−1, packed end to end with the other rows of its
  chunk (:mod:`patchsweep.packing`), and the target run's cached keys and values stand in
  for the rest;
- only the final position's logits are computed, since the metric reads nothing else.

Models whose own mask cannot be replaced (flash attention, a sliding window shorter than
the prompt) use tiles instead: chunks of rows padded to their earliest patched position.
"""

from __future__ import annotations

from dataclasses import dataclass

import nnsight
import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from patchsweep.capture import add_embedding_delta
from patchsweep.checkpoint import Checkpoint
from patchsweep.components import HEADED, Dimensions, read, resolve
from patchsweep.errors import ConfigError
from patchsweep.metrics import Metric
from patchsweep.models import LoadedModel
from patchsweep.packing import attention_mask, pack, supports_packing


@dataclass
class Sites:
    """The sites of one sweep, S of them, over N prompts.

    Attributes:
        layers: (S,) layer of each site.
        heads: (S,) head of each site, −1 for the whole component.
        positions: (S, N) position patched in each prompt, −1 for every position.
        labels: (S,) position label for tables and figures ("all", a token, or "S2").
        slots: (S,) the position's place on the figure axis: the token position itself,
            or the rank of a named position; −1 for every position at once.
    """

    layers: torch.Tensor
    heads: torch.Tensor
    positions: torch.Tensor
    labels: list[str]
    slots: torch.Tensor
    window: int = 1  # each site patches layers [layer, layer + window)

    def __len__(self) -> int:
        return int(self.layers.shape[0])


@dataclass
class PatchInputs:
    """What a sweep patches: target prompts, cached source activations, answers.

    Attributes:
        target_ids: (N, T) prompts of the run being patched (right-padded).
        lengths: (N,) token lengths.
        source: (N, L, T, ...) the component's activations in the source run.
        target_resid: (N, L+1, T, d) the target run's residual stream, used to skip the
            unchanged layers below a patch; None to run every layer.
        correct: (N, Kc) and incorrect: (N, Ki) answer ids, −1 padded.
        clean_logits: (N, V) the clean run's final logits, for metrics that compare
            distributions; None if the metric needs none.
        target_delta: (N, T, d) added to the first block's input of every target run:
            the embedding noise when the target is a noise-corrupted run; else None.
        score_positions: (N, K) positions whose next-token predictions the metric reads
            (−1 padded), for metrics over several positions, such as the mean log-prob
            of an induction sequence's repeat; the metric then gets (B, K, V) logits.
            None reads the last position only, as (B, V).
        target_logits: the unpatched target run's logits as the metric reads them, (N, V)
            or (N, K, V). Given, a site whose source value equals the target's own (a
            residual-stream position before the prompts first differ) is not run: the
            patch would change nothing, so it scores the unpatched run.
    """

    target_ids: torch.Tensor
    lengths: torch.Tensor
    source: torch.Tensor
    target_resid: torch.Tensor | None
    correct: torch.Tensor
    incorrect: torch.Tensor
    clean_logits: torch.Tensor | None = None
    target_delta: torch.Tensor | None = None
    score_positions: torch.Tensor | None = None
    target_logits: torch.Tensor | None = None

    def first_scored(self, prompts: torch.Tensor) -> torch.Tensor:
        """(B,) the earliest position each prompt's metric reads."""
        if self.score_positions is None:
            return self.lengths[prompts] - 1
        scored = self.score_positions[prompts]
        return torch.where(scored >= 0, scored, torch.iinfo(scored.dtype).max).min(1).values


def rows_per_pass(
    dims: Dimensions, length: int, budget_mb: float, max_batch: int, bytes_per_value: int
) -> int:
    """How many patched rows fit one forward pass within the activation memory budget.

    A row's peak working memory is about one block's activations (residual, q/k/v,
    attention scores, MLP hidden) plus its source slice and its final logits.
    """
    per_row = length * (12 * dims.d_model + 2 * dims.n_heads * length) * bytes_per_value
    per_row += 4 * dims.vocab_size + length * dims.d_model * bytes_per_value
    rows = int(budget_mb * 2**20 // per_row)
    if rows < 1:
        raise ConfigError(
            f"engine.memory_budget_mb={budget_mb} is too small for one row "
            f"(a {length}-token prompt needs about {per_row / 2**20:.1f} MB)",
            f"raise engine.memory_budget_mb to at least {per_row / 2**20 + 1:.0f}",
        )
    return min(rows, max_batch)


@torch.no_grad()
def run_patches(
    model: LoadedModel,
    component: str,
    sites: Sites,
    inputs: PatchInputs,
    metric: Metric,
    budget_mb: float = 1024,
    max_batch: int = 256,
    progress: bool = True,
    desc: str = "patch",
    fast: bool = True,
    checkpoint: Checkpoint | None = None,
    packing: bool = True,
) -> torch.Tensor:
    """The metric after each patch: a (S, N) float32 tensor, site × prompt.

    Args:
        fast: skip the unchanged layers below each chunk's lowest patched layer and the
            unchanged positions before its earliest patched position (cached keys and
            values stand in for them). False runs every layer at every position: the
            plain path, kept for checking; both give the same numbers.
        packing: on the fast path, pack rows without padding where the model allows
            (see :mod:`patchsweep.packing`); False uses padded tiles everywhere.
        checkpoint: where finished chunks are saved as the sweep goes, and read back
            from when a killed sweep is run again.
    """
    n_sites, n_prompts = len(sites), int(inputs.lengths.shape[0])
    result = torch.full((n_sites, n_prompts), float("nan"))
    done = checkpoint.resume(result) if checkpoint else torch.zeros(result.shape, dtype=bool)
    rows = _all_rows(sites, inputs.lengths)
    unchanged = _writes_what_is_there(component, sites, inputs, rows)
    if bool(unchanged.any()):  # they score the unpatched target run, once per prompt
        logits = inputs.target_logits.float()
        unpatched = metric(logits, inputs.correct, inputs.incorrect, inputs.clean_logits).cpu()
        s, i = rows.site[unchanged], rows.prompt[unchanged]
        result[s, i] = unpatched[i]
        done[s, i] = True
    bytes_per_value = next(model.hf.parameters()).element_size()
    bar = tqdm(total=len(rows.site), desc=desc, unit="patch", disable=not progress, leave=False)
    prefix = (
        _PrefixCache(model, inputs.target_ids, inputs.lengths, inputs.target_delta)
        if fast
        else None
    )
    for length in torch.unique(inputs.lengths).tolist():
        in_group = torch.nonzero(inputs.lengths[rows.prompt] == length).flatten()
        settled = done[rows.site[in_group], rows.prompt[in_group]]  # unchanged or resumed
        bar.update(int(settled.sum()))
        in_group = in_group[~settled]
        if len(in_group) == 0:
            continue
        cap = rows_per_pass(model.dims, length, budget_mb, max_batch, bytes_per_value)
        # A value inside the attention function (the pattern) has the bin's key axis,
        # not the prompt's: those sweeps use tiles.
        inside = bool(model.arch.hook_point(component).ops)
        packed = fast and packing and not inside and supports_packing(model.hf, length)
        if packed:
            budget = budget_mb * 2**20
            chunks = _packed_tiles(rows, in_group, model.dims, length, budget, cap, bytes_per_value)
        else:
            chunks = _tiles(rows, in_group, model.dims.n_layers, length, cap, fast)
        run_pass = _packed_pass if packed else _patched_pass
        remote_logits = (
            _remote_session(model, run_pass, component, sites, inputs, rows, chunks, prefix)
            if model.remote
            else None
        )
        for n, chunk in enumerate(chunks):
            s, i = rows.site[chunk], rows.prompt[chunk]
            if remote_logits is not None:
                logits = remote_logits[n]
            else:
                logits = run_pass(model, component, sites, inputs, s, i, prefix)
            clean = inputs.clean_logits[i] if inputs.clean_logits is not None else None
            result[s, i] = metric(logits, inputs.correct[i], inputs.incorrect[i], clean).cpu()
            done[s, i] = True
            if checkpoint:
                checkpoint.save(result, done)
            bar.update(len(chunk))
    bar.close()
    return result


def _remote_session(model, run_pass, component, sites, inputs, rows, chunks, prefix):
    """Every chunk's logits from one nnsight session: on NDIF, one job for the sweep.

    The session's body runs where the model is, so it holds the passes only; metrics,
    checkpoints and the progress bar follow here once the logits are back.
    """
    model.in_session = True
    try:
        with model.lm.session(remote=model.remote_target):
            logits = nnsight.save(
                [
                    run_pass(model, component, sites, inputs, rows.site[c], rows.prompt[c], prefix)
                    for c in chunks
                ]
            )
    finally:
        model.in_session = False
    return logits


def _writes_what_is_there(
    component: str, sites: Sites, inputs: PatchInputs, rows: _Rows
) -> torch.Tensor:
    """(rows,) whether a row's patch writes, bit for bit, the value already at its site.

    Checked for single-position residual-stream patches, the only component whose
    target value the engine holds; before the first position where the two prompts
    differ, the two runs' residual streams are equal, and patching there is a no-op.
    """
    unchanged = torch.zeros(len(rows.site), dtype=torch.bool)
    offset = {"resid_pre": 0, "resid_post": 1}.get(component)
    if offset is None or inputs.target_logits is None or inputs.target_resid is None:
        return unchanged
    if sites.window != 1:
        return unchanged
    single = torch.nonzero(rows.position >= 0).flatten()
    for part in single.split(4096):  # bounded memory: rows × d_model at a time
        i, layer, pos = rows.prompt[part], rows.layer[part], rows.position[part]
        source = inputs.source[i, layer, pos]
        target = inputs.target_resid[i, layer + offset, pos]
        unchanged[part] = (source == target).all(-1)
    return unchanged


@dataclass
class _Rows:
    """Every (site, prompt) pair of a sweep: one patched forward row each."""

    site: torch.Tensor
    prompt: torch.Tensor
    layer: torch.Tensor
    position: torch.Tensor  # −1 = every position


def _all_rows(sites: Sites, lengths: torch.Tensor) -> _Rows:
    site, prompt = torch.meshgrid(
        torch.arange(len(sites)), torch.arange(int(lengths.shape[0])), indexing="ij"
    )
    site, prompt = site.flatten(), prompt.flatten()
    return _Rows(site, prompt, sites.layers[site], sites.positions[site, prompt])


# Cost of one forward pass's fixed overhead, in units of one full-length row's compute;
# used to pick tile shapes. Measured on CPU for GPT-2-small shapes (benchmarks/): padded
# tiles, and packed passes, where it also stands for the better matrix-kernel efficiency
# of larger passes (1 → 3 took a layer × position sweep from 1.02 s to 0.92 s).
PASS_OVERHEAD_ROWS = 0.5
PACKED_PASS_OVERHEAD_ROWS = 3.0


def _tiles(
    rows: _Rows, members: torch.Tensor, n_layers: int, length: int, cap: int, fast: bool
) -> list[torch.Tensor]:
    """Split rows of one prompt length into chunks, each run as one forward pass.

    A chunk costs its rows × (layers from its lowest patched layer) × (positions from its
    earliest patched position), plus a fixed overhead. Rows are tiled into blocks of
    ``g_l`` layers × ``g_p`` positions, with the block shape chosen by that cost model.
    """
    layer = rows.layer[members]
    pos = rows.position[members]
    if not fast:
        return list(members.split(cap))
    best = None
    for g_l in (1, 2, 3, 4, 6, 8, 12, n_layers):
        for g_p in (1, 2, 4, 8, 16, length):
            chunks = _tile_with(members, layer, pos, g_l, g_p, cap)
            cost = sum(
                PASS_OVERHEAD_ROWS
                + len(c)
                * (n_layers - int(rows.layer[c].min()))
                / n_layers
                * (length - max(int(rows.position[c].min()), 0))
                / length
                for c in chunks
            )
            if best is None or cost < best[0]:
                best = (cost, chunks)
    return best[1]


def _tile_with(members, layer, pos, g_l, g_p, cap) -> list[torch.Tensor]:
    tile_l = layer // g_l
    tile_p = torch.where(pos < 0, -1, pos // g_p)
    key = (tile_l * 100_000 + tile_p + 1) * 1_000_000_000
    order = torch.argsort(key + torch.arange(len(members)), stable=True)
    chunks, start = [], 0
    ordered_key = key[order]
    boundaries = torch.nonzero(ordered_key[1:] != ordered_key[:-1]).flatten() + 1
    for end in [*boundaries.tolist(), len(order)]:
        chunks.extend(members[order[start:end]].split(cap))
        start = end
    return chunks


def _packed_tiles(
    rows: _Rows,
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
    tokens = length - rows.position[members].clamp(min=0)
    per_token, per_row = _packed_bytes(dims, length, bytes_per_value)
    best = None
    for g_l in sorted({1, 2, 3, 4, 6, 8, 12, n_layers}):
        block = layer // g_l
        order = torch.argsort(block * (int(prompt.max()) + 1) + prompt, stable=True)
        cost_so_far = torch.cumsum(tokens[order] * per_token + per_row, 0)
        block_ends = torch.nonzero(block[order][1:] != block[order][:-1]).flatten() + 1
        chunks, start = [], 0
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
    return best[1]


def _packed_bytes(dims: Dimensions, length: int, bytes_per_value: int) -> tuple[int, int]:
    """Working memory of a packed pass, per token and per row: a block's activations,
    attention scores and mask over (cached + own) keys, the cached keys and values per
    bin, and each row's final logits (float32)."""
    keys = 2 * length
    per_token = 12 * dims.d_model + (2 * dims.n_heads + 1) * keys
    per_token += 2 * dims.n_layers * dims.n_kv_heads * dims.d_head  # the bin's cache
    return per_token * bytes_per_value, 4 * dims.vocab_size


class _PrefixCache:
    """The target run's keys and values, so a chunk can start after its unchanged prefix.

    With causal attention, positions before the earliest patched position see nothing of
    the patch; their keys and values in every layer are those of the unpatched target run.
    """

    def __init__(
        self,
        model: LoadedModel,
        ids: torch.Tensor,
        lengths: torch.Tensor,
        delta: torch.Tensor | None = None,
    ) -> None:
        self.model, self.ids, self.lengths, self.delta = model, ids, lengths, delta
        self._length: int | None = None
        self._kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._slot: dict[int, int] = {}

    def for_rows(self, prompts: torch.Tensor, upto: int):
        """A DynamicCache holding positions < ``upto`` of each row's target prompt."""
        length = int(self.lengths[prompts[0]])
        if self._length != length:
            self._fill(length)
        slots = torch.tensor([self._slot[int(p)] for p in prompts])
        device = self.model.device
        return DynamicCache(
            ddp_cache_data=[
                (k[slots, :, :upto].to(device), v[slots, :, :upto].to(device)) for k, v in self._kv
            ]
        )

    def _fill(self, length: int) -> None:
        members = torch.nonzero(self.lengths == length).flatten()
        lm, arch, device = self.model.lm, self.model.arch, self.model.device
        with self.model.trace(
            self.ids[members, :length].to(device),
            use_cache=True,
            logits_to_keep=1,
            past_key_values=DynamicCache(),  # no config: keep every position of every layer
        ):
            if self.delta is not None:
                add_embedding_delta(lm, arch, self.delta[members, :length].to(device))
            cache = lm.output.past_key_values.save()
        self._kv = [(k.cpu(), v.cpu()) for k, v, *_ in cache]
        self._slot = {int(p): n for n, p in enumerate(members)}
        self._length = length


def _patched_pass(
    model: LoadedModel,
    component: str,
    sites: Sites,
    inputs: PatchInputs,
    s: torch.Tensor,
    i: torch.Tensor,
    prefix: _PrefixCache | None,
) -> torch.Tensor:
    """One forward pass over rows (site s[k], prompt i[k]); returns (B, V) final logits."""
    lm, arch, dims, device = model.lm, model.arch, model.dims, model.device
    length = int(inputs.lengths[i[0]])
    row_layers, row_heads = sites.layers[s], sites.heads[s]
    row_pos = sites.positions[s, i]
    fast = prefix is not None
    # Positions before `start` and blocks below `lowest` are as in the target run.
    start = min(max(int(row_pos.min()), 0), int(inputs.first_scored(i).min())) if fast else 0
    lowest = int(row_layers.min()) if fast else 0
    batch = inputs.target_ids[i, start:length].to(device)
    kwargs = {"past_key_values": prefix.for_rows(i, start)} if start else {}
    if inputs.score_positions is not None:
        scored = inputs.score_positions[i]
        kwargs["logits_to_keep"] = (scored - start).clamp(min=0).to(device)
    else:
        kwargs["logits_to_keep"] = 1
    plan = _plan(inputs, sites.window, row_layers, row_heads, row_pos, i, start, length, device)
    if component == "pattern":  # stored with keys padded to the longest prompt
        plan = [(*p[:2], p[2][..., :length], *p[3:5], p[5][..., :length], *p[6:]) for p in plan]
    point = arch.hook_point(component)
    n_heads = dims.heads_of(component) if component in HEADED else 0
    resid = inputs.target_resid[i, 1 : lowest + 1, start:length].to(device) if lowest else None
    noise = (
        inputs.target_delta[i, start:length].to(device)
        if inputs.target_delta is not None and lowest == 0
        else None
    )
    with model.trace(batch, **kwargs):
        for block in range(lowest):
            resolve(lm, arch.blocks + ".{layer}", block).skip(resid[:, block])
        noised = add_embedding_delta(lm, arch, noise) if noise is not None else None
        for layer, whole, whole_src, whole_heads, single, single_src, pos, heads in plan:
            first_input = noised is not None and component == "resid_pre" and layer == 0
            act = noised if first_input else read(lm, point, layer, tuple(batch.shape))
            if n_heads:
                # (B, T, heads, d_head): each row takes its own head (a pattern already
                # is (B, T, heads, keys))
                if act.dim() == 3:
                    act = act.view(act.shape[0], act.shape[1], n_heads, act.shape[-1] // n_heads)
                if len(whole):
                    act[whole, :, whole_heads] = whole_src[
                        torch.arange(len(whole), device=device), :, whole_heads
                    ]
                if len(single):
                    act[single, pos, heads] = single_src[
                        torch.arange(len(single), device=device), heads
                    ]
            else:
                if len(whole):
                    act[whole] = whole_src
                if len(single):
                    act[single, pos] = single_src
        logits = lm.output.logits.save()  # (B, K, V); K = 1 without score positions
    return logits.float() if inputs.score_positions is not None else logits[:, -1].float()


def _packed_pass(
    model: LoadedModel,
    component: str,
    sites: Sites,
    inputs: PatchInputs,
    s: torch.Tensor,
    i: torch.Tensor,
    prefix: _PrefixCache,
) -> torch.Tensor:
    """One packed forward pass over rows (site s[k], prompt i[k]); returns (R, V) logits."""
    lm, arch, dims, device = model.lm, model.arch, model.dims, model.device
    length = int(inputs.lengths[i[0]])
    row_layers, row_heads, row_pos = sites.layers[s], sites.heads[s], sites.positions[s, i]
    starts = torch.minimum(row_pos.clamp(min=0), inputs.first_scored(i))
    bins = pack(i, starts, length)
    lowest = int(row_layers.min())
    dtype = next(model.hf.parameters()).dtype
    use_prefix = bool((starts > 0).any())
    read_at, gather = _read_places(bins, inputs, i, length)
    kwargs = {
        "attention_mask": attention_mask(bins, starts, use_prefix, dtype).to(device),
        "position_ids": bins.position.to(device),
        "logits_to_keep": read_at.to(device),
    }
    if use_prefix:
        kwargs["past_key_values"] = prefix.for_rows(bins.prompt[:, 0], length)
    ids = inputs.target_ids[bins.prompt, bins.position].to(device)
    resid = (
        inputs.target_resid[bins.prompt, 1 : lowest + 1, bins.position].to(device)
        if lowest
        else None
    )  # (B, W, lowest, d)
    noise = (
        inputs.target_delta[bins.prompt, bins.position].to(device)
        if inputs.target_delta is not None and lowest == 0
        else None
    )
    point = arch.hook_point(component)
    n_heads = dims.heads_of(component) if component in HEADED else 0
    plan = _packed_plan(inputs, sites.window, bins, row_layers, row_heads, row_pos, device)
    with model.trace(ids, **kwargs):
        for block in range(lowest):
            resolve(lm, arch.blocks + ".{layer}", block).skip(resid[:, :, block])
        noised = add_embedding_delta(lm, arch, noise) if noise is not None else None
        for layer, at_bin, at_slot, values, heads in plan:
            first_input = noised is not None and component == "resid_pre" and layer == 0
            act = noised if first_input else read(lm, point, layer, tuple(ids.shape))
            if n_heads:
                act = act.view(*bins.shape, n_heads, act.shape[-1] // n_heads)
                act[at_bin, at_slot, heads] = values[torch.arange(len(heads), device=device), heads]
            else:
                act[at_bin, at_slot] = values
        logits = lm.output.logits.save()  # (places read, V), in (bin, slot) order
    return logits.float()[gather.to(logits.device)]


# The unembedding of fewer than 16 rows takes a slower CPU matrix kernel than 16 rows do
# (GPT-2 small, 2 threads: 15 rows 22 ms, 16 rows 12 ms); packed passes therefore read
# at least this many places and drop the extra ones.
MIN_UNEMBED_ROWS = 16


def _read_places(bins, inputs: PatchInputs, prompts: torch.Tensor, length: int):
    """Where a packed pass reads logits, and how to gather them back per row.

    Returns the (B, W) boolean ``logits_to_keep`` and an index into its (bin, slot)
    ordered output: (R,) for the last position only, (R, K) with score positions (a
    row's scored positions end its segment; −1 padding repeats a real one and is
    ignored by the metric, which sees the −1 in its targets).
    """
    n_bins, width = bins.shape
    last_flat = bins.last[:, 0] * width + bins.last[:, 1]
    if inputs.score_positions is None:
        wanted = last_flat[:, None]
    else:
        scored = inputs.score_positions[prompts]
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
    return read_at.view(n_bins, width), gather if inputs.score_positions is not None else gather[
        :, 0
    ]


def _packed_plan(inputs, window, bins, row_layers, row_heads, row_pos, device):
    """Per patched layer: the (bin, slot) places patched there, their source values and
    heads. A row patched at one position patches its first slot; a row patched at every
    position, its whole segment."""
    plan = []
    n_layers = inputs.source.shape[1]
    first, last = int(row_layers.min()), min(int(row_layers.max()) + window, n_layers)
    filled = bins.row >= 0
    row = bins.row.clamp(min=0)
    slot_layer, slot_pos = row_layers[row], row_pos[row]
    patched_here = filled & ((slot_pos < 0) | (bins.position == slot_pos))
    for layer in range(first, last):
        active = (slot_layer <= layer) & (layer < slot_layer + window) & patched_here
        at_bin, at_slot = torch.nonzero(active, as_tuple=True)
        values = inputs.source[bins.prompt[at_bin, at_slot], layer, bins.position[at_bin, at_slot]]
        heads = row_heads[row[at_bin, at_slot]]
        plan.append(
            (layer, at_bin.to(device), at_slot.to(device), values.to(device), heads.to(device))
        )
    return plan


def _plan(inputs, window, row_layers, row_heads, row_pos, i, start, length, device):
    """Per patched layer: the rows patched there and the source values they take."""
    plan = []
    n_layers = inputs.source.shape[1]
    first, last = int(row_layers.min()), min(int(row_layers.max()) + window, n_layers)
    for layer in range(first, last):
        at = torch.nonzero((row_layers <= layer) & (layer < row_layers + window)).flatten()
        whole = at[row_pos[at] < 0]
        single = at[row_pos[at] >= 0]
        single_pos = row_pos[single]
        plan.append(
            (
                layer,
                whole.to(device),
                inputs.source[i[whole], layer, :length].to(device),
                row_heads[whole].to(device),
                single.to(device),
                inputs.source[i[single], layer, single_pos].to(device),
                (single_pos - start).to(device),
                row_heads[single].to(device),
            )
        )
    return plan
