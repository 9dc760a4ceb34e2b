"""The ``esap_*`` tables' schema version: created on an empty database, migrated by alembic.

The database may be the hub's own, which has JupyterHub's ``alembic_version`` table: ours
is ``esap_alembic_version``, and migrations only ever look at tables named ``esap_*``.
The migration scripts live in ``esap_spawner/observe/migrations/versions/`` (one linear
history; ``docs/operations.md`` says how to add one).

- :func:`schema_status` reads where a database stands (nothing is written);
- :func:`upgrade_schema` brings it to the newest revision: on an empty database the tables
  are created from the models and stamped, a database written before migrations existed
  is taken to be at :data:`BASELINE` and upgraded from there; run again, it does nothing;
- :func:`ensure_schema` is what the hub and the service call at start: an empty database
  gets its tables, a current one passes, an older one is upgraded only when asked to and
  otherwise refused with a :class:`SchemaError` naming ``esap-spawner db upgrade``.

Upgrades run in one transaction under a lock (``BEGIN EXCLUSIVE`` on SQLite, an advisory
lock on PostgreSQL), so two processes starting at once do not both create or migrate, and
a migration that fails leaves the database as it was.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from esap_spawner.observe.tables import Base
from esap_spawner.observe.urls import display_url

__all__ = [
    "BASELINE",
    "VERSION_TABLE",
    "SchemaError",
    "SchemaState",
    "SchemaStatus",
    "check_status",
    "ensure_schema",
    "head_revision",
    "schema_status",
    "upgrade_schema",
]

VERSION_TABLE = "esap_alembic_version"
TABLE_PREFIX = "esap_"
# The schema esap-spawner wrote before it had migrations; such a database has the
# tables but no version table.
BASELINE = "0001"
SCRIPTS = "esap_spawner.observe:migrations"
# pg_advisory_xact_lock key for upgrades: any constant; this one is "esap" in ASCII.
_PG_LOCK = 0x65736170


class SchemaError(RuntimeError):
    """The database's ``esap_*`` tables cannot be used as they are; the message says why
    and what to run."""


class SchemaState(enum.Enum):
    empty = "empty"  # no esap_* table at all
    current = "current"  # at the newest revision this esap-spawner knows
    behind = "behind"  # an older revision (or written before migrations): upgrade it
    unknown = "unknown"  # a revision this esap-spawner does not know: a newer one wrote it


@dataclass(frozen=True)
class SchemaStatus:
    """Where one database stands."""

    revision: str | None  # what the version table holds; None: no version table
    head: str  # the newest revision this esap-spawner knows
    tables: tuple[str, ...]  # the esap_* tables present, the version table aside
    known: bool  # whether ``revision`` is one of this esap-spawner's revisions

    @property
    def state(self) -> SchemaState:
        if self.revision is None:
            return SchemaState.behind if self.tables else SchemaState.empty
        if self.revision == self.head:
            return SchemaState.current
        return SchemaState.behind if self.known else SchemaState.unknown

    def describe(self) -> str:
        """The status in words, after "the database ...": ``is at revision 0001 (current)``."""
        if self.state is SchemaState.empty:
            return "has no esap tables yet"
        if self.revision is None:
            return (
                "has esap tables but no version table (esap-spawner wrote them before it had "
                f"schema migrations; the current revision is {self.head})"
            )
        if self.state is SchemaState.current:
            return f"is at revision {self.revision} (current)"
        if self.state is SchemaState.unknown:
            return (
                f"is at revision {self.revision}, which this esap-spawner does not know (it "
                f"knows up to {self.head}): a newer esap-spawner upgraded it"
            )
        return f"is at revision {self.revision}; the current revision is {self.head}"


def include_name(name: str | None, type_: str, _parents: Any) -> bool:
    """Migrations see only our tables (the database may be the hub's)."""
    if type_ == "table":
        return bool(name) and str(name).startswith(TABLE_PREFIX) and name != VERSION_TABLE
    return True


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for our scripts; ``connection`` is the one they run on."""
    config = Config()
    config.set_main_option("script_location", SCRIPTS)
    config.set_main_option("file_template", "r%%(rev)s_%%(slug)s")  # module names
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision of the migration scripts."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # the package always ships the baseline
        raise RuntimeError("esap_spawner.observe.migrations holds no revision")
    return head


def schema_status(url: str | URL) -> SchemaStatus:
    """Where the database at ``url`` stands; nothing is written."""
    with _connection(url, lock=False) as connection:
        return _status(connection)


def upgrade_schema(url: str | URL) -> tuple[SchemaStatus, SchemaStatus]:
    """Bring the database to the newest revision; returns the status before and after.

    Idempotent: on a current database it changes nothing. A database at a revision this
    esap-spawner does not know is refused (a newer one wrote it).
    """
    with _connection(url, lock=True) as connection:
        before = _status(connection)
        if before.state is SchemaState.unknown:
            check_status(before, url)
        if before.state is SchemaState.empty:
            Base.metadata.create_all(connection)
            command.stamp(alembic_config(connection), "head")
        elif before.state is SchemaState.behind:
            config = alembic_config(connection)
            if before.revision is None:
                command.stamp(config, BASELINE)
            command.upgrade(config, "head")
        return before, _status(connection)


def ensure_schema(url: str | URL, *, upgrade: bool, hint: str = "") -> SchemaStatus:
    """Make the database usable at start, or refuse: what the hub and the service call.

    An empty database gets its tables; a current one passes; an older one is upgraded when
    ``upgrade`` is true, else refused (see :func:`check_status`).
    """
    status = schema_status(url)
    if status.state is SchemaState.empty or (upgrade and status.state is SchemaState.behind):
        return upgrade_schema(url)[1]
    check_status(status, url, hint=hint)
    return status


def check_status(status: SchemaStatus, url: str | URL, *, hint: str = "") -> None:
    """Raise :class:`SchemaError` unless the tables are current (or not there yet): for
    older ones the message names ``esap-spawner db upgrade`` (``hint`` adds another way,
    e.g. the trait that upgrades on start)."""
    if status.state in (SchemaState.current, SchemaState.empty):
        return
    shown = display_url(url)
    if status.state is SchemaState.unknown:
        raise SchemaError(f"the database {shown} {status.describe()}; upgrade esap-spawner")
    also = f", or {hint}" if hint else ""
    raise SchemaError(
        f"the database {shown} {status.describe()}: run "
        f"`esap-spawner db upgrade --db {shown}`{also}"
    )


def _status(connection: Connection) -> SchemaStatus:
    scripts = ScriptDirectory.from_config(alembic_config())
    head = scripts.get_current_head()
    assert head is not None
    revision = MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLE}
    ).get_current_revision()
    names = inspect(connection).get_table_names()
    tables = tuple(sorted(n for n in names if include_name(n, "table", None)))
    known = revision is None or any(s.revision == revision for s in scripts.walk_revisions())
    return SchemaStatus(revision=revision, head=head, tables=tables, known=known)


@contextmanager
def _connection(url: str | URL, *, lock: bool) -> Iterator[Connection]:
    """One connection in one transaction, committed at the end; with ``lock``, no other
    process changes the schema meanwhile."""
    engine = _engine(make_url(url), lock=lock)
    try:
        with engine.begin() as connection:
            if lock and engine.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
            yield connection
    finally:
        engine.dispose()


def _engine(url: URL, *, lock: bool) -> Engine:
    if url.get_backend_name() != "sqlite":
        return create_engine(url, poolclass=NullPool)
    if url.database in (None, "", ":memory:"):
        raise SchemaError(
            "an in-memory SQLite database cannot be shared between connections: "
            "give a file, e.g. sqlite:///esap.sqlite"
        )
    engine = create_engine(url, poolclass=NullPool)

    # pysqlite begins transactions late and commits DDL on its own; take the transaction
    # over so the whole upgrade is one (and, with ``lock``, exclusive). Foreign keys stay
    # off (SQLite's default): alembic's batch mode drops and recreates tables, and with
    # them on, dropping esap_spawns would null every esap_staging.spawn_id.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=5000")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN EXCLUSIVE" if lock else "BEGIN")

    return engine
