"""Atomic, byte-stable file writing."""

from __future__ import annotations

import subprocess
import sys

WRITE = """
import sys, torch
from pathlib import Path
from patchsweep.io import write_tensors
write_tensors(Path(sys.argv[1]), {"b": torch.ones(3), "a": torch.arange(4)},
              {"model": "m", "tokens_hash": "h", "dtype": "float32", "run": "clean"})
"""


def test_safetensors_bytes_are_the_same_in_every_process(tmp_path):
    """Metadata is one JSON entry: safetensors' own metadata map has no stable order."""
    paths = [tmp_path / f"{n}.safetensors" for n in range(3)]
    for path in paths:
        subprocess.run([sys.executable, "-c", WRITE, str(path)], check=True)
    contents = {path.read_bytes() for path in paths}
    assert len(contents) == 1


def test_metadata_round_trips(tmp_path):
    import torch

    from patchsweep.io import read_meta, write_tensors

    path = tmp_path / "x.safetensors"
    write_tensors(path, {"t": torch.zeros(1)}, {"seed": 3, "model": "m"})
    assert read_meta(path) == {"seed": 3, "model": "m"}
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]  # no temp file left
