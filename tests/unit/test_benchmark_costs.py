"""The dataset benchmark's prompts and exact-FLOP cost model, counted by hand on a toy.

The benchmark prints its speed-ups beside these bounds, so a miscount would misjudge the
engine; the prompts must keep one length and first differ where their docstrings say.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    """``common`` and ``costs`` from benchmarks/, imported as the scripts import them."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import common
        import costs
    finally:
        sys.path.remove(str(BENCHMARKS))
    return SimpleNamespace(common=common, costs=costs)


@pytest.mark.parametrize(("corruption", "first"), [("first_clause", 1), ("s2_only", 11)])
def test_ioi_pairs_are_16_tokens_and_first_differ_where_documented(bench, corruption, first):
    from patchsweep.tokenize import tokenize_pairs

    prompts = bench.common.ioi_pairs(32, seed=0, corruption=corruption)
    texts = [t for p in prompts for t in (p.clean, p.corrupted)]
    pairs = tokenize_pairs(prompts, bench.common.word_tokenizer(texts))
    assert pairs.lengths.tolist() == [16] * 32
    assert len({(p.clean, p.corrupted) for p in prompts}) == 32
    found = bench.common.first_difference(pairs.clean_ids, pairs.corrupted_ids)
    assert found.tolist() == [first] * 32


def toy(bench, component: str, heads: int, positions: list[int]):
    """Two layers, d 4, d_head 2, d_mlp 16, vocabulary 10; one pair of 4 tokens that
    differ only at position 2."""
    from patchsweep.engine import Sites

    shape = bench.costs.Shape(n_layers=2, d_model=4, d_head=2, d_mlp=16, vocab=10)
    rows = [(layer, h, p) for layer in range(2) for p in positions for h in range(heads)]
    sites = Sites(
        layers=torch.tensor([r[0] for r in rows]),
        heads=torch.tensor([r[1] if component == "z" else -1 for r in rows]),
        positions=torch.tensor([[r[2]] for r in rows]),
        labels=[str(r[2]) for r in rows],
        slots=torch.tensor([r[2] for r in rows]),
    )
    pairs = SimpleNamespace(
        lengths=torch.tensor([4]),
        clean_ids=torch.tensor([[1, 2, 3, 4]]),
        corrupted_ids=torch.tensor([[1, 2, 5, 4]]),
    )
    return bench.costs.sweep_flops(shape, component, sites, pairs)


def test_block_at_positions_counts_projections_mlp_and_attention(bench):
    shape = bench.costs.Shape(n_layers=2, d_model=4, d_head=2, d_mlp=16, vocab=10)
    # 8·d² + 4·d·d_mlp = 384 per position, attention 4·d·(p + 1) = 16·(p + 1)
    assert shape.block(2, 4) == 384 * 2 + 16 * (3 + 4)
    assert shape.block(0, 4) == sum(shape.block(p, p + 1) for p in range(4))
    assert shape.block(3, 3) == 0


def test_residual_sweep_counts_only_what_a_patch_changes(bench):
    flops = toy(bench, "resid_pre", 1, [0, 1, 2, 3])
    both_runs = 2 * (2 * (384 * 4 + 16 * 10) + 2 * 4 * 2)  # every block, 2 logit columns
    # (0, 2): layers 0–1 at positions 2–3; (1, 2): layer 1 at 2–3; (1, 3): layer 1 at 3;
    # (·, 0–1) before the first difference and (0, 3), the same token's embedding: none
    sites = (2 * 880 + 16) + (880 + 16) + (384 + 64 + 16)
    assert flops["exact"] == both_runs + sites
    full = 2 * (384 * 4 + 16 * 10) + 2 * 4 * 10 * 4  # every position unembedded
    assert flops["tl"] == flops["loop"] == full * (1 + 8)


def test_head_sweep_counts_from_the_first_difference(bench):
    flops = toy(bench, "z", 2, [-1])
    both_runs = 2 * (2 * (384 * 4 + 16 * 10) + 2 * 4 * 2)
    # positions 2–3: the head's output slice 2·2·4 each, the MLP 4·4·16 each, blocks above
    layer0 = 2 * 2 * 4 * 2 + 4 * 4 * 16 * 2 + 880 + 16
    layer1 = 2 * 2 * 4 * 2 + 4 * 4 * 16 * 2 + 16
    assert flops["exact"] == both_runs + 2 * layer0 + 2 * layer1
    assert flops["tl"] == (2 * (384 * 4 + 16 * 10) + 2 * 4 * 10 * 4) * (1 + 4)
