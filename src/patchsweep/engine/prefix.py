"""The target run's keys and values, so a pass can start after a patch's unchanged prefix.

With causal attention, positions before the earliest patched position see nothing of the
patch: their keys and values in every layer are those of the unpatched target run. One
extra forward pass per prompt length computes them; every chunk of that length then
starts at its first patched position and takes the rest from here.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache

from patchsweep.capture import add_embedding_delta
from patchsweep.engine.accounting import record_pass
from patchsweep.models import LoadedModel


class PrefixCache:
    """The target run's per-layer keys and values, for one prompt length at a time.

    Held on the CPU and filled when a chunk of a new length first asks for them (the
    sweep runs length groups one after another).
    """

    def __init__(
        self,
        model: LoadedModel,
        ids: torch.Tensor,
        lengths: torch.Tensor,
        delta: torch.Tensor | None = None,
    ) -> None:
        """
        Args:
            model: The model the sweep runs.
            ids: (N, T) the target prompts, right-padded.
            lengths: (N,) their lengths.
            delta: (N, T, d) the embedding noise of a noise-corrupted target run, or None.
        """
        self.model, self.ids, self.lengths, self.delta = model, ids, lengths, delta
        self._length: int | None = None
        self._kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._slot: dict[int, int] = {}

    def for_rows(self, prompts: torch.Tensor, upto: int) -> Any:
        """A DynamicCache holding positions < ``upto`` of each row's target prompt."""
        length = int(self.lengths[prompts[0]])
        if self._length != length:
            self._fill(length)
        slots = torch.tensor([self._slot[int(p)] for p in prompts])
        device = self.model.device
        return DynamicCache(
            ddp_cache_data=[
                (k[slots, :, :upto].to(device), v[slots, :, :upto].to(device)) for k, v in self._kv
            ]
        )

    def _fill(self, length: int) -> None:
        members = torch.nonzero(self.lengths == length).flatten()
        lm, arch, device = self.model.lm, self.model.arch, self.model.device
        record_pass("prefix", 0, len(members) * length, self.model.dims.n_layers)
        with self.model.trace(
            self.ids[members, :length].to(device),
            use_cache=True,
            logits_to_keep=1,
            past_key_values=DynamicCache(),  # no config: keep every position of every layer
        ):
            if self.delta is not None:
                add_embedding_delta(lm, arch, self.delta[members, :length].to(device))
            cache = lm.output.past_key_values.save()
        self._kv = [(k.cpu(), v.cpu()) for k, v, *_ in cache]
        self._slot = {int(p): n for n, p in enumerate(members)}
        self._length = length
