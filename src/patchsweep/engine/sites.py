"""From a sweep's config to its sites: which (layer, head, position) each patch writes.

Positions are compared across prompts by name: ``positions: each`` sweeps every token
position (prompts must share one length), ``labels`` sweeps the named positions (IO, S1,
S2, END, …) wherever they fall in each prompt, ``all`` patches every position at once,
and ``auto`` picks ``each`` for one prompt or one aligned template, else ``labels``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from patchsweep.component_types import is_headed
from patchsweep.components import Dimensions
from patchsweep.config import SweepConfig
from patchsweep.errors import ConfigError
from patchsweep.tokenize import END, TokenizedPairs

log = logging.getLogger(__name__)


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
        window: each site patches layers [layer, layer + window).
    """

    layers: torch.Tensor
    heads: torch.Tensor
    positions: torch.Tensor
    labels: list[str]
    slots: torch.Tensor
    window: int = 1

    def __len__(self) -> int:
        return int(self.layers.shape[0])


def checked_indices(
    name: str, key: str, values: list[int] | None, size: int, what: str
) -> list[int]:
    """The layers or heads a sweep asks for, each checked against the model."""
    if values is None:
        return list(range(size))
    bad = [v for v in values if not 0 <= v < size]
    if bad:
        raise ConfigError(
            f"sweeps.{name}.{key} has {bad}, but the model has {size} {what} (0–{size - 1})",
            f"use {key} between 0 and {size - 1}, or null for all",
        )
    return sorted(set(values))


def position_mode(sweep: SweepConfig, pairs: TokenizedPairs) -> str:
    """Resolve ``auto`` to ``each`` or ``labels`` for this dataset."""
    if sweep.positions != "auto":
        return sweep.positions
    one_length = int(pairs.lengths.unique().numel()) == 1
    one_template = len(set(pairs.templates)) == 1
    return "each" if one_length and (pairs.n_pairs == 1 or one_template) else "labels"


def position_sites(
    name: str, sweep: SweepConfig, pairs: TokenizedPairs
) -> tuple[torch.Tensor, list[str]]:
    """(P, N) positions per prompt and their P labels."""
    mode = position_mode(sweep, pairs)
    n = pairs.n_pairs
    if mode == "all":
        return torch.full((1, n), -1, dtype=torch.long), ["all"]
    if mode == "each":
        if int(pairs.lengths.unique().numel()) != 1:
            raise ConfigError(
                f"sweeps.{name}.positions is 'each' but the prompts have different lengths "
                f"({sorted(set(pairs.lengths.tolist()))})",
                f"set sweeps.{name}.positions: labels to compare named positions instead",
            )
        length = int(pairs.lengths[0])
        names = _names_by_position(pairs, length)
        labels = [
            pairs.tokens[0][p] if n == 1 else names.get(p, pairs.tokens[0][p])
            for p in range(length)
        ]
        return torch.arange(length).unsqueeze(1).expand(length, n).clone(), labels
    found = {k: v for k, v in pairs.label_positions.items() if bool((v >= 0).all())}
    if set(found) == {END} and len(pairs.label_positions) > 1:
        log.warning("sweeps.%s: only END is labelled in every prompt", name)
    ordered = sorted(found, key=lambda k: (float(found[k].float().mean()), k))
    return torch.stack([found[k] for k in ordered]), ordered


def _names_by_position(pairs: TokenizedPairs, length: int) -> dict[int, str]:
    """Labels that sit at the same position in every prompt, by position."""
    names: dict[int, str] = {}
    for label, pos in pairs.label_positions.items():
        if bool((pos == pos[0]).all()) and 0 <= int(pos[0]) < length:
            names.setdefault(int(pos[0]), label)
    return names


def build_sites(name: str, sweep: SweepConfig, pairs: TokenizedPairs, dims: Dimensions) -> Sites:
    """Every (layer, head, position) site of a sweep."""
    if sweep.window > dims.n_layers:
        raise ConfigError(
            f"sweeps.{name}.window is {sweep.window}, but the model has {dims.n_layers} "
            "layers: every window would be cut to the layers that exist, and the results "
            "labelled with layers that do not",
            f"use a window of 1 to {dims.n_layers}",
        )
    layers = checked_indices(name, "layers", sweep.layers, dims.n_layers, "layers")
    heads = (
        checked_indices(name, "heads", sweep.heads, dims.heads_of(sweep.component), "heads")
        if is_headed(sweep.component)
        else [-1]
    )
    positions, labels = position_sites(name, sweep, pairs)
    every_position = labels == ["all"]
    rows_l, rows_h, rows_p, rows_lab, rows_slot = [], [], [], [], []
    for layer in layers:
        for p in range(positions.shape[0]):
            for head in heads:
                rows_l.append(layer)
                rows_h.append(head)
                rows_p.append(positions[p])
                rows_lab.append(labels[p])
                rows_slot.append(-1 if every_position else p)
    return Sites(
        layers=torch.tensor(rows_l, dtype=torch.long),
        heads=torch.tensor(rows_h, dtype=torch.long),
        positions=torch.stack(rows_p),
        labels=rows_lab,
        slots=torch.tensor(rows_slot, dtype=torch.long),
        window=sweep.window,
    )
