"""Schema migrations of the esap tables (esap_spawner.observe.schema, ``esap-spawner db``).

A database as esap-spawner 0.1 wrote it (before it had migrations: its frozen CREATE
statements and rows in tests/data/db/) is brought to the current schema with its rows; run
again, nothing changes. The migrations alone reach the models; a database written by a
newer esap-spawner, or one whose upgrade fails, is left as it was. Against a real SQLite
file and, when ESAP_TEST_DATABASE_URL is set, PostgreSQL (as tests/integration/test_db.py).
"""

from __future__ import annotations

import itertools
import os
import textwrap
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from esap_spawner.cli import main as cli
from esap_spawner.observe import schema
from esap_spawner.observe.db import Database
from esap_spawner.observe.schema import (
    BASELINE,
    VERSION_TABLE,
    SchemaError,
    SchemaState,
    ensure_schema,
    head_revision,
    schema_status,
    upgrade_schema,
)
from esap_spawner.observe.tables import Base

pytestmark = pytest.mark.integration

DATA = Path(__file__).parents[1] / "data" / "db"
T0 = datetime(2026, 11, 20)


@pytest.fixture
def url(database_url: str) -> str:
    """An empty database (tests/harness/database.py)."""
    return database_url


def _statements(path: Path) -> list[str]:
    lines = [line for line in path.read_text().splitlines() if not line.startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def write_version_0_1(url: str) -> None:
    """The esap tables and rows as esap-spawner 0.1 wrote them: no version table."""
    engine = create_engine(url)
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            for statement in _statements(DATA / "esap-0.1-schema.sqlite.sql"):
                connection.exec_driver_sql(statement)
        else:  # the baseline revision creates them (checked against SQLite's below)
            command.upgrade(schema.alembic_config(connection), BASELINE)
            connection.execute(text(f"DROP TABLE {VERSION_TABLE}"))
        for statement in _statements(DATA / "esap-0.1-rows.sql"):
            connection.exec_driver_sql(statement)
    engine.dispose()


def contents(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every esap table, in id (or key) order."""
    engine = create_engine(url)
    found: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as connection:
        for name in sorted(inspect(connection).get_table_names()):
            if name.startswith("esap_"):
                rows = connection.execute(text(f"SELECT * FROM {name} ORDER BY 1")).all()
                found[name] = [tuple(row) for row in rows]
    engine.dispose()
    return found


def shape(url: str) -> dict[str, Any]:
    """The esap tables' columns, indexes and foreign keys, as the database reports them."""
    engine = create_engine(url)
    found: dict[str, Any] = {}
    with engine.connect() as connection:
        found_inspector = inspect(connection)
        for name in sorted(found_inspector.get_table_names()):
            if not name.startswith("esap_") or name == VERSION_TABLE:
                continue
            found[name] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"])
                    for c in found_inspector.get_columns(name)
                ],
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                    for i in found_inspector.get_indexes(name)
                ),
                "foreign_keys": [
                    (f["constrained_columns"], f["referred_table"], f["options"])
                    for f in found_inspector.get_foreign_keys(name)
                ],
            }
    engine.dispose()
    return found


def model_differences(url: str) -> list[Any]:
    """What alembic's autogenerate would change to reach the models (nothing, if current)."""
    engine = create_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"include_name": schema.include_name, "version_table": VERSION_TABLE},
        )
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    return list(differences)


def test_version_0_1_is_upgraded_with_its_rows_and_a_second_run_changes_nothing(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    write_version_0_1(url)
    rows_before = contents(url)
    assert schema_status(url).state is SchemaState.behind

    assert cli(["db", "upgrade", "--db", url]) == 0
    said = capsys.readouterr().out
    assert f"from no version table to revision {head_revision()}" in said
    assert schema_status(url).state is SchemaState.current
    assert model_differences(url) == []
    # what 0.1 stored reads back through today's code
    db = Database(url)
    spawns = db.spawns_between(T0)
    assert [(s.profile, s.outcome, s.duration_seconds) for s in spawns] == [
        ("gpu", "success", 60.0),
        ("gpu", "refused", 0.0),
        ("small", "failure", 300.0),
    ]
    assert spawns[0].pod_name == "jupyter-alice" and spawns[0].staging_seconds == 12.5
    (in_flight,) = db.staging_in_flight()
    assert in_flight.did == "lofar:L654321" and in_flight.files_done == 3
    assert db.staging_by_rule("0f1e2d3c4b5a69788796a5b4c3d2e1f0").spawn_id == 1  # type: ignore[union-attr]
    assert len(db.availability_between(T0)) == 3
    salt = "6f1c0e5bd7a94e3c8a2b1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f00"
    assert db.user_hash("alice") == Database(url, user_salt=salt).user_hash("alice")
    db.dispose()
    rows_after = contents(url)
    for table, rows in rows_before.items():  # a migration may add columns, never lose rows
        assert len(rows_after[table]) == len(rows)

    assert cli(["db", "upgrade", "--db", url]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert contents(url) == rows_after
    assert cli(["db", "status", "--db", url]) == 0
    assert "(current)" in capsys.readouterr().out


def test_after_the_upgrade_two_users_may_stage_through_one_rule(url: str) -> None:
    """Revision 0002 (security review finding 9): 0.1's index let one rule serve one row in
    flight; the upgraded database lets every user's request wait on the site's one rule."""
    write_version_0_1(url)
    upgrade_schema(url)
    db = Database(url)
    (in_flight,) = db.staging_in_flight()  # 0.1's row, on rule 0f1e...: another user's
    other = db.start_staging(user="someone-else", did=in_flight.did,
                             destination_rse=in_flight.destination_rse)  # fmt: skip
    assert db.update_staging(other.id, rule_id=in_flight.rule_id).rule_id == in_flight.rule_id
    db.dispose()


def test_the_baseline_revision_is_what_version_0_1_wrote(tmp_path: Path) -> None:
    written, migrated = (f"sqlite:///{tmp_path / n}.sqlite" for n in ("written", "migrated"))
    write_version_0_1(written)
    engine = create_engine(migrated)
    with engine.begin() as connection:
        command.upgrade(schema.alembic_config(connection), BASELINE)
    engine.dispose()
    assert shape(migrated) == shape(written)


def test_the_migrations_alone_reach_the_models(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(schema.alembic_config(connection), "head")
    engine.dispose()
    assert model_differences(url) == []
    assert schema_status(url).state is SchemaState.current


def test_an_empty_database_gets_the_models_tables_at_the_head(url: str) -> None:
    status = ensure_schema(url, upgrade=False)
    assert status.state is SchemaState.current and status.revision == head_revision()
    assert set(status.tables) == {t for t in Base.metadata.tables}
    assert model_differences(url) == []


def test_an_out_of_date_database_is_refused_untouched_unless_upgrading(url: str) -> None:
    write_version_0_1(url)
    before = contents(url)
    with pytest.raises(SchemaError) as refused:
        Database(url).ensure_schema(hint="set the trait")
    message = str(refused.value)
    assert "no version table" in message
    assert "run `esap-spawner db upgrade --db " in message and "or set the trait" in message
    assert contents(url) == before
    assert VERSION_TABLE not in inspect(create_engine(url)).get_table_names()

    assert Database(url).ensure_schema(upgrade=True).state is SchemaState.current


def test_a_database_from_a_newer_esap_spawner_is_refused(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ensure_schema(url, upgrade=False)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = 'f00dfeed'"))
    engine.dispose()
    for upgrade in (False, True):
        with pytest.raises(SchemaError, match="f00dfeed, which this esap-spawner does not know"):
            ensure_schema(url, upgrade=upgrade)
    assert cli(["db", "upgrade", "--db", url]) == 1
    assert "upgrade esap-spawner" in capsys.readouterr().err
    assert cli(["db", "status", "--db", url]) == 1


def test_the_hubs_own_tables_and_version_are_left_alone(tmp_path: Path) -> None:
    """The esap tables may live in JupyterHub's database, beside its alembic_version."""
    from jupyterhub import orm

    url = f"sqlite:///{tmp_path / 'jupyterhub.sqlite'}"
    orm.new_session_factory(url)().close()  # JupyterHub's tables, stamped with its revision
    engine = create_engine(url)
    with engine.connect() as connection:
        hub_revision = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    hub_tables = set(inspect(engine).get_table_names())
    engine.dispose()

    assert schema_status(url).state is SchemaState.empty
    ensure_schema(url, upgrade=False)
    assert model_differences(url) == []
    engine = create_engine(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).all() == (
            hub_revision
        )
    assert hub_tables < set(inspect(engine).get_table_names())
    engine.dispose()
    orm.new_session_factory(url)().close()  # and JupyterHub still accepts its database


def test_processes_starting_together_create_the_tables_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'esap.sqlite'}"
    errors: list[BaseException] = []

    def start() -> None:
        try:
            ensure_schema(url, upgrade=False)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert contents(url)[VERSION_TABLE] == [(head_revision(),)]


# -- a later revision, written here, to see an upgrade step run (and one fail) -------------

NOTE_COLUMN = """
    import sqlalchemy as sa
    from alembic import op

    revision = "t0001"
    down_revision = {down!r}
    branch_labels = None
    depends_on = None


    def upgrade() -> None:
        with op.batch_alter_table("esap_spawns") as batch:
            batch.add_column(sa.Column("note", sa.Text(), nullable=True))
        op.execute("UPDATE esap_spawns SET note = 'from 0.1'")


    def downgrade() -> None:
        with op.batch_alter_table("esap_spawns") as batch:
            batch.drop_column("note")
"""

BROKEN = """
    from alembic import op

    revision = "t0002"
    down_revision = "t0001"
    branch_labels = None
    depends_on = None


    def upgrade() -> None:
        op.execute("UPDATE no_such_table SET x = 1")


    def downgrade() -> None:
        pass
"""


@pytest.fixture
def later_revisions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Our scripts plus a folder of test revisions after the head."""
    folder = tmp_path / "later"
    folder.mkdir()
    (folder / "t0001_note.py").write_text(textwrap.dedent(NOTE_COLUMN.format(down=head_revision())))
    ours = schema.alembic_config

    def config(connection: Any = None) -> Config:
        found = ours(connection)
        shipped = Path(schema.__file__).parent / "migrations" / "versions"
        found.set_main_option("version_locations", f"{shipped} {folder}")
        return found

    monkeypatch.setattr(schema, "alembic_config", config)
    return folder


def test_an_upgrade_step_runs_on_the_rows_and_keeps_the_references(
    url: str, later_revisions: Path
) -> None:
    write_version_0_1(url)
    before, after = upgrade_schema(url)
    assert (before.revision, after.revision) == (None, "t0001")
    notes = [row[-1] for row in contents(url)["esap_spawns"]]  # the new column is the last
    assert notes == ["from 0.1"] * 3
    # the table was rebuilt (SQLite's batch mode): the staging rows still point at it
    assert contents(url)["esap_staging"][0][1] == 1
    assert upgrade_schema(url)[0].revision == "t0001"  # and again: nothing to do


def test_a_failing_upgrade_leaves_the_database_as_it_was(
    url: str, later_revisions: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (later_revisions / "t0002_broken.py").write_text(textwrap.dedent(BROKEN))
    write_version_0_1(url)
    before = contents(url)
    assert cli(["db", "upgrade", "--db", url]) == 1
    assert "no_such_table" in capsys.readouterr().err
    assert contents(url) == before  # no note column, no version table: all or nothing
    assert schema_status(url).revision is None


# -- the hub, the spawner and the service at start -------------------------------------------


@pytest.mark.usefixtures("clean_env")  # no ESAP_* variable; cwd tmp_path
def test_the_snippet_stops_the_hub_on_an_old_schema_or_upgrades_when_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.harness import snippets

    url = f"sqlite:///{tmp_path / 'esap.sqlite'}"
    write_version_0_1(url)
    monkeypatch.setenv("ESAP_SITE_FILE", str(snippets.EXAMPLE_SITE))
    monkeypatch.setenv("ESAP_DATABASE_URL", url)
    with pytest.raises(SystemExit) as stopped:
        snippets.load_snippets(tmp_path)
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert "FATAL: esap-spawner: the database" in err
    assert f"run `esap-spawner db upgrade --db {url}`" in err
    assert "ESAP_DATABASE_UPGRADE=true" in err
    assert schema_status(url).revision is None  # untouched

    monkeypatch.setenv("ESAP_DATABASE_UPGRADE", "true")
    config = snippets.load_snippets(tmp_path)
    assert config.ESAPSpawner.db_upgrade_on_start is True
    assert f"esap-spawner: database {url} is at revision" in capsys.readouterr().out
    assert schema_status(url).state is SchemaState.current


@pytest.mark.usefixtures("clean_env")  # no ESAP_* variable; cwd tmp_path
def test_the_snippet_lets_the_hub_start_when_the_database_cannot_be_reached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.harness import snippets

    monkeypatch.setenv("ESAP_SITE_FILE", str(snippets.EXAMPLE_SITE))
    monkeypatch.setenv("ESAP_DATABASE_URL", f"sqlite:///{tmp_path}/no/such/folder/esap.sqlite")
    config = snippets.load_snippets(tmp_path)  # the spawner tries again when it needs it
    assert config.ESAPSpawner.db_url.endswith("no/such/folder/esap.sqlite")
    assert "WARNING: cannot check the database" in capsys.readouterr().err


def test_a_real_hub_refuses_to_start_on_an_old_schema(hub_factory: Any, tmp_path: Path) -> None:
    from tests.harness.snippets import ENV_KEYS, EXAMPLE_SITE, LOAD_SNIPPETS

    url = f"sqlite:///{tmp_path / 'esap.sqlite'}"
    write_version_0_1(url)
    env = {key: "" for key in ENV_KEYS}
    env.update(ESAP_SITE_FILE=str(EXAMPLE_SITE), ESAP_SERVICE_MODE="off", ESAP_DATABASE_URL=url)
    with pytest.raises(RuntimeError) as refused:
        hub_factory(LOAD_SNIPPETS, env=env)
    assert f"esap-spawner db upgrade --db {url}" in str(refused.value)

    assert cli(["db", "upgrade", "--db", url]) == 0
    hub = hub_factory(LOAD_SNIPPETS, env=env, name="after-upgrade")
    assert f"esap-spawner: database {url} is at revision" in hub.log_path.read_text()


def test_a_spawner_without_the_snippet_refuses_spawns_on_an_old_schema(
    sim: Any, tmp_path: Path
) -> None:
    from esap_spawner.spawn.spawner import DATABASE_OUT_OF_DATE
    from tests.harness.hub import HUB_SITE, hub_on_cluster
    from tests.harness.sim import fresh_namespace

    url = f"sqlite:///{tmp_path / 'esap.sqlite'}"
    write_version_0_1(url)
    config = f"\nc.ESAPSpawner.db_url = {url!r}\n"
    hub = hub_on_cluster(tmp_path, HUB_SITE, namespace=fresh_namespace(sim, "db"), config=config)
    try:
        hub.create_user("olga")
        answer = hub.api("POST", "/users/olga/server", json={"profile": "small"})
        assert answer.status_code == 503, answer.text
        assert answer.json()["message"] == DATABASE_OUT_OF_DATE
        assert "esap-spawner db upgrade --db" in hub.log_path.read_text()
    finally:
        hub.stop()
    assert schema_status(url).revision is None  # untouched


def test_the_service_refuses_to_start_on_an_old_schema(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.harness.snippets import EXAMPLE_SITE

    url = f"sqlite:///{tmp_path / 'esap.sqlite'}"
    write_version_0_1(url)
    command_line = [sys.executable, "-m", "esap_spawner.cli", "service", "--site-file",
                    str(EXAMPLE_SITE), "--db-url", url, "--port", "0"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "ESAP_"))}
    done = subprocess.run(
        command_line, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path
    )
    assert done.returncode == 2, done.stderr
    assert f"run `esap-spawner db upgrade --db {url}`" in done.stderr
    assert "db_upgrade_on_start" in done.stderr
    assert schema_status(url).revision is None


def test_the_revisions_form_one_line_from_the_baseline() -> None:
    """Two revisions written in parallel on the same parent must be renumbered, not merged:
    one history, each file named after its revision (``r<revision>_<slug>.py``)."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(schema.alembic_config())
    assert scripts.get_heads() == [head_revision()]
    line = list(reversed(list(scripts.walk_revisions())))
    assert line[0].revision == BASELINE and line[0].down_revision is None
    for parent, child in itertools.pairwise(line):
        assert child.down_revision == parent.revision
    for script in line:
        assert Path(script.path).name.startswith(f"r{script.revision}_"), script.path
