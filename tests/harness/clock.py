"""A clock tests move by hand: ``clock()`` is the time, ``await clock.sleep(s)`` moves it
on (and remembers the sleeps) instead of waiting."""

from __future__ import annotations


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 3))
        self.now += seconds
