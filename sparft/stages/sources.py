"""The source files a module runs: its import closure within the project, read from the code.

Every ``import`` and ``from ... import`` of a project module counts, at the top of a module or
inside a function (stages import the library lazily), except those under
``if TYPE_CHECKING:``, which never run. One exception keeps a stage's closure its own: another
stage's module, imported for its paths, contributes its top-level imports only, since running
this stage never calls that one's ``run``. Importing ``a.b.c`` also runs ``a/__init__.py`` and
``a/b/__init__.py``, so those count too. A stage's code dependencies in ``dvc.yaml`` and in the
flow's cache keys are this closure, so they cannot drift from what the stage imports.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: sparft/ and flows/ live here
PACKAGES = ("sparft", "flows")


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The file of project module ``name`` (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``)."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(
    tree: ast.AST, functions: bool = True, type_checking: bool = False
) -> Iterator[ast.AST]:
    """Every node except the bodies of ``if TYPE_CHECKING:`` blocks (unless ``type_checking``)
    and, without ``functions``, of functions."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if not type_checking and isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if not functions and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        stack.extend(ast.iter_child_nodes(node))


def imported_modules(
    path: Path, name: str, functions: bool = True, type_checking: bool = False
) -> list[str]:
    """Project modules that module ``name`` (at ``path``) imports when it runs (counting the
    imports inside its functions, unless ``functions`` is off), and with ``type_checking`` those
    only a type checker reads."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[str] = []
    tree = ast.parse(path.read_text(), str(path))
    for node in _runtime_nodes(tree, functions, type_checking):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            found.append(base)
            # ``from a import b`` may import the submodule a.b
            found += [f"{base}.{alias.name}" for alias in node.names]
    return [m for m in dict.fromkeys(found) if module_file(m) is not None]


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


STAGES_PACKAGE = "sparft.stages."


@cache
def closure(name: str) -> tuple[str, ...]:
    """Every project module that importing and running ``name`` executes, ``name`` included."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        for module in _with_parents(current):
            if module in seen or module_file(module) is None:
                continue
            seen.add(module)
            path = module_file(module)
            assert path is not None
            other_stage = module.startswith(STAGES_PACKAGE) and module != name
            todo.extend(imported_modules(path, module, functions=not other_stage))
    return tuple(sorted(seen))


def source_files(modules: Iterable[str], root: Path = ROOT) -> list[str]:
    """The closure's files, relative to the checkout, sorted."""
    files = {
        str(module_file(m, root).relative_to(root))  # type: ignore[union-attr]
        for name in modules
        for m in closure(name)
    }
    return sorted(files)
