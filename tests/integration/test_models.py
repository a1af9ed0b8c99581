"""Loading: dtype and device choices fail early with the fix, remote models reach nnsight
with ``remote=True``, and a missing path or an unknown architecture says what to do."""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import WORDS, make_tokenizer

from patchsweep.capture import capture_run
from patchsweep.components import ARCHITECTURES
from patchsweep.config import ModelConfig
from patchsweep.errors import ConfigError, ModelLoadError
from patchsweep.models import check_device, load_model, load_tokenizer

IDS = torch.tensor([[1, 3, 7, 4, 8, 9, 10]])  # "When John and Mary went to the"


def config(path: Path | str, **kwargs: Any) -> ModelConfig:
    return ModelConfig(name="tiny", path=str(path), **kwargs)


class TestDtype:
    """model.dtype: the weights' dtype; metrics and captured logits stay float32."""

    @pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
    def test_half_precision_loads_and_captures_float32_logits(self, tiny_gpt2_dir, dtype):
        full = load_model(config(tiny_gpt2_dir))
        half = load_model(config(tiny_gpt2_dir, dtype=dtype))
        assert next(half.hf.parameters()).dtype == getattr(torch, dtype)
        assert half.identity()["dtype"] == dtype
        lengths = torch.tensor([IDS.shape[1]])
        want = capture_run(full, IDS, lengths, progress=False)["logits"]
        got = capture_run(half, IDS, lengths, progress=False)
        assert got["logits"].dtype == torch.float32
        assert got["resid"].dtype == getattr(torch, dtype)
        torch.testing.assert_close(got["logits"], want, atol=0.05, rtol=0.05)

    def test_an_unknown_dtype_names_the_field_and_the_choices(self, tiny_gpt2_dir):
        with pytest.raises(ConfigError, match=r"model\.dtype is 'fp8'") as err:
            load_model(config(tiny_gpt2_dir, dtype="fp8"))
        assert "float32, bfloat16, float16" in err.value.fix


class TestDevice:
    """model.device: checked before any weights are read."""

    def test_cuda_without_a_gpu(self, tiny_gpt2_dir, monkeypatch):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        with pytest.raises(ConfigError) as err:
            load_model(config(tiny_gpt2_dir, device="cuda"))
        assert err.value.problem == (
            "model.device is 'cuda' but torch.cuda.is_available() is False"
        )
        assert err.value.fix == "use cpu, or install a CUDA build of torch"

    def test_a_gpu_index_beyond_the_visible_ones(self, monkeypatch):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
        check_device("cuda:1")
        with pytest.raises(ConfigError, match="only 2 CUDA device") as err:
            check_device("cuda:2")
        assert "cuda:0 to cuda:1" in err.value.fix

    def test_mps_without_apple_silicon(self, monkeypatch):
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
        with pytest.raises(ConfigError, match=r"mps.is_available\(\) is False"):
            check_device("mps")

    def test_an_unknown_device_lists_the_choices(self):
        with pytest.raises(ConfigError, match=r"model\.device is 'gpu'") as err:
            check_device("gpu")
        assert err.value.fix == "use one of: cpu, cuda, cuda:N, mps, auto"

    def test_auto_needs_accelerate(self, monkeypatch):
        real = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *a: None if name == "accelerate" else real(name, *a),
        )
        with pytest.raises(ConfigError, match="accelerate package is not installed"):
            check_device("auto")

    def test_auto_places_the_model_with_device_map(self, tiny_gpt2_dir, monkeypatch):
        """On this CPU-only machine accelerate places everything on the CPU."""
        from transformers import AutoModelForCausalLM

        real = AutoModelForCausalLM.from_pretrained.__func__
        seen = {}

        def spy(cls, *args, **kwargs):
            seen.update(kwargs)
            return real(cls, *args, **kwargs)

        monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
        model = load_model(config(tiny_gpt2_dir, device="auto"))
        assert seen["device_map"] == "auto"
        assert model.device == str(model.hf.get_input_embeddings().weight.device)
        lengths = torch.tensor([IDS.shape[1]])
        assert capture_run(model, IDS, lengths, progress=False)["logits"].isfinite().all()


@pytest.fixture
def recording_nnsight(monkeypatch, tiny_gpt2_dir, tmp_path):
    """nnsight.LanguageModel, recording how it is built and traced.

    The real class builds the model (a weightless skeleton for a hub id); the hub id
    org/tiny-gpt2 is served from a local folder, and a remote trace stops at the
    record, since NDIF is out of reach.
    """
    import nnsight
    from transformers import AutoTokenizer

    hub = {"org/tiny-gpt2": str(tiny_gpt2_dir)}
    built: list[tuple[tuple, dict]] = []
    traced: list[dict] = []

    class Recording(nnsight.LanguageModel):
        def __init__(self, source: Any, *args: Any, **kwargs: Any) -> None:
            built.append(((source, *args), kwargs))
            super().__init__(hub.get(source, source), *args, **kwargs)

        def trace(self, *inputs: Any, **kwargs: Any) -> Any:
            traced.append(kwargs)
            if kwargs.get("remote"):
                return contextlib.nullcontext()
            return super().trace(*inputs, **kwargs)

    real = AutoTokenizer.from_pretrained.__func__

    def from_hub(cls, path, *args, **kwargs):
        return real(cls, hub.get(path, path), *args, **kwargs)

    monkeypatch.setattr(nnsight, "LanguageModel", Recording)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", classmethod(from_hub))
    monkeypatch.chdir(tmp_path)  # nothing named org/ here: the id reads as a hub id
    return built, traced


class TestRemote:
    """model.remote: the hub id goes to nnsight, and traces carry remote=True."""

    def test_the_hub_id_and_remote_flag_reach_nnsight(self, recording_nnsight, monkeypatch):
        built, traced = recording_nnsight
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # NDIF's GPU, not ours
        model = load_model(
            config("org/tiny-gpt2", remote=True, revision="v1", dtype="bfloat16", device="cuda")
        )
        [(args, kwargs)] = built
        assert args == ("org/tiny-gpt2",)
        assert kwargs["revision"] == "v1" and kwargs["dtype"] is torch.bfloat16
        assert kwargs["tokenizer"] is model.tokenizer
        assert model.remote and model.device == "cpu" and model.revision == "v1"
        assert next(model.hf.parameters()).device.type == "meta"  # no weights here
        assert model.arch is ARCHITECTURES["gpt2"] and model.dims.n_layers == 2
        with model.trace(IDS, logits_to_keep=1):
            pass
        assert traced == [{"logits_to_keep": 1, "remote": True}]

    def test_a_local_model_is_wrapped_and_traced_locally(self, recording_nnsight, tiny_gpt2_dir):
        built, traced = recording_nnsight
        model = load_model(config(tiny_gpt2_dir))
        [(args, _)] = built
        assert args[0] is model.hf and not model.remote
        with model.trace(IDS):
            logits = model.lm.output.logits.save()
        assert traced == [{}] and logits.shape == (1, IDS.shape[1], model.dims.vocab_size)

    def test_a_local_folder_cannot_run_remotely(self, tiny_gpt2_dir):
        with pytest.raises(ConfigError, match=r"model\.remote is true but model\.path"):
            load_model(config(tiny_gpt2_dir, remote=True))


class TestWhereTheModelIs:
    def test_a_missing_folder(self, tmp_path):
        with pytest.raises(ModelLoadError, match="does not exist"):
            load_model(config(tmp_path / "nope"))

    def test_an_unsupported_architecture_lists_the_supported_ones(self, tmp_path):
        from transformers import GPTJConfig

        GPTJConfig(n_layer=1, n_head=2, n_embd=8, vocab_size=20).save_pretrained(tmp_path)
        with pytest.raises(ConfigError, match="architecture 'gptj' is not supported") as err:
            load_model(config(tmp_path))  # no weights needed: the check comes first
        assert ", ".join(sorted(ARCHITECTURES)) in err.value.fix
        assert "ARCHITECTURES in src/patchsweep/components.py" in err.value.fix

    def test_a_word_level_tokenizer_survives_a_qwen2_folder(self, tmp_path):
        """transformers 5 would swap in Qwen2's own tokenizer class and lose the vocab."""
        from transformers import Qwen2Config

        Qwen2Config(vocab_size=len(WORDS) + 1).save_pretrained(tmp_path)
        make_tokenizer(WORDS).save_pretrained(tmp_path)
        tokenizer = load_tokenizer(config(tmp_path))
        ids = tokenizer("When John and Mary", add_special_tokens=False)["input_ids"]
        assert ids == [1, 3, 7, 4]
        assert tokenizer(" Tom", add_special_tokens=False)["input_ids"] == [5]
