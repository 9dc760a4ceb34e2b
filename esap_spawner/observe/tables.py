"""The tables esap-spawner keeps (SQLAlchemy 2 models), beside the hub's own in one database.

- ``esap_spawns`` (:class:`SpawnRecord`): one row per spawn that ended: profile, a salted
  hash of the user name (never the name), outcome, failure reason, seconds per phase,
  number of datasets, pod name. Feeds ``estimated_start_seconds`` and the report. (The
  pod name is whatever the spawner chose: KubeSpawner's default template contains the
  escaped user name; pass ``pod_name=None`` where that matters.)
- ``esap_staging`` (:class:`StagingRecord`): one row per staging request, updated while
  it runs. Partial unique indexes on (user, rule id) and on (user, DID, RSE) among rows
  still in flight make a restarted hub find its request instead of creating a second; a
  finished row keeps its rule id, so a retry that reuses the rule gets a row of its own,
  and users staging one DID through the site account's one rule each have theirs.
- ``esap_availability`` (:class:`AvailabilitySample`): per profile over time.
- ``esap_reservations`` (:class:`ReservationRecord`): the hub's reservations of admitted
  spawns whose pods its cluster view has not counted yet, as it last published them (the
  advertising service holds them too: one capacity authority, docs/architecture.md).
- ``esap_settings`` (:class:`Setting`): the per-site salt for user hashes, generated on
  first use unless the administrator gives one.

:class:`esap_spawner.observe.db.Database` reads and writes them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from esap_spawner.spawn.status import Phase

__all__ = [
    "IN_FLIGHT",
    "AvailabilitySample",
    "Base",
    "ReservationRecord",
    "Setting",
    "SpawnRecord",
    "StagingRecord",
]


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
    # when the server this request brought data to stopped (None: still running, or never
    # told): a rule in use by a running server is never removed
    released_at: Mapped[datetime | None] = mapped_column(DateTime)

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
        # A rule serves one request of a user at a time, but may serve several over time (a
        # spawn retried after a failed one reuses the rule the first one made) and several
        # users at once (the site's account holds one rule per DID and RSE).
        Index(
            "uq_esap_staging_user_rule_in_flight",
            "user_hash",
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


class ReservationRecord(Base):
    """One reservation the hub holds, as last published: what it holds and until when.

    The hub replaces the whole table whenever its reservations change; ``requests`` is the
    request vector as JSON (``[["cpu", 100], ["memory", 134217728], ["pods", 1]]``, the
    cluster model's integer units).
    """

    __tablename__ = "esap_reservations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    profile: Mapped[str] = mapped_column(String(63))
    namespace: Mapped[str | None] = mapped_column(String(253))
    pod_name: Mapped[str | None] = mapped_column(String(253))
    node: Mapped[str | None] = mapped_column(String(253))
    requests: Mapped[str] = mapped_column(Text)
    holds_quota: Mapped[bool] = mapped_column(Boolean)
    holds_node: Mapped[bool] = mapped_column(Boolean)
    expires_at: Mapped[float] = mapped_column(Float)
    published_at: Mapped[datetime] = mapped_column(DateTime)
