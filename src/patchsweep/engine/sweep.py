"""The sweep loop: every (site, prompt) row, in chunks, one forward pass per chunk.

:func:`run_sweep` is the entry point the patch stage and the Python API share: a sweep's
config and the captured runs in, its tidy per-prompt table out. :func:`run_patches` is
the loop below it, on tensors.

Rows are grouped by prompt length; each group is split into chunks
(:mod:`patchsweep.engine.tiling`) and each chunk run as one pass
(:mod:`patchsweep.engine.passes`). Metrics are computed as chunks come back and saved to
the checkpoint, so a killed sweep resumes where it stopped. On a remote model a group's
passes go to NDIF as one session, not one job per chunk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nnsight
import pandas as pd
import torch
from tqdm.auto import tqdm

from patchsweep.checkpoint import Checkpoint
from patchsweep.component_types import COMPONENT_TYPES
from patchsweep.components import Architecture
from patchsweep.config import EngineConfig, SweepConfig
from patchsweep.engine.attribution import check_attribution, run_attribution
from patchsweep.engine.inputs import PatchInputs, source_and_target, writes_nothing_new
from patchsweep.engine.packing import supports_packing
from patchsweep.engine.passes import Pass, packed_pass, padded_pass
from patchsweep.engine.prefix import PrefixCache
from patchsweep.engine.sites import Sites, build_sites
from patchsweep.engine.tiling import Rows, all_rows, plan_group
from patchsweep.metrics import Metric, get_metric
from patchsweep.models import LoadedModel
from patchsweep.tables import tidy_table
from patchsweep.tokenize import TokenizedPairs


@dataclass
class Runs:
    """The unpatched clean and corrupted runs of a dataset, as capture stores them.

    Attributes:
        clean, corrupted: stored key (``resid``, ``z``, …) → (N, layers, T, ...)
            activations; a sweep needs its source component in the source run and
            ``resid`` (plus ``embed_delta`` for a noise corruption) in the target run.
        final_logits: ``clean`` and ``corrupted`` logits as the metric reads them.
        storage_dtype: The dtype the activations were stored in before they were cast
            back to the model's (``capture.storage_dtype``); None when they never left
            it. Their round-off is the validity checks' tolerance.
    """

    clean: Mapping[str, torch.Tensor]
    corrupted: Mapping[str, torch.Tensor]
    final_logits: Mapping[str, torch.Tensor]
    storage_dtype: torch.dtype | None = None

    def run(self, name: str) -> Mapping[str, torch.Tensor]:
        return self.clean if name == "clean" else self.corrupted


def stored_key(sweep: SweepConfig) -> str:
    """The stored activation (``resid``, ``z``, …) a sweep's patches are taken from."""
    return COMPONENT_TYPES[sweep.component].store


def run_sweep(
    model: LoadedModel,
    pairs: TokenizedPairs,
    name: str,
    sweep: SweepConfig,
    runs: Runs,
    metric_name: str,
    engine: EngineConfig,
    checkpoint: Checkpoint | None = None,
    desc: str | None = None,
) -> pd.DataFrame:
    """Patch every site of ``sweep`` in every prompt; the raw metric per site × prompt.

    An attribution sweep (``method: attribution``) estimates the same table from
    gradients instead (:mod:`patchsweep.engine.attribution`).
    """
    if sweep.method == "attribution":
        check_attribution(model, sweep.component, sweep.qk_fix, name)
    sites = build_sites(name, sweep, pairs, model.dims)
    source_run, target_run = source_and_target(sweep.direction)
    inputs = PatchInputs.for_sweep(
        pairs,
        sweep.component,
        sweep.direction,
        source_run=runs.run(source_run),
        target_run=runs.run(target_run),
        clean_logits=runs.final_logits["clean"],
        target_logits=runs.final_logits[target_run],
    )
    if sweep.method == "attribution":
        estimate = run_attribution(
            model,
            sweep.component,
            sites,
            inputs,
            get_metric(metric_name),
            qk_fix=sweep.qk_fix,
            grad_drop=sweep.grad_drop,
            budget_mb=engine.memory_budget_mb,
            max_batch=engine.max_batch,
            progress=engine.progress,
            desc=desc or f"attribute {name}",
            checkpoint=checkpoint,
        )
        table = tidy_table(name, sweep, sites, estimate.metric)
        if estimate.grad_drop is not None:
            table["grad_drop"] = estimate.grad_drop.flatten().tolist()
        return table
    metric = run_patches(
        model,
        sweep.component,
        sites,
        inputs,
        get_metric(metric_name),
        budget_mb=engine.memory_budget_mb,
        max_batch=engine.max_batch,
        progress=engine.progress,
        desc=desc or f"patch {name}",
        checkpoint=checkpoint,
    )
    return tidy_table(name, sweep, sites, metric)


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
        model: The model to patch.
        component: The component type patched at every site.
        sites: The sweep's S sites.
        inputs: Its N target prompts, source activations and answers.
        metric: Scores a pass's logits against the answers.
        budget_mb: Activation memory one forward pass may use.
        max_batch: Upper bound on rows per forward pass, whatever the budget.
        progress: Show a progress bar.
        desc: The progress bar's label.
        fast: Skip the unchanged layers below each chunk's lowest patched layer and the
            unchanged positions before its earliest patched position (cached keys and
            values stand in for them). False runs every layer at every position: the
            plain path, kept for checking; both give the same numbers.
        checkpoint: Where finished chunks are saved as the sweep goes, and read back
            from when a killed sweep is run again.
        packing: On the fast path, pack rows without padding where the model allows
            (see :mod:`patchsweep.engine.packing`); False uses padded tiles everywhere.
    """
    n_sites, n_prompts = len(sites), int(inputs.lengths.shape[0])
    result = torch.full((n_sites, n_prompts), float("nan"))
    done = checkpoint.resume(result) if checkpoint else torch.zeros(result.shape, dtype=torch.bool)
    rows = all_rows(sites, inputs.lengths, inputs.first_differ)
    unchanged = _writes_what_is_there(component, sites, inputs, rows)
    if inputs.target_logits is not None and bool(unchanged.any()):
        # they score the unpatched target run, once per prompt
        logits = inputs.target_logits.float()
        unpatched = metric(logits, inputs.correct, inputs.incorrect, inputs.clean_logits).cpu()
        s, i = rows.site[unchanged], rows.prompt[unchanged]
        result[s, i] = unpatched[i]
        done[s, i] = True
    bytes_per_value = model.dtype.itemsize
    bar = tqdm(total=len(rows.site), desc=desc, unit="patch", disable=not progress, leave=False)
    prefix = (
        PrefixCache(model, inputs.target_ids, inputs.lengths, inputs.target_delta) if fast else None
    )
    for length in torch.unique(inputs.lengths).tolist():
        in_group = torch.nonzero(inputs.lengths[rows.prompt] == length).flatten()
        settled = done[rows.site[in_group], rows.prompt[in_group]]  # unchanged or resumed
        bar.update(int(settled.sum()))
        in_group = in_group[~settled]
        if len(in_group) == 0:
            continue
        packed = fast and packing and packable(model.arch, model.hf.config, component, length)
        chunks = plan_group(
            rows, in_group, model.dims, length, budget_mb, max_batch, bytes_per_value, packed, fast
        )
        run_pass: Pass = packed_pass if packed else padded_pass
        remote_logits = (
            _in_one_session(model, run_pass, component, sites, inputs, rows, chunks, prefix)
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


def packable(arch: Architecture, hf_config: Any, component: str, length: int) -> bool:
    """Whether rows of this component and prompt length can be packed (else padded).

    A value inside the attention function (the pattern) has the bin's key axis, not the
    prompt's; flash attention and short sliding windows ignore a custom mask.
    """
    inside = bool(arch.hook_point(component).ops)
    return not inside and supports_packing(hf_config, length)


def _in_one_session(
    model: LoadedModel,
    run_pass: Pass,
    component: str,
    sites: Sites,
    inputs: PatchInputs,
    rows: Rows,
    chunks: list[torch.Tensor],
    prefix: PrefixCache | None,
) -> list[torch.Tensor]:
    """Every chunk's logits from one nnsight session: on NDIF, one job for the group.

    The session's body runs where the model is, so it holds the passes only; metrics,
    checkpoints and the progress bar follow here once the logits are back.
    """
    with model.session():
        logits = nnsight.save(
            [
                run_pass(model, component, sites, inputs, rows.site[c], rows.prompt[c], prefix)
                for c in chunks
            ]
        )
    return logits


def _writes_what_is_there(
    component: str, sites: Sites, inputs: PatchInputs, rows: Rows
) -> torch.Tensor:
    """(rows,) whether a row's patch writes only the value already at its site(s).

    For every component: a patch before the first position where the prompt's two runs
    differ (there the two runs are the same), or at every position of a prompt whose
    runs never differ. For single-position residual-stream patches, the one component
    whose target value the engine holds, also any other site where the two values are
    equal bit for bit (the embeddings, resid_pre of layer 0, wherever the tokens are).
    """
    unchanged = writes_nothing_new(rows.position, inputs.first_differ, rows.prompt, inputs.lengths)
    kind = COMPONENT_TYPES.get(component)
    if kind is None or kind.store != "resid":
        return unchanged
    if inputs.target_logits is None or inputs.target_resid is None:
        return unchanged
    if sites.window != 1:
        return unchanged
    single = torch.nonzero((rows.position >= 0) & ~unchanged).flatten()
    for part in single.split(4096):  # bounded memory: rows × d_model at a time
        i, layer, pos = rows.prompt[part], rows.layer[part], rows.position[part]
        source = inputs.source[i, layer, pos]
        target = inputs.target_resid[i, layer + kind.offset, pos]
        unchanged[part] = (source == target).all(-1)
    return unchanged
