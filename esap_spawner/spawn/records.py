"""What is kept of a spawn once it ends: its metrics, its database row, its duration.

The spawner marks the moments of an attempt (:class:`SpawnAttempt`); when the start future
settles, :func:`outcome_of` says how it ended (pure) and :func:`record_spawn` writes it to
the Prometheus metrics, the spawn-history database and the in-memory durations that feed
``estimated_start_seconds``. Database writes run in a worker thread: SQLAlchemy is
synchronous and the hub's event loop must not wait on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException
from tornado import web

from esap_spawner.observe.db import Database
from esap_spawner.observe.metrics import HubMetrics
from esap_spawner.observe.phases import SpawnTimeline, phase_durations
from esap_spawner.spawn.status import Phase, SpawnStatus

log = logging.getLogger(__name__)


@dataclass
class SpawnAttempt:
    """Moments of one spawn, seconds since the epoch (None: not reached)."""

    user: str
    requested: float
    profile: str | None = None
    validated: float | None = None
    staging_started: float | None = None
    staging_finished: float | None = None
    pod_created: float | None = None
    datasets: int = 0
    pod_name: str | None = None


class SpawnDurations:
    """Recent spawn durations per profile, in memory (the spawner records, the model reads)."""

    def __init__(self, keep: int = 20) -> None:
        self.keep = keep
        self._by_slug: dict[str, list[float]] = {}

    def record(self, slug: str, seconds: float) -> None:
        recent = self._by_slug.setdefault(slug, [])
        recent.append(float(seconds))
        del recent[: -self.keep]

    def __call__(self, slug: str) -> Sequence[float]:
        return self._by_slug.get(slug, ())


def outcome_of(
    future: asyncio.Future[Any] | Future[Any], attempt: SpawnAttempt
) -> tuple[SpawnStatus, str | None]:
    """How a settled start future ended, and why in words when it did not succeed.

    A refusal is an HTTP 4xx before any pod was created (bad options, access, quota, no
    room); anything after the pod exists is a failure.
    """
    if future.cancelled():
        return SpawnStatus.cancelled, "cancelled before the server was ready"
    error = future.exception()
    if error is None:
        return SpawnStatus.success, None
    reason = getattr(error, "jupyterhub_message", None) or reason_in_words(error)
    if attempt.pod_created is None and isinstance(error, web.HTTPError) and error.status_code < 500:
        return SpawnStatus.refused, reason
    return SpawnStatus.failure, reason


def reason_in_words(error: BaseException) -> str:
    """Why a spawn failed, for a person: a Kubernetes API error as its status and the API
    server's message (not the client's dump of headers and body), anything else as is."""
    if isinstance(error, ApiException):
        said = f"the Kubernetes API answered {error.status} {error.reason or ''}".rstrip()
        body = error.body.decode(errors="replace") if isinstance(error.body, bytes) else error.body
        detail = ""
        if body:
            try:
                detail = str(json.loads(body).get("message") or "")
            except (ValueError, AttributeError):
                detail = str(body)[:300]
        return f"{said}: {detail}" if detail else said
    return str(error) or type(error).__name__


async def record_spawn(
    attempt: SpawnAttempt,
    status: SpawnStatus,
    reason: str | None,
    events: Iterable[Mapping[str, Any]],
    *,
    metrics: HubMetrics,
    durations: SpawnDurations,
    db: Database | None,
) -> None:
    """Observe the metrics, remember the duration and store the row of one ended spawn."""
    finished = time.time()
    timeline = SpawnTimeline(
        requested=attempt.requested,
        validated=attempt.validated,
        staging_started=attempt.staging_started,
        staging_finished=attempt.staging_finished,
        pod_created=attempt.pod_created,
        finished=finished,
    )
    measured = phase_durations(timeline, events, pod_name=attempt.pod_name)
    phases: dict[Phase | str, float] = {phase: value for phase, value in measured.items()}
    seconds = max(0.0, finished - attempt.requested)
    profile = attempt.profile or "none"
    metrics.observe_spawn(profile, status, seconds, phases)
    if status is SpawnStatus.success and attempt.profile:
        durations.record(attempt.profile, seconds)
    if db is not None:
        try:
            await asyncio.to_thread(
                db.record_spawn,
                profile=profile,
                user=attempt.user,
                outcome=status,
                started_at=attempt.requested,
                finished_at=finished,
                phases=phases,
                failure_reason=reason,
                datasets=attempt.datasets,
                pod_name=attempt.pod_name,
            )
        except Exception:
            # the spawn itself is not affected by a history write that failed
            log.exception("esap: could not record the spawn of %s", attempt.user)
