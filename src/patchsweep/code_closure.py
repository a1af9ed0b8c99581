"""Which project source files a stage runs: the import closure of its module.

A stage's results depend on every ``patchsweep`` module it can import, and on no other,
so an edit must rerun exactly the stages whose closure holds the edited file. The closure
is read from the source, without importing anything: every ``import`` statement counts,
also those inside functions (lazy imports run too), except those under
``if TYPE_CHECKING:`` (they never run). Importing ``a.b.c`` runs ``a`` and ``a.b`` first,
and ``python -m a.b.c`` imports those packages before the module itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "patchsweep"


def module_file(src: Path, name: str) -> Path | None:
    """The source file of module or package ``name`` under ``src``, if there is one."""
    base = src.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _module_name(src: Path, path: Path) -> str:
    parts = path.relative_to(src).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _never_runs(tree: ast.AST) -> set[int]:
    """The ids of every node under an ``if TYPE_CHECKING:`` block."""
    return {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }


def imported_names(path: Path, package: str) -> set[str]:
    """Every project name an import statement of ``path`` names, as an absolute dotted
    name (``from .x import y`` in package ``p`` gives ``p.x`` and ``p.x.y``: ``y`` may be
    a submodule or an attribute; :func:`import_closure` keeps it only if it is a file)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _never_runs(tree)
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*kept, base] if base else kept)
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in names if name.split(".")[0] == PACKAGE}


def import_closure(src: Path, module: str) -> set[Path]:
    """The files under ``src`` that ``python -m <module>`` can import, itself included."""
    parts = module.split(".")
    todo = [f for i in range(1, len(parts) + 1) if (f := module_file(src, ".".join(parts[:i])))]
    if len(todo) < len(parts):
        raise FileNotFoundError(f"no module {module} (or one of its packages) under {src}")
    seen = set(todo)
    while todo:
        path = todo.pop()
        name = _module_name(src, path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for imported in imported_names(path, package):
            pieces = imported.split(".")
            for i in range(1, len(pieces) + 1):
                found = module_file(src, ".".join(pieces[:i]))
                if found is not None and found not in seen:
                    seen.add(found)
                    todo.append(found)
    return seen
