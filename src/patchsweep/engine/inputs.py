"""What a sweep patches, gathered in one place from the tokenized pairs and the two runs.

The direction decides everything else: denoising patches the clean run's activations
into the corrupted prompts, noising the corrupted run's into the clean prompts. The
patch stage, the tests and the benchmarks all build their inputs through
:meth:`PatchInputs.for_sweep`, so none of them decides which run is which on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from patchsweep.component_types import COMPONENT_TYPES
from patchsweep.config import DIRECTIONS
from patchsweep.tokenize import TokenizedPairs


def source_and_target(direction: str) -> tuple[str, str]:
    """The (source, target) run names of a direction: ("clean", "corrupted") to denoise."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    return ("clean", "corrupted") if direction == "denoise" else ("corrupted", "clean")


@dataclass(frozen=True, kw_only=True)
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
        first_differ: (N,) the first position where each prompt's source and target runs
            differ (a token, or embedding noise); None when unknown (taken as 0). Before
            it the two runs are the same, so a patch there writes what is already there
            and a patch at every position changes nothing before it.
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
    first_differ: torch.Tensor | None = None

    @classmethod
    def for_sweep(
        cls,
        pairs: TokenizedPairs,
        component: str,
        direction: str,
        *,
        source_run: Mapping[str, torch.Tensor],
        target_run: Mapping[str, torch.Tensor],
        clean_logits: torch.Tensor | None = None,
        target_logits: torch.Tensor | None = None,
    ) -> PatchInputs:
        """The inputs of a sweep of ``component`` in ``direction`` over ``pairs``.

        Args:
            pairs: The tokenized prompt pairs; their answers and score positions are
                what the metric reads.
            component: The component type patched (a name in
                :mod:`patchsweep.component_types`).
            direction: ``denoise`` or ``noise``.
            source_run: The source run's stored activations, by stored name (as the
                capture stage writes them, or as :func:`patchsweep.capture.capture_run`
                returns them): at least the component's store.
            target_run: The target run's: ``resid``, and ``embed_delta`` when the
                target is a noise-corrupted run. The corrupted run's ``embed_delta``
                (in whichever run is the corrupted one) also tells where the two runs
                start to differ; a noise corruption given without it is not skipped.
            clean_logits: The clean run's final logits, for metrics that compare
                distributions.
            target_logits: The unpatched target run's logits as the metric reads them;
                given, patches that would write what is already there are not run.
        """
        kind = COMPONENT_TYPES[component]
        denoise = source_and_target(direction)[0] == "clean"
        correct, incorrect = pairs.answers()
        delta = target_run.get("embed_delta", source_run.get("embed_delta"))
        noised = None if delta is None else (delta != 0).any(-1)
        return cls(
            target_ids=pairs.corrupted_ids if denoise else pairs.clean_ids,
            lengths=pairs.lengths,
            source=source_run[kind.store][:, kind.layers],
            target_resid=target_run["resid"],
            correct=correct,
            incorrect=incorrect,
            clean_logits=clean_logits,
            target_delta=target_run.get("embed_delta"),
            score_positions=pairs.score_positions,
            target_logits=target_logits,
            first_differ=first_differences(pairs.clean_ids, pairs.corrupted_ids, noised),
        )

    def patch_starts(self, positions: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """(R,) the first position each row's patch can change: its patched position, or,
        for a row patched at every position (−1), the first where its runs differ."""
        return patch_starts(positions, self.first_differ, prompts)

    def first_scored(self, prompts: torch.Tensor) -> torch.Tensor:
        """(B,) the earliest position each prompt's metric reads."""
        if self.score_positions is None:
            return self.lengths[prompts] - 1
        scored = self.score_positions[prompts]
        return torch.where(scored >= 0, scored, torch.iinfo(scored.dtype).max).min(1).values


def first_differences(
    clean_ids: torch.Tensor, corrupted_ids: torch.Tensor, noised: torch.Tensor | None = None
) -> torch.Tensor:
    """(N,) the first position where each pair's two runs differ: a different token, or
    embedding noise (``noised``, (N, T) true where the corrupted run is noised).

    Causal attention makes every activation at position p a function of positions ≤ p,
    so before this position the clean and corrupted runs are the same, whatever the
    component. A pair whose runs never differ gets the width T. Pairs with the same
    tokens and no ``noised`` mask may be noised where nobody said: they get 0, which
    skips nothing.
    """
    differs = clean_ids != corrupted_ids
    if noised is not None:
        differs = differs | noised[:, : differs.shape[1]]
    never = differs.shape[1] if noised is not None else 0
    return torch.where(differs.any(1), differs.int().argmax(1), torch.tensor(never))


def patch_starts(
    positions: torch.Tensor, first_differ: torch.Tensor | None, prompts: torch.Tensor
) -> torch.Tensor:
    """(R,) where each row's patch starts to change anything: its patched position, or,
    for a row patched at every position (−1), its prompt's first differing position
    (0 where that is unknown)."""
    whole = positions < 0
    if first_differ is None:
        return positions.clamp(min=0)
    return torch.where(whole, first_differ[prompts], positions)


def writes_nothing_new(
    positions: torch.Tensor,
    first_differ: torch.Tensor | None,
    prompts: torch.Tensor,
    lengths: torch.Tensor,
) -> torch.Tensor:
    """(R,) whether each row's patch writes only what its target run already holds: a
    single position before the runs first differ, or every position of a prompt whose
    runs never differ."""
    if first_differ is None:
        return torch.zeros(positions.shape, dtype=torch.bool)
    first = first_differ[prompts]
    return torch.where(positions >= 0, positions < first, first >= lengths[prompts])
