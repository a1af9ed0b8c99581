"""patchsweep: activation-patching sweeps, reproducible with DVC, usable from Python.

The Python API (see :mod:`patchsweep.api`)::

    import patchsweep as ps
    model = ps.load_model("data/models/ioi-gpt2")
    prompts = ps.load_prompts("ioi", model, n_pairs=64)
    table = ps.sweep(model, prompts, {"component": "z", "positions": "all"})
    ps.plot(table, "figures/")

The names are loaded on first use, so that ``import patchsweep.normalize`` (and every
DVC stage) stays free of what the API pulls in.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = ("load_model", "load_prompts", "capture_runs", "sweep", "plot", "Prompts")
__all__ = list(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("patchsweep.api"), name)
    raise AttributeError(f"module 'patchsweep' has no attribute {name!r}")
