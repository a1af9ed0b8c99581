"""Capture streamed to disk: the same bytes as the in-memory path, whatever the chunking."""

from __future__ import annotations

import pytest
import torch
from project import EXP, run_and_fail

from patchsweep.capture import (
    CapturePlan,
    as_stored,
    capture_run,
    capture_to_file,
    logits_spec,
    plan_capture,
    prompt_bytes,
)
from patchsweep.errors import ConfigError, DataError
from patchsweep.io import read_meta, read_tensors, write_tensors
from patchsweep.paths import RUNS

LENGTHS = [5, 8, 5, 3, 8, 8, 5]  # three length groups, their rows interleaved
META = {"model": "tiny-gpt2", "run": "clean"}


@pytest.fixture(scope="module")
def prompts(tiny_gpt2):
    """Right-padded random token ids of several lengths, and the lengths."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, len(tiny_gpt2.tokenizer), (len(LENGTHS), max(LENGTHS)), generator=gen)
    lengths = torch.tensor(LENGTHS)
    for row, length in enumerate(LENGTHS):
        ids[row, length:] = 0
    return ids, lengths


@pytest.fixture(scope="module")
def in_memory(tiny_gpt2, prompts):
    """The in-memory capture in one chunk per length group."""
    return capture_run(tiny_gpt2, *prompts, progress=False)


def stream(
    model, prompts, path, rows: int, extra=None, logits_sink=None, storage=None
) -> torch.Tensor:
    """Capture to ``path`` in chunks of ``rows`` prompts, stored in ``storage`` (None: the
    model's dtype); return the logits it handed out."""
    ids, lengths = prompts
    logits = torch.full(logits_spec(model.dims, len(ids)).shape, float("nan"))

    def keep(index: torch.Tensor, values: torch.Tensor) -> None:
        logits[index] = values
        if logits_sink is not None:
            logits_sink(index, values)

    plan = CapturePlan.of(("resid", "z", "attn_out", "mlp_out"), rows)
    capture_to_file(
        path, model, ids, lengths, plan, META, keep, extra=extra, progress=False, storage=storage
    )
    return logits


class TestStreamedFile:
    """The file capture_to_file writes."""

    def test_holds_the_in_memory_tensors_bit_for_bit(self, tiny_gpt2, prompts, tmp_path):
        path = tmp_path / "clean.safetensors"
        logits = stream(tiny_gpt2, prompts, path, rows=2)
        in_memory = capture_run(tiny_gpt2, *prompts, max_rows=2, progress=False)
        stored = read_tensors(path)
        assert set(stored) == set(in_memory) - {"logits"}
        for key, value in stored.items():
            assert torch.equal(value, in_memory[key]), key
        assert torch.equal(logits, in_memory["logits"])
        assert read_meta(path) == META

    def test_bytes_equal_write_tensors(self, tiny_gpt2, prompts, in_memory, tmp_path):
        extra = {"embed_delta": torch.randn(len(LENGTHS), max(LENGTHS), tiny_gpt2.dims.d_model)}
        stream(tiny_gpt2, prompts, tmp_path / "streamed.safetensors", rows=64, extra=extra)
        tensors = {k: v for k, v in in_memory.items() if k != "logits"}
        write_tensors(tmp_path / "whole.safetensors", {**tensors, **extra}, META)
        streamed = (tmp_path / "streamed.safetensors").read_bytes()
        assert streamed == (tmp_path / "whole.safetensors").read_bytes()

    def test_chunk_size_changes_at_most_float_rounding(
        self, tiny_gpt2, prompts, in_memory, tmp_path
    ):
        """A matmul's last bit may depend on the batch shape, as with max_rows before."""
        for rows in (1, 3):
            path = tmp_path / f"{rows}.safetensors"
            logits = stream(tiny_gpt2, prompts, path, rows=rows)
            for key, value in {**read_tensors(path), "logits": logits}.items():
                torch.testing.assert_close(value, in_memory[key], rtol=0, atol=1e-6, msg=key)

    def test_an_interrupted_capture_leaves_no_file(self, tiny_gpt2, prompts, tmp_path):
        path = tmp_path / "clean.safetensors"
        write_tensors(path, {"old": torch.zeros(1)}, META)
        calls = []

        def interrupt_after_first_chunk(index: torch.Tensor, values: torch.Tensor) -> None:
            calls.append(index)
            if len(calls) == 2:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            stream(tiny_gpt2, prompts, path, rows=1, logits_sink=interrupt_after_first_chunk)
        assert [p.name for p in tmp_path.iterdir()] == ["clean.safetensors"]  # no temp file
        assert set(read_tensors(path)) == {"old"}  # the previous file, untouched


class TestBudget:
    """capture.memory_budget_mb sets the prompts per forward pass."""

    def test_rows_are_what_the_budget_holds(self, tiny_gpt2):
        dims, components = tiny_gpt2.dims, ("resid", "z")
        per_prompt = prompt_bytes(dims, ("resid", "z"), 8, torch.float32)
        budget_mb = 2.5 * per_prompt / 2**20
        assert plan_capture(dims, components, 8, torch.float32, budget_mb, 64).rows == 2
        assert plan_capture(dims, components, 8, torch.float32, 1e6, 64).rows == 64

    def test_a_budget_below_one_prompt_says_how_much_is_needed(self, tiny_gpt2):
        with pytest.raises(ConfigError) as raised:
            plan_capture(tiny_gpt2.dims, ("resid",), 8, torch.float32, 1e-4, 64)
        assert "capture.memory_budget_mb=0.0001 is too small for one prompt" in raised.value.problem
        assert "set capture.memory_budget_mb to at least 1" in raised.value.fix


class TestStage:
    """The capture stage writes what the in-memory path wrote before it streamed."""

    def test_files_equal_the_in_memory_capture(self, project, tiny_gpt2):
        from patchsweep.stages import capture as stage
        from patchsweep.stages import compose, tokenize
        from patchsweep.stored import load_tokenized

        compose.run(EXP, ["capture.max_rows=1"])  # one prompt per chunk: two chunks a run
        tokenize.run(EXP)
        stage.run(EXP)
        pairs, _ = load_tokenized(EXP)
        logits = {}
        for run, ids in zip(RUNS, (pairs.clean_ids, pairs.corrupted_ids), strict=True):
            acts = capture_run(tiny_gpt2, ids, pairs.lengths, max_rows=1, progress=False)
            logits[run] = acts.pop("logits")
            write_tensors(project / f"{run}.safetensors", acts, read_meta(EXP.activations(run)))
            assert (
                EXP.activations(run).read_bytes() == (project / f"{run}.safetensors").read_bytes()
            )
        write_tensors(project / "logits.safetensors", logits, read_meta(EXP.final_logits))
        assert EXP.final_logits.read_bytes() == (project / "logits.safetensors").read_bytes()

    def test_a_budget_below_one_prompt_stops_before_writing(self, project, capsys):
        from patchsweep.stages import capture, compose, tokenize

        compose.run(EXP, ["capture.memory_budget_mb=0.001"])
        tokenize.run(EXP)
        err = run_and_fail(capture.run, capsys, EXP)
        assert "capture.memory_budget_mb=0.001 is too small for one prompt" in err
        assert "fix: set capture.memory_budget_mb to at least" in err
        assert not EXP.activations("clean").exists() and not EXP.final_logits.exists()


class TestWhatIsStored:
    """Attention patterns and per-position logits, against a plain forward pass."""

    def test_patterns_are_the_attention_weights_with_keys_padded(self, tiny_gpt2, prompts):
        ids, lengths = prompts
        got = capture_run(tiny_gpt2, ids, lengths, ("resid", "pattern"), progress=False)
        row, n = 1, int(lengths[1])
        with torch.no_grad():
            out = tiny_gpt2.hf(ids[row : row + 1, :n], output_attentions=True)
        for layer, weights in enumerate(out.attentions):  # (1, heads, n, n)
            stored = got["pattern"][row, layer, :n].transpose(0, 1)  # (heads, n, T)
            torch.testing.assert_close(stored[..., :n], weights[0], atol=1e-6, rtol=0)
            assert bool((stored[..., n:] == 0).all())

    def test_logits_at_score_positions(self, tiny_gpt2, prompts):
        ids, lengths = prompts
        scored = torch.tensor([[int(n) - 3, int(n) - 2, int(n) - 1] for n in lengths])
        scored[3, 0] = -1  # a padded slot
        got = capture_run(tiny_gpt2, ids, lengths, score_positions=scored, progress=False)
        assert got["logits"].shape == (len(LENGTHS), 3, tiny_gpt2.dims.vocab_size)
        for row, n in enumerate(LENGTHS):
            with torch.no_grad():
                plain = tiny_gpt2.hf(ids[row : row + 1, :n]).logits[0].float()
            keep = scored[row] >= 0
            torch.testing.assert_close(
                got["logits"][row][keep], plain[scored[row][keep]], atol=1e-5, rtol=0
            )


class TestStorageDtype:
    """capture.storage_dtype: the activations on disk in half precision, the logits not."""

    @pytest.mark.parametrize("storage", [torch.float16, torch.bfloat16])
    def test_files_hold_the_storage_dtype_in_half_the_bytes(
        self, tiny_gpt2, prompts, in_memory, tmp_path, storage
    ):
        full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
        stream(tiny_gpt2, prompts, full, rows=64)
        logits = stream(tiny_gpt2, prompts, half, rows=64, storage=storage)
        stored = read_tensors(half)
        for key, value in stored.items():
            assert value.dtype == storage, key
            assert torch.equal(value, in_memory[key].to(storage)), key  # rounded, nothing else
        assert logits.dtype == torch.float32 and torch.equal(logits, in_memory["logits"])
        data = sum(v.nbytes for v in read_tensors(full).values())
        assert sum(v.nbytes for v in stored.values()) * 2 == data
        # the rest is the header, which names the same tensors
        assert full.stat().st_size - data == half.stat().st_size - data // 2

    def test_values_beyond_float16_stop_the_capture_with_the_fix(self):
        big = torch.tensor([1.0, -7e4])
        with pytest.raises(DataError) as raised:
            as_stored(big, torch.float16, "the clean run's resid")
        assert "the clean run's resid holds values up to 70000" in raised.value.problem
        assert "capture.storage_dtype float16 (at most 65504)" in raised.value.problem
        assert "capture.storage_dtype=bfloat16" in raised.value.fix
        assert as_stored(big, torch.bfloat16, "resid").dtype == torch.bfloat16
        assert as_stored(big, None, "resid") is big

    def test_null_stores_the_files_as_before(self, project, tiny_gpt2):
        """Null is the default: model-dtype tensors and no storage entry in the metadata,
        so the bytes are those the stage wrote before the option existed."""
        from patchsweep.stages import capture as stage
        from patchsweep.stages import compose, tokenize
        from patchsweep.stored import load_tokenized

        compose.run(EXP)
        tokenize.run(EXP)
        stage.run(EXP)
        _, tokens = load_tokenized(EXP)
        before = {**tiny_gpt2.identity(), "tokens_hash": tokens, "seed": 0}
        assert read_meta(EXP.final_logits) == before
        for run in RUNS:
            assert read_meta(EXP.activations(run)) == {**before, "run": run}
            tensors = read_tensors(EXP.activations(run))
            assert {v.dtype for v in tensors.values()} == {torch.float32}
            write_tensors(project / "before.safetensors", tensors, {**before, "run": run})
            assert (
                EXP.activations(run).read_bytes() == (project / "before.safetensors").read_bytes()
            )
