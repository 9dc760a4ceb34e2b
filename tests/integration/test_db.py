"""esap_spawner.observe.db against a real SQLite file and, when ESAP_TEST_DATABASE_URL is set
(``postgresql+psycopg://...``), the same tests against PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from esap_spawner.observe.db import Database, StagingRecord, hash_user
from esap_spawner.spawn.status import Phase

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 12, 0, 0)


@dataclass
class Avail:
    can_start_now: int | None
    running: int | None
    status: str


@pytest.fixture
def url(database_url: str) -> str:
    """An empty database (tests/harness/database.py)."""
    return database_url


@pytest.fixture
def db(url: str) -> Iterator[Database]:
    database = Database(url)
    database.ensure_schema()
    yield database
    database.dispose()


def test_sqlite_uses_wal(tmp_path) -> None:
    path = tmp_path / "wal.sqlite"
    database = Database(f"sqlite:///{path}")
    database.ensure_schema()
    database.dispose()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_record_spawn_round_trip_and_no_user_name_stored(db: Database, url: str) -> None:
    phases = {Phase.validate: 0.05, Phase.scheduling: 7.5, Phase.image: 41.3, Phase.startup: 6.0}
    db.record_spawn(profile="gpu", user="alice@example.org", outcome="success",
                    started_at=T0, finished_at=T0 + timedelta(seconds=60), phases=phases,
                    datasets=2, pod_name="jupyter-alice")  # fmt: skip
    db.record_spawn(profile="gpu", user="bob", outcome="refused",
                    started_at=T0 + timedelta(minutes=1), finished_at=T0 + timedelta(minutes=1),
                    failure_reason="profile gpu is at its limit of 2 servers")  # fmt: skip
    spawns = db.spawns_between(T0 - timedelta(days=1))
    assert [s.outcome for s in spawns] == ["success", "refused"]
    first = spawns[0]
    assert first.duration_seconds == 60.0
    assert first.phase_seconds() == phases
    assert first.staging_seconds is None
    assert first.datasets == 2 and first.pod_name == "jupyter-alice"
    assert first.user_hash == db.user_hash("alice@example.org") != db.user_hash("bob")
    assert len(first.user_hash) == 64
    # the name appears nowhere but in the pod name the spawner chose (KubeSpawner's default
    # template holds the escaped user name; docs/metrics.md says so)
    with db.session() as s:
        rows = s.execute(text("SELECT * FROM esap_spawns")).mappings().all()
    dump = " ".join(f"{k}={v}" for row in rows for k, v in row.items() if k != "pod_name")
    assert "alice" not in dump and "bob" not in dump
    assert spawns[1].failure_reason == "profile gpu is at its limit of 2 servers"


def test_user_hash_is_salted_and_stable_across_restarts(url: str) -> None:
    one = Database(url)
    one.ensure_schema()
    first = one.user_hash("alice")
    one.dispose()
    two = Database(url)
    assert two.user_hash("alice") == first  # the stored salt survives
    assert first != hash_user("alice", "")  # and is not empty
    assert Database(url, user_salt="site-secret").user_hash("alice") == hash_user(
        "alice", "site-secret"
    )
    two.dispose()


def test_bad_spawn_records_are_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="unknown outcome 'ok'"):
        db.record_spawn(profile="small", user="a", outcome="ok", started_at=T0, finished_at=T0)
    with pytest.raises(ValueError, match="before started_at"):
        db.record_spawn(profile="small", user="a", outcome="success", started_at=T0,
                        finished_at=T0 - timedelta(seconds=1))  # fmt: skip
    assert db.spawns_between(T0 - timedelta(days=1)) == []


def test_recent_spawn_durations_newest_successes_first(db: Database) -> None:
    for i, seconds in enumerate([10.0, 20.0, 30.0, 40.0]):
        start = T0 + timedelta(minutes=i)
        db.record_spawn(profile="small", user=f"u{i}", outcome="success", started_at=start,
                        finished_at=start + timedelta(seconds=seconds))  # fmt: skip
    later = T0 + timedelta(hours=1)
    db.record_spawn(profile="small", user="x", outcome="failure", started_at=later,
                    finished_at=later + timedelta(hours=1))  # fmt: skip
    db.record_spawn(profile="gpu", user="y", outcome="success", started_at=T0,
                    finished_at=T0 + timedelta(seconds=99))  # fmt: skip
    assert db.recent_spawn_durations("small") == [40.0, 30.0, 20.0, 10.0]
    assert db.recent_spawn_durations("small", limit=2) == [40.0, 30.0]
    assert db.recent_spawn_durations("gpu") == [99.0]
    assert db.recent_spawn_durations("none") == []


def test_epoch_and_aware_times_are_stored_as_utc(db: Database) -> None:
    aware = datetime(2026, 11, 20, 13, 0, 0, tzinfo=UTC).astimezone(
        __import__("datetime").timezone(timedelta(hours=2))
    )
    epoch = datetime(2026, 11, 20, 13, 0, 5, tzinfo=UTC).timestamp()
    record = db.record_spawn(profile="small", user="a", outcome="success", started_at=aware,
                             finished_at=epoch)  # fmt: skip
    assert record.started_at == datetime(2026, 11, 20, 13, 0, 0)
    assert record.duration_seconds == 5.0


def test_availability_samples(db: Database) -> None:
    db.record_availability({"small": Avail(5, 1, "available"), "gpu": Avail(0, 2, "full")}, at=T0)
    db.record_availability({"small": Avail(None, None, "unknown")},
                           at=T0 + timedelta(minutes=5))  # fmt: skip
    samples = db.availability_between(T0 - timedelta(minutes=1))
    assert [(s.profile, s.can_start_now, s.running, s.status) for s in samples] == [
        ("small", 5, 1, "available"),
        ("gpu", 0, 2, "full"),
        ("small", None, None, "unknown"),
    ]
    assert [s.id for s in db.availability_between(T0 + timedelta(minutes=1))] == [samples[2].id]
    assert db.availability_between(T0 - timedelta(minutes=1), T0) == []


def test_staging_lifecycle(db: Database) -> None:
    rec = db.start_staging(user="alice", did="lofar:L1", destination_rse="HUB_DISK",
                           files_total=4, bytes_total=4_000_000, at=T0)  # fmt: skip
    assert rec.finished_at is None and rec.outcome is None
    db.update_staging(rec.id, rule_id="a" * 32, state="REPLICATING", files_done=2,
                      bytes_done=2_000_000)  # fmt: skip
    assert [r.id for r in db.staging_in_flight()] == [rec.id]
    done = db.finish_staging(rec.id, outcome="success", at=T0 + timedelta(seconds=40),
                             state="OK", files_done=4, bytes_done=4_000_000)  # fmt: skip
    assert done.outcome == "success" and done.state == "OK" and done.bytes_done == 4_000_000
    assert done.seconds == 40.0
    assert db.staging_in_flight() == []
    found = db.staging_by_rule("a" * 32)
    assert found is not None and found.id == rec.id
    assert [r.id for r in db.staging_between(T0 - timedelta(days=1))] == [rec.id]
    # once finished, the same (user, DID, RSE) may be staged again
    again = db.start_staging(user="alice", did="lofar:L1", destination_rse="HUB_DISK")
    assert again.id != rec.id


def test_two_users_staging_through_one_rule_both_keep_it(db: Database) -> None:
    """Security review finding 9: the site's account holds one rule for a DID, and two users
    staging that DID both wait on it; the second row used to lose its rule id (a unique
    index on rule_id among rows in flight)."""
    rule = "b" * 32
    first = db.start_staging(user="alice", did="lofar:L1", destination_rse="HUB_DISK")
    second = db.start_staging(user="bob", did="lofar:L1", destination_rse="HUB_DISK")
    db.update_staging(first.id, rule_id=rule)
    db.update_staging(second.id, rule_id=rule)
    assert {(r.id, r.rule_id) for r in db.staging_in_flight()} == {
        (first.id, rule), (second.id, rule),
    }  # fmt: skip
    # one user's two rows on one rule in flight at once is still refused
    third = db.start_staging(user="alice", did="lofar:L2", destination_rse="HUB_DISK")
    with pytest.raises(IntegrityError):
        db.update_staging(third.id, rule_id=rule)


def test_a_rule_is_in_use_while_a_request_needs_it(db: Database) -> None:
    """In flight, or done for a server that has not stopped (released) yet."""
    rule = "c" * 32
    mine = db.start_staging(user="alice", did="lofar:L1", destination_rse="HUB_DISK")
    theirs = db.start_staging(user="bob", did="lofar:L1", destination_rse="HUB_DISK")
    for rec in (mine, theirs):
        db.update_staging(rec.id, rule_id=rule)
    assert db.rule_in_use(rule, besides=[mine.id])  # bob's is in flight
    db.finish_staging(theirs.id, outcome="success")
    assert db.rule_in_use(rule, besides=[mine.id])  # bob's server runs on it
    db.release_staging([theirs.id])
    assert not db.rule_in_use(rule, besides=[mine.id])
    assert db.rule_in_use(rule)  # alice's own is still in flight
    db.finish_staging(mine.id, outcome="failure")
    assert not db.rule_in_use(rule)  # a failed request needs nothing
    assert not db.rule_in_use("d" * 32)


def test_restart_finds_the_in_flight_request_instead_of_a_second(url: str) -> None:
    first = Database(url)
    first.ensure_schema()
    rec = first.start_staging(user="alice", did="lofar:L1", destination_rse="HUB_DISK",
                              rule_id="r1")  # fmt: skip
    first.dispose()
    restarted = Database(url)
    again = restarted.start_staging(user="alice", did="lofar:L1", destination_rse="HUB_DISK")
    assert again.id == rec.id and again.rule_id == "r1"
    other = restarted.start_staging(user="bob", did="lofar:L1", destination_rse="HUB_DISK")
    assert other.id != rec.id
    assert len(restarted.staging_in_flight()) == 2
    restarted.dispose()


def test_the_database_itself_refuses_duplicates(db: Database) -> None:
    db.start_staging(user="alice", did="lofar:L1", destination_rse="HUB_DISK", rule_id="r1")
    user_hash = db.user_hash("alice")
    now = datetime(2026, 1, 1)
    duplicate_in_flight = StagingRecord(user_hash=user_hash, did="lofar:L1",
                                        destination_rse="HUB_DISK", created_at=now,
                                        updated_at=now)  # fmt: skip
    with pytest.raises(IntegrityError), db.session() as s:
        s.add(duplicate_in_flight)
    same_rule = StagingRecord(user_hash=user_hash, did="lofar:L2", destination_rse="HUB_DISK",
                              rule_id="r1", created_at=now, updated_at=now)  # fmt: skip
    with pytest.raises(IntegrityError), db.session() as s:
        s.add(same_rule)


def test_concurrent_start_staging_creates_one_row(url: str) -> None:
    setup = Database(url)
    setup.ensure_schema()
    setup.user_hash("x")  # create the salt before the race
    setup.dispose()
    ids: list[int] = []
    errors: list[BaseException] = []

    def start() -> None:
        database = Database(url)
        try:
            rec = database.start_staging(user="alice", did="lofar:L9", destination_rse="R")
            ids.append(rec.id)
        except BaseException as exc:
            errors.append(exc)
        finally:
            database.dispose()

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(ids)) == 1


def test_staging_bad_input(db: Database) -> None:
    rec = db.start_staging(user="a", did="s:n", destination_rse="R")
    with pytest.raises(ValueError, match="cannot update did"):
        db.update_staging(rec.id, did="s:other")
    with pytest.raises(ValueError, match="unknown outcome 'done'"):
        db.finish_staging(rec.id, outcome="done")
    with pytest.raises(KeyError, match="no staging record with id 999"):
        db.update_staging(999, state="OK")
