"""What esap-spawner remembers across restarts: spawns, staging requests, availability.

One :class:`Database` object per URL over the tables of :mod:`esap_spawner.observe.tables`
(spawns, staging requests, availability samples, the hub's reservations, settings). SQLite
is the default (``sqlite:///esap.sqlite``, WAL journal so the hub, the service and
``report`` can read while the spawner writes); PostgreSQL works by URL
(``postgresql+psycopg://user:pass@host/db``, the ``postgresql`` extra).

The spawner's calls, one line each::

    db = Database(url); db.ensure_schema()                    # at start (see .schema)
    db.record_spawn(profile="gpu", user="alice", outcome="success", started_at=t0,
                    finished_at=t1, phases=phases, datasets=2, pod_name=pod)
    db.recent_spawn_durations("gpu")                          # -> [seconds, ...]
    db.record_availability(model_availability_by_slug)
    rec = db.start_staging(user="alice", did="lofar:L1", destination_rse="HUB_DISK")
    db.update_staging(rec.id, rule_id=..., state="REPLICATING", files_done=3, bytes_done=...)
    db.finish_staging(rec.id, outcome="success")
    db.staging_in_flight()                                    # resume after a restart
    db.publish_reservations(model.reservations.held())        # the hub's, when they change
    db.published_reservations(now=time.time())                # the service's, every 0.5 s

Times are stored as naive UTC ``datetime``; every function accepts aware datetimes or
seconds since the epoch and returns naive UTC. Records returned are detached snapshots.
Calls block while the database answers: from a coroutine, run them in a thread
(``await asyncio.to_thread(db.record_spawn, profile=..., ...)``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, create_engine, delete, event, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from esap_spawner.capacity.reservations import Held
from esap_spawner.data.catalogue.base import StagingStatus
from esap_spawner.observe import schema
from esap_spawner.observe.tables import (
    AvailabilitySample,
    Base,
    ReservationRecord,
    Setting,
    SpawnRecord,
    StagingRecord,
)
from esap_spawner.spawn.status import Phase, SpawnStatus

__all__ = [
    "DEFAULT_URL",
    "AvailabilitySample",
    "Base",
    "Database",
    "SpawnRecord",
    "StagingRecord",
    "hash_user",
    "url_from_environment",
    "utc",
]

DEFAULT_URL = "sqlite:///esap.sqlite"
URL_VARIABLE = "ESAP_DATABASE_URL"
SALT_KEY = "user_hash_salt"

Moment = datetime | float | int


def url_from_environment() -> str:
    """The database URL a command uses unless told: ``ESAP_DATABASE_URL``, else the
    spawner's default (``sqlite:///esap.sqlite``, in the working directory)."""
    return os.environ.get(URL_VARIABLE) or DEFAULT_URL


def utc(moment: Moment) -> datetime:
    """``moment`` (aware or naive-UTC datetime, or epoch seconds) as a naive UTC datetime."""
    if isinstance(moment, int | float):
        return datetime.fromtimestamp(moment, tz=UTC).replace(tzinfo=None)
    if moment.tzinfo is not None:
        return moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def hash_user(name: str, salt: str) -> str:
    """A stable pseudonym for a user: HMAC-SHA256 of the name keyed with the site's salt."""
    return hmac.new(salt.encode(), name.encode(), hashlib.sha256).hexdigest()


_STAGING_FIELDS = frozenset(
    {"rule_id", "state", "files_total", "files_done", "bytes_total", "bytes_done", "spawn_id"}
)


def _check(enum: type[SpawnStatus] | type[StagingStatus], value: str) -> str:
    try:
        return str(enum(value).value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise ValueError(f"unknown outcome {value!r}; expected one of: {allowed}") from None


class Database:
    """One database: an engine, sessions, and the operations the package needs.

    ``user_salt`` keys the user-name hashes; without it the salt stored in the database
    is used (created, random, on first use), so hashes stay stable across restarts.
    """

    def __init__(self, url: str = DEFAULT_URL, *, user_salt: str | None = None, echo: bool = False):
        self.url = url
        self.engine = create_engine(url, echo=echo, future=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._salt = user_salt

    def __repr__(self) -> str:
        return f"Database({self.engine.url.render_as_string(hide_password=True)!r})"

    def ensure_schema(self, *, upgrade: bool = False, hint: str = "") -> schema.SchemaStatus:
        """Create the tables on an empty database; on one written by an older esap-spawner,
        upgrade them when ``upgrade`` is true, else raise :class:`.SchemaError` naming
        ``esap-spawner db upgrade`` (see :func:`esap_spawner.observe.schema.ensure_schema`)."""
        return schema.ensure_schema(self.engine.url, upgrade=upgrade, hint=hint)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        with self._sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    # --- users ----------------------------------------------------------------------------
    def user_hash(self, name: str) -> str:
        """The pseudonym stored for ``name`` (see :func:`hash_user`)."""
        if self._salt is None:
            self._salt = self._stored_salt()
        return hash_user(name, self._salt)

    def _stored_salt(self) -> str:
        with self.session() as s:
            found = s.get(Setting, SALT_KEY)
            if found is not None:
                return found.value
        try:
            with self.session() as s:
                s.add(Setting(key=SALT_KEY, value=secrets.token_hex(32)))
        except IntegrityError:
            pass  # another process created it first
        with self.session() as s:
            stored = s.get(Setting, SALT_KEY)
            assert stored is not None
            return stored.value

    # --- spawns ---------------------------------------------------------------------------
    def record_spawn(
        self,
        *,
        profile: str,
        user: str,
        outcome: SpawnStatus | str,
        started_at: Moment,
        finished_at: Moment,
        phases: Mapping[Phase | str, float] | None = None,
        failure_reason: str | None = None,
        datasets: int = 0,
        pod_name: str | None = None,
    ) -> SpawnRecord:
        """Store one finished spawn (``user`` is hashed here; the name is never stored)."""
        start, end = utc(started_at), utc(finished_at)
        if end < start:
            raise ValueError(f"finished_at {end} is before started_at {start}")
        record = SpawnRecord(
            started_at=start,
            finished_at=end,
            duration_seconds=(end - start).total_seconds(),
            profile=profile,
            user_hash=self.user_hash(user),
            outcome=_check(SpawnStatus, outcome),
            failure_reason=failure_reason,
            datasets=datasets,
            pod_name=pod_name,
        )
        for phase, seconds in (phases or {}).items():
            setattr(record, f"{Phase(phase).value}_seconds", float(seconds))
        with self.session() as s:
            s.add(record)
        return record

    def recent_spawn_durations(self, profile: str, limit: int = 50) -> list[float]:
        """Durations of the latest successful spawns of ``profile``, newest first."""
        query = (
            select(SpawnRecord.duration_seconds)
            .where(SpawnRecord.profile == profile, SpawnRecord.outcome == SpawnStatus.success)
            .order_by(SpawnRecord.started_at.desc(), SpawnRecord.id.desc())
            .limit(limit)
        )
        with self.session() as s:
            return [float(v) for v in s.scalars(query)]

    def spawns_between(self, since: Moment, until: Moment | None = None) -> list[SpawnRecord]:
        """Spawns started in [since, until), oldest first."""
        query = select(SpawnRecord).where(SpawnRecord.started_at >= utc(since))
        if until is not None:
            query = query.where(SpawnRecord.started_at < utc(until))
        with self.session() as s:
            return list(s.scalars(query.order_by(SpawnRecord.started_at, SpawnRecord.id)))

    # --- availability ---------------------------------------------------------------------
    def record_availability(
        self, availability_by_slug: Mapping[str, Any], *, at: Moment | None = None
    ) -> int:
        """Store one sample per profile from objects with ``can_start_now``, ``running``,
        ``status``; returns how many were stored."""
        moment = _now() if at is None else utc(at)
        rows = [
            AvailabilitySample(
                time=moment,
                profile=slug,
                can_start_now=a.can_start_now,
                running=a.running,
                status=str(getattr(a, "status", "unknown")),
            )
            for slug, a in availability_by_slug.items()
        ]
        with self.session() as s:
            s.add_all(rows)
        return len(rows)

    def availability_between(
        self, since: Moment, until: Moment | None = None
    ) -> list[AvailabilitySample]:
        query = select(AvailabilitySample).where(AvailabilitySample.time >= utc(since))
        if until is not None:
            query = query.where(AvailabilitySample.time < utc(until))
        with self.session() as s:
            return list(s.scalars(query.order_by(AvailabilitySample.time, AvailabilitySample.id)))

    # --- reservations (the hub's, for the service) ---------------------------------------
    def publish_reservations(self, held: Sequence[Held]) -> None:
        """Replace the published reservations by ``held`` (the hub's, all of them), at once."""
        moment = _now()
        rows = [
            ReservationRecord(
                profile=h.slug,
                namespace=h.namespace,
                pod_name=h.pod_name,
                node=h.node,
                requests=json.dumps([list(pair) for pair in h.vector]),
                holds_quota=h.holds_quota,
                holds_node=h.holds_node,
                expires_at=h.expires_at,
                published_at=moment,
            )
            for h in held
        ]
        with self.session() as s:
            s.execute(delete(ReservationRecord))
            s.add_all(rows)

    def published_reservations(self, *, now: float) -> list[Held]:
        """The reservations last published that have not lapsed at ``now`` (epoch seconds)."""
        query = select(ReservationRecord).where(ReservationRecord.expires_at > now)
        with self.session() as s:
            rows = list(s.scalars(query.order_by(ReservationRecord.id)))
        return [
            Held(
                slug=r.profile,
                node=r.node,
                vector=tuple((str(name), int(amount)) for name, amount in json.loads(r.requests)),
                holds_quota=r.holds_quota,
                holds_node=r.holds_node,
                expires_at=r.expires_at,
                namespace=r.namespace,
                pod_name=r.pod_name,
            )
            for r in rows
        ]

    # --- staging --------------------------------------------------------------------------
    def start_staging(
        self,
        *,
        user: str,
        did: str,
        destination_rse: str,
        rule_id: str | None = None,
        files_total: int = 0,
        bytes_total: int = 0,
        spawn_id: int | None = None,
        at: Moment | None = None,
    ) -> StagingRecord:
        """The in-flight staging record for (user, DID, RSE), created if there is none.

        Idempotent: a second call (a restart, a retried spawn, a concurrent process) gets
        the existing row back instead of a duplicate.
        """
        user_hash = self.user_hash(user)
        moment = _now() if at is None else utc(at)
        existing = self._in_flight(user_hash, did, destination_rse)
        if existing is not None:
            return existing
        record = StagingRecord(
            spawn_id=spawn_id,
            user_hash=user_hash,
            did=did,
            destination_rse=destination_rse,
            rule_id=rule_id,
            created_at=moment,
            updated_at=moment,
            files_total=files_total,
            files_done=0,
            bytes_total=bytes_total,
            bytes_done=0,
        )
        try:
            with self.session() as s:
                s.add(record)
        except IntegrityError:  # another process made it first
            raced = self._in_flight(user_hash, did, destination_rse)
            if raced is None:
                raise
            return raced
        return record

    def _in_flight(self, user_hash: str, did: str, rse: str) -> StagingRecord | None:
        query = select(StagingRecord).where(
            StagingRecord.user_hash == user_hash,
            StagingRecord.did == did,
            StagingRecord.destination_rse == rse,
            StagingRecord.finished_at.is_(None),
        )
        with self.session() as s:
            return s.scalars(query).first()

    def update_staging(self, staging_id: int, **changes: Any) -> StagingRecord:
        """Set progress fields (``rule_id``, ``state``, ``files_total``, ``files_done``,
        ``bytes_total``, ``bytes_done``, ``spawn_id``) of a staging record."""
        unknown = set(changes) - _STAGING_FIELDS
        if unknown:
            raise ValueError(
                f"cannot update {', '.join(sorted(unknown))}; allowed: "
                + ", ".join(sorted(_STAGING_FIELDS))
            )
        with self.session() as s:
            record = self._get_staging(s, staging_id)
            for key, value in changes.items():
                setattr(record, key, value)
            record.updated_at = _now()
        return record

    def finish_staging(
        self,
        staging_id: int,
        *,
        outcome: StagingStatus | str,
        reason: str | None = None,
        at: Moment | None = None,
        **changes: Any,
    ) -> StagingRecord:
        """Close a staging record with its outcome (and last progress figures)."""
        label = _check(StagingStatus, outcome)
        if changes:
            self.update_staging(staging_id, **changes)
        with self.session() as s:
            record = self._get_staging(s, staging_id)
            moment = _now() if at is None else utc(at)
            record.finished_at = max(moment, record.created_at)
            record.updated_at = record.finished_at
            record.outcome = label
            record.reason = reason
        return record

    @staticmethod
    def _get_staging(session: Session, staging_id: int) -> StagingRecord:
        record = session.get(StagingRecord, staging_id)
        if record is None:
            raise KeyError(f"no staging record with id {staging_id!r}")
        return record

    def release_staging(self, staging_ids: Sequence[int], *, at: Moment | None = None) -> None:
        """Mark the requests of a server that stopped: their data is no longer in use."""
        if not staging_ids:
            return
        moment = _now() if at is None else utc(at)
        with self.session() as s:
            for record in s.scalars(select(StagingRecord).where(StagingRecord.id.in_(staging_ids))):
                record.released_at = record.released_at or moment

    def rule_in_use(self, rule_id: str, *, besides: Sequence[int] = ()) -> bool:
        """Whether any request but ``besides`` still needs the rule: in flight, or done for
        a server that has not stopped (``released_at`` unset)."""
        needs = or_(
            StagingRecord.finished_at.is_(None),
            and_(
                StagingRecord.outcome == StagingStatus.success,
                StagingRecord.released_at.is_(None),
            ),
        )
        query = select(StagingRecord.id).where(StagingRecord.rule_id == rule_id, needs)
        if besides:
            query = query.where(StagingRecord.id.not_in(besides))
        with self.session() as s:
            return s.scalars(query.limit(1)).first() is not None

    def staging_by_rule(self, rule_id: str) -> StagingRecord | None:
        """The request a rule serves: the one in flight, else the latest."""
        query = (
            select(StagingRecord)
            .where(StagingRecord.rule_id == rule_id)
            .order_by(StagingRecord.finished_at.is_not(None), StagingRecord.id.desc())
        )
        with self.session() as s:
            return s.scalars(query).first()

    def staging_in_flight(self, user: str | None = None) -> list[StagingRecord]:
        """Staging records without an outcome yet (to resume polling after a restart), of
        every user or of ``user`` (to hold a user to their limit of requests in flight)."""
        query = select(StagingRecord).where(StagingRecord.finished_at.is_(None))
        if user is not None:
            query = query.where(StagingRecord.user_hash == self.user_hash(user))
        with self.session() as s:
            return list(s.scalars(query.order_by(StagingRecord.created_at)))

    def staging_between(self, since: Moment, until: Moment | None = None) -> list[StagingRecord]:
        query = select(StagingRecord).where(StagingRecord.created_at >= utc(since))
        if until is not None:
            query = query.where(StagingRecord.created_at < utc(until))
        with self.session() as s:
            return list(s.scalars(query.order_by(StagingRecord.created_at, StagingRecord.id)))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
    finally:
        cursor.close()
