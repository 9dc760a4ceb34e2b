"""Staging at spawn: bring the requested datasets to the hub's storage before the pod starts.

:class:`Stager` is what the spawner runs between admission and pod creation. I/O stays at
the edges: the catalogue (:mod:`esap_spawner.data.catalogue`), the database
(:class:`~esap_spawner.observe.db.Database`, in a worker thread) and the clock/sleep functions, all
injected. For the requested DIDs it

1. resolves them in ONE bulk call and computes their locality (pure:
   :func:`~esap_spawner.data.catalogue.locality.did_locality`); a DID that does not exist fails
   the spawn at once, and so do datasets that need more staged than the site allows one
   server, or more requests than the user may have in flight
   (:mod:`esap_spawner.data.staging_limits`, :class:`StagingLimit`): no rule exists yet;
2. for each DID not fully at a local RSE, finds its request again (the spawner's saved state
   by rule id, else the database's in-flight row for user + DID + RSE) or calls
   ``catalogue.stage()``, which itself reuses a rule the account already has for that DID and
   RSE: a hub restart never makes a second rule;
3. polls ``staging_progress`` with backoff (reset whenever something moved) until every rule
   is OK, reporting ``Staging escape:crab-2020 to HUB_LOCAL_DISK: 12/40 files, 1.2/4.0 GB``
   through ``on_message``, until the deadline (the spawner passes the smaller of the site's
   ``staging.timeout`` and what is left of its ``start_timeout``);
4. resolves the staged DIDs again (fresh, not cached) and returns every DID's files, now local.

Failures raise :class:`StagingError` with a status and the reason in words (a STUCK rule, no
quota, access denied, no such dataset, the catalogue unreachable, the deadline); each staging
request's outcome goes to the database and to ``metrics.observe_staging``. What to remember
across restarts is :meth:`Stager.state` (JSON), which the spawner keeps in its state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from esap_spawner.data.catalogue.base import (
    AccessDenied,
    Catalogue,
    CatalogueError,
    CatalogueUnavailable,
    DidFiles,
    DidNotFound,
    InvalidDid,
    Locality,
    QuotaExceeded,
    StagingProgress,
    StagingRequest,
    StagingState,
    StagingStatus,
)
from esap_spawner.data.catalogue.locality import did_locality
from esap_spawner.data.staging_limits import StagingLimits, too_many_in_flight, too_much_to_stage
from esap_spawner.observe.db import Database
from esap_spawner.observe.metrics import HUB, HubMetrics
from esap_spawner.site.quantity import format_bytes

log = logging.getLogger(__name__)

STATE_VERSION = 1


class StagingError(Exception):
    """Staging cannot give the spawn its data: ``status`` (HTTP) and the reason in words."""

    def __init__(self, status: int, message: str, outcome: StagingStatus) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome


class StagingLimit(StagingError):
    """The datasets are more than the site lets one server stage (413), or the user has too
    many staging requests in flight (429): refused before any rule is made."""


def error_for(exc: CatalogueError, did: str | None = None) -> StagingError:
    """A catalogue error as the spawn's failure: status and words for the user."""
    where = f"{did}: " if did and did not in str(exc) else ""
    if isinstance(exc, DidNotFound):
        text = str(exc) if exc.did or not did else f"dataset {did} does not exist ({exc})"
        return StagingError(404, text, StagingStatus.failure)
    if isinstance(exc, InvalidDid):
        return StagingError(400, str(exc), StagingStatus.failure)
    if isinstance(exc, QuotaExceeded):
        return StagingError(403, f"Cannot stage {where}{exc}", StagingStatus.failure)
    if isinstance(exc, AccessDenied):
        return StagingError(403, f"Cannot stage {where}{exc}", StagingStatus.failure)
    if isinstance(exc, CatalogueUnavailable):
        return StagingError(
            503, f"The data catalogue is unavailable: {where}{exc}", StagingStatus.failure
        )
    return StagingError(500, f"Staging failed: {where}{exc}", StagingStatus.failure)


@dataclass(frozen=True)
class StagingSettings:
    """How to stage: where, for how long, how patiently."""

    destination_rse: str | None
    lifetime: int
    poll_min: float = 1.0
    poll_max: float = 15.0
    poll_factor: float = 1.6
    limits: StagingLimits = field(default_factory=StagingLimits)


@dataclass
class DidStaging:
    """One DID being staged, as remembered in the spawner state."""

    did: str
    request: StagingRequest | None = None
    record_id: int | None = None
    started_at: float | None = None  # time.time()
    finished_at: float | None = None
    outcome: str | None = None
    files_ok: int = 0
    bytes_ok: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "did": self.did,
            "request": self.request.to_json() if self.request else None,
            "record_id": self.record_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "outcome": self.outcome,
            "files_ok": self.files_ok,
            "bytes_ok": self.bytes_ok,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DidStaging:
        request = data.get("request")
        return cls(
            did=str(data["did"]),
            request=StagingRequest.from_json(dict(request)) if request else None,
            record_id=data.get("record_id"),
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
            outcome=data.get("outcome"),
            files_ok=int(data.get("files_ok") or 0),
            bytes_ok=int(data.get("bytes_ok") or 0),
        )


def load_staging_state(state: Mapping[str, Any] | None) -> dict[str, DidStaging]:
    """The spawner state's ``esap_staging`` entry back as DID -> :class:`DidStaging`."""
    if not state or state.get("version") != STATE_VERSION:
        return {}
    out = {}
    for item in state.get("dids") or ():
        try:
            entry = DidStaging.from_json(item)
        except (KeyError, TypeError, ValueError):
            log.warning("esap: ignoring unreadable staging state %r", item)
            continue
        out[entry.did] = entry
    return out


def dump_staging_state(entries: Mapping[str, DidStaging]) -> dict[str, Any]:
    return {"version": STATE_VERSION, "dids": [e.to_json() for e in entries.values()]}


@dataclass
class Stager:
    """Stage the datasets of one spawn (see the module docstring)."""

    catalogue: Catalogue
    user: str
    settings: StagingSettings
    deadline: float  # on ``clock``'s scale
    db: Database | None = None
    metrics: HubMetrics = HUB
    saved: dict[str, DidStaging] = field(default_factory=dict)
    on_message: Callable[[str, float], None] = lambda message, fraction: None
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep

    def __post_init__(self) -> None:
        self.entries: dict[str, DidStaging] = dict(self.saved)
        self._dids: set[str] = set()
        self.staged = False  # True once anything had to be staged

    def state(self) -> dict[str, Any]:
        """JSON for the spawner state (requests, rule ids, times, outcomes): this run's
        DIDs, and other requests only while they are unfinished."""
        kept = {
            did: entry
            for did, entry in self.entries.items()
            if did in self._dids or entry.finished_at is None
        }
        return dump_staging_state(kept)

    # --- the run ------------------------------------------------------------------------
    async def run(self, dids: Sequence[str]) -> dict[str, DidFiles]:
        """Stage what is not local; every DID's files, all at a local RSE, in ``dids`` order."""
        self._dids = set(dids)
        if not dids:
            return {}
        try:
            resolved = await self.catalogue.resolve(dids)
        except CatalogueError as exc:
            raise error_for(exc) from exc
        missing = [did for did, files in resolved.items() if files is None]
        if missing:
            raise StagingError(
                404,
                f"dataset{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                f"{'do' if len(missing) > 1 else 'does'} not exist in the data catalogue",
                StagingStatus.failure,
            )
        local = {r.name for r in self.catalogue.local_rses}
        needed = [
            locality
            for did, files in resolved.items()
            if (locality := did_locality(did, files, local)).staging_required
        ]
        remote = [n.did for n in needed]
        if not remote:
            return {did: files for did, files in resolved.items() if files is not None}
        if not self.settings.destination_rse:
            raise StagingError(
                409,
                f"{', '.join(remote)} {'are' if len(remote) > 1 else 'is'} not at this hub's "
                "storage, and this hub does not stage data (no data.rucio.staging."
                "destination_rse in its site file)",
                StagingStatus.failure,
            )
        await self._check_limits(needed)
        self.staged = True
        try:
            for did in remote:
                await self._request(did, resolved[did])
            await self._wait(remote)
        except StagingError as exc:
            await self._finish_pending(exc.outcome, str(exc))
            raise
        except asyncio.CancelledError:
            await self._finish_pending(StagingStatus.cancelled, "the spawn was cancelled")
            raise
        self.catalogue.invalidate(remote)
        try:
            fresh = await self.catalogue.resolve(remote)
        except CatalogueError as exc:
            raise error_for(exc) from exc
        resolved.update(fresh)
        return {did: files for did, files in resolved.items() if files is not None}

    async def _check_limits(self, needed: Sequence[Locality]) -> None:
        """Refuse (:class:`StagingLimit`) before any rule: too much to stage, or too many
        requests in flight for this user (those of this spawn's DIDs are resumed, not new)."""
        limits, rse = self.settings.limits, self.settings.destination_rse
        assert rse is not None
        problem = too_much_to_stage(needed, limits, destination=rse)
        if problem is not None:
            raise StagingLimit(413, problem, StagingStatus.failure)
        if self.db is None:
            return
        records = await self._db("staging_in_flight", self.user)
        if records is None:  # the database did not answer (logged): no count to hold to
            return
        ours = {n.did for n in needed}
        resumed = {r.did for r in records if r.did in ours and r.destination_rse == rse}
        problem = too_many_in_flight(len(records) - len(resumed), len(ours - resumed), limits)
        if problem is not None:
            raise StagingLimit(429, problem, StagingStatus.failure)

    async def _request(self, did: str, files: DidFiles | None) -> None:
        """Find the request for ``did`` again (state, database) or make one (catalogue)."""
        rse = self.settings.destination_rse
        assert rse is not None
        entry = self.entries.get(did)
        if (
            entry is None
            or entry.finished_at is not None
            or entry.request is None
            or entry.request.destination_rse != rse
        ):
            entry = DidStaging(did=did, started_at=self.wall())
        self.entries[did] = entry
        record = await self._db("start_staging", user=self.user, did=did, destination_rse=rse)
        if record is not None:
            entry.record_id = record.id
            if entry.request is None and record.rule_id:
                entry.request = StagingRequest(
                    did=did,
                    destination_rse=rse,
                    rule_id=record.rule_id,
                    reused=True,
                    files_total=record.files_total or len(files.files if files else ()),
                    bytes_total=record.bytes_total or (files.bytes if files else 0),
                )
                entry.started_at = record.created_at.replace(tzinfo=UTC).timestamp()
        if entry.request is not None:
            self.on_message(f"Resuming staging of {did} (rule {entry.request.rule_id})", 0.0)
            return
        try:
            request = await self.catalogue.stage(
                did, destination_rse=rse, lifetime=self.settings.lifetime
            )
        except CatalogueError as exc:
            raise error_for(exc, did) from exc
        entry.request = request
        verb = "Reusing" if request.reused else "Created"
        self.on_message(
            f"{verb} replication rule {request.rule_id} for {did} to {rse} "
            f"({request.files_total} files, {format_bytes(request.bytes_total)})",
            0.0,
        )
        if entry.record_id is not None:
            await self._db(
                "update_staging",
                entry.record_id,
                rule_id=request.rule_id,
                files_total=request.files_total,
                bytes_total=request.bytes_total,
            )

    async def _wait(self, dids: Sequence[str]) -> None:
        pending = list(dids)
        interval = self.settings.poll_min
        last: dict[str, tuple[int, int, str]] = {}
        retried: set[str] = set()
        while pending:
            moved = False
            for did in list(pending):
                entry = self.entries[did]
                assert entry.request is not None
                try:
                    progress = await self.catalogue.staging_progress(entry.request)
                except CatalogueError as exc:
                    raise error_for(exc, did) from exc
                if progress.state is StagingState.NOT_AVAILABLE and did not in retried:
                    # a remembered rule that is gone (expired, removed): ask once more
                    retried.add(did)
                    entry.request = None
                    await self._request_again(did)
                    moved = True
                    continue
                key = (progress.files_ok, progress.bytes_ok, progress.state.value)
                if last.get(did) != key:
                    last[did] = key
                    moved = True
                    entry.files_ok, entry.bytes_ok = progress.files_ok, progress.bytes_ok
                    self.on_message(progress.message(), self._fraction())
                    await self._db_progress(entry, progress)
                if progress.failed:
                    raise StagingError(500, progress.message(), StagingStatus.failure)
                if progress.done:
                    pending.remove(did)
                    await self._finish(entry, StagingStatus.success, None)
            if not pending:
                return
            interval = self.settings.poll_min if moved else interval
            left = self.deadline - self.clock()
            if left <= 0:
                raise StagingError(
                    504,
                    "Staging did not finish in time: "
                    + "; ".join(self._summary(d) for d in pending),
                    StagingStatus.timeout,
                )
            await self.sleep(min(interval, left))
            interval = min(self.settings.poll_max, interval * self.settings.poll_factor)

    async def _request_again(self, did: str) -> None:
        rse = self.settings.destination_rse
        try:
            request = await self.catalogue.stage(
                did, destination_rse=rse, lifetime=self.settings.lifetime
            )
        except CatalogueError as exc:
            raise error_for(exc, did) from exc
        self.entries[did].request = request
        self.on_message(f"Replication rule {request.rule_id} for {did} to {rse}", 0.0)
        record_id = self.entries[did].record_id
        if record_id is not None:
            await self._db("update_staging", record_id, rule_id=request.rule_id)

    def _summary(self, did: str) -> str:
        entry = self.entries[did]
        total = entry.request.files_total if entry.request else 0
        return f"{did} has {entry.files_ok}/{total} files"

    def _fraction(self) -> float:
        total = sum(e.request.bytes_total for e in self.entries.values() if e.request)
        done = sum(
            (e.request.bytes_total if e.outcome == "success" else e.bytes_ok)
            for e in self.entries.values()
            if e.request
        )
        return done / total if total else 0.0

    # --- outcomes -----------------------------------------------------------------------
    async def _finish(self, entry: DidStaging, outcome: StagingStatus, reason: str | None) -> None:
        entry.finished_at = self.wall()
        entry.outcome = outcome.value
        seconds = max(0.0, entry.finished_at - (entry.started_at or entry.finished_at))
        if entry.request is None:
            done = 0
        elif outcome is StagingStatus.success:
            done = entry.request.bytes_total
        else:
            done = entry.bytes_ok
        self.metrics.observe_staging(outcome, seconds, done)
        if entry.record_id is not None:
            await self._db(
                "finish_staging",
                entry.record_id,
                outcome=outcome,
                reason=reason,
                files_done=entry.request.files_total
                if entry.request and outcome is StagingStatus.success
                else entry.files_ok,
                bytes_done=done,
            )

    async def _finish_pending(self, outcome: StagingStatus, reason: str) -> None:
        for entry in self.entries.values():
            if entry.finished_at is None and entry.started_at is not None:
                await asyncio.shield(self._finish(entry, outcome, reason))

    async def _db_progress(self, entry: DidStaging, progress: StagingProgress) -> None:
        if entry.record_id is None:
            return
        await self._db(
            "update_staging",
            entry.record_id,
            state=progress.state.value,
            files_done=progress.files_ok,
            bytes_done=progress.bytes_ok,
            files_total=progress.files_total,
        )

    async def _db(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A database call in a worker thread; a failing write is logged, never fatal."""
        if self.db is None:
            return None
        try:
            return await asyncio.to_thread(getattr(self.db, method), *args, **kwargs)
        except Exception:
            log.exception("esap: staging record %s failed for %s", method, self.user)
            return None


def staging_deadline(
    *,
    now: float,
    site_timeout: float,
    start_timeout: float,
    started: float,
    wall_now: float,
    pod_margin: float,
) -> float:
    """When staging must give up (on ``now``'s clock): the site's staging timeout, or what is
    left of the spawn's ``start_timeout`` (counted from ``started``, wall time) minus
    ``pod_margin`` seconds kept for the pod to start, whichever comes first."""
    left = start_timeout - (wall_now - started) - pod_margin
    return now + max(0.0, min(float(site_timeout), left))


__all__ = [
    "DidStaging",
    "Stager",
    "StagingError",
    "StagingLimit",
    "StagingSettings",
    "dump_staging_state",
    "error_for",
    "load_staging_state",
    "staging_deadline",
]
