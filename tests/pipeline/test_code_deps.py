"""Every project module a stage imports is one of its DVC deps, and no other is.

A stage's code deps are derived here from what it actually imports: the transitive
closure of ``patchsweep`` imports (read from the source, so imports inside functions
count too) of the module ``dvc.yaml`` runs (``python -m patchsweep.stages.<name>``).
An edit to any module in the closure must rerun the stage (else its results go stale);
an edit to a module outside it must not (else every docstring fix reruns every sweep).
Package folders stand for all their modules, so a folder dep is right only when the
stage imports every module in it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"


def module_file(name: str) -> Path | None:
    """The source file of a ``patchsweep`` module or package, if it exists."""
    base = SRC.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported_names(path: Path, package: str) -> set[str]:
    """Every ``patchsweep…`` name an import statement in ``path`` reaches (relative
    imports resolved; ``if TYPE_CHECKING:`` blocks skipped: they never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(n) for block in ast.walk(tree) if _type_checking_only(block)
               for n in ast.walk(block)}  # fmt: skip
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return {n for n in names if n.split(".")[0] == "patchsweep"}


def import_closure(script: Path) -> set[Path]:
    """The project source files that running ``script`` can import."""
    seen: set[Path] = set()
    todo = [(script, "")]
    while todo:
        path, name = todo.pop()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for imported in imported_names(path, package):
            parts = imported.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
                found = module_file(".".join(parts[:i]))
                if found is not None and found not in seen:
                    seen.add(found)
                    todo.append((found, module_name(found)))
    return seen


def stage_modules() -> dict[str, tuple[Path, set[Path], list[Path]]]:
    """Each dvc.yaml stage: the module its command runs, what running it imports, and
    its deps. ``python -m a.b.c`` imports the packages ``a`` and ``a.b`` first."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    found = {}
    for name, stage in stages.items():
        module = re.search(r"python -m (patchsweep\.stages\.\w+)", stage["cmd"])
        assert module, f"stage {name}: `{stage['cmd']}` does not run a patchsweep.stages module"
        parts = module.group(1).split(".")
        script = module_file(module.group(1))
        assert script is not None, f"stage {name}: no module {module.group(1)}"
        packages = {module_file(".".join(parts[:i])) for i in range(1, len(parts))}
        closure = {script, *packages} | set().union(*map(import_closure, [script, *packages]))
        deps = [REPO / next(iter(d)) if isinstance(d, dict) else REPO / d for d in stage["deps"]]
        found[name] = (script, closure, deps)
    return found


def uncovered(closure: set[Path], deps: list[Path]) -> list[str]:
    """Modules of the closure that no dep (a file, or a folder above it) covers."""
    return sorted(
        str(f.relative_to(REPO)) for f in closure
        if not any(f == d or d in f.parents for d in deps)
    )  # fmt: skip


def needless(closure: set[Path], deps: list[Path]) -> list[str]:
    """Code deps (under src/) holding a module the stage never imports."""
    wasted = []
    for dep in deps:
        if SRC not in dep.parents:
            continue
        files = sorted(dep.rglob("*.py")) if dep.is_dir() else [dep]
        wasted += [str(f.relative_to(REPO)) for f in files if f not in closure]
    return sorted(wasted)


STAGES = stage_modules()


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_depends_on_every_module_it_imports(stage):
    _, closure, deps = STAGES[stage]
    missing = uncovered(closure, deps)
    assert missing == [], f"dvc.yaml stage {stage} imports but does not depend on {missing}"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_depends_on_no_module_it_does_not_import(stage):
    _, closure, deps = STAGES[stage]
    extra = needless(closure, deps)
    assert extra == [], f"dvc.yaml stage {stage} depends on {extra} but never imports them"


def test_closure_follows_imports_inside_functions_and_packages(tmp_path):
    """The check itself: a lazy import counts, a TYPE_CHECKING one does not, and
    importing a submodule pulls in its package's __init__."""
    script = tmp_path / "stage.py"
    script.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from patchsweep.models import LoadedModel\n"
        "def run():\n    from patchsweep.plotting.style import PlotStyle\n"
    )
    closure = import_closure(script)
    assert SRC / "patchsweep" / "plotting" / "__init__.py" in closure
    assert SRC / "patchsweep" / "plotting" / "style.py" in closure
    assert SRC / "patchsweep" / "models.py" not in closure
    deps = [script, SRC / "patchsweep" / "plotting"]
    assert uncovered(closure, deps)  # io.py and errors.py (imported by style) are missing
    assert uncovered(closure, [*deps, SRC / "patchsweep"]) == []
    assert needless(closure, [*deps, SRC / "patchsweep"])  # the whole package is too much
