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
                target is a noise-corrupted run.
            clean_logits: The clean run's final logits, for metrics that compare
                distributions.
            target_logits: The unpatched target run's logits as the metric reads them;
                given, patches that would write what is already there are not run.
        """
        kind = COMPONENT_TYPES[component]
        denoise = source_and_target(direction)[0] == "clean"
        correct, incorrect = pairs.answers()
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
        )

    def first_scored(self, prompts: torch.Tensor) -> torch.Tensor:
        """(B,) the earliest position each prompt's metric reads."""
        if self.score_positions is None:
            return self.lengths[prompts] - 1
        scored = self.score_positions[prompts]
        return torch.where(scored >= 0, scored, torch.iinfo(scored.dtype).max).min(1).values
