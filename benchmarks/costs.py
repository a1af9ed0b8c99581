"""The exact-FLOP cost model: what a patching sweep costs TransformerLens, and the least
any exact method must compute for it.

A speed-up measured against TransformerLens says little on its own: how much faster could
it be? This module counts floating-point operations (a multiply-add as 2) of a GPT-2-style
model; the per-token work of LayerNorm, softmax, GELU, biases and the embedding lookup is
left out, as it is small beside the matrix products.

- One block at position p (0-based, causal attention over p + 1 keys):
  ``8·d² + 4·d·d_mlp + 4·d·(p + 1)``: the query, key, value and output projections, the
  MLP's two matrices, and the attention scores and weighted sum of values (24·d² + … for
  GPT-2's d_mlp = 4·d).
- A full forward of a prompt of T tokens: every block at every position, then the
  unembedding of every position into the whole vocabulary, ``2·d·V`` per position.

TransformerLens's ``get_act_patch_*`` functions (and a loop of ``model.trace`` calls that
returns full logits) compute, for S sites over N prompts, one full forward of each clean
prompt (its cache) and S full forwards of each corrupted prompt.

Any exact method must compute the clean and the corrupted run once each (every block at
every position, and the metric's answer columns at the last position), and per site and
prompt what the patch can change:

- nothing where the patch writes the value already there: any position before the pair's
  first differing token (causal attention: both runs are equal there), and the residual
  stream's layer 0 (the embeddings) where the two tokens agree;
- a residual patch at layer L, position p: blocks L … layers−1 at positions p … T−1 (the
  earlier positions keep the target run's keys and values);
- a head at layer L over all positions: from the first differing position f on, the
  head's slice of the output projection ``2·d_head·d`` and the MLP at layer L, then
  blocks L+1 … layers−1 at those positions;
- and the metric's logits: ``2·d`` per answer column at the last position.

The ratio of the two is the bound on the speed-up over TransformerLens that an exact
method could reach if its time followed its FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common import first_difference

METRIC_COLUMNS = 2  # logit difference: the correct and the incorrect answer


@dataclass(frozen=True)
class Shape:
    """The sizes the cost model reads."""

    n_layers: int
    d_model: int
    d_head: int
    d_mlp: int
    vocab: int

    @classmethod
    def of(cls, dims: Any, hf_config: Any) -> Shape:
        """From the engine's ``Dimensions`` and a GPT-2 config (d_mlp: ``n_inner``)."""
        d = dims.d_model
        return cls(
            n_layers=dims.n_layers,
            d_model=d,
            d_head=dims.d_head,
            d_mlp=getattr(hf_config, "n_inner", None) or 4 * d,
            vocab=dims.vocab_size,
        )

    def mlp(self, positions: int) -> float:
        return float(4 * self.d_model * self.d_mlp * positions)

    def block(self, start: int, stop: int) -> float:
        """FLOPs of one block at positions start … stop−1 (attention over p + 1 keys)."""
        d, n = self.d_model, stop - start
        if n <= 0:
            return 0.0
        keys = (start + 1 + stop) * n / 2  # Σ (p + 1) for p in [start, stop)
        return 8 * d * d * n + self.mlp(n) + 4 * d * keys

    def forward(self, length: int, logit_positions: int, logit_columns: int) -> float:
        """FLOPs of a forward pass of one prompt: every block at every position, then the
        unembedding of ``logit_positions`` positions into ``logit_columns`` columns."""
        unembed = 2 * self.d_model * logit_columns * logit_positions
        return self.n_layers * self.block(0, length) + unembed


def sweep_flops(shape: Shape, component: str, sites: Any, pairs: Any) -> dict[str, float]:
    """FLOPs of a denoising sweep of ``component`` (``resid_pre`` or ``z``) over the
    engine's ``Sites`` and ``TokenizedPairs``: ``tl`` (also ``loop``), and ``exact``, the
    least any exact method computes."""
    if component not in ("resid_pre", "z"):
        raise ValueError(f"no cost model for {component!r}")
    lengths = pairs.lengths.tolist()
    first = first_difference(pairs.clean_ids, pairs.corrupted_ids).tolist()
    same = (pairs.clean_ids == pairs.corrupted_ids).tolist()
    full = sum(shape.forward(t, t, shape.vocab) for t in lengths)
    metric_logits = 2 * shape.d_model * METRIC_COLUMNS
    exact = 2 * sum(shape.forward(t, 1, METRIC_COLUMNS) for t in lengths)  # both runs once
    layers = shape.n_layers
    for s in range(len(sites)):
        layer = int(sites.layers[s])
        for i, (length, f) in enumerate(zip(lengths, first, strict=True)):
            p = int(sites.positions[s, i])  # −1: every position
            start = max(f, p)
            if start >= length or (component == "resid_pre" and p < f):
                continue  # the patch writes what is already there
            if component == "resid_pre":
                if layer == 0 and same[i][p]:
                    continue  # the same token's embedding
                exact += (layers - layer) * shape.block(p, length) + metric_logits
            else:
                head_out = 2 * shape.d_head * shape.d_model * (length - start)
                above = (layers - layer - 1) * shape.block(start, length)
                exact += head_out + shape.mlp(length - start) + above + metric_logits
    tl = full * (1 + len(sites))  # the clean cache, then a full forward per site
    return {"tl": tl, "loop": tl, "exact": exact}
