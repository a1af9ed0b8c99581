"""Reading the captured activations back: checked against the config, in the model's dtype,
however ``capture.storage_dtype`` stored them."""

from __future__ import annotations

import pytest
import torch
from project import EXP, run_and_fail

from patchsweep.errors import DataError, StaleInputError
from patchsweep.io import read_csv, read_meta, read_tensors, write_tensors
from patchsweep.paths import RUNS, ExperimentPaths
from patchsweep.stored import check_dtypes, expected_meta, load_activations

SWEEPS = ("resid_layer", "resid_layer_pos", "head")  # what the normalize stage reads
# The largest raw-metric change half-precision storage may make at any site × prompt of
# the tiny model's sweeps, whose values spread over ~1.2: float16 moved them by up to
# 4e-4, bfloat16 (3 fewer mantissa bits) by up to 2e-3.
TOLERANCE = {"float16": 2e-3, "bfloat16": 1e-2}


def capture(storage: str | None) -> None:
    """compose (with ``capture.storage_dtype``), tokenize and capture, in-process."""
    from patchsweep.stages import capture, compose, tokenize

    compose.run(EXP, [] if storage is None else [f"capture.storage_dtype={storage}"])
    tokenize.run(EXP)
    capture.run(EXP)


def sweep(storage: str | None) -> dict[str, torch.Tensor]:
    """Each sweep's raw metrics (site × prompt) from activations stored in ``storage``;
    the normalize stage's validity checks run on them too."""
    from patchsweep.stages import normalize, patch

    capture(storage)
    for name in SWEEPS:
        patch.run(EXP, name)
    normalize.run(EXP)  # raises ValidityError if the checks fail
    return {name: torch.tensor(read_csv(EXP.patch(name))["metric"].to_numpy()) for name in SWEEPS}


class TestHalfPrecision:
    """The pipeline on activations stored in float16 or bfloat16."""

    @pytest.mark.parametrize("storage", ["float16", "bfloat16"])
    def test_sweeps_stay_within_the_tolerance_of_float32_storage(self, project, storage):
        full = sweep(None)
        half = sweep(storage)
        for name in SWEEPS:
            moved = float((half[name] - full[name]).abs().max())
            spread = float(full[name].max() - full[name].min())
            assert moved <= TOLERANCE[storage], name
            # the tolerance is far below what the sweep measures ...
            assert TOLERANCE[storage] < spread / 50, name
        # ... and the rounding did reach the patches: the option changed what was read
        assert any(bool((half[n] != full[n]).any()) for n in SWEEPS if n != "resid_layer")

    def test_files_record_it_and_readers_get_the_model_dtype(self, project, tiny_gpt2):
        capture("bfloat16")
        meta = read_meta(EXP.activations("clean"))
        assert meta["storage_dtype"] == "bfloat16" and meta["dtype"] == "float32"
        on_disk = read_tensors(EXP.activations("clean"))
        assert {v.dtype for v in on_disk.values()} == {torch.bfloat16}
        assert read_tensors(EXP.final_logits)["clean"].dtype == torch.float32
        expected = expected_meta(tiny_gpt2.identity(), meta["tokens_hash"], "bfloat16")
        loaded = load_activations(EXP, "clean", None, expected)
        for key, value in loaded.items():
            assert value.dtype == torch.float32
            assert torch.equal(value, on_disk[key].float()), key


class TestRefused:
    """Files that do not match the reader's config stop it with the fix."""

    def test_a_capture_stored_otherwise_stops_the_patch_stage(self, project, capsys):
        from patchsweep.stages import compose, patch

        capture("float16")
        compose.run(EXP)  # storage_dtype back to null, capture not rerun
        err = run_and_fail(patch.run, capsys, EXP, "resid_layer")
        assert "holds activations stored with capture.storage_dtype=float16" in err
        assert "this run's config has capture.storage_dtype=null (the model's dtype)" in err
        assert "run `dvc repro`" in err and "or set capture.storage_dtype back to float16" in err

    def test_another_model_dtype_names_model_dtype(self, tmp_path):
        meta = {"dtype": "bfloat16"}
        with pytest.raises(StaleInputError) as raised:
            check_dtypes(tmp_path / "clean.safetensors", meta, {"dtype": "float32"})
        assert "computed in bfloat16, but this run loads the model in float32 (model.dtype)" in (
            raised.value.problem
        )
        assert "or set model.dtype back to bfloat16" in raised.value.fix

    def test_tensors_in_another_dtype_than_the_file_says(self, tmp_path):
        exp = ExperimentPaths("m", "d", root=tmp_path)
        expected = expected_meta({"model": "m", "dtype": "float32"}, "abc", "float16")
        exp.activations(RUNS[0]).parent.mkdir(parents=True)
        meta = {**expected, "run": "clean"}
        write_tensors(exp.activations("clean"), {"resid": torch.zeros(2, 3)}, meta)
        with pytest.raises(DataError, match=r"resid is torch\.float32, but the file says"):
            load_activations(exp, "clean", None, expected)
