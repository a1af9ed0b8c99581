"""The bad-input matrix: every way of feeding the pipeline something wrong ends with a
message that names the problem and the fix, exit status 2, and no output file left behind
(or, for suspicious but valid input, a warning)."""

from __future__ import annotations

import logging

import pytest
import torch
import yaml
from project import EXP, TINY_PAIRS, files_under, run_and_fail, run_through_patch, write_dataset
from safetensors.torch import load_file, save_file

from patchsweep.stages import compose, normalize, patch, tokenize


def set_sweep(project, name: str, spec: str) -> None:
    sweep_file = project / "conf" / "sweep" / "default.yaml"
    lines = [ln for ln in sweep_file.read_text().splitlines() if not ln.startswith(f"{name}:")]
    sweep_file.write_text("\n".join([*lines, f"{name}: {spec}", ""]))


def tokenize_fails(project, capsys, pairs) -> str:
    write_dataset(project, pairs)
    compose.run(EXP)
    err = run_and_fail(tokenize.run, capsys, EXP)
    assert "fix:" in err
    assert files_under(EXP.cache) == []
    return err


# --- prompts and answers -------------------------------------------------------------


def test_unequal_token_lengths(project, capsys):
    pairs = [dict(TINY_PAIRS[0], corrupted="When Mary and John went to the store , John gave")]
    err = tokenize_fails(project, capsys, pairs)
    assert "pair 0: clean has 14 tokens but corrupted has 11" in err
    assert "same token length" in err


def test_answer_of_several_tokens(project, capsys):
    err = tokenize_fails(project, capsys, [dict(TINY_PAIRS[0], correct=[" John Mary"])])
    assert "correct answer ' John Mary' is 2 tokens" in err and "single token" in err


def test_answer_missing_from_the_vocabulary(project, capsys):
    err = tokenize_fails(project, capsys, [dict(TINY_PAIRS[0], incorrect=[" Zebedee"])])
    assert "incorrect answer ' Zebedee' is not in the model's vocabulary" in err


def test_empty_dataset(project, capsys):
    err = tokenize_fails(project, capsys, [])
    assert "dataset.pairs is empty" in err


def test_empty_prompt(project, capsys):
    pair = dict(TINY_PAIRS[0], clean=" ", corrupted=" ", labels={})
    err = tokenize_fails(project, capsys, [pair])
    assert "pair 0: the clean prompt is empty" in err


def test_pair_missing_a_field(project, capsys):
    pair = {k: v for k, v in TINY_PAIRS[0].items() if k != "correct"}
    err = tokenize_fails(project, capsys, [pair])
    assert "dataset.pairs[0] lacks correct" in err


def test_label_naming_a_word_not_in_the_prompt(project, capsys):
    pair = dict(TINY_PAIRS[0], labels={"IO": "Bob"})
    err = tokenize_fails(project, capsys, [pair])
    assert "labels.IO: 'Bob' does not occur 1 time(s)" in err


def test_duplicate_prompts_warn_but_run(project, caplog):
    write_dataset(project, [TINY_PAIRS[0], TINY_PAIRS[0], TINY_PAIRS[1]])
    compose.run(EXP)
    with caplog.at_level(logging.WARNING):
        tokenize.run(EXP)
    assert "1 prompt pair(s) occur more than once" in caplog.text
    assert EXP.tokens.is_file()


def test_clean_metric_equal_to_corrupted(project, capsys):
    same = [dict(p, corrupted=p["clean"]) for p in TINY_PAIRS]
    write_dataset(project, same)
    run_through_patch(sweeps=("resid_layer",))
    err = run_and_fail(normalize.run, capsys, EXP)
    assert "the clean and corrupted metric are equal" in err and "undefined" in err
    assert not EXP.table.exists() and not EXP.baselines.exists()


# --- config --------------------------------------------------------------------------


def test_unknown_config_key(project, capsys):
    plot_file = project / "conf" / "plot" / "default.yaml"
    plot_file.write_text(plot_file.read_text() + "colour_map: viridis\n")
    err = run_and_fail(compose.run, capsys, EXP)
    assert "Key 'colour_map' not in 'PlotConfig'" in err and "fix:" in err
    assert not EXP.config.exists()


def test_misspelled_sweep_key(project, capsys):
    set_sweep(project, "head", "{component: z, layer: [0]}")
    err = run_and_fail(compose.run, capsys, EXP)
    assert "Key 'layer' not in 'SweepConfig'" in err
    assert not EXP.config.exists()


def test_several_scored_positions_with_a_final_position_metric(project, capsys):
    overrides = ["+dataset.score_from=S2", "metric.name=logit_diff"]
    err = run_and_fail(compose.run, capsys, EXP, overrides)
    assert "dataset.score_from scores several positions" in err and "mean_logprob" in err
    assert not EXP.config.exists()


def test_scoring_from_a_label_the_pairs_lack(project, capsys):
    write_dataset(project, TINY_PAIRS)
    compose.run(EXP, ["+dataset.score_from=REP2", "metric.name=mean_logprob"])
    err = run_and_fail(tokenize.run, capsys, EXP)
    assert "dataset.score_from is 'REP2'" in err and "use one of the labels" in err
    assert files_under(EXP.cache) == []


def test_unknown_config_group_option(project, capsys):
    err = run_and_fail(compose.run, capsys, EXP, ["dataset=ioj"])
    assert "ioj" in err and "fix:" in err
    assert not EXP.config.exists()


def test_wrong_type_in_config(project, capsys):
    err = run_and_fail(compose.run, capsys, EXP, ["engine.max_batch=lots"])
    assert "max_batch" in err and "fix:" in err
    assert not EXP.config.exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stats.normalization=paired", "stats.normalization is 'paired'"),
        ("stats.ci=95", "stats.ci is 95.0"),
        ("stats.bootstrap=0", "stats.bootstrap is 0"),
    ],
)
def test_bad_statistics_settings(project, capsys, override, message):
    err = run_and_fail(compose.run, capsys, EXP, [override])
    assert message in err and "fix:" in err
    assert not EXP.config.exists()


def test_unknown_component(project, capsys):
    set_sweep(project, "head", "{component: mlp}")
    err = run_and_fail(compose.run, capsys, EXP)
    assert "sweeps.head.component is 'mlp'" in err and "resid_pre" in err
    assert not EXP.config.exists()


def test_heads_on_a_component_without_heads(project, capsys):
    set_sweep(project, "head", "{component: attn_out, heads: [0]}")
    err = run_and_fail(compose.run, capsys, EXP)
    assert "sweeps.head.heads is set but component is 'attn_out'" in err


def test_sweep_listed_in_params_but_not_defined(project, capsys):
    (project / "params.yaml").write_text(yaml.safe_dump({"sweep": ["resid_layer", "nope"]}))
    err = run_and_fail(compose.run, capsys, EXP)
    assert "params.yaml lists sweep(s) ['nope']" in err
    assert not EXP.config.exists()


# --- the model -------------------------------------------------------------------------


def test_missing_model_path(project, capsys):
    (project / "conf" / "model" / "tiny.yaml").write_text(
        "name: gone\npath: ./models/does-not-exist\n"
    )
    compose.run(EXP)
    err = run_and_fail(tokenize.run, capsys, EXP)
    assert "model path './models/does-not-exist' does not exist" in err
    assert files_under(EXP.cache) == []


def test_layer_outside_the_model(project, capsys):
    set_sweep(project, "head", "{component: z, positions: all, layers: [0, 7]}")
    run_through_patch(sweeps=())
    err = run_and_fail(patch.run, capsys, EXP, "head")
    assert "sweeps.head.layers has [7], but the model has 2 layers (0–1)" in err
    assert not EXP.patch("head").exists()


def test_head_outside_the_model(project, capsys):
    set_sweep(project, "head", "{component: z, positions: all, heads: [9]}")
    run_through_patch(sweeps=())
    err = run_and_fail(patch.run, capsys, EXP, "head")
    assert "sweeps.head.heads has [9], but the model has 4 heads (0–3)" in err
    assert not EXP.patch("head").exists()


def test_each_position_with_prompts_of_different_lengths(project, capsys):
    short = dict(
        TINY_PAIRS[1],
        clean="When Tom and Ann went to the park , Ann gave",
        corrupted="When Ann and Tom went to the park , Tom gave",
        correct=[" a"],
        labels={},
    )
    write_dataset(project, [TINY_PAIRS[0], short])
    set_sweep(project, "resid_layer_pos", "{component: resid_pre, positions: each}")
    run_through_patch(sweeps=())
    err = run_and_fail(patch.run, capsys, EXP, "resid_layer_pos")
    assert "positions is 'each' but the prompts have different lengths" in err
    assert "positions: labels" in err


def test_prompt_longer_than_the_context(project, capsys):
    long = " ".join(["the"] * 70) + " to"
    write_dataset(project, [dict(TINY_PAIRS[0], clean=long, corrupted=long, labels={})])
    compose.run(EXP)
    tokenize.run(EXP)
    from patchsweep.stages import capture

    err = run_and_fail(capture.run, capsys, EXP)
    assert "more than the model's 64 positions" in err
    assert not EXP.activations("clean").exists()


def test_memory_budget_too_small_for_one_row(project, capsys):
    run_through_patch(sweeps=())
    compose.run(EXP, ["engine.memory_budget_mb=0.001"])
    err = run_and_fail(patch.run, capsys, EXP, "head")
    assert "engine.memory_budget_mb=0.001 is too small for one row" in err
    assert not EXP.patch("head").exists()


# --- cached files --------------------------------------------------------------------


def rewrite_meta(path, **changes) -> None:
    from patchsweep.io import read_meta, read_tensors, write_tensors

    write_tensors(path, read_tensors(path), {**read_meta(path), **changes})


REBUILD = "capture stage rebuilds them"


@pytest.mark.parametrize(
    ("key", "value", "says", "fix"),
    [
        ("model", "gpt2", "was made with model='gpt2'", REBUILD),
        (
            "tokens_hash",
            "0123456789abcdef",
            "was made with tokens_hash='0123456789abcdef'",
            REBUILD,
        ),
        (
            "dtype",
            "bfloat16",
            "computed in bfloat16, but this run loads the model in float32 (model.dtype)",
            "captures them again in float32, or set model.dtype back to bfloat16",
        ),
        (
            "storage_dtype",
            "float16",
            "stored with capture.storage_dtype=float16, but this run's config has "
            "capture.storage_dtype=null",
            "stores them again as configured, or set capture.storage_dtype back to float16",
        ),
    ],
    ids=["other-model", "other-tokenisation", "other-dtype", "other-storage-dtype"],
)
def test_activation_file_from_other_inputs(project, capsys, key, value, says, fix):
    run_through_patch(sweeps=())
    rewrite_meta(EXP.activations("clean"), **{key: value})
    err = run_and_fail(patch.run, capsys, EXP, "head")
    assert says in err and fix in err
    assert not EXP.patch("head").exists()


def test_truncated_activation_file(project, capsys):
    run_through_patch(sweeps=())
    path = EXP.activations("clean")
    path.write_bytes(path.read_bytes()[:1000])
    err = run_and_fail(patch.run, capsys, EXP, "head")
    assert "is not a readable safetensors file" in err and "truncated or corrupt" in err
    assert not EXP.patch("head").exists()


def test_nan_in_activations(project, capsys):
    run_through_patch(sweeps=())
    path = EXP.activations("clean")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = dict(handle.metadata())
    tensors = load_file(str(path))
    tensors["z"][0, 0, 0, 0, 0] = float("nan")
    save_file(tensors, str(path), metadata=meta)
    err = run_and_fail(patch.run, capsys, EXP, "head")
    assert "z holds NaN or inf values" in err
    assert not EXP.patch("head").exists()


def test_unwritable_results_folder(project, capsys):
    run_through_patch(sweeps=("resid_layer", "resid_layer_pos", "head"))
    EXP.table.mkdir(parents=True)  # a folder where the results table goes
    err = run_and_fail(normalize.run, capsys, EXP)
    assert f"cannot write {EXP.table}" in err and "fix:" in err
    assert not EXP.baselines.exists()
    assert [p for p in files_under(EXP.results) if p.name.endswith(".tmp")] == []


def test_no_pickle_on_the_data_path():
    """Data is read as safetensors and JSON only: nothing that can execute code."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2]
    offenders = [
        f"{path}:{n}"
        for path in (root / "src").rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"torch\.load|pickle", line)
    ]
    assert offenders == []
    assert torch.__version__  # torch importable, so the check is not vacuous


# --- the user's own prompt files ---------------------------------------------------------

HEADER = "clean,corrupted,correct,incorrect,labels\n"
GOOD_ROW = (
    '"When John and Mary went to the store , Mary gave a book to",'
    '"When Mary and John went to the store , John gave a book to", John, Mary,IO=John;S2=Mary#2\n'
)


def file_dataset(project, name: str, text: str | bytes) -> str:
    path = project / name
    if isinstance(text, bytes):
        path.write_bytes(text)  # an encoding of the user's choosing
    else:
        path.write_text(text, encoding="utf-8")
    (project / "conf" / "dataset" / "tiny.yaml").write_text(
        yaml.safe_dump({"name": "tiny", "generator": "file", "options": {"path": str(path)}})
    )
    return str(path)


def file_fails(project, capsys, name: str, text: str | bytes) -> tuple[str, str]:
    path = file_dataset(project, name, text)
    compose.run(EXP)
    err = run_and_fail(tokenize.run, capsys, EXP)
    assert path in err and "fix:" in err
    assert files_under(EXP.cache) == []
    return err, path


def test_prompt_file_is_read_with_labels_and_answer_sets(project):
    file_dataset(project, "prompts.csv", HEADER + GOOD_ROW.replace(", John,", ", John| a,"))
    compose.run(EXP)
    tokenize.run(EXP)
    from patchsweep.stored import load_tokenized

    pairs, _ = load_tokenized(EXP)
    assert pairs.correct_ids.shape == (1, 2)
    assert pairs.label_positions["S2"].tolist() == [9]


def test_prompt_file_jsonl_is_read(project):
    row = {
        "clean": "When Tom and Ann went to the park , Ann gave a ball to",
        "corrupted": "When Ann and Tom went to the park , Tom gave a ball to",
        "correct": [" Tom"],
        "incorrect": " Ann",
        "labels": {"IO": "Tom"},
    }
    import json

    file_dataset(project, "prompts.jsonl", json.dumps(row) + "\n")
    compose.run(EXP)
    tokenize.run(EXP)
    assert EXP.tokens.is_file()


def test_prompt_file_missing_a_column(project, capsys):
    err, _ = file_fails(project, capsys, "p.csv", "clean,corrupted,correct\na,b,c\n")
    assert "the header lacks column(s) incorrect" in err


def test_prompt_file_with_unequal_lengths(project, capsys):
    bad = GOOD_ROW.replace('John gave a book to",', 'John gave",', 1)
    err, path = file_fails(project, capsys, "p.csv", HEADER + GOOD_ROW + bad)
    assert f"{path}, line 3: clean has 14 tokens but corrupted has 11" in err


def test_prompt_file_with_a_multi_token_answer(project, capsys):
    bad = GOOD_ROW.replace(", John, Mary,", ", John Tom, Mary,")
    err, path = file_fails(project, capsys, "p.csv", HEADER + bad)
    assert f"{path}, line 2: correct answer ' John Tom' is 2 tokens" in err


def test_empty_prompt_file(project, capsys):
    err, _ = file_fails(project, capsys, "p.csv", HEADER)
    assert "has no prompt rows" in err


def test_malformed_prompt_file_row(project, capsys):
    err, path = file_fails(project, capsys, "p.csv", HEADER + GOOD_ROW + "only,three,cells\n")
    assert f"{path}, line 3: malformed row" in err


def test_malformed_jsonl_line(project, capsys):
    err, path = file_fails(project, capsys, "p.jsonl", '{"clean": "a", \n')
    assert f"{path}, line 1: not valid JSON" in err


JSONL_ROW = {
    "clean": "When Tom and Ann went to the park , Ann gave a ball to",
    "corrupted": "When Ann and Tom went to the park , Tom gave a ball to",
    "correct": [" Tom"],
    "incorrect": " Ann",
    "labels": {"IO": "Tom", "S2": "Ann#2"},
}


def jsonl(*rows: dict) -> str:
    import json

    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("clean", None, "clean is null, not a string"),
        ("corrupted", 5, "corrupted is 5 (int), not a string"),
        ("correct", None, "correct is null, not a string or a list of strings"),
        ("incorrect", [" Ann", None], "incorrect[1] is null, not a string"),
        ("labels", {"IO": 3}, "labels.IO is 3 (int), not a string"),
        ("labels", "IO=Tom", "labels is 'IO=Tom' (str), not a mapping"),
    ],
    ids=[
        "null-clean",
        "number-corrupted",
        "null-correct",
        "null-in-answers",
        "number-label",
        "text-labels",
    ],
)
def test_prompt_file_with_a_null_or_non_text_field(project, capsys, field, value, says):
    """JSON hands null and numbers over as such; str() would make them prompts like 'None'."""
    text = jsonl(JSONL_ROW, {**JSONL_ROW, field: value})
    err, path = file_fails(project, capsys, "p.jsonl", text)
    assert f"{path}, line 2: {says}" in err


def test_pair_with_a_null_prompt(project, capsys):
    err = tokenize_fails(project, capsys, [dict(TINY_PAIRS[0], clean=None)])
    assert "dataset.pairs[0]: clean is null, not a string" in err and "quoted string" in err


def test_prompt_word_missing_from_the_vocabulary(project, capsys):
    row = {**JSONL_ROW, "corrupted": JSONL_ROW["corrupted"].replace("park", "Zebedee")}
    err, path = file_fails(project, capsys, "p.jsonl", jsonl(JSONL_ROW, row))
    assert (
        f"{path}, line 2: the corrupted prompt has word(s) not in the model's vocabulary: "
        "'Zebedee' (the tokenizer turns them into '<unk>')" in err
    )
    assert "dataset.allow_unknown_tokens=true" in err


def test_unknown_prompt_words_pass_when_allowed(tiny_gpt2, caplog):
    from patchsweep.datasets.explicit import pairs_from_config
    from patchsweep.errors import DataError
    from patchsweep.tokenize import tokenize_pairs

    odd = dict(TINY_PAIRS[0], clean=TINY_PAIRS[0]["clean"].replace("store", "Zebedee"))
    pairs = pairs_from_config([TINY_PAIRS[1], odd])
    tokenizer = tiny_gpt2.tokenizer
    with pytest.raises(DataError, match=r"pair 1: the clean prompt has word\(s\) .*'Zebedee'"):
        tokenize_pairs(pairs, tokenizer)
    with caplog.at_level(logging.WARNING):
        got = tokenize_pairs(pairs, tokenizer, allow_unknown=True)
    assert "1 prompt word(s) are not in the model's vocabulary, e.g. 'Zebedee'" in caplog.text
    unk = tokenizer.unk_token_id
    assert got.clean_ids[1].tolist().count(unk) == 1 and unk not in got.corrupted_ids[1]
    assert got.label_positions["S2"].tolist() == [9, 9]


@pytest.mark.parametrize("spec", ["Mary#0", "Mary#x", "Mary#", "Mary#-1"])
def test_label_occurrence_that_is_not_a_count(project, capsys, spec):
    bad = GOOD_ROW.replace("S2=Mary#2", f"S2={spec}")
    err, path = file_fails(project, capsys, "p.csv", HEADER + GOOD_ROW + bad)
    assert f"{path}, line 3: labels.S2: {spec!r} has" in err
    assert "not a whole number ≥ 1" in err and "write Mary#2 for the second occurrence" in err


def test_prompt_file_lines_count_blank_lines_and_multi_line_cells(project, capsys):
    """A row is named by the physical line it starts on, whatever precedes it."""
    multi = GOOD_ROW.replace("IO=John;S2=Mary#2", '"IO=John;\nS2=Mary#2"')
    bad = multi.replace('John gave a book to",', 'John gave",', 1)
    text = HEADER + "\n" + GOOD_ROW + multi + bad  # lines 1, 2, 3, 4–5, 6–7
    err, path = file_fails(project, capsys, "p.csv", text)
    assert f"{path}, line 6: clean has 14 tokens but corrupted has 11" in err


def test_prompt_file_with_an_unclosed_quote(project, capsys):
    end = GOOD_ROW.rindex('to",')
    bad = GOOD_ROW[:end] + "to," + GOOD_ROW[end + 4 :]  # the corrupted cell's quote stays open
    err, path = file_fails(project, capsys, "p.csv", HEADER + GOOD_ROW + bad + GOOD_ROW)
    assert f"{path}, line 3: malformed row" in err
    assert "it runs on to line 4: is a quote left open?" in err


@pytest.mark.parametrize("name", ["p.csv", "p.jsonl"])
def test_prompt_file_with_a_byte_order_mark(project, name):
    """Excel and Notepad start UTF-8 files with a BOM; it is not part of the first column."""
    text = HEADER + GOOD_ROW if name.endswith(".csv") else jsonl(JSONL_ROW)
    file_dataset(project, name, b"\xef\xbb\xbf" + text.encode())
    compose.run(EXP)
    tokenize.run(EXP)
    from patchsweep.stored import load_tokenized

    pairs, _ = load_tokenized(EXP)
    assert pairs.label_positions["S2"].tolist() == [9]


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["plain", "bom"])
def test_prompt_file_not_in_utf8(project, capsys, bom):
    latin1 = GOOD_ROW.replace("the store", "the café").encode("latin-1")
    data = bom + HEADER.encode() + GOOD_ROW.encode() + latin1
    offset = data.index(b"\xe9")
    err, path = file_fails(project, capsys, "p.csv", data)
    assert f"{path}, line 3: byte 0xe9 at byte offset {offset} is not UTF-8" in err
    assert "save it as UTF-8" in err


# --- names that become paths, and keys the schema does not know ---------------------------


@pytest.mark.parametrize(
    "override",
    ["dataset=../../../x", "model=../organism", "dataset=[tiny,../x]"],
    ids=["dataset", "model", "dataset-list"],
)
def test_config_group_choice_that_is_a_path(project, capsys, override):
    outside = project.parent / "x.yaml"
    outside.write_text("name: x\n")
    err = run_and_fail(compose.run, capsys, EXP, [override])
    assert "is not a plain name" in err and "no '/', no '..'" in err
    assert not EXP.config.exists()
    outside.unlink()


@pytest.mark.parametrize("name", ["../../escape", "a/b", "/abs"])
def test_experiment_names_that_are_paths(project, capsys, name):
    from patchsweep.paths import ExperimentPaths

    before = set(project.parent.iterdir())
    err = run_and_fail(lambda: compose.run(ExperimentPaths("tiny", name)), capsys)
    assert f"dataset name {name!r} is not a plain name" in err
    assert set(project.parent.iterdir()) == before
    assert not (project / "results").exists()


def test_sweep_name_that_is_a_path(project, capsys):
    set_sweep(project, "'../../out'", "{component: resid_pre, positions: all}")
    (project / "params.yaml").write_text(yaml.safe_dump({"sweep": ["../../out"]}))
    err = run_and_fail(compose.run, capsys, EXP)
    assert "sweep name '../../out' is not a plain name" in err
    assert not EXP.config.exists()


@pytest.mark.parametrize("stage", ["patch", "normalize"])
def test_sweep_name_that_is_a_path_in_a_hand_edited_config(project, capsys, stage):
    """Stages run by hand on a config.yaml that compose did not write refuse it too."""
    run_through_patch(sweeps=("resid_layer",))
    config = yaml.safe_load(EXP.config.read_text())
    config["sweeps"]["../../../escaped"] = config["sweeps"]["resid_layer"]
    EXP.config.write_text(yaml.safe_dump(config))
    args = ("../../../escaped",) if stage == "patch" else ()
    err = run_and_fail({"patch": patch.run, "normalize": normalize.run}[stage], capsys, EXP, *args)
    assert "sweep name '../../../escaped' is not a plain name" in err
    assert not list(project.parent.rglob("escaped*"))
    assert not EXP.table.exists()


def test_new_key_added_with_plus(project, capsys):
    err = run_and_fail(compose.run, capsys, EXP, ["+model.dtpye=bfloat16"])
    assert "Key 'dtpye' not in 'ModelConfig'" in err and "`+key=`" in err
    assert not EXP.config.exists()


def test_environment_variable_in_config(project, capsys, monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "hf_do_not_leak")
    err = run_and_fail(compose.run, capsys, EXP, ["model.name=${oc.env:SECRET_TOKEN}"])
    assert "model.name is '${oc.env:SECRET_TOKEN}', which reads an environment variable" in err
    assert "hf_do_not_leak" not in err
    assert not EXP.config.exists()


def test_duplicate_key_in_a_config_file(project, capsys):
    plot_file = project / "conf" / "plot" / "default.yaml"
    plot_file.write_text(plot_file.read_text() + "dpi: 100\n")
    err = run_and_fail(compose.run, capsys, EXP)
    assert "not valid YAML" in err and "found duplicate key dpi" in err
    assert str(plot_file) in err
    assert not EXP.config.exists()


def test_config_file_not_in_utf8(project, capsys):
    plot_file = project / "conf" / "plot" / "default.yaml"
    plot_file.write_bytes(plot_file.read_bytes() + b"# caf\xe9\n")
    err = run_and_fail(compose.run, capsys, EXP)
    assert f"{plot_file} is not UTF-8" in err and "save the file as UTF-8" in err
    assert not EXP.config.exists()


def test_metric_module_that_cannot_be_found(project, capsys):
    err = run_and_fail(compose.run, capsys, EXP, ["metric.name=nosuchmodule:fn"])
    assert "metric.name 'nosuchmodule:fn' is neither a built-in metric" in err
    assert not EXP.config.exists()


def test_window_longer_than_the_model(project, capsys):
    set_sweep(project, "head", "{component: mlp_out, positions: all, window: 5}")
    run_through_patch(sweeps=())
    err = run_and_fail(patch.run, capsys, EXP, "head")
    assert "sweeps.head.window is 5, but the model has 2 layers" in err
    assert not EXP.patch("head").exists()
