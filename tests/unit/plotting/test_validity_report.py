"""The report's validity table: every check of baselines.json, its deviation beside its
tolerance, and the answer accuracy."""

from __future__ import annotations

import pandas as pd

from patchsweep.plotting import ExperimentInfo, PlotStyle, write_report
from patchsweep.plotting.validity_report import NOT_RECORDED, accuracy_text, validity_rows

VALIDITY = {
    "resid_layer0_denoise": {
        "max_deviation": 1.23e-06,
        "tolerance": 0.0004,
        "passed": True,
        "expected": "clean",
    },
    "resid_layer0_noise": {
        "max_deviation": 0.0,
        "tolerance": 0.0004,
        "passed": True,
        "expected": "corrupted",
    },
    "empty_patch_corrupted": {
        "max_deviation": 3e-07,
        "tolerance": 0.0001,
        "passed": True,
        "expected": "corrupted",
    },
    "empty_patch_clean": {
        "max_deviation": 0.5,
        "tolerance": 0.0001,
        "passed": False,
        "expected": "clean",
    },
    "accuracy": {"definition": "logit_diff > 0", "clean": 0.75, "corrupted": 0.125},
    "passed": True,
}
TABLE = pd.DataFrame(
    [
        {
            "sweep": "attn",
            "component": "attn_out",
            "direction": "denoise",
            "layer": layer,
            "head": -1,
            "position": -1,
            "position_label": "all",
            "window": 1,
            "metric": 0.1 * layer,
            "normalized": 0.1 * layer,
            "sem": 0.01,
            "n_prompts": 4,
        }
        for layer in range(2)
    ]
)
INFO = ExperimentInfo(model="gpt2", dataset="ioi", metric="logit_diff")


def test_rows_follow_the_checks():
    rows = validity_rows(VALIDITY)
    assert rows[0] == (
        "whole residual stream at layer 0, denoise",
        "clean run",
        "1.2e-06",
        "0.0004",
        "pass",
    )
    assert [r[1] for r in rows] == ["clean run", "corrupted run", "corrupted run", "clean run"]
    assert rows[-1][-1] == "FAIL"


def test_accuracy_text():
    assert (
        accuracy_text(VALIDITY) == "Answer accuracy (logit_diff > 0): clean 75.0%, corrupted 12.5%."
    )
    undefined = {"accuracy": {"definition": "not defined: neg_kl compares no answers",
                              "clean": None, "corrupted": None}}  # fmt: skip
    assert accuracy_text(undefined) == "Answer accuracy: not defined: neg_kl compares no answers."


def test_both_pages_show_the_table(tmp_path):
    baselines = {"clean": 1.0, "corrupted": 0.0, "n_prompts": 4, "validity": VALIDITY}
    md, html, _ = write_report(TABLE, baselines, [], INFO, PlotStyle(), tmp_path)
    text = md.read_text()
    section = text.split("## Validity checks")[1].split("\n## ")[0]
    assert (
        "| whole residual stream at layer 0, noise | corrupted run | 0 | 0.0004 | pass |" in section
    )
    assert "| empty patch of the clean run | clean run | 0.5 | 0.0001 | FAIL |" in section
    assert "clean 75.0%, corrupted 12.5%" in section
    page = html.read_text()
    assert "<h2>Validity checks</h2>" in page
    assert '<td class="num">1.2e-06</td>' in page


def test_old_baselines_without_validity_say_so(tmp_path):
    md, html, _ = write_report(TABLE, {"n_prompts": 4}, [], INFO, PlotStyle(), tmp_path)
    assert NOT_RECORDED in md.read_text()
    assert NOT_RECORDED in html.read_text()
