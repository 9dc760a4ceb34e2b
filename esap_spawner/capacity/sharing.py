"""One capacity authority: the hub's reservations, shared with the service through the database.

The hub admits spawns, so only its reservations count: an admitted spawn holds a slot from
admission until its pod is counted (:mod:`esap_spawner.capacity.reservations`). The
advertising service watches the same cluster but admits nothing; without the hub's
reservations it would advertise slots the hub has already promised. So:

- the hub runs one :class:`ReservationPublisher`: whenever its ledger changes, it writes
  what the reservations hold to the database the hub and the service share
  (``esap_reservations``, the whole set in one transaction; changes made while a write is
  under way are coalesced into the next one), and an empty set when it starts;
- the service calls :func:`adopt_published` every ``reservations_poll_seconds`` (0.5 s):
  its model holds exactly what the hub last published (lapsed ones left out), each
  reservation waiting for its pod as the hub's does (:meth:`Ledger.adopt`).

The service's answer then trails the hub's decisions by at most the write (milliseconds),
the poll interval and the difference between the two processes' watch streams: under 2 s
with the defaults (docs/architecture.md; tests/integration/test_one_authority.py measures it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from esap_spawner.capacity.reservations import Ledger
from esap_spawner.observe.db import Database

__all__ = ["ReservationPublisher", "adopt_published"]

log = logging.getLogger(__name__)


class ReservationPublisher:
    """Writes the hub's reservations to the database whenever they change.

    ``database()`` gives the database (None: not reachable now). A failed write is tried
    again after ``retry_seconds``, doubling up to ``retry_max`` while it keeps failing.
    """

    def __init__(
        self,
        ledger: Ledger,
        database: Callable[[], Awaitable[Database | None]],
        *,
        retry_seconds: float = 1.0,
        retry_max: float = 30.0,
    ) -> None:
        self.ledger = ledger
        self.database = database
        self.retry_seconds = retry_seconds
        self.retry_max = retry_max
        self.writes = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        ledger.listen(self._changed.set)

    def start(self) -> None:
        """Publish now (an empty set after a restart clears what a previous run left) and
        after every change, in a background task. Idempotent."""
        if self._task is None:
            self._changed.set()
            self._task = asyncio.create_task(self._run(), name="esap-publish-reservations")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        failures = 0
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self._publish()
            except Exception as exc:
                if not failures:
                    log.warning("esap: cannot publish the reservations (retrying): %s", exc)
                failures += 1
                self._changed.set()
                await asyncio.sleep(min(self.retry_max, self.retry_seconds * 2 ** (failures - 1)))
            else:
                if failures:
                    log.info("esap: the reservations are published again")
                failures = 0

    async def _publish(self) -> None:
        db = await self.database()
        if db is None:
            raise RuntimeError("the database cannot be reached")
        held = self.ledger.held()  # taken on the loop: the ledger is not thread-safe
        await asyncio.to_thread(db.publish_reservations, held)
        self.writes += 1


async def adopt_published(
    ledger: Ledger, db: Database, *, clock: Callable[[], float] = time.time
) -> int:
    """Take in the reservations the hub last published (read in a worker thread); returns
    how many hold something."""
    held = await asyncio.to_thread(db.published_reservations, now=clock())
    ledger.adopt(held)
    return len(held)
