"""The history the service shares with the hub's spawner, through the database (``db_url``).

Two jobs, both off the request path (the database is only touched in worker threads):

- :class:`SpawnHistory` holds the recent successful spawn durations of each profile and
  the staging requests in flight (for the status page), re-read every
  ``refresh_seconds``; the service's
  :class:`~esap_spawner.capacity.model.ClusterModel` reads it as ``spawn_durations``, so
  ``estimated_start_seconds`` is the median of the spawns the hub recorded. It is a
  snapshot refreshed in a worker thread: reading the database when an answer needs it
  would put I/O in a request.
- :func:`sample_availability` stores what each profile can start now
  (:meth:`esap_spawner.observe.db.Database.record_availability`), every
  ``availability_sample_seconds``,
  for the report's "availability over time".

A failing database is logged and retried at the next tick; the service keeps answering
(the estimates then keep their last values, or stay ``null``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # SQLAlchemy is imported only when a database is configured
    from esap_spawner.observe.db import Database
    from esap_spawner.service.interfaces import CapacityView
    from esap_spawner.site.profiles import Profile

__all__ = ["SpawnHistory", "Staging", "every", "sample_availability"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Staging:
    """One staging request in flight, as the status page shows it (no user in it)."""

    did: str
    state: str | None
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    started: float  # seconds since the epoch


class SpawnHistory:
    """Recent successful spawn durations per profile (newest first), and the staging
    requests in flight, as last read.

    Call it as ``spawn_durations(slug)``: a dictionary look-up, never I/O. :meth:`refresh`
    reads the database (blocking: run it in a thread, as :meth:`refresh_in_thread` does).
    ``staging`` and ``read_at`` (seconds since the epoch; None before the first read) are
    the last snapshot of the requests in flight.
    """

    def __init__(self, db: Database, slugs: Sequence[str], *, limit: int = 50) -> None:
        self.db = db
        self.slugs = tuple(slugs)
        self.limit = limit
        self._durations: dict[str, tuple[float, ...]] = {}
        self.staging: tuple[Staging, ...] = ()
        self.read_at: float | None = None

    def __call__(self, slug: str) -> Sequence[float]:
        return self._durations.get(slug, ())

    def refresh(self) -> None:
        """Read every profile's recent durations and the staging in flight, then swap the
        snapshots in at once."""
        fresh = {
            slug: tuple(self.db.recent_spawn_durations(slug, self.limit)) for slug in self.slugs
        }
        staging = tuple(
            Staging(
                did=r.did,
                state=r.state,
                files_done=r.files_done,
                files_total=r.files_total,
                bytes_done=r.bytes_done,
                bytes_total=r.bytes_total,
                started=r.created_at.replace(tzinfo=UTC).timestamp(),
            )
            for r in self.db.staging_in_flight()
        )
        self._durations, self.staging, self.read_at = fresh, staging, time.time()

    async def refresh_in_thread(self) -> None:
        await asyncio.to_thread(self.refresh)


async def sample_availability(
    db: Database, capacity: CapacityView, profiles: Sequence[Profile], *, limited_threshold: int
) -> int:
    """Store one availability sample per profile; returns how many (0 while the cluster
    view is not synced or is stale: figures nobody can vouch for are not history)."""
    if not capacity.synced or capacity.stale:
        log.debug("availability not sampled: the cluster view is not current")
        return 0
    availability = capacity.availability(profiles, limited_threshold=limited_threshold)
    stored: int = await asyncio.to_thread(db.record_availability, availability)
    return stored


async def every(seconds: float, job: Callable[[], Awaitable[Any]], *, what: str) -> None:
    """Run ``job`` now and then every ``seconds`` until cancelled; a failing run does not
    stop the loop. The first failure is a warning, repeats of it are debug lines (a
    database that is down stays one line a minute otherwise), and recovery is logged."""
    failing: str | None = None
    while True:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            level = logging.DEBUG if failing == str(exc) else logging.WARNING
            log.log(level, "%s failed (retrying every %g s): %s", what, seconds, exc)
            failing = str(exc)
        else:
            if failing is not None:
                log.info("%s works again", what)
                failing = None
        await asyncio.sleep(seconds)
