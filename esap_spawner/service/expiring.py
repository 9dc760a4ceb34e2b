"""A small cache whose entries expire: what the service remembers for a while.

Used for the callers of recent tokens (:class:`~esap_spawner.service.auth.CallerCache`) and
for the answers to recent locality questions (``ServiceState.locality_answers``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["ExpiringCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ExpiringCache(Generic[K, V]):
    """Values kept for ``max_age`` seconds (``0``: nothing is kept); at most ``max_entries``:
    when full, expired entries go first, then the oldest. ``clock``: monotonic seconds."""

    def __init__(
        self,
        max_age: float,
        *,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_age < 0 or max_entries < 1:
            raise ValueError(f"max_age must be >= 0 and max_entries >= 1: {max_age}, {max_entries}")
        self.max_age = max_age
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        """The value put under ``key`` within ``max_age``, else None."""
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self.clock():
            return None
        return entry[1]

    def put(self, key: K, value: V) -> None:
        if self.max_age == 0:
            return
        entries = self._entries
        now = self.clock()
        if len(entries) >= self.max_entries:
            for old in [k for k, (expires, _) in entries.items() if expires <= now]:
                del entries[old]
            while len(entries) >= self.max_entries:
                del entries[next(iter(entries))]
        entries.pop(key, None)  # re-inserted last: the dict's order is the age order
        entries[key] = (now + self.max_age, value)

    def __len__(self) -> int:
        return len(self._entries)
