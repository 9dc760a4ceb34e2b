"""The service and the hub share one database: spawn durations in, availability samples out.

The service is the real program (``esap-spawner service``) in a process of its own, watching
a private simulator, with ``--db-url`` pointing at a SQLite file the test filled the way the
hub's spawner does (:meth:`esap_spawner.observe.db.Database.record_spawn`).
``estimated_start_seconds`` must be the median of each profile's recent successful spawns,
and availability samples must appear in the file every ``--availability-sample-seconds``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from esap_spawner.dev.sim import SimulatorThread
from esap_spawner.observe.db import Database
from tests.harness.service import SITE_YAML, TOKENS

pytestmark = pytest.mark.integration

PORTAL = {"Authorization": "token portal-token"}
CLUSTER: dict[str, Any] = {
    "nodes": [
        {"name": "cpu-1", "allocatable": {"cpu": "8", "memory": "32Gi"}},
        {"name": "gpu-1", "labels": {"accelerator": "a100"},
         "allocatable": {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "2"}},
    ]
}  # fmt: skip
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def fill(db: Database) -> None:
    """small: successes of 10, 40, 20 s (median 20) and a failure; gpu: 5 and 7 s."""
    db.ensure_schema()
    spawns = [("small", 10, "success"), ("small", 999, "failure"), ("small", 40, "success"),
              ("small", 20, "success"), ("gpu", 5, "success"), ("gpu", 7, "success")]  # fmt: skip
    for i, (profile, seconds, outcome) in enumerate(spawns):
        start = T0 + timedelta(minutes=i)
        db.record_spawn(profile=profile, user=f"user{i}", outcome=outcome, started_at=start,
                        finished_at=start + timedelta(seconds=seconds))  # fmt: skip


@pytest.fixture
def service(
    tmp_path: Path, sim_factory: Callable[..., SimulatorThread]
) -> Iterator[tuple[str, Database]]:
    from tests.harness.hub import free_port

    sim = sim_factory(CLUSTER, kubelet="fake")
    kubeconfig = sim.write_kubeconfig(tmp_path / "kubeconfig.yaml")
    db = Database(f"sqlite:///{tmp_path / 'esap.sqlite'}")
    fill(db)
    (tmp_path / "site.yaml").write_text(SITE_YAML)
    (tmp_path / "tokens.json").write_text(json.dumps(TOKENS))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    env.pop("ESAP_DATABASE_URL", None)
    log = tmp_path / "service.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "esap_spawner.cli", "service",
         "--site-file", str(tmp_path / "site.yaml"), "--token-file", str(tmp_path / "tokens.json"),
         "--kubeconfig", str(kubeconfig), "--port", str(port), "--ip", "127.0.0.1",
         "--db-url", db.url, "--availability-sample-seconds", "0.2"],
        env=env, cwd=tmp_path, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}", db
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        db.dispose()
        print(log.read_text())  # shown when the test fails


def estimates(base: str) -> dict[str, Any] | None:
    """Each profile's (status, estimated_start_seconds), once the view is synced."""
    try:
        r = requests.get(base + "/api/v1/profiles", headers=PORTAL, timeout=5)
    except requests.ConnectionError:
        return None
    profiles = r.json()["profiles"]
    if any(p["availability"]["status"] == "unknown" for p in profiles):
        return None
    return {p["slug"]: p["availability"]["estimated_start_seconds"] for p in profiles}


def test_estimates_come_from_the_hubs_spawns_and_samples_go_back(
    service: tuple[str, Database],
) -> None:
    base, db = service
    started = time.time()
    deadline = time.monotonic() + 30
    seen = None
    while time.monotonic() < deadline:
        seen = estimates(base)
        if seen is not None and seen["small"] is not None:
            break
        time.sleep(0.2)
    assert seen == {"small": 20.0, "gpu": 6.0}

    deadline = time.monotonic() + 15
    samples: list[Any] = []
    while time.monotonic() < deadline:
        samples = db.availability_between(datetime.fromtimestamp(started - 5, UTC))
        if len({s.time for s in samples}) >= 3:
            break
        time.sleep(0.2)
    times = sorted({s.time for s in samples})
    assert len(times) >= 3, samples
    for moment in times:
        at = {s.profile: s for s in samples if s.time == moment}
        assert set(at) == {"small", "gpu"}
        assert at["small"].status == "available" and at["small"].can_start_now == 5
        assert at["gpu"].running == 0


@pytest.mark.usefixtures("clean_env")  # no ESAP_* variable; cwd tmp_path
@pytest.mark.parametrize("how", ["environment", "z2jh hub.config", "default"])
def test_the_managed_service_gets_the_spawners_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    from tests.harness import snippets

    monkeypatch.setenv("ESAP_SITE_FILE", str(snippets.EXAMPLE_SITE))
    url = "postgresql+psycopg://esap:secret@db/esap"
    if how == "environment":
        monkeypatch.setenv("ESAP_DATABASE_URL", url)
        config = snippets.load_snippets(tmp_path)
        assert config.ESAPSpawner.db_url == url
    elif how == "z2jh hub.config":
        prelude = f"c.ESAPSpawner.db_url = {url!r}\n"
        config = snippets.load_snippets(tmp_path, prelude, loader=snippets.EXEC_SNIPPETS_LIKE_Z2JH)
    else:
        config = snippets.load_snippets(tmp_path)
        assert "db_url" not in config.ESAPSpawner
    (service,) = [s for s in snippets.as_list(config.JupyterHub.services) if s["name"] == "esap"]
    if how == "default":  # both keep sqlite:///esap.sqlite in the hub's working directory
        assert "ESAP_DATABASE_URL" not in service["environment"]
    else:
        assert service["environment"]["ESAP_DATABASE_URL"] == url
    assert not any("secret" in part for part in service["command"])


def test_no_db_url_means_no_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    (tmp_path / "site.yaml").write_text(SITE_YAML)
    from esap_spawner.service.app import ESAPService

    service = ESAPService(site_file=str(tmp_path / "site.yaml"), db_url="")
    app, _ = service.build()
    assert service.context.history is None and service.context.db is None
    model = app.settings["esap"].capacity
    assert model.spawn_durations is None
