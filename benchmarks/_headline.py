"""The one line each benchmark prints per headline figure, for ``benchmarks/run.py``'s table.

A benchmark calls :func:`headline` once per target it measures; the line is readable on
its own and starts with :data:`PREFIX` followed by JSON, so the runner can collect it.
"""

from __future__ import annotations

import json

PREFIX = "HEADLINE "


def headline(benchmark: str, measure: str, value: str, target: str, holds: bool | None) -> None:
    """Print one headline: what was measured, the figure, its target, whether it holds
    (None: the figure has no target)."""
    row = {"benchmark": benchmark, "measure": measure, "value": value, "target": target,
           "holds": None if holds is None else bool(holds)}  # fmt: skip
    print(PREFIX + json.dumps(row), flush=True)
