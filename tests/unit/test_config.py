"""Config keys that the schema's types alone cannot check, refused at compose time."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchsweep.config import compose_config, to_object
from patchsweep.errors import ConfigError

CONF = Path(__file__).resolve().parents[2] / "conf"


class TestStorageDtype:
    """capture.storage_dtype: null (the model's dtype), float16 or bfloat16."""

    def test_null_by_default(self):
        assert to_object(compose_config([], CONF)).capture.storage_dtype is None

    @pytest.mark.parametrize("name", ["float16", "bfloat16"])
    def test_half_precision_composes(self, name):
        cfg = to_object(compose_config([f"capture.storage_dtype={name}"], CONF))
        assert cfg.capture.storage_dtype == name

    @pytest.mark.parametrize("name", ["float32", "fp16", "int8"])
    def test_other_values_name_the_key_and_the_choices(self, name):
        with pytest.raises(ConfigError) as raised:
            compose_config([f"capture.storage_dtype={name}"], CONF)
        assert raised.value.problem == f"capture.storage_dtype is {name!r}"
        assert "use one of: float16, bfloat16 (half the disk of float32), or null" in (
            raised.value.fix
        )
