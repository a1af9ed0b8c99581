"""Content hashes of the inputs outside conf/: what changes them and what does not."""

from __future__ import annotations

import sys

from patchsweep.fingerprint import file_digest, folder_digest, model_revision, module_source


def test_any_weight_format_changes_the_folder_hash(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"old weights")
    before = folder_digest(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"new weights")
    assert folder_digest(tmp_path) != before
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"a shard")
    assert folder_digest(tmp_path) != before


def test_model_cards_and_hidden_files_do_not(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    before = folder_digest(tmp_path)
    (tmp_path / "README.md").write_text("a model card")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "lock").write_text("x")
    assert folder_digest(tmp_path) == before


def test_a_renamed_file_changes_the_hash(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"w")
    before = folder_digest(tmp_path)
    (tmp_path / "a.bin").rename(tmp_path / "b.bin")
    assert folder_digest(tmp_path) != before


def test_local_folder_revision_is_its_hash_hub_id_keeps_its_revision(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    assert model_revision(str(tmp_path), None) == folder_digest(tmp_path)
    commit = "0123456789abcdef0123456789abcdef01234567"
    assert model_revision("no-such-org/no-such-model", commit) == commit
    assert model_revision("no-such-org/no-such-model", None) == "main"  # not in the cache


def test_module_source_is_found_from_the_project_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the project root is put first
    (tmp_path / "mymetric_for_fingerprint.py").write_text("def f(*a): return 0\n")
    source = module_source("mymetric_for_fingerprint")
    assert source == tmp_path / "mymetric_for_fingerprint.py"
    assert file_digest(source).startswith("sha256:")
    assert module_source("no_such_module_anywhere") is None
