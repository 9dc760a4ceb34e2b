"""One capacity authority: what the service advertises is what the hub would admit.

The hub admits spawns against its own cluster model, whose reservations hold a slot from
admission until the spawn's pod is counted; it publishes them to the database it shares
with the service, and the service's model holds them too (:mod:`esap_spawner.capacity.sharing`).

- a publication travels through a real SQLite database into a second model;
- a spawn storm through a real hub on the simulator, with the service run by that hub.
  What the hub would admit is observed two ways: its admission decisions (read back from
  its own spawn records: admitted, or refused because the profile is full) and its own
  availability (``esap_profile_available_servers`` on ``/hub/metrics``, from the model that
  admits, sampled every 100 ms). The service's ``can_start_now`` is sampled every 50 ms.
  Every service answer must be one the hub gave (free or full) at some moment within
  :data:`DELAY` of it (2 s, the documented propagation delay: before it, as the hub's
  reservations travel to the service; or after it, as either process may see a pod come or
  go first on its own watch stream, and a busy hub reads its later). Each admitted spawn
  holds its slot for :data:`HOLD` s before its pod exists (a hook on the pod, standing for
  slow staging): a service that did not know the hub's reservations would advertise free
  slots for that long while the hub refuses; the second storm, with the service told not
  to read them, shows that the check catches it.
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from esap_spawner.capacity.model import ClusterModel
from esap_spawner.capacity.requirements import ProfileRequirements
from esap_spawner.capacity.reservations import Held, Reservation
from esap_spawner.capacity.sharing import ReservationPublisher, adopt_published
from esap_spawner.dev.local import simulator_hub_config
from esap_spawner.observe.db import Database
from esap_spawner.observe.schema import ensure_schema
from esap_spawner.service.context import ServiceContext
from tests.harness.hub import HubProcess, free_port

pytestmark = pytest.mark.integration

DELAY = 2.0  # the documented bound (docs/architecture.md, "One capacity authority")
HOLD = 5.0  # seconds an admitted spawn holds its slot before its pod exists
MAX_SERVERS = 2
USERS = 10
STORM_SECONDS = 60.0
PORTAL_TOKEN = "portal-" + "7" * 24

CLUSTER = {
    "nodes": [
        {"name": f"cpu-{i}", "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"}}
        for i in range(2)
    ]
}
SITE = {
    "facility": {"name": "One authority", "description": "tests", "url": "http://127.0.0.1/"},
    "profiles": [
        {
            "slug": "storm",
            "display_name": "Four at once",
            "default": True,
            "cpu": {"guarantee": 0.1, "limit": 1},
            "memory": {"guarantee": "128M", "limit": "512M"},
            "image": "quay.io/jupyter/minimal-notebook:2026-01-01",
            "max_servers": MAX_SERVERS,
        }
    ],
}


# --------------------------------------------------------------- through the database


def requirements() -> ProfileRequirements:
    return ProfileRequirements.build(
        "storm", requests={"cpu": "100m", "memory": "128M"}, max_servers=4
    )


def synced(model: ClusterModel) -> ClusterModel:
    node = {
        "kind": "Node",
        "metadata": {"name": "cpu-0"},
        "status": {
            "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    model.replace_all([node], [])
    return model


async def test_a_publication_reaches_another_model_through_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'esap.sqlite'}"
    ensure_schema(url, upgrade=False)
    db = Database(url)
    hub, service = synced(ClusterModel()), synced(ClusterModel())

    async def database() -> Database:
        return db

    publisher = ReservationPublisher(hub.reservations, database)
    publisher.start()

    async def published(count: int) -> None:
        for _ in range(200):
            if publisher.writes >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{count} publications expected, {publisher.writes} made")

    try:
        await published(1)  # an empty set at start: what a previous run left is gone
        assert await adopt_published(service.reservations, db) == 0
        req = requirements()
        taken = [hub.reserve(req, namespace="hub", pod_name=f"p{i}") for i in range(3)]
        assert all(isinstance(r, Reservation) for r in taken)
        await published(2)  # three changes, coalesced
        assert await adopt_published(service.reservations, db) == 3
        assert service.availability([req]) == hub.availability([req])
        assert service.availability([req])["storm"].can_start_now == 1
        for r in taken:
            assert isinstance(r, Reservation)
            r.release()
        await published(3)
        assert await adopt_published(service.reservations, db) == 0
        assert service.availability([req]) == hub.availability([req])
    finally:
        await publisher.stop()
        db.dispose()


# --------------------------------------------------------------- through a real hub

HOOK = f"""
import asyncio

async def _hold_the_slot(spawner, pod):  # stands for slow staging: admitted, no pod yet
    await asyncio.sleep({HOLD})
    return pod

c.KubeSpawner.modify_pod_hook = _hold_the_slot
"""


def hub_config(site_file: Path, db_url: str, kubeconfig: str, *, shared: bool) -> str:
    command = [sys.executable, "-m", "esap_spawner.cli", "service", "--site-file",
               str(site_file), "--db-url", db_url, "--availability-sample-seconds", "0",
               "--reservations-poll-seconds", "0.5" if shared else "0"]  # fmt: skip
    return f"""
c.ESAPSpawner.db_url = {db_url!r}
c.KubeSpawner.http_timeout = 2
c.JupyterHub.concurrent_spawn_limit = 0
c.JupyterHub.slow_spawn_timeout = 0.5
c.JupyterHub.custom_scopes = {{
    "custom:esap:read": {{"description": "Read the ESAP catalogue"}},
}}
c.JupyterHub.services.extend([
    {{"name": "esap", "url": "http://127.0.0.1:{free_port()}", "command": {command!r},
      "environment": {{"KUBECONFIG": {kubeconfig!r}}}}},
    {{"name": "portal", "api_token": {PORTAL_TOKEN!r}}},
])
c.JupyterHub.load_roles.extend([
    {{"name": "esap-portal", "scopes": ["custom:esap:read"], "services": ["portal"]}},
])
{HOOK}
"""


@dataclass(frozen=True)
class Seen:
    """One observation: at some moment between ``at`` and ``until`` (wall-clock seconds:
    the request was sent, its answer came back), a server could start (``free``)."""

    at: float
    free: bool
    until: float | None = None  # None: a decision of one moment (the hub's)
    running: float | None = None  # servers running, as that side counted them (the service)

    @property
    def end(self) -> float:
        return self.at if self.until is None else max(self.at, self.until)


class Sampler:
    """Reads a number every ``every`` seconds in a thread; keeps the ones that are known."""

    def __init__(self, read: Any, every: float) -> None:
        self.read, self.every = read, every
        self.seen: list[Seen] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with requests.Session() as session:
            while not self.stopped.is_set():
                asked = time.time()
                found, running = self.read(session)
                if found is not None and found == found:  # None: unknown; NaN: not started
                    self.seen.append(Seen(asked, found > 0, time.time(), running))
                self.stopped.wait(self.every)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(15)


def service_reader(hub: HubProcess) -> Any:
    url = f"{hub.url}/services/esap/api/v1/profiles/storm"
    headers = {"Authorization": f"token {PORTAL_TOKEN}"}

    def read(session: requests.Session) -> tuple[int | None, int | None]:
        r = session.get(url, headers=headers, timeout=10)
        r.raise_for_status()
        availability = r.json()["profile"]["availability"]
        return availability["can_start_now"], availability["running"]

    return read


def hub_reader(hub: HubProcess) -> Any:
    url = f"{hub.url}/hub/metrics"
    headers = {"Authorization": f"token {hub.admin_token}"}

    def series(text: str, name: str) -> float | None:
        line = f'esap_profile_{name}_servers{{profile="storm"}} '
        found = [t for t in text.splitlines() if t.startswith(line)]
        return float(found[0][len(line) :]) if found else None

    def read(session: requests.Session) -> tuple[float | None, float | None]:
        r = session.get(url, headers=headers, timeout=10)
        r.raise_for_status()
        return series(r.text, "available"), series(r.text, "running")

    return read


def storm(hub: HubProcess, names: list[str], until: float) -> None:
    """Each user asks for a server at random moments until ``until``; an admitted spawn
    holds its slot, then the user stops it (while it starts, or once it runs) and the slot
    frees."""

    def gone(name: str) -> bool:
        return not hub.api("GET", f"/users/{name}").json().get("servers", {}).get("")

    def user(name: str) -> None:
        rng = random.Random(name)
        while time.monotonic() < until:
            time.sleep(rng.uniform(0.0, 0.7))
            r = hub.api("POST", f"/users/{name}/server", json={"profile": "storm"}, timeout=60)
            if r.status_code in (201, 202):  # admitted (and up, or still starting)
                time.sleep(rng.uniform(1.0, HOLD + 3.0))  # sometimes before its pod exists
                hub.api("DELETE", f"/users/{name}/server", timeout=60)
            deadline = time.monotonic() + 60
            while not gone(name) and time.monotonic() < deadline:
                time.sleep(0.2)

    threads = [threading.Thread(target=user, args=(name,), daemon=True) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(STORM_SECONDS + 120)


def decisions(db: Database, since: float) -> list[Seen]:
    """The hub's admission decisions, from its own spawn records: the moment options
    were validated (admission follows at once) and whether the spawn was let through."""
    found = []
    for record in db.spawns_between(since):
        if record.outcome == "refused" and "is full" not in (record.failure_reason or ""):
            continue  # refused for another reason (a view not synced yet): not a decision
        started = record.started_at.replace(tzinfo=UTC).timestamp()  # stored as naive UTC
        validated = started + (record.validate_seconds or 0.0)
        found.append(Seen(validated, free=record.outcome != "refused"))
    return sorted(found, key=lambda d: d.at)


def disagreements(service: list[Seen], hub: list[Seen]) -> list[Seen]:
    """The service's answers that the hub did not give within :data:`DELAY` of them (an
    answer stands for a moment of its request's span: a slow answer on a loaded machine is
    not read as coming from the middle of it)."""
    return [
        s
        for s in service
        if not any(
            h.free == s.free and h.at - DELAY <= s.end and s.at <= h.end + DELAY for h in hub
        )
    ]


@pytest.fixture
def storm_hub(sim_factory: Any, tmp_path: Path) -> Iterator[Any]:
    def start(*, shared: bool) -> tuple[HubProcess, Database]:
        sim = sim_factory(CLUSTER, kubelet="fake")
        sim.create_namespace("storm")
        kubeconfig = str(sim.write_kubeconfig(tmp_path / "kubeconfig"))
        site_file = tmp_path / "site.yaml"
        site_file.write_text(yaml.safe_dump(SITE))
        db_url = f"sqlite:///{tmp_path / 'esap.sqlite'}"
        ensure_schema(db_url, upgrade=False)
        config = simulator_hub_config(site_file=site_file, namespace="storm", start_timeout=30)
        config += hub_config(site_file, db_url, kubeconfig, shared=shared)
        hub = HubProcess(tmp_path / "hub", config, env={"KUBECONFIG": kubeconfig}).start()
        started.append(hub)
        return hub, Database(db_url)

    started: list[HubProcess] = []
    yield start
    for hub in started:
        hub.stop()


def wait_until_both_know(hub: HubProcess, user: str) -> None:
    """The service's view is synced, and the hub's is (it starts with the first spawn or
    spawn form: the user opens the form)."""
    hub.login(user).get(f"{hub.url}/hub/spawn", timeout=30).raise_for_status()
    readers = [service_reader(hub), hub_reader(hub)]
    deadline = time.monotonic() + 60
    with requests.Session() as session:
        while time.monotonic() < deadline:
            try:
                known = [read(session)[0] for read in readers]
            except requests.RequestException:
                known = [None]
            if all(k is not None and k == k for k in known):  # neither unknown nor NaN
                return
            time.sleep(0.3)
    raise TimeoutError(f"the hub or its esap service has no view:\n{hub.log_tail()}")


@dataclass
class Storm:
    service: list[Seen]  # the service's answers
    hub: list[Seen]  # the hub's own availability, and its decisions
    admitted: int
    refused: int


def run_storm(hub: HubProcess, db: Database) -> Storm:
    names = [f"s{i:02d}" for i in range(USERS)]
    for name in names:
        hub.create_user(name)
    wait_until_both_know(hub, names[0])
    since = time.time() - 1
    with Sampler(service_reader(hub), 0.05) as service, Sampler(hub_reader(hub), 0.1) as own:
        storm(hub, names, time.monotonic() + STORM_SECONDS)
    deadline = time.monotonic() + 60  # every spawn's record is written as it settles
    while time.monotonic() < deadline:
        if all(not hub.api("GET", f"/users/{n}").json()["servers"] for n in names):
            break
        time.sleep(0.5)
    time.sleep(1)
    made = decisions(db, since)
    admitted = sum(d.free for d in made)
    return Storm(service.seen, sorted([*own.seen, *made], key=lambda o: o.at), admitted,
                 len(made) - admitted)  # fmt: skip


def timeline(at: float, seen: Storm) -> str:
    """What each side said within 2 * DELAY of ``at``: where a disagreement begins and ends."""
    near = [("service", s) for s in seen.service if abs(s.at - at) <= 2 * DELAY]
    near += [("hub", h) for h in seen.hub if abs(h.at - at) <= 2 * DELAY]
    near.sort(key=lambda x: x[1].at)
    rows: list[str] = []
    last: dict[str, str] = {}
    for side, o in near:  # one row per change of a side's answer
        said = "free" if o.free else "full"
        if o.running is not None:
            said += f", {o.running:g} running"
        if last.get(side) != said:
            rows.append(f"  {o.at - at:+7.3f} s  {side:<7} {said}")
            last[side] = said
    return "\n".join(rows)


@pytest.mark.timeout(600)
def test_the_service_advertises_what_the_hub_admits_under_a_spawn_storm(storm_hub: Any) -> None:
    hub, db = storm_hub(shared=True)
    seen = run_storm(hub, db)
    # a storm: the hub was full most of the time and let spawns through as slots freed
    assert seen.admitted >= 2 * MAX_SERVERS and seen.refused >= 40, (seen.admitted, seen.refused)
    assert len(seen.service) > STORM_SECONDS * 5 and len(seen.hub) > STORM_SECONDS * 3
    wrong = disagreements(seen.service, seen.hub)
    slowest = max(s.end - s.at for s in seen.service)
    assert wrong == [], (
        f"{len(wrong)} of {len(seen.service)} answers (slowest {slowest:.2f} s); "
        f"around the first:\n{timeline(wrong[0].at, seen)}"
    )


@pytest.mark.timeout(600)
def test_without_the_hubs_reservations_the_service_advertises_slots_the_hub_refuses(
    storm_hub: Any,
) -> None:
    """The same storm with the service told not to read the reservations: the check above
    can fail, and this is how."""
    hub, db = storm_hub(shared=False)
    seen = run_storm(hub, db)
    wrong = disagreements(seen.service, seen.hub)
    assert len(wrong) >= 20, f"{len(wrong)} of {len(seen.service)} answers"
    assert all(s.free for s in wrong)  # free slots advertised while the hub was full


async def test_the_services_context_takes_in_what_the_hub_publishes(tmp_path: Path) -> None:
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(SITE))
    url = f"sqlite:///{tmp_path / 'esap.sqlite'}"
    context = ServiceContext.open(site_file=str(site_file), db_url=url, db_upgrade=False)
    synced(context.model)
    req = requirements()
    hub = Database(url)
    hub.publish_reservations([Held("storm", "cpu-0", req.requests, True, True, time.time() + 60)])
    context.run_jobs(history_refresh_seconds=60, availability_sample_seconds=0,
                     reservations_poll_seconds=0.05, limited_threshold=2)  # fmt: skip
    try:
        for _ in range(100):
            if context.model.reserved("storm") == 1:
                break
            await asyncio.sleep(0.05)
        assert context.model.reserved("storm") == 1
        hub.publish_reservations([])
        for _ in range(100):
            if context.model.reserved("storm") == 0:
                break
            await asyncio.sleep(0.05)
        assert context.model.reserved("storm") == 0
    finally:
        await context.close()
        hub.dispose()
    assert context.watcher is None
