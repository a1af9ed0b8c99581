"""Completed work of a long sweep kept on disk, so a killed run resumes where it stopped.

The checkpoint is keyed by everything that determines the numbers (model, tokens, sweep,
metric); a checkpoint with another key is ignored, so a resumed sweep equals a fresh one.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from patchsweep.errors import DataError
from patchsweep.io import read_meta, read_tensors, write_tensors

log = logging.getLogger(__name__)


class Checkpoint:
    """The (S, N) metric matrix and its done-mask, saved at most every ``every_s`` seconds."""

    def __init__(self, path: Path, key: str, every_s: float = 5.0) -> None:
        self.path, self.key, self.every_s = path, key, every_s
        self._last = time.monotonic()

    def resume(self, result: torch.Tensor) -> torch.Tensor:
        """Fill ``result`` from a matching checkpoint; return the mask of finished cells."""
        done = torch.zeros(result.shape, dtype=torch.bool)
        if not self.path.is_file():
            return done
        try:
            if read_meta(self.path).get("key") != self.key:
                log.info("ignoring %s: it belongs to other inputs", self.path)
                return done
            saved = read_tensors(self.path, ["result", "done"])
        except DataError:
            log.warning("ignoring unreadable checkpoint %s", self.path)
            return done
        if saved["result"].shape != result.shape:
            return done
        result.copy_(saved["result"])
        done.copy_(saved["done"])
        log.info(
            "resuming from %s: %d of %d patches already done",
            self.path,
            int(done.sum()),
            done.numel(),
        )
        return done

    def save(self, result: torch.Tensor, done: torch.Tensor, force: bool = False) -> None:
        """Write the checkpoint if ``every_s`` seconds passed since the last write."""
        now = time.monotonic()
        if force or now - self._last >= self.every_s:
            write_tensors(self.path, {"result": result, "done": done}, {"key": self.key})
            self._last = now

    def remove(self) -> None:
        """Delete the checkpoint once the sweep's output is safely written."""
        self.path.unlink(missing_ok=True)


def checkpoint_key(**parts: object) -> str:
    """A stable key from JSON-serialisable parts."""
    return json.dumps(parts, sort_keys=True, default=str)
