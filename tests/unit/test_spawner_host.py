"""ESAPSpawner is a host for its data side: every member :class:`SpawnerHost` declares is
there, on the class (mypy types the mixin's use of them; this holds the spawner to them)."""

from __future__ import annotations

import inspect
from types import FunctionType

from esap_spawner.spawn.data import DataSpawnerMixin
from esap_spawner.spawn.host import SpawnerHost
from esap_spawner.spawn.spawner import ESAPSpawner


def declared(protocol: type) -> list[str]:
    return sorted(
        name
        for name, value in vars(protocol).items()
        if isinstance(value, property | FunctionType) and not name.startswith("__")
    )


def test_the_spawner_provides_what_its_data_side_needs() -> None:
    needed = declared(SpawnerHost)
    assert {"site", "context", "home_dir", "_attempt"} <= set(needed)
    missing = []
    for name in needed:
        try:
            found = inspect.getattr_static(ESAPSpawner, name)
        except AttributeError:
            missing.append(name)
            continue
        owner = next(c for c in ESAPSpawner.__mro__ if name in vars(c))
        assert owner not in (SpawnerHost, DataSpawnerMixin), (name, owner)
        assert found is not None
    assert missing == []
