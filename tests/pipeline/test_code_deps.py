"""Every stage reruns when a project module it imports changes, and only then.

Each ``dvc.yaml`` stage depends on its code fingerprint, ``data/code/<module>.json``,
written by the ``code`` stage (:mod:`patchsweep.stages.code`) from the stage module's
import closure (:mod:`patchsweep.code_closure`). Here: the wiring in ``dvc.yaml``, and the
closure against the standard library's :class:`modulefinder.ModuleFinder`, which finds
imports by scanning the compiled bytecode (functions' too) rather than the syntax tree.
The DVC pipeline test edits modules and sees exactly the importing stages rerun.
"""

from __future__ import annotations

import ast
import modulefinder
import re
from pathlib import Path

import pytest
import yaml

from patchsweep.code_closure import import_closure, module_file
from patchsweep.stages.code import fingerprint, stage_names

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def dep_paths(stage: dict) -> list[str]:
    return [next(iter(d)) if isinstance(d, dict) else d for d in stage.get("deps", [])]


def stage_module(stage: dict) -> str:
    found = re.search(r"python -m patchsweep\.stages\.(\w+)", stage["cmd"])
    assert found, f"`{stage['cmd']}` does not run a patchsweep.stages module"
    return found.group(1)


@pytest.mark.parametrize("name", sorted(n for n in STAGES if n != "code"))
def test_stage_depends_on_its_own_fingerprint_and_no_source_file(name):
    deps = dep_paths(STAGES[name])
    assert f"data/code/{stage_module(STAGES[name])}.json" in deps
    assert [d for d in deps if d.startswith("src")] == []


def test_code_stage_fingerprints_every_stage_and_depends_on_all_source():
    code = STAGES["code"]
    assert dep_paths(code) == ["src/patchsweep"]
    outs = {next(iter(o)) for o in code["outs"]}
    assert outs == {f"data/code/{name}.json" for name in stage_names(SRC)}
    assert all(o[next(iter(o))] == {"cache": False} for o in code["outs"])
    assert {stage_module(s) for n, s in STAGES.items() if n != "code"} == set(stage_names(SRC))


def type_checking_imports(path: Path) -> set[str]:
    """Module names imported under ``if TYPE_CHECKING:`` in ``path``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.module:
                    names.add(inner.module)
                elif isinstance(inner, ast.Import):
                    names |= {alias.name for alias in inner.names}
    return names


def found_by_modulefinder(module: str) -> set[str]:
    """The project modules ``python -m <module>`` can import, by ModuleFinder."""
    finder = modulefinder.ModuleFinder(path=[str(SRC)])
    finder.import_hook(module)  # its packages first, as `import` and `python -m` do
    return {n for n in finder.modules if n.split(".")[0] == "patchsweep"}


@pytest.mark.parametrize("stage", stage_names(SRC))
def test_closure_is_what_modulefinder_finds_but_type_checking_imports(stage):
    """ModuleFinder also follows imports under ``if TYPE_CHECKING:`` (they are in the
    bytecode, behind a test that is false at run time): what it finds beyond the closure
    must be reachable from such an import."""
    module = f"patchsweep.stages.{stage}"
    closure = import_closure(SRC, module)
    found = found_by_modulefinder(module)
    assert closure <= {module_file(SRC, n) for n in found}
    typing_only = {
        n for f in closure for n in type_checking_imports(f) if n.split(".")[0] == "patchsweep"
    }
    reachable = set().union(*map(found_by_modulefinder, typing_only))
    extra = {n for n in found if module_file(SRC, n) not in closure}
    assert extra <= reachable, f"{stage} imports {sorted(extra - reachable)}, not fingerprinted"


def test_fingerprint_lists_the_closure_with_content_hashes():
    printed = fingerprint(SRC, "plot")
    assert printed["module"] == "patchsweep.stages.plot"
    files = printed["files"]
    assert "src/patchsweep/plotting/style.py" in files
    assert "src/patchsweep/engine/sweep.py" not in files  # plot never runs the engine
    assert all(str(h).startswith("sha256:") for h in files.values())


def test_closure_follows_imports_inside_functions_and_packages(tmp_path):
    """A lazy import counts, a TYPE_CHECKING one does not, and importing a submodule
    pulls in its package's __init__ (and what that imports)."""
    package = tmp_path / "patchsweep"
    (package / "plotting").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text("")
    (package / "unused.py").write_text("")
    (package / "plotting" / "__init__.py").write_text("from patchsweep import unused\n")
    (package / "plotting" / "style.py").write_text("")
    (package / "stage.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from patchsweep.models import LoadedModel\n"
        "def run():\n    from patchsweep.plotting.style import PlotStyle\n"
    )
    closure = import_closure(tmp_path, "patchsweep.stage")
    assert {p.relative_to(tmp_path).as_posix() for p in closure} == {
        "patchsweep/__init__.py",
        "patchsweep/stage.py",
        "patchsweep/plotting/__init__.py",
        "patchsweep/plotting/style.py",
        "patchsweep/unused.py",
    }
