"""The service's database options: ``--db-url`` and ``--availability-sample-seconds`` become
traits, ``ESAP_DATABASE_URL`` (what the hub's snippet hands on) is the default, and a database
is optional (no ``db_url``: no history, ``estimated_start_seconds`` null)."""

from __future__ import annotations

import pytest
from traitlets import TraitError

from esap_spawner.service.app import ESAPService


def parse(*argv: str) -> ESAPService:
    service = ESAPService()
    service.initialize(["--site-file", "s", *argv])
    return service


def test_db_options_become_traits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ESAP_DATABASE_URL", raising=False)
    service = parse()
    assert service.db_url == "sqlite:///esap.sqlite"  # ESAPSpawner.db_url's default
    assert service.availability_sample_seconds == 60
    assert service.history_refresh_seconds == 60
    service = parse("--db-url", "sqlite:////srv/esap.sqlite", "--availability-sample-seconds", "0")
    assert service.db_url == "sqlite:////srv/esap.sqlite"
    assert service.availability_sample_seconds == 0
    assert parse("--db-url", "").db_url == ""


def test_the_environment_names_the_hubs_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESAP_DATABASE_URL", "postgresql+psycopg://u:p@db/esap")
    assert parse().db_url == "postgresql+psycopg://u:p@db/esap"
    assert parse("--db-url", "sqlite:///x.sqlite").db_url == "sqlite:///x.sqlite"


@pytest.mark.parametrize(
    ("trait", "value"),
    [("availability_sample_seconds", -1.0), ("history_refresh_seconds", 0.0),
     ("history_refresh_seconds", -5.0)],
)  # fmt: skip
def test_bad_intervals_are_refused(trait: str, value: float) -> None:
    with pytest.raises(TraitError, match=trait):
        ESAPService(**{trait: value})


# -- the database jobs, over stand-ins (no I/O) ----------------------------------------


class FakeDatabase:
    def __init__(self) -> None:
        self.durations = {"small": [30.0, 10.0, 20.0]}
        self.samples: list[dict[str, object]] = []
        self.staging: list[object] = []

    def recent_spawn_durations(self, profile: str, limit: int = 50) -> list[float]:
        return self.durations.get(profile, [])[:limit]

    def staging_in_flight(self) -> list[object]:
        return list(self.staging)

    def record_availability(self, availability: dict[str, object]) -> int:
        self.samples.append(availability)
        return len(availability)


async def test_spawn_history_is_a_snapshot_read_in_a_thread() -> None:
    from esap_spawner.capacity.model import ClusterModel
    from esap_spawner.service.history import SpawnHistory

    db = FakeDatabase()
    history = SpawnHistory(db, ["small", "gpu"], limit=2)  # type: ignore[arg-type]
    assert history("small") == ()  # nothing read yet: no estimate rather than a DB call
    await history.refresh_in_thread()
    assert (history("small"), history("gpu")) == ((30.0, 10.0), ())
    db.durations["small"] = [5.0]
    assert history("small") == (30.0, 10.0)  # the snapshot holds until the next refresh
    await history.refresh_in_thread()
    model = ClusterModel(spawn_durations=history)
    assert model._estimate("small") == 5.0 and model._estimate("gpu") is None


async def test_spawn_history_reads_the_staging_in_flight() -> None:
    from datetime import datetime
    from types import SimpleNamespace

    from esap_spawner.service.history import SpawnHistory, Staging

    db = FakeDatabase()
    history = SpawnHistory(db, ["small"])  # type: ignore[arg-type]
    assert history.staging == () and history.read_at is None
    db.staging.append(
        SimpleNamespace(did="lofar:L1", state="REPLICATING", files_done=3, files_total=10,
                        bytes_done=300, bytes_total=1000, created_at=datetime(2026, 1, 1))
    )  # fmt: skip
    await history.refresh_in_thread()
    assert history.staging == (
        Staging("lofar:L1", "REPLICATING", 3, 10, 300, 1000, started=1_767_225_600.0),
    )
    assert history.read_at is not None


async def test_availability_is_sampled_only_from_a_current_view() -> None:
    from esap_spawner.capacity.model import ClusterModel
    from esap_spawner.service.history import sample_availability
    from esap_spawner.site.model import parse_site
    from tests.harness.clock import Clock
    from tests.harness.service import SITE_YAML, synced_model

    site = parse_site(SITE_YAML)
    db = FakeDatabase()
    stored = await sample_availability(db, ClusterModel(), site.profiles, limited_threshold=2)  # type: ignore[arg-type]
    assert stored == 0 and db.samples == []
    model = synced_model(Clock())
    stored = await sample_availability(db, model, site.profiles, limited_threshold=2)  # type: ignore[arg-type]
    assert stored == 2
    (sample,) = db.samples
    assert sample["small"].can_start_now == 4 and sample["small"].running == 1  # type: ignore[attr-defined]


async def test_a_failing_job_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import asyncio
    import logging

    from esap_spawner.service.history import every

    calls = 0

    async def job() -> None:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise OSError("database is locked")

    caplog.set_level(logging.INFO, logger="esap_spawner.service.history")
    task = asyncio.create_task(every(0.01, job, what="reading the spawn history"))
    while calls < 5:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("WARNING", "reading the spawn history failed (retrying every 0.01 s): database is locked"),
        ("INFO", "reading the spawn history works again"),
    ]  # the same failure again is not repeated at warning level
