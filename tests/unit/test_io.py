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


def streamed_and_whole(tmp_path, tensors, meta, blocks):
    """Write ``tensors`` with write_tensors and, row block by row block, with stream_tensors."""
    import torch

    from patchsweep.io import TensorSpec, stream_tensors, write_tensors

    write_tensors(tmp_path / "whole.safetensors", tensors, meta)
    specs = {k: TensorSpec(tuple(v.shape), v.dtype) for k, v in tensors.items()}
    with stream_tensors(tmp_path / "streamed.safetensors", specs, meta) as out:
        for name, value in tensors.items():
            for rows in blocks:
                index = torch.tensor(rows)
                out.write_rows(name, index, value[index])
    return tmp_path / "streamed.safetensors", tmp_path / "whole.safetensors"


def test_streamed_rows_give_the_bytes_write_tensors_gives(tmp_path):
    """Mixed dtypes (safetensors orders by dtype, then name), rows out of order."""
    import torch

    from patchsweep.io import read_tensors

    tensors = {
        "b": torch.randn(5, 3, 2).to(torch.bfloat16),
        "a": torch.randn(5, 7),
        "c": torch.arange(5),
        "d": torch.randn(5, 2, 2).half(),
    }
    meta = {"model": "m", "note": 'quote " and é'}
    streamed, whole = streamed_and_whole(tmp_path, tensors, meta, [[4, 0, 1], [3], [2]])
    assert streamed.read_bytes() == whole.read_bytes()
    assert all(torch.equal(v, tensors[k]) for k, v in read_tensors(streamed).items())


def test_a_stream_with_unwritten_rows_is_not_published(tmp_path):
    import pytest
    import torch

    from patchsweep.errors import OutputError

    with pytest.raises(OutputError, match="rows of a were never written"):
        streamed_and_whole(tmp_path, {"a": torch.ones(3, 2)}, {}, [[0, 2]])
    assert [p.name for p in tmp_path.iterdir()] == ["whole.safetensors"]


def test_full_precision_csv_reads_float32_back_exactly(tmp_path):
    import numpy as np
    import pandas as pd

    from patchsweep.io import FULL_PRECISION, read_csv, write_csv

    # 12.65561 at 6 digits reads back as 12.6556: off by 1e-5, the engine's tolerance
    values = np.array([12.65561, -12.853417, 1e-7, -0.0, 123456.789], dtype=np.float32)
    table = pd.DataFrame({"metric": values.astype(np.float64)})
    write_csv(tmp_path / "full.csv", table, digits=FULL_PRECISION)
    back = read_csv(tmp_path / "full.csv")["metric"].to_numpy()
    assert (back.astype(np.float32) == values).all()
    assert (tmp_path / "full.csv").read_text().splitlines()[4] == "0"  # -0.0 written as 0
    write_csv(tmp_path / "short.csv", table)
    assert read_csv(tmp_path / "short.csv")["metric"][0] == 12.6556
