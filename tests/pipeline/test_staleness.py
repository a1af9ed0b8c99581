"""A result is never stale: editing an input that lives outside conf/ and the code — the
user's prompt file, a local model folder outside data/models/, a custom metric module —
reruns exactly the stages that read it under plain `dvc repro`, in a scratch git repo."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from project import BIN, TINY_PAIRS, make_dvc_repo, sh, write_params

CHAIN = {"tokenize", "capture", "patch", "normalize", "plot"}

METRIC_MODULE = '''"""A custom metric: the logit difference, scaled."""
SCALE = 1.0


def scaled_logit_diff(logits, correct, incorrect, clean_logits=None):
    logits = logits.float()
    return SCALE * (logits.gather(1, correct[:, :1]) - logits.gather(1, incorrect[:, :1]))[:, 0]
'''


def csv_row(pair: dict) -> str:
    labels = ";".join(f"{k}={v}" for k, v in pair["labels"].items())
    return (
        f'"{pair["clean"]}","{pair["corrupted"]}","{pair["correct"][0]}",'
        f'"{pair["incorrect"][0]}",{labels}\n'
    )


HEADER = "clean,corrupted,correct,incorrect,labels\n"


def repro(cwd: Path) -> set[str]:
    """Run `dvc repro`; the kinds of stage it ran besides compose (which always runs)."""
    out = sh(cwd, "dvc", "repro")
    ran = set(re.findall(r"Running stage '([^'@]+)@", out))
    assert "compose" in ran, out
    return ran - {"compose"}


def repro_fails(cwd: Path) -> str:
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(["dvc", "repro"], cwd=cwd, capture_output=True, text=True, env=env)
    assert done.returncode != 0, done.stdout
    return done.stdout + done.stderr


def results(root: Path) -> str:
    return (root / "results" / "tiny" / "tiny" / "results.csv").read_text()


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_gpt2_dir) -> Path:
    """One experiment whose prompts come from prompts/tiny.csv, whose model lives in
    models/tiny/ (outside data/models/), scored by the module mymetrics.py. Figures are
    PNG only: the claims here are about which stages rerun, and PDFs add 2 s of font
    subsetting to every plot run (test_determinism and test_stage_logging check them)."""
    root = make_dvc_repo(
        tmp_path_factory.mktemp("stale"), tiny_gpt2_dir, ["resid_layer_pos"], formats=["png"]
    )
    shutil.move(root / "data" / "models" / "tiny", root / "models" / "tiny")
    (root / "conf" / "model" / "tiny.yaml").write_text(
        yaml.safe_dump({"name": "tiny-gpt2", "path": "models/tiny"})
    )
    (root / "prompts").mkdir()
    (root / "prompts" / "tiny.csv").write_text(HEADER + csv_row(TINY_PAIRS[0]))
    (root / "conf" / "dataset" / "tiny.yaml").write_text(
        yaml.safe_dump(
            {"name": "tiny", "generator": "file", "options": {"path": "prompts/tiny.csv"}}
        )
    )
    (root / "mymetrics.py").write_text(METRIC_MODULE)
    (root / "conf" / "metric" / "mine.yaml").write_text("name: mymetrics:scaled_logit_diff\n")
    config = root / "conf" / "config.yaml"
    config.write_text(config.read_text().replace("metric: logit_diff", "metric: mine"))
    write_params(root, ["tiny"], ["tiny"], ["resid_layer_pos"])
    sh(root, "git", "add", "-A")
    sh(root, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "inputs")
    assert repro(root) >= CHAIN
    assert repro(root) == set()
    return root


def test_custom_metric_is_used(repo):
    config = yaml.safe_load((repo / "results" / "tiny" / "tiny" / "config.yaml").read_text())
    assert config["metric"]["name"] == "mymetrics:scaled_logit_diff"
    assert config["inputs"]["metric"].startswith("sha256:")
    assert config["inputs"]["prompts"].startswith("sha256:")


def test_prompt_file_edit_reruns_its_chain_and_changes_results(repo):
    before = results(repo)
    csv = repo / "prompts" / "tiny.csv"
    csv.write_text(csv.read_text() + csv_row(TINY_PAIRS[1]))
    assert repro(repo) == CHAIN
    assert results(repo) != before
    assert '"n_prompts": 2' in (repo / "results" / "tiny" / "tiny" / "baselines.json").read_text()


@pytest.mark.slow
def test_bad_prompt_file_fails_every_repro_until_fixed(repo):
    csv = repo / "prompts" / "tiny.csv"
    good = csv.read_text()
    csv.write_text(good + '"When John","When","x"\n')
    assert "malformed row" in repro_fails(repo)
    # the run cache must not bring back the previous file's tokens
    assert "malformed row" in repro_fails(repo)
    csv.write_text(good)
    assert repro(repo) <= CHAIN  # back to the good file: restored or rerun, never stale
    assert repro(repo) == set()


def test_custom_metric_edit_reruns_patch_and_normalize(repo):
    before = results(repo)
    module = repo / "mymetrics.py"
    module.write_text(module.read_text().replace("SCALE = 1.0", "SCALE = 2.0"))
    assert repro(repo) == {"patch", "normalize", "plot"}
    assert results(repo) != before


def replace_weights(folder: Path, fmt: str) -> None:
    """Perturb the model's weights and save them as safetensors or pytorch_model.bin."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.05)
    for old in [*folder.glob("*.safetensors"), *folder.glob("*.bin")]:
        old.unlink()
    if fmt == "safetensors":
        model.save_pretrained(folder)
    else:
        (folder / "config.json").write_text(model.config.to_json_string())
        torch.save(model.state_dict(), folder / "pytorch_model.bin")


@pytest.mark.parametrize("fmt", ["safetensors", pytest.param("bin", marks=pytest.mark.slow)])
def test_new_weights_outside_data_models_rerun_capture(repo, fmt):
    before = results(repo)
    replace_weights(repo / "models" / "tiny", fmt)
    ran = repro(repo)
    assert {"capture", "patch", "normalize"} <= ran
    assert results(repo) != before
