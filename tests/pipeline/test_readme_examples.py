"""README.md's examples, run as written on the bundled model organism.

Every fenced block of README.md is accounted for, so a new example cannot slip in
untested:

* the Python block after ``<!-- notebook example -->`` is run (and compared with the
  pipeline's numbers) by ``tests/integration/test_api.py``; any other Python block fails
  the inventory until a test runs it;
* a YAML block is a config snippet: ``# conf/<group>/<option>.yaml`` on its first line,
  or sweep entries (``name: {component: …}``) for ``conf/sweep/default.yaml``. Each is
  written where it says it goes in a copy of ``conf/`` and composed with the project's
  own schema and checks (:func:`patchsweep.config.compose_config`); a sweep must fit the
  model that is shipped (its ``config.json``) and run through ``ps.sweep`` on four
  prompts, a dataset through the pipeline's compose and tokenize stages. A block headed
  ``# conf/experiments/params.yaml`` (a shard layout) goes into ``params.yaml`` as
  ``make params`` would put it, through the compose stage, and must cover the shipped
  model's layers;
* a shell block (```` ```bash ````, or an untagged block of commands): each command is
  run in a copy of the project (``RUN``, with what it must have written) or listed in
  ``SKIP`` with the reason it cannot run here; a command in neither fails the inventory;
* an untagged block that shows output, a diagram or a file tree is listed in
  ``TEXT_BLOCKS``.

Commands slower than a few seconds on the organism are ``slow``. Inline commands in the
prose are not examples in this sense and are not checked here.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MODEL_DIR = REPO / "data" / "models" / "ioi-gpt2"  # conf/model/organism.yaml's path
NOTEBOOK_MARKER = "<!-- notebook example -->"
NOTEBOOK_TEST = REPO / "tests" / "integration" / "test_api.py"
BIN = Path(sys.executable).parent  # where the environment's console scripts are
SHELL_LANGUAGES = ("bash", "sh", "shell", "console")
# First words that make an untagged block a block of shell commands.
COMMAND_WORDS = ("patchsweep", "python", "python3", "make", "dvc", "pip", "source", "du", "git")
SWEEP_FILE = "conf/sweep/default.yaml"  # where the README says sweep entries go
PACKAGES = {"sweep": "sweeps"}  # a config group whose files are placed elsewhere (@package)
N_PAIRS = 4  # prompts each sweep example runs on
PROMPT_FILE = REPO / "data" / "prompts" / "ioi_handwritten.csv"  # the worked example's


# --- the README's blocks ----------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One fenced block: where it starts, its language tag, its text, the HTML comment
    on the line before it (a marker such as ``<!-- notebook example -->``)."""

    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    marker: str

    @property
    def first_line(self) -> str:
        return next((line.strip() for line in self.text.splitlines() if line.strip()), "")


FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)


def readme_blocks(text: str | None = None) -> list[Block]:
    """Every fenced block of README.md, in order."""
    text = README.read_text(encoding="utf-8") if text is None else text
    blocks = []
    for found in FENCE.finditer(text):
        before = text[: found.start()].rstrip().rsplit("\n", 1)[-1].strip()
        marker = before if before.startswith("<!--") else ""
        line = text.count("\n", 0, found.start()) + 1
        blocks.append(Block(line, found.group(1).lower(), found.group(2), marker))
    return blocks


def without_comment(line: str) -> str:
    """A shell line up to its ``#`` comment (a ``#`` inside quotes or a word stays)."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def is_shell(block: Block) -> bool:
    """A shell block: tagged as one, or untagged with every line a command."""
    if block.lang in SHELL_LANGUAGES:
        return True
    lines = [without_comment(line).split() for line in block.text.splitlines()]
    words = [line[0] for line in lines if line]
    return block.lang in ("", "text") and bool(words) and all(w in COMMAND_WORDS for w in words)


@dataclass(frozen=True)
class Command:
    """One shell command of the README (a line, its comment cut off)."""

    line: int
    text: str  # as the README writes it

    @property
    def key(self) -> str:
        """The command with its spacing normalised: its name in RUN and SKIP."""
        return " ".join(self.text.split())


def readme_commands(blocks: list[Block]) -> list[Command]:
    found = []
    for block in blocks:
        if is_shell(block):
            for i, raw in enumerate(block.text.splitlines()):
                text = without_comment(raw).strip()
                if text:
                    found.append(Command(block.line + 1 + i, text))
    return found


# --- config snippets --------------------------------------------------------------------


@dataclass(frozen=True)
class Snippet:
    """A YAML block and the conf/ file it belongs in."""

    block: Block
    target: str  # conf/<group>/<option>.yaml
    values: dict[str, Any]

    @property
    def group(self) -> str:
        return Path(self.target).parent.name

    @property
    def option(self) -> str:
        return Path(self.target).stem

    @property
    def id(self) -> str:
        return f"line{self.block.line}-{self.group}-{self.option}"


CONF_HEADER = re.compile(r"^#\s*(conf/[\w./-]+\.yaml)\b")


def snippet_of(block: Block) -> Snippet:
    """Where a YAML block goes; an assertion names a block that says nowhere."""
    values = yaml.safe_load(block.text)
    assert isinstance(values, dict), f"README.md line {block.line}: a YAML block is no mapping"
    header = CONF_HEADER.match(block.first_line)
    if header:
        target = header.group(1)
    else:
        entries = all(isinstance(v, dict) and "component" in v for v in values.values())
        assert entries, (
            f"README.md line {block.line}: a YAML block that is neither sweep entries nor "
            "headed `# conf/<group>/<option>.yaml`: add that header line, or a check for "
            "it in tests/pipeline/test_readme_examples.py"
        )
        target = SWEEP_FILE
    return Snippet(block, target, values)


EXPERIMENTS_PARAMS = "conf/experiments/params.yaml"  # DVC's Hydra config: params.yaml


def all_snippets() -> list[Snippet]:
    """The YAML blocks that say where they go; the others fail the inventory test (not
    the collection of every test here)."""
    found = []
    for block in readme_blocks():
        if block.lang in ("yaml", "yml"):
            try:
                found.append(snippet_of(block))
            except (AssertionError, yaml.YAMLError):
                continue
    return found


def yaml_snippets() -> list[Snippet]:
    """The config snippets: those that go into an experiment's config (conf/<group>/)."""
    return [s for s in all_snippets() if s.target != EXPERIMENTS_PARAMS]


def layout_snippets() -> list[Snippet]:
    """The snippets of conf/experiments/params.yaml (which sweeps run in shards)."""
    return [s for s in all_snippets() if s.target == EXPERIMENTS_PARAMS]


def sweep_entries() -> list[tuple[Snippet, str]]:
    """(snippet, sweep name) for every sweep the README's YAML blocks define."""
    return [(s, name) for s in yaml_snippets() if s.group == "sweep" for name in s.values]


def project_copy(root: Path) -> Path:
    """The project as the README's commands see it: conf/, params.yaml and the prompt
    files copied, the bundled model linked (read-only use)."""
    shutil.copytree(REPO / "conf", root / "conf")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    (root / "data").mkdir()
    shutil.copytree(REPO / "data" / "prompts", root / "data" / "prompts")
    (root / "data" / "models").symlink_to(REPO / "data" / "models")
    return root


def write_snippet(root: Path, snippet: Snippet) -> None:
    """Put the snippet where it says it goes: sweep entries added to (or replacing those
    of) the sweep file, any other file as written."""
    path = root / snippet.target
    path.parent.mkdir(parents=True, exist_ok=True)
    if snippet.group in PACKAGES:
        existing = yaml.safe_load(path.read_text()) if path.is_file() else None
        merged = {**(existing or {}), **snippet.values}
        header = f"# @package {PACKAGES[snippet.group]}\n"
        path.write_text(header + yaml.safe_dump(merged, sort_keys=False))
    else:
        path.write_text(snippet.block.text)


def composed(root: Path, snippet: Snippet):
    """The project's config with the snippet in place, through the project's own
    composition and checks (schema, choices, ranges): the typed Config."""
    from omegaconf import OmegaConf

    from patchsweep.config import CONFIG_GROUPS, compose_config, to_object

    assert snippet.group in CONFIG_GROUPS and snippet.target.count("/") == 2, (
        f"README.md line {snippet.block.line}: {snippet.target} is not a config group "
        f"option (conf/<group>/<option>.yaml, groups {', '.join(CONFIG_GROUPS)}); add a "
        "check for it in tests/pipeline/test_readme_examples.py"
    )
    write_snippet(root, snippet)
    cfg = compose_config([f"{snippet.group}={snippet.option}"], root / "conf")
    package = OmegaConf.to_container(cfg[PACKAGES.get(snippet.group, snippet.group)])
    for key, value in snippet.values.items():
        got = package[key]
        if isinstance(value, dict) and isinstance(got, dict):
            got = {k: got[k] for k in value}  # the schema fills in the keys left out
        assert got == value, f"{snippet.target}: {key} composed to {got}, not {value}"
    return to_object(cfg)


# --- the model that is shipped ----------------------------------------------------------


def shipped_model() -> dict[str, int]:
    """Layers and heads of the bundled model, from its config.json."""
    config = json.loads((MODEL_DIR / "config.json").read_text())
    layers = config.get("n_layer", config.get("num_hidden_layers"))
    heads = config.get("n_head", config.get("num_attention_heads"))
    return {"layers": int(layers), "heads": int(heads)}


def model_fit_problems(name: str, sweep, dims: dict[str, int]) -> list[str]:
    """What a sweep asks for that the bundled model does not have."""
    from patchsweep.component_types import HEADED_COMPONENTS

    problems = []
    config = MODEL_DIR / "config.json"
    where = config.relative_to(REPO) if config.is_relative_to(REPO) else config
    bad = [layer for layer in sweep.layers or [] if not 0 <= layer < dims["layers"]]
    if bad:
        problems.append(
            f"sweep {name} asks for layers {bad}, but the bundled model has {dims['layers']} "
            f"layers ({where})"
        )
    if sweep.component in HEADED_COMPONENTS:
        bad = [head for head in sweep.heads or [] if not 0 <= head < dims["heads"]]
        if bad:
            problems.append(
                f"sweep {name} asks for heads {bad}, but the bundled model has {dims['heads']} "
                f"heads ({where})"
            )
    if sweep.window > dims["layers"]:
        problems.append(
            f"sweep {name} has window {sweep.window}, but the bundled model has "
            f"{dims['layers']} layers ({where})"
        )
    return problems


@pytest.fixture(scope="module")
def organism():
    import patchsweep as ps

    model = ps.load_model(str(MODEL_DIR), name="organism")
    return model, ps.load_prompts("ioi", model, n_pairs=N_PAIRS)


# --- shell commands ---------------------------------------------------------------------


def experiment_headers(out: str) -> list[str]:
    """The experiments ``patchsweep estimate`` printed a table for."""
    return re.findall(r"^(\S+/\S+): \d+ prompts?\b", out, re.M)


def params_experiments() -> list[str]:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    return [f"{m}/{d}" for m in params["model"] for d in params["dataset"]]


def check_estimate_one(root: Path, out: str) -> None:
    assert experiment_headers(out) == ["organism/ioi"], out
    assert re.search(r"^total: \d+ s of model stages", out, re.M), out


def check_estimate_all(root: Path, out: str) -> None:
    assert experiment_headers(out) == params_experiments(), out
    assert re.search(r"^total: \d+ s of model stages", out, re.M), out


def check_heads_csv(root: Path, out: str) -> None:
    """One row per layer × head of the shipped model, at every position at once."""
    dims = shipped_model()
    with (root / "heads.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == dims["layers"] * dims["heads"], rows
    sites = {(int(r["layer"]), int(r["head"])) for r in rows}
    assert sites == {(la, h) for la in range(dims["layers"]) for h in range(dims["heads"])}
    assert {r["position_label"] for r in rows} == {"all"}
    assert {r["component"] for r in rows} == {"z"}


def check_run(root: Path, out: str) -> None:
    """The experiment's files under runs/, nothing where DVC keeps its outputs."""
    results = root / "runs" / "results" / "organism" / "greater_than"
    for name in ("results.csv", "baselines.json", "report.html", "config.yaml"):
        assert (results / name).is_file(), f"no {results / name}"
    with (results / "results.csv").open(newline="") as f:
        sweeps = {row["sweep"] for row in csv.DictReader(f)}
    from patchsweep.stages.compose import listed_sweeps

    assert sweeps == set(listed_sweeps(REPO / "params.yaml", "greater_than") or [])
    assert not (root / "results").exists() and not (root / "data" / "cache").exists()


@dataclass(frozen=True)
class Run:
    """A README command that runs here: what it must leave, and whether it is slow."""

    check: Callable[[Path, str], None]  # (project copy, stdout)
    slow: bool = False


RUN = {
    "patchsweep estimate -e organism/ioi": Run(check_estimate_one),
    "patchsweep sweep ioi --model data/models/ioi-gpt2 --component z --positions all "
    "-o heads.csv": Run(check_heads_csv),
    # 10-20 s each on the 2-core CPU with the 2-layer organism, more with a larger one
    "patchsweep estimate": Run(check_estimate_all, slow=True),
    "patchsweep run dataset=greater_than": Run(check_run, slow=True),
}

QUEUE = "needs a git repository with DVC's state and a queue worker, and minutes"
SHARDS = (
    "needs a git repository with DVC's state, and minutes; tests/pipeline/test_shards_in_dvc.py "
    "runs the same commands on a scratch repository"
)
SLURM = "needs a SLURM cluster; the job's command is run by tests/pipeline/test_shards_in_dvc.py"
SKIP = {
    "make repro": "installs .venv and runs every DVC stage of the project: about 17 minutes; "
    "tests/pipeline/test_make_repro.py runs the target on a scratch pipeline",
    "make test": "installs .venv and runs the default test suite, this test among them",
    "dvc exp run --queue -S 'dataset=ioi,greater_than' && dvc queue start -j 1": QUEUE
    + "; tests/pipeline/test_experiments.py queues a sweep over datasets on a scratch repo",
    "dvc exp run --queue -S 'dataset=[ioi,greater_than]'": QUEUE,
    "dvc queue status && patchsweep exps": "reads the queue and experiments of a DVC "
    "repository with experiments run; tests/pipeline/test_exp_show.py runs patchsweep exps",
    "dvc exp apply <name>": "a placeholder for an experiment's name, from a run queue",
    # sharded sweeps: tests/pipeline/test_shards_in_dvc.py runs these on a scratch DVC repo around
    # the organism (its dataset `few`, its sweep resid_layer_pos), with CPU workers
    "dvc repro capture@organism-ioi": SHARDS,
    "dvc --wait-for-lock repro -s patch_shard@organism-ioi-head_pos-0 &": SHARDS,
    "dvc --wait-for-lock repro -s patch_shard@organism-ioi-head_pos-1 &": SHARDS,
    "wait": "waits for the two shard processes above: " + SHARDS,
    "dvc repro": SHARDS,
    "dvc exp run --queue patch_shard@organism-ioi-head_pos-0": QUEUE + "; " + SHARDS,
    "dvc exp run --queue patch_shard@organism-ioi-head_pos-1": QUEUE + "; " + SHARDS,
    "dvc queue start -j 2": QUEUE + "; " + SHARDS,
    "dvc queue status": QUEUE + "; " + SHARDS,
    "sbatch --gres=gpu:1 --wrap 'dvc --wait-for-lock repro -s "
    "patch_shard@organism-ioi-head_pos-0'": SLURM,
    "sbatch --gres=gpu:1 --wrap 'dvc --wait-for-lock repro -s "
    "patch_shard@organism-ioi-head_pos-1'": SLURM,
}

# Untagged blocks that show output, a diagram or a file tree, by how their first line
# starts (the figures after it change with each measurement).
TEXT_BLOCKS = {
    "calibration data/models/ioi-gpt2:": "output of `patchsweep estimate` (run above)",
    "conf/ ──► compose ──► tokenize": "a diagram of the pipeline",
    "conf/config.yaml ": "the layout of conf/",
    "dvc.yaml          the pipeline:": "the layout of the repository",
}


def text_block_key(block: Block) -> str | None:
    """The TEXT_BLOCKS entry a block is, if any."""
    return next((k for k in TEXT_BLOCKS if block.first_line.startswith(k)), None)


def run_command(command: Command, root: Path) -> subprocess.CompletedProcess:
    """The command as the README writes it, in a shell in ``root``, with this
    environment's console scripts first on PATH and the hub offline."""
    assert (BIN / "patchsweep").is_file(), f"no patchsweep console script in {BIN}"
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    return subprocess.run(
        ["bash", "-c", command.text],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def run_params():
    commands = {c.key: c for c in readme_commands(readme_blocks())}
    return [
        pytest.param(commands.get(key), run, id=re.sub(r"[^\w=-]+", "_", key)[:48],
                     marks=[pytest.mark.slow] if run.slow else [])
        for key, run in RUN.items()
    ]  # fmt: skip


# --- the inventory ----------------------------------------------------------------------


class TestInventory:
    """Every block and every command of README.md is run here, run elsewhere or skipped
    with a reason; stale entries of the tables fail too."""

    def test_every_block_is_accounted_for(self):
        blocks = readme_blocks()
        assert len(blocks) > 5  # the parser found README's examples
        text_seen = []
        for block in blocks:
            where = f"README.md line {block.line} (```{block.lang})"
            if block.lang == "python":
                assert block.marker == NOTEBOOK_MARKER, (
                    f"{where}: a Python block that no test runs: mark it {NOTEBOOK_MARKER} "
                    "if it is the notebook example, or add a test that runs it"
                )
            elif block.lang in ("yaml", "yml"):
                snippet_of(block)  # asserts it is a conf/ snippet or sweep entries
            elif is_shell(block):
                pass  # its commands: test_every_command_is_run_or_skipped
            else:
                key = text_block_key(block)
                assert block.lang in ("", "text") and key is not None, (
                    f"{where}: an example this test does not know, first line "
                    f"{block.first_line!r}: if it shows output or a diagram, add that line "
                    "(its start) to TEXT_BLOCKS; if it holds code, add a check that runs it"
                )
                text_seen.append(key)
        stale = sorted(set(TEXT_BLOCKS) - set(text_seen))
        assert not stale, f"TEXT_BLOCKS lists blocks README.md no longer has: {stale}"

    def test_the_notebook_example_is_run_by_its_own_test(self):
        marked = [b for b in readme_blocks() if b.marker == NOTEBOOK_MARKER]
        assert [b.lang for b in marked] == ["python"], "one Python block carries the marker"
        assert NOTEBOOK_MARKER in NOTEBOOK_TEST.read_text(), (
            f"{NOTEBOOK_TEST.relative_to(REPO)} no longer runs the notebook example"
        )

    def test_every_command_is_run_or_skipped(self):
        commands = readme_commands(readme_blocks())
        assert commands, "README.md has no shell commands: the parser is broken"
        keys = [c.key for c in commands]
        unknown = [f"line {c.line}: {c.key}" for c in commands if c.key not in {**RUN, **SKIP}]
        assert not unknown, (
            "README.md commands neither run nor skipped by this test: "
            f"{unknown}; add each to RUN (with a check of what it writes) or to SKIP "
            "(with the reason it cannot run in a test)"
        )
        assert not set(RUN) & set(SKIP), "a command is both run and skipped"
        stale = sorted((set(RUN) | set(SKIP)) - set(keys))
        assert not stale, f"RUN/SKIP list commands README.md no longer has: {stale}"
        assert all(reason.strip() for reason in SKIP.values())

    def test_the_parsers_see_comments_and_fences_as_the_readme_means_them(self):
        assert without_comment("make repro   # installs .venv") == "make repro"
        assert without_comment("dvc exp run -S 'a#b'  # x") == "dvc exp run -S 'a#b'"
        assert without_comment("    # a continued comment") == ""
        text = "x\n<!-- m -->\n```python\nprint(1)\n```\n\n```\npatchsweep estimate  # c\n```\n"
        blocks = readme_blocks(text)
        assert [(b.line, b.lang, b.marker) for b in blocks] == [(3, "python", "<!-- m -->"),
                                                                (7, "", "")]  # fmt: skip
        assert readme_commands(blocks) == [Command(8, "patchsweep estimate")]


# --- running them -----------------------------------------------------------------------


@pytest.mark.parametrize(("command", "run"), run_params())
def test_readme_command_runs_in_a_project_copy(command, run, tmp_path):
    assert command is not None, "RUN lists a command README.md does not have (see inventory)"
    root = project_copy(tmp_path / "project")
    done = run_command(command, root)
    assert done.returncode == 0, (
        f"README.md line {command.line}: `{command.text}` exited {done.returncode}:\n"
        f"{done.stderr[-3000:]}"
    )
    run.check(root, done.stdout)


@pytest.mark.parametrize("snippet", yaml_snippets(), ids=lambda s: s.id)
def test_config_snippet_composes_with_the_project_schema(snippet, tmp_path):
    composed(project_copy(tmp_path), snippet)


@pytest.mark.parametrize(
    ("snippet", "name"), sweep_entries(), ids=[name for _, name in sweep_entries()]
)
def test_sweep_example_fits_the_shipped_model_and_runs(snippet, name, tmp_path, organism):
    """The sweep as conf/ composes it, on four IOI prompts through ``ps.sweep``."""
    import patchsweep as ps

    sweep = composed(project_copy(tmp_path), snippet).sweeps[name]
    dims = shipped_model()
    problems = model_fit_problems(name, sweep, dims)
    assert not problems, f"README.md line {snippet.block.line}: " + "; ".join(problems)
    model, prompts = organism
    table = ps.sweep(model, prompts, {name: sweep}, engine={"progress": False})
    assert len(table) > 0 and set(table["sweep"]) == {name}
    assert set(table["layer"]) == set(sweep.layers or range(dims["layers"]))
    if sweep.heads is not None:
        assert set(table["head"]) == set(sweep.heads)
    assert set(table["method"]) == {sweep.method}
    assert table.attrs["baselines"]["n_prompts"] == N_PAIRS
    assert 0 < table["n_prompts"].max() <= N_PAIRS


@pytest.mark.parametrize("snippet", layout_snippets(), ids=lambda s: s.id)
def test_shard_layout_example_composes_and_covers_the_shipped_model(snippet, tmp_path, monkeypatch):
    """The layout in params.yaml (its sweeps taken off the ``sweep`` list), through the
    compose stage's checks; its shards cover every layer of the bundled model."""
    from patchsweep.config import load_config
    from patchsweep.paths import ExperimentPaths
    from patchsweep.shards import check_cover, read_layout
    from patchsweep.stages import compose

    root = project_copy(tmp_path)
    params = yaml.safe_load((root / "params.yaml").read_text())
    sharded = set(snippet.values["sharded"])
    params["sweep"] = [name for name in params["sweep"] if name not in sharded]
    (root / "params.yaml").write_text(yaml.safe_dump({**params, **snippet.values}))
    monkeypatch.chdir(root)
    exp = ExperimentPaths("organism", "ioi")
    compose.run(exp)
    sweeps = load_config(exp.config).sweeps
    layers = range(shipped_model()["layers"])
    for name, shards in read_layout(root / "params.yaml").items():
        check_cover(name, shards, sweeps[name].layers or layers, "the bundled model's layers")


@pytest.mark.parametrize(
    "snippet", [s for s in yaml_snippets() if s.group == "dataset"], ids=lambda s: s.id
)
def test_dataset_example_runs_through_compose_and_tokenize(snippet, tmp_path, monkeypatch):
    """The dataset with the bundled model, as the pipeline's first stages read it; a
    prompt file the example names is the worked example's (same columns)."""
    from patchsweep.paths import ExperimentPaths
    from patchsweep.stages import compose, tokenize

    root = project_copy(tmp_path)
    cfg = composed(root, snippet)
    monkeypatch.chdir(root)
    expected = None
    if cfg.dataset.generator == "file":
        path = Path(str(cfg.dataset.options["path"]))
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(PROMPT_FILE, path)
        with path.open(newline="", encoding="utf-8-sig") as f:
            expected = len(list(csv.DictReader(f)))
    exp = ExperimentPaths("organism", snippet.option)
    compose.run(exp)
    tokenize.run(exp)
    pairs = json.loads(exp.prompts.read_text())["pairs"]
    assert len(pairs) == (expected if expected is not None else cfg.dataset.n_pairs)
