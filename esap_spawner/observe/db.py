"""What esap-spawner remembers across restarts: spawns, staging requests, availability.

SQLAlchemy 2 models and one :class:`Database` object per URL. SQLite is the default
(``sqlite:///esap.sqlite``, WAL journal so the hub, the service and ``report`` can read
while the spawner writes); PostgreSQL works by URL
(``postgresql+psycopg://user:pass@host/db``, the ``postgresql`` extra).

Tables:

- ``esap_spawns`` (:class:`SpawnRecord`): one row per spawn that ended: profile, a salted
  hash of the user name (never the name), outcome, failure reason, seconds per phase,
  number of datasets, pod name. Feeds ``estimated_start_seconds`` and the report. (The
  pod name is whatever the spawner chose: KubeSpawner's default template contains the
  escaped user name; pass ``pod_name=None`` where that matters.)
- ``esap_staging`` (:class:`StagingRecord`): one row per staging request, updated while
  it runs. Partial unique indexes on ``rule_id`` and on (user, DID, RSE) among rows still
  in flight make a restarted hub find its request instead of creating a second; a finished
  row keeps its rule id, so a retry that reuses the rule gets a row of its own.
- ``esap_availability`` (:class:`AvailabilitySample`): per profile over time.
- ``esap_settings``: the per-site salt for user hashes, generated on first use unless the
  administrator gives one.

The spawner's calls, one line each::

    db = Database(url); db.create_all()                       # at start
    db.record_spawn(profile="gpu", user="alice", outcome="success", started_at=t0,
                    finished_at=t1, phases=phases, datasets=2, pod_name=pod)
    db.recent_spawn_durations("gpu")                          # -> [seconds, ...]
    ClusterModel(spawn_durations=RecentDurations(db))         # cached, for the model
    db.record_availability(model_availability_by_slug)
    rec = db.start_staging(user="alice", did="lofar:L1", destination_rse="HUB_DISK")
    db.update_staging(rec.id, rule_id=..., state="REPLICATING", files_done=3, bytes_done=...)
    db.finish_staging(rec.id, outcome="success")
    db.staging_in_flight()                                    # resume after a restart

Times are stored as naive UTC ``datetime``; every function accepts aware datetimes or
seconds since the epoch and returns naive UTC. Records returned are detached snapshots.
Calls block while the database answers: from a coroutine, run them in a thread
(``await asyncio.to_thread(db.record_spawn, profile=..., ...)``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from esap_spawner.data.catalogue.base import StagingStatus
from esap_spawner.spawn.status import Phase, SpawnStatus

__all__ = [
    "DEFAULT_URL",
    "AvailabilitySample",
    "Base",
    "Database",
    "RecentDurations",
    "SpawnRecord",
    "StagingRecord",
    "hash_user",
    "utc",
]

DEFAULT_URL = "sqlite:///esap.sqlite"
SALT_KEY = "user_hash_salt"

Moment = datetime | float | int


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


class Base(DeclarativeBase):
    pass


class Setting(Base):
    __tablename__ = "esap_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class SpawnRecord(Base):
    """One finished spawn. Phase columns are None when the phase was not measured."""

    __tablename__ = "esap_spawns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    finished_at: Mapped[datetime] = mapped_column(DateTime)
    duration_seconds: Mapped[float] = mapped_column(Float)
    profile: Mapped[str] = mapped_column(String(63))
    user_hash: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    validate_seconds: Mapped[float | None] = mapped_column(Float)
    staging_seconds: Mapped[float | None] = mapped_column(Float)
    scheduling_seconds: Mapped[float | None] = mapped_column(Float)
    image_seconds: Mapped[float | None] = mapped_column(Float)
    startup_seconds: Mapped[float | None] = mapped_column(Float)
    datasets: Mapped[int] = mapped_column(Integer, default=0)
    pod_name: Mapped[str | None] = mapped_column(String(253))

    __table_args__ = (Index("ix_esap_spawns_profile_outcome", "profile", "outcome", "started_at"),)

    def phase_seconds(self) -> dict[Phase, float]:
        """The measured phases of this spawn."""
        found = {phase: getattr(self, f"{phase.value}_seconds") for phase in Phase}
        return {phase: float(v) for phase, v in found.items() if v is not None}


IN_FLIGHT = "finished_at IS NULL"


class StagingRecord(Base):
    """One staging request (one DID to one RSE), from creation to its outcome."""

    __tablename__ = "esap_staging"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    spawn_id: Mapped[int | None] = mapped_column(ForeignKey("esap_spawns.id", ondelete="SET NULL"))
    user_hash: Mapped[str] = mapped_column(String(64))
    did: Mapped[str] = mapped_column(String(512))
    destination_rse: Mapped[str] = mapped_column(String(255))
    rule_id: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    state: Mapped[str | None] = mapped_column(String(32))
    files_total: Mapped[int] = mapped_column(Integer, default=0)
    files_done: Mapped[int] = mapped_column(Integer, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    outcome: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index(
            "uq_esap_staging_in_flight",
            "user_hash",
            "did",
            "destination_rse",
            unique=True,
            sqlite_where=text(IN_FLIGHT),
            postgresql_where=text(IN_FLIGHT),
        ),
        # One rule serves one request at a time, but may serve several over time: a spawn
        # retried after a failed one (Rucio down) reuses the rule the first one made.
        Index(
            "uq_esap_staging_rule_in_flight",
            "rule_id",
            unique=True,
            sqlite_where=text(IN_FLIGHT),
            postgresql_where=text(IN_FLIGHT),
        ),
    )

    @property
    def seconds(self) -> float | None:
        """Time from request to outcome (None while in flight)."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.created_at).total_seconds()


class AvailabilitySample(Base):
    """What one profile could start at one moment."""

    __tablename__ = "esap_availability"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[datetime] = mapped_column(DateTime)
    profile: Mapped[str] = mapped_column(String(63))
    can_start_now: Mapped[int | None] = mapped_column(Integer)
    running: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))

    __table_args__ = (Index("ix_esap_availability_profile_time", "profile", "time"),)


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

    def create_all(self) -> None:
        """Create missing tables (existing ones are left as they are)."""
        Base.metadata.create_all(self.engine)

    def has_tables(self) -> bool:
        """Whether the spawn table exists (``report`` reads without creating anything)."""
        return inspect(self.engine).has_table(SpawnRecord.__tablename__)

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
        except IntegrityError:
            raced = self._in_flight(user_hash, did, destination_rse)
            if raced is None and rule_id is not None:
                raced = self.staging_by_rule(rule_id)
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

    def staging_by_rule(self, rule_id: str) -> StagingRecord | None:
        """The request a rule serves: the one in flight, else the latest."""
        query = (
            select(StagingRecord)
            .where(StagingRecord.rule_id == rule_id)
            .order_by(StagingRecord.finished_at.is_not(None), StagingRecord.id.desc())
        )
        with self.session() as s:
            return s.scalars(query).first()

    def staging_in_flight(self) -> list[StagingRecord]:
        """Staging records without an outcome yet (to resume polling after a restart)."""
        query = select(StagingRecord).where(StagingRecord.finished_at.is_(None))
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


class RecentDurations:
    """``recent_spawn_durations`` per profile, cached for ``ttl`` seconds.

    Pass it as ``ClusterModel(spawn_durations=RecentDurations(db))``: the model asks per
    profile on every availability answer, and a database round trip each time would put
    I/O in the service's request path. ``record`` adds a fresh duration without waiting
    for the cache to expire (the spawner's own spawns show at once).
    """

    def __init__(
        self,
        db: Database,
        *,
        ttl: float = 60.0,
        limit: int = 50,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db, self.ttl, self.limit, self.clock = db, ttl, limit, clock
        self._cache: dict[str, tuple[float, list[float]]] = {}

    def __call__(self, slug: str) -> Sequence[float]:
        now = self.clock()
        cached = self._cache.get(slug)
        if cached is None or now - cached[0] >= self.ttl:
            cached = (now, self.db.recent_spawn_durations(slug, self.limit))
            self._cache[slug] = cached
        return cached[1]

    def record(self, slug: str, seconds: float) -> None:
        """Put a just-finished spawn's duration in front (newest first)."""
        cached = self._cache.get(slug)
        if cached is not None:
            cached[1].insert(0, float(seconds))
            del cached[1][self.limit :]
