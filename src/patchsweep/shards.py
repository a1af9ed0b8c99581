"""Sweeps split into shards by layer, so that separate processes, GPUs or nodes run them.

A sharded sweep is listed under ``sharded`` in ``params.yaml`` (composed from
``conf/experiments/params.yaml``) instead of under ``sweep``, with one entry per shard:
the layers it patches and, optionally, the device it runs on::

    sharded:
      head_pos:
        - {layers: [0], device: "cuda:0"}
        - {layers: [1, 2, 3], device: "cuda:1"}
    shard: [0, 1]

Each shard is its own DVC stage, ``patch_shard@<model>-<dataset>-<sweep>-<k>``, which
writes its part of the sweep's table under ``patch/shards/<sweep>/``; the stage
``merge_shards@<model>-<dataset>-<sweep>`` joins the parts into ``patch/<sweep>.csv``,
the file an unsharded sweep's patch stage writes, so normalize and verify read a sharded
sweep like any other.

The layout lives in ``params.yaml``, not in the experiment's config: DVC's ``matrix``
can only expand stages from ``params.yaml``, and a field of the sweep schema would be
new in every sweep's ``sweeps.<name>`` param (and in config.py, which every stage
imports), rerunning every stage of the pipeline. ``shard`` lists the shard numbers
because a matrix is a cross product (every sharded sweep has ``len(shard)`` shards).
Each shard stage declares only its own entry as a param, so moving one shard to another
device reruns that shard (and the merge), not the others.

Layout only: no pandas, no torch (compose reads it on every ``dvc repro``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from patchsweep.errors import ConfigError
from patchsweep.paths import ExperimentPaths, check_plain_name

if TYPE_CHECKING:
    from patchsweep.config import SweepConfig

SHARDED = "sharded"  # params.yaml: sweep → its shards
NUMBERS = "shard"  # params.yaml: the shard numbers 0, 1, … (dvc.yaml's matrix axis)
SHARD_KEYS = ("layers", "device")
EXAMPLE = "sharded: {head_pos: [{layers: [0, 1]}, {layers: [2, 3]}]} and shard: [0, 1]"


@dataclass(frozen=True)
class Shard:
    """One shard of a sweep: its number, the layers it patches, where it runs."""

    sweep: str
    index: int
    layers: tuple[int, ...]  # the sweep's (first) layers this shard patches, ascending
    device: str | None = None  # replaces model.device for this shard; None keeps it


Layout = dict[str, list[Shard]]  # sharded sweep → its shards, in shard order


def read_layout(params_file: Path) -> Layout:
    """The sharded sweeps of ``params.yaml`` (none when the file or the key is absent).

    Raises:
        ConfigError: a malformed layout (see :func:`parse_layout`).
    """
    if not params_file.is_file():
        return {}
    params = yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}
    return parse_layout(params.get(SHARDED), params.get(NUMBERS))


def parse_layout(sharded: Any, numbers: Any) -> Layout:
    """Check ``sharded`` and ``shard`` from ``params.yaml`` and return the layout.

    Every sharded sweep needs one entry per shard number, each with a non-empty list of
    layers, no layer in two shards, and an optional device.
    """
    if sharded is None or sharded == {}:
        return {}
    if not isinstance(sharded, Mapping):
        raise ConfigError(
            f"params.yaml's {SHARDED} is {sharded!r}, not a mapping of sweeps to shards",
            f"write it as in conf/experiments/params.yaml, e.g. {EXAMPLE}",
        )
    count = _shard_count(numbers)
    return {
        str(name): _sweep_shards(str(name), entries, count) for name, entries in sharded.items()
    }


def _shard_count(numbers: Any) -> int:
    """How many shards each sweep has: ``shard`` must be ``[0, 1, …, n - 1]``."""
    plain = isinstance(numbers, list) and all(type(n) is int for n in numbers)
    if not plain or not numbers or numbers != list(range(len(numbers))):
        raise ConfigError(
            f"params.yaml's {NUMBERS} is {numbers!r}; dvc.yaml runs one patch_shard stage "
            "per sharded sweep × shard number",
            f"list the shard numbers from 0, as many as each sharded sweep has shards: {EXAMPLE}",
        )
    return len(numbers)


def _sweep_shards(name: str, entries: Any, count: int) -> list[Shard]:
    check_plain_name("sweep", name)
    where = f"{SHARDED}.{name}"
    if not isinstance(entries, list) or len(entries) != count:
        got = f"{len(entries)} shards" if isinstance(entries, list) else repr(entries)
        raise ConfigError(
            f"params.yaml's {where} has {got}, but {NUMBERS} lists {count} shard numbers",
            f"give every sharded sweep one entry per number in {NUMBERS} (dvc.yaml's matrix "
            f"pairs each sharded sweep with each number), e.g. {EXAMPLE}",
        )
    shards = [_shard(name, k, entry) for k, entry in enumerate(entries)]
    owner: dict[int, int] = {}
    for shard in shards:
        for layer in shard.layers:
            if layer in owner:
                raise ConfigError(
                    f"layer {layer} of sweep {name} is in shard {owner[layer]} and in shard "
                    f"{shard.index} (params.yaml's {where})",
                    "give each layer to one shard: a layer patched twice would be two rows "
                    "for the same site in the merged table",
                )
            owner[layer] = shard.index
    return shards


def _shard(name: str, index: int, entry: Any) -> Shard:
    where = f"params.yaml's {SHARDED}.{name}[{index}]"
    if not isinstance(entry, Mapping) or set(entry) - set(SHARD_KEYS):
        raise ConfigError(
            f"{where} is {entry!r}",
            "give each shard `layers:` (a list of layers) and optionally `device:`, e.g. "
            "{layers: [0, 1], device: 'cuda:1'}",
        )
    layers = entry.get("layers")
    plain = isinstance(layers, list) and all(type(v) is int and v >= 0 for v in layers)
    if not plain or not layers or len(set(layers)) != len(layers):
        raise ConfigError(
            f"{where}.layers is {layers!r}",
            "list the layers this shard patches, each once, as numbers from 0 (e.g. [0, 1])",
        )
    device = entry.get("device")
    if device is not None and (not isinstance(device, str) or not device.strip()):
        raise ConfigError(
            f"{where}.device is {device!r}",
            "name a device as model.device does (cpu, cuda, cuda:1, mps), or remove it",
        )
    return Shard(name, index, tuple(sorted(layers)), device)


def check_sharded(params_file: Path, sweeps: Mapping[str, SweepConfig]) -> None:
    """Check ``params.yaml``'s layout against the sweeps conf/sweep defines, before
    anything runs (compose): each sharded sweep is defined, exact, not also listed under
    ``sweep``, and its shards cover its ``layers`` when it names them."""
    params = yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}
    unsharded = {str(n) for n in params.get("sweep") or []}
    for name, shards in parse_layout(params.get(SHARDED), params.get(NUMBERS)).items():
        sweep = sweeps.get(name)
        if sweep is None:
            raise ConfigError(
                f"params.yaml shards sweep {name!r}, which conf/sweep does not define "
                f"(defined: {sorted(sweeps)})",
                f"define it in conf/sweep/, or remove it from {SHARDED} in "
                "conf/experiments/params.yaml",
            )
        if name in unsharded:
            raise ConfigError(
                f"sweep {name} is listed both under sweep and under {SHARDED} in params.yaml",
                f"list it once: under {SHARDED} it runs as shards (patch_shard stages), under "
                "sweep as one patch stage",
            )
        if sweep.method != "exact":
            raise ConfigError(
                f"sweep {name} is sharded, but its method is {sweep.method!r}",
                "shard exact sweeps only: an attribution sweep costs one forward and one "
                f"backward pass per chunk of prompts; remove it from {SHARDED}",
            )
        if sweep.layers is not None:
            check_cover(name, shards, sweep.layers, f"sweeps.{name}.layers")


def check_cover(name: str, shards: Sequence[Shard], sweep_layers: Sequence[int], what: str) -> None:
    """Refuse shards that leave out a layer of the sweep, or patch one it does not have.

    Args:
        sweep_layers: Every layer the sweep patches: its ``layers``, or the model's layers.
        what: Where ``sweep_layers`` come from, for the message.
    """
    wanted = set(sweep_layers)
    covered = {layer for shard in shards for layer in shard.layers}
    extra, missing = sorted(covered - wanted), sorted(wanted - covered)
    if extra:
        raise ConfigError(
            f"the shards of sweep {name} patch layer(s) {extra}, which are not in {what} "
            f"({sorted(wanted)})",
            f"give the shards in params.yaml's {SHARDED}.{name} only layers of the sweep",
        )
    if missing:
        raise ConfigError(
            f"no shard of sweep {name} patches layer(s) {missing} of {what} "
            f"({sorted(wanted)}): the merged table would lack them",
            f"add them to a shard in params.yaml's {SHARDED}.{name}",
        )


def shard_of(layout: Layout, name: str, index: int) -> Shard:
    """Shard ``index`` of sweep ``name``, refused with the fix when there is none."""
    shards = layout.get(name)
    if shards is None or not 0 <= index < len(shards):
        have = f"{len(shards)} shards" if shards is not None else "no shards"
        raise ConfigError(
            f"sweep {name} has {have} in params.yaml's {SHARDED}, so no shard {index}",
            f"run the shards dvc.yaml lists (`dvc stage list | grep patch_shard`), or add the "
            f"sweep to {SHARDED} in conf/experiments/params.yaml",
        )
    return shards[index]


# Where a shard's files go: beside the sweep tables, in a folder per sweep, which the merge
# stage depends on as a whole (DVC links every shard stage whose outputs lie inside it).
def shard_folder(exp: ExperimentPaths, sweep: str) -> Path:
    check_plain_name("sweep", sweep)
    return exp.patch_dir / "shards" / sweep


def shard_table(exp: ExperimentPaths, sweep: str, index: int) -> Path:
    """The shard's rows of the sweep's per-prompt table."""
    return shard_folder(exp, sweep) / f"{index}.csv"


def shard_record(exp: ExperimentPaths, sweep: str, index: int) -> Path:
    """What the shard patched and from which inputs, checked by the merge."""
    return shard_folder(exp, sweep) / f"{index}.json"


def shard_checkpoint(exp: ExperimentPaths, sweep: str, index: int) -> Path:
    """Finished chunks of a running shard; not a DVC output, deleted on success."""
    check_plain_name("sweep", sweep)
    return exp.cache / "checkpoints" / "shards" / sweep / f"{index}.safetensors"


def stage_name(exp: ExperimentPaths, sweep: str, index: int) -> str:
    """DVC's name of a shard's stage, for `dvc repro <name>`."""
    return f"patch_shard@{exp.model}-{exp.dataset}-{sweep}-{index}"
