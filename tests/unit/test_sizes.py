"""Simple to live in: no product module over 500 lines, no product function over 80.

The product is every ``.py`` file of the ``esap_spawner`` package except ``esap_spawner/dev/``,
the developer tools (simulator, demo) that the product never imports. Nothing else is left
out: generated code (the alembic migrations) is held to the same rule. A function's length
runs from its ``def`` line to its last line, docstring and nested functions included (a
nested function also counts on its own).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "esap_spawner"
DEVELOPER_TOOLS = PACKAGE / "dev"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def product_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if not p.is_relative_to(DEVELOPER_TOOLS))


def long_functions(source: str, limit: int) -> list[tuple[str, int, int]]:
    """``(name, first line, lines)`` of every function in ``source`` longer than ``limit``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            lines = node.end_lineno - node.lineno + 1
            if lines > limit:
                found.append((node.name, node.lineno, lines))
    return found


def test_the_product_is_found() -> None:
    modules = product_modules()
    names = {p.relative_to(PACKAGE).as_posix() for p in modules}
    # the wings are all there and the developer tools are not
    assert {"spawn/spawner.py", "capacity/model.py", "service/app.py", "site/model.py"} <= names
    assert not any(name.startswith("dev/") for name in names)
    assert len(modules) > 40


def test_no_product_module_over_500_lines() -> None:
    too_long = {
        p.relative_to(PACKAGE).as_posix(): n
        for p in product_modules()
        if (n := len(p.read_text("utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert too_long == {}


def test_no_product_function_over_80_lines() -> None:
    too_long = [
        f"{p.relative_to(PACKAGE).as_posix()}:{line} {name} ({lines} lines)"
        for p in product_modules()
        for name, line, lines in long_functions(p.read_text("utf-8"), MAX_FUNCTION_LINES)
    ]
    assert too_long == []


@pytest.mark.parametrize(("body_lines", "found"), [(78, []), (79, [("f", 1, 81)])])
def test_the_function_check_counts_every_line(body_lines: int, found: list[object]) -> None:
    # def line + docstring + body: 80 lines pass, 81 do not
    source = 'def f():\n    """Doc."""\n' + "    x = 1\n" * body_lines
    assert long_functions(source, MAX_FUNCTION_LINES) == found


def test_the_function_check_sees_methods_and_nested_functions() -> None:
    inner = "            y = 2\n" * 90
    source = f"class C:\n    async def m(self):\n        def inner():\n{inner}"
    names = [name for name, _, _ in long_functions(source, MAX_FUNCTION_LINES)]
    assert names == ["m", "inner"]
