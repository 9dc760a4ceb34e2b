"""What ``esap-spawner demo`` needs beyond a base install, and what to install when it is missing.

The demo's Python packages are declared once, as the package's ``demo`` extra
(``pip install 'esap-spawner[demo]'``); :func:`missing_from_extra` reads that declaration from
the installed distribution's metadata and says which of its requirements are absent or too
old, so a base install answers ``esap-spawner demo`` with the command to run, not a traceback.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterable

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

DISTRIBUTION = "esap-spawner"


def missing_from_extra(
    requires: Iterable[str], extra: str, installed_version: Callable[[str], str | None]
) -> list[str]:
    """The requirements of ``extra`` that ``installed_version`` (name -> version or None) lacks.

    ``requires`` holds the distribution's ``Requires-Dist`` lines; a requirement belongs to the
    extra when its marker holds for that extra and not without it.
    """
    missing = []
    for line in requires:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        marker = requirement.marker
        if (
            marker is None
            or not marker.evaluate({"extra": extra})
            or marker.evaluate({"extra": ""})
        ):
            continue
        found = installed_version(requirement.name)
        try:
            ok = found is not None and requirement.specifier.contains(
                Version(found), prereleases=True
            )
        except InvalidVersion:
            ok = True  # installed, with a version we cannot compare: let it try
        if not ok:
            missing.append(f"{requirement.name}{requirement.specifier}")
    return missing


def _installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def missing_demo_packages() -> list[str]:
    """The ``demo`` extra's packages this environment lacks (none when run from a bare checkout,
    where there is no installed metadata to read)."""
    try:
        requires = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    return missing_from_extra(requires, "demo", _installed_version)
