"""From the engine's numbers to the tidy per-prompt table the later stages read.

Table code only: pandas, no torch, nnsight or transformers at import time, so the
modules that read tables stay light. The engine's tensors are converted with their own
``.tolist()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

import pandas as pd

from patchsweep.columns import TABLE_COLUMNS

if TYPE_CHECKING:
    import torch

    from patchsweep.config import SweepConfig
    from patchsweep.engine.sites import Sites

T = TypeVar("T")


def tidy_table(
    name: str,
    sweep: SweepConfig,
    sites: Sites,
    metric: torch.Tensor,
    method: str | None = None,
) -> pd.DataFrame:
    """One row per site × prompt with the raw metric after the patch.

    Args:
        name: The sweep's name.
        sweep: Its config (component, direction, window, method).
        sites: Its S sites.
        metric: (S, N) the metric after each patch, as :func:`patchsweep.engine.run_patches`
            returns it (or its estimate, for an attribution sweep).
        method: ``exact`` or ``attribution``; the sweep's own method unless given (the
            verify stage exact-patches sites of an attribution sweep).
    """
    n_sites, n_prompts = metric.shape
    records = {
        "sweep": name,
        "component": sweep.component,
        "direction": sweep.direction,
        "layer": _each_prompt(sites.layers.tolist(), n_prompts),
        "head": _each_prompt(sites.heads.tolist(), n_prompts),
        "position": _each_prompt(sites.slots.tolist(), n_prompts),
        "position_label": _each_prompt(sites.labels, n_prompts),
        "window": sweep.window,
        "method": method or sweep.method,
        "prompt": list(range(n_prompts)) * n_sites,
        "metric": metric.flatten().tolist(),
    }
    return pd.DataFrame(records, columns=TABLE_COLUMNS)


def _each_prompt(per_site: Sequence[T], n_prompts: int) -> list[T]:
    """A per-site list repeated for each prompt, site-major (as the metric flattens)."""
    return [value for value in per_site for _ in range(n_prompts)]
