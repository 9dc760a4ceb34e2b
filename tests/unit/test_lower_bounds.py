"""`make test-min` pins exactly the lower bounds pyproject.toml declares."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "lower_bounds.py"


def tool() -> Any:
    spec = importlib.util.spec_from_file_location("lower_bounds", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PROJECT = {
    "dependencies": ["jupyterhub>=5,<7", "tornado>=6.3", "escapism", "pyyaml>=6"],
    "optional-dependencies": {
        "rucio": ["rucio-clients>=35.8"],
        "postgresql": ["psycopg[binary]>=3.1"],
        "demo": ["jupyterlab>=4", "rucio-clients>=35.8"],
    },
}


def test_every_lower_bound_of_the_dependencies_and_the_named_extras_is_pinned() -> None:
    assert tool().lower_bounds(PROJECT, ["rucio", "demo"]) == [
        "jupyterhub==5",
        "jupyterlab==4",
        "pyyaml==6",
        "rucio-clients==35.8",
        "tornado==6.3",
    ]  # unbounded (escapism) and extras not named (postgresql) are left to pip


def test_an_unknown_extra_is_an_error() -> None:
    with pytest.raises(SystemExit, match="no extra 'dem'"):
        tool().lower_bounds(PROJECT, ["dem"])
