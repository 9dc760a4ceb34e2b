"""Who imports whom in esap_spawner, read from the source: no module is imported.

For the boundary test (``tests/unit/test_boundaries.py``: the product never imports
``dev/``; only the Kubernetes edge imports kubernetes_asyncio) and the architecture page's
table of wings (``docs/gen_reference.py``). An import inside a function counts like one at
the top: it runs all the same once the function does; one under ``if TYPE_CHECKING:`` does
not (only the type checker reads it). A dotted string naming a module of
the package (``"esap_spawner.dev.demo"``, as the CLI's table of subcommands holds) counts as
an import ``by_name``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WINGS", "Import", "imports_in", "package_imports", "wing_graph", "wing_of"]

PACKAGE = "esap_spawner"
WINGS = ("site", "spawn", "capacity", "data", "observe", "service", "dev")
_DOTTED = re.compile(rf"^{PACKAGE}(\.[a-z_][a-z0-9_]*)+$")


@dataclass(frozen=True)
class Import:
    """``source`` (a module, or a file outside the package) imports ``target`` at ``line``."""

    source: str
    target: str
    line: int
    by_name: bool = False


def module_name(path: Path, root: Path) -> str:
    """``esap_spawner/spawn/spawner.py`` -> ``esap_spawner.spawn.spawner`` (``root`` holds
    the package folder)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _run_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:`` (never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for other in node.orelse:
                yield other
                yield from _run_nodes(other)
            continue
        yield node
        yield from _run_nodes(node)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_in(source: str, text: str) -> Iterator[Import]:
    """The imports of one file's ``text`` that run (not those under ``if TYPE_CHECKING:``;
    relative imports resolved against ``source``)."""
    for node in _run_nodes(ast.parse(text)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(source, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = source.split(".")[: -node.level]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:  # `from pkg import module` imports pkg.module
                yield Import(source, f"{base}.{alias.name}" if alias.name != "*" else base,
                             node.lineno)  # fmt: skip
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _DOTTED.match(node.value)
        ):
            yield Import(source, node.value, node.lineno, by_name=True)


def package_imports(root: Path, extra_files: Iterable[Path] = ()) -> list[Import]:
    """Every import in the package under ``root / esap_spawner``, and in ``extra_files``
    (e.g. the hub's configuration snippets, named by their path)."""
    found: list[Import] = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        found += imports_in(module_name(path, root), path.read_text(encoding="utf-8"))
    for path in extra_files:
        found += imports_in(str(path.relative_to(root)), path.read_text(encoding="utf-8"))
    return found


def wing_of(module: str) -> str:
    """The wing of a package module (``spawn``, ``dev``, ...), ``top`` for the package's own
    modules (``esap_spawner.cli``), ``""`` outside the package."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return ""
    return parts[1] if len(parts) > 1 and parts[1] in WINGS else "top"


def wing_graph(imports: Iterable[Import]) -> dict[str, set[str]]:
    """wing -> the other wings it imports from (``top`` included); imports by name (the
    CLI's table of subcommands) left out."""
    graph: dict[str, set[str]] = {}
    for found in imports:
        if found.by_name:
            continue
        source, target = wing_of(found.source), wing_of(found.target)
        if source and target and source != target:
            graph.setdefault(source, set()).add(target)
    return graph
