"""Print the package's declared lower bounds as pip constraints, for `make test-min`.

    python tools/lower_bounds.py demo rucio report > lower-bounds.txt
    pip install -e '.[demo,rucio,report]' -c lower-bounds.txt

Every requirement of ``pyproject.toml``'s dependencies (and of the extras named) with a ``>=``
bound becomes ``name==bound``, so the tests run on exactly the oldest versions the package
says it supports. A bound must therefore name a release that exists.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def lower_bounds(project: dict[str, object], extras: list[str]) -> list[str]:
    """``name==version`` for every ``>=`` bound of the dependencies and the named extras."""
    lines = list(project.get("dependencies", []))  # type: ignore[call-overload]
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:  # type: ignore[operator]
            raise SystemExit(f"no extra {extra!r} in {PYPROJECT.name}")
        lines += optional[extra]  # type: ignore[index]
    pins: dict[str, str] = {}
    for line in lines:
        requirement = Requirement(line)
        for spec in requirement.specifier:
            if spec.operator == ">=":
                pins[requirement.name.lower()] = f"{requirement.name}=={spec.version}"
    return sorted(pins.values())


def main(argv: list[str]) -> int:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    print("\n".join(lower_bounds(project, argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
