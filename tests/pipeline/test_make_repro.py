"""`make repro` prints the summary after `dvc repro` even when it fails, and fails with it.

A stand-in `dvc` (first on PATH) fails with status 3 after a stage recorded its failure,
as a real one would; the project is only what the summary reads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from project import REPO

FAILING_DVC = """#!/bin/sh
mkdir -p logs/stages
cat > logs/stages/compose+m+a.json <<JSON
{"stage": "compose", "args": ["m", "a"], "status": "failed", "seconds": 1.5,
 "finished": $(date +%s), "problem": "conf/dataset/a.yaml: no such dataset"}
JSON
echo "ERROR: failed to reproduce 'compose@m-a'" >&2
exit 3
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_summary_follows_a_failed_dvc_repro_and_make_fails(tmp_path):
    stage = {
        "matrix": {"model": "${model}", "dataset": "${dataset}"},
        "cmd": "python -m patchsweep.stages.compose ${item.model} ${item.dataset}",
    }
    (tmp_path / "dvc.yaml").write_text(
        yaml.safe_dump({"stages": {"compose": stage}}, sort_keys=False)
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"model": {"m": 1}, "dataset": {"a": 1}}))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dvc").write_text(FAILING_DVC)
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for tool in ("dvc", "python"):
        (bin_dir / tool).chmod(0o755)
    path = os.pathsep.join([str(bin_dir), os.environ["PATH"]])
    done = subprocess.run(
        ["make", "-s", "-f", str(REPO / "Makefile"), "repro", "STAMP=", "PLOTS_TEMPLATE="],
        cwd=tmp_path,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0, done.stdout  # make reports dvc's status 3 and exits 2
    assert "Error 3" in done.stderr, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "dvc repro: 0 stages ran, 1 failed, 0 not run (up to date or not reached)"
    assert lines[1].endswith("; dvc repro exited 3")
    assert "  FAILED compose@m-a after 1.5 s: conf/dataset/a.yaml: no such dataset" in lines, (
        done.stdout
    )
    record = json.loads((tmp_path / "logs/stages/compose+m+a.json").read_text())
    assert record["status"] == "failed"
