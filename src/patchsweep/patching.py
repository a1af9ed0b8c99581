"""The patch engine: many patch sites per forward pass, each row patched at its own site.

Activation patching asks, for each site (layer, position, head), how much of the clean
behaviour returns when the corrupted run's activation at that site is replaced by the
clean run's (denoising), or how much is lost when the clean run's is replaced by the
corrupted run's (noising). The definition is one forward pass per site. Here the sites of
a sweep are stacked along the batch dimension instead: every row runs the same target
prompt and, at its own layer, overwrites its own site with the cached source activation.
One forward pass then serves a whole chunk of sites, and the numbers are the same.

Two savings keep each pass small without changing a single number:
- a row patched at layer l leaves layers below l exactly as in the cached target run, so
  the blocks below the chunk's lowest layer are skipped and fed the cached residual;
- only the final position's logits are computed, since the metric reads nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from patchsweep.capture import add_embedding_delta
from patchsweep.checkpoint import Checkpoint
from patchsweep.components import HEADED, Dimensions, read, resolve
from patchsweep.errors import ConfigError
from patchsweep.metrics import Metric
from patchsweep.models import LoadedModel


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
    """

    target_ids: torch.Tensor
    lengths: torch.Tensor
    source: torch.Tensor
    target_resid: torch.Tensor | None
    correct: torch.Tensor
    incorrect: torch.Tensor
    clean_logits: torch.Tensor | None = None
    target_delta: torch.Tensor | None = None


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
) -> torch.Tensor:
    """The metric after each patch: a (S, N) float32 tensor, site × prompt.

    Args:
        fast: skip the unchanged layers below each chunk's lowest patched layer and the
            unchanged positions before its earliest patched position (cached keys and
            values stand in for them). False runs every layer at every position: the
            plain path, kept for checking; both give the same numbers.
        checkpoint: where finished chunks are saved as the sweep goes, and read back
            from when a killed sweep is run again.
    """
    n_sites, n_prompts = len(sites), int(inputs.lengths.shape[0])
    result = torch.full((n_sites, n_prompts), float("nan"))
    done = checkpoint.resume(result) if checkpoint else torch.zeros(result.shape, dtype=bool)
    rows = _all_rows(sites, inputs.lengths)
    bytes_per_value = next(model.hf.parameters()).element_size()
    bar = tqdm(total=len(rows.site), desc=desc, unit="patch", disable=not progress, leave=False)
    prefix = (
        _PrefixCache(model, inputs.target_ids, inputs.lengths, inputs.target_delta)
        if fast
        else None
    )
    for length in torch.unique(inputs.lengths).tolist():
        in_group = torch.nonzero(inputs.lengths[rows.prompt] == length).flatten()
        cap = rows_per_pass(model.dims, length, budget_mb, max_batch, bytes_per_value)
        for chunk in _tiles(rows, in_group, model.dims.n_layers, length, cap, fast):
            s, i = rows.site[chunk], rows.prompt[chunk]
            if not bool(done[s, i].all()):
                logits = _patched_pass(model, component, sites, inputs, s, i, prefix)
                clean = inputs.clean_logits[i] if inputs.clean_logits is not None else None
                result[s, i] = metric(logits, inputs.correct[i], inputs.incorrect[i], clean).cpu()
                done[s, i] = True
                if checkpoint:
                    checkpoint.save(result, done)
            bar.update(len(chunk))
    bar.close()
    return result


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
# used to pick tile shapes. Measured on CPU for GPT-2-small shapes (benchmarks/).
PASS_OVERHEAD_ROWS = 0.5


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
    start = max(int(row_pos.min()), 0) if fast else 0
    lowest = int(row_layers.min()) if fast else 0
    batch = inputs.target_ids[i, start:length].to(device)
    kwargs = {"past_key_values": prefix.for_rows(i, start)} if start else {}
    plan = _plan(inputs, sites.window, row_layers, row_heads, row_pos, i, start, length, device)
    point = arch.hook_point(component)
    n_heads = dims.heads_of(component) if component in HEADED else 0
    resid = inputs.target_resid[i, 1 : lowest + 1, start:length].to(device) if lowest else None
    noise = (
        inputs.target_delta[i, start:length].to(device)
        if inputs.target_delta is not None and lowest == 0
        else None
    )
    with model.trace(batch, logits_to_keep=1, **kwargs):
        for block in range(lowest):
            resolve(lm, arch.blocks + ".{layer}", block).skip(resid[:, block])
        noised = add_embedding_delta(lm, arch, noise) if noise is not None else None
        for layer, whole, whole_src, whole_heads, single, single_src, pos, heads in plan:
            first_input = noised is not None and component == "resid_pre" and layer == 0
            act = noised if first_input else read(lm, point, layer, tuple(batch.shape))
            if n_heads:
                # (B, T, heads, d_head): each row takes its own head
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
        logits = lm.output.logits[:, -1].save()
    return logits.float()


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
