"""The one table of component types: the views derived from it keep the orders stored
files and configs were written in, and the modules that read it stay free of model code."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from patchsweep.component_types import (
    COMPONENT_TYPES,
    COMPONENTS,
    DEFAULT_CAPTURE,
    HEADED_COMPONENTS,
    STORABLE,
    STORAGE,
    is_headed,
    uses_kv_heads,
)


def test_derived_views_keep_their_orders():
    assert COMPONENTS == (
        "resid_pre", "resid_post", "attn_out", "mlp_out", "z", "q", "k", "v", "pattern"
    )  # fmt: skip
    assert HEADED_COMPONENTS == ("z", "q", "k", "v", "pattern")
    # capture files store their tensors in this order: the order a block computes them
    assert STORABLE == ("resid", "q", "k", "v", "pattern", "z", "attn_out", "mlp_out")
    assert DEFAULT_CAPTURE == ("resid", "z", "attn_out", "mlp_out")


def test_each_component_names_its_store_and_heads():
    assert STORAGE["resid_pre"] == ("resid", slice(0, -1))  # block inputs: L of L + 1
    assert STORAGE["resid_post"] == ("resid", slice(1, None))  # block outputs
    assert all(STORAGE[c] == (c, slice(None)) for c in COMPONENTS if not c.startswith("resid"))
    assert [c for c in COMPONENTS if uses_kv_heads(c)] == ["k", "v"]
    assert not is_headed("resid") and not is_headed("no such component")
    assert [c.name for c in COMPONENT_TYPES.values() if c.keys] == ["pattern"]


def test_table_code_imports_no_model_code():
    """Stages that only read tables must not pay for (or rerun on) torch and nnsight."""
    code = (
        "import sys, patchsweep.component_types, patchsweep.config, patchsweep.tables; "
        "print(sorted(m for m in ('torch', 'nnsight', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_tidy_table_is_site_major():
    import torch

    from patchsweep.config import SweepConfig
    from patchsweep.engine import Sites
    from patchsweep.tables import tidy_table

    sites = Sites(
        layers=torch.tensor([0, 1]),
        heads=torch.tensor([-1, -1]),
        positions=torch.tensor([[2, 3, 4], [2, 3, 4]]),
        labels=["S2", "S2"],
        slots=torch.tensor([0, 0]),
    )
    metric = torch.arange(6, dtype=torch.float32).view(2, 3) / 4
    table = tidy_table("t", SweepConfig(component="mlp_out"), sites, metric)
    assert table["layer"].tolist() == [0, 0, 0, 1, 1, 1]
    assert table["prompt"].tolist() == [0, 1, 2, 0, 1, 2]
    assert table["metric"].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]
    assert isinstance(table, pd.DataFrame) and table["window"].eq(1).all()
