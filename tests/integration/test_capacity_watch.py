"""The cluster model fed by ClusterWatcher from the Kubernetes API simulator, over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from esap_spawner.capacity.model import ClusterModel, ProfileRequirements, Refusal, Reservation
from esap_spawner.capacity.watch import ClusterWatcher, api_client_from_environment
from esap_spawner.dev.sim import Simulator, pod_manifest
from esap_spawner.site.profiles import PROFILE_LABEL

pytestmark = pytest.mark.integration

IMAGE = "quay.io/jupyter/scipy-notebook:2026-01-01"
SMALL = ProfileRequirements.build(
    "small", requests={"cpu": "1", "memory": "1Gi"}, image=IMAGE, max_servers=10
)


@dataclass
class Env:
    sim: Simulator
    api: client.CoreV1Api
    model: ClusterModel
    watcher: ClusterWatcher


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    sim = Simulator(
        {
            "namespaces": ["default", "hub", "other"],
            "nodes": [
                {"name": "cpu-1", "allocatable": {"cpu": "4", "memory": "16Gi"}, "images": [IMAGE]},
                {"name": "cpu-2", "allocatable": {"cpu": "4", "memory": "16Gi"}},
            ],
        }
    )
    await sim.start()
    configuration = client.Configuration(host=sim.url)
    api_client = client.ApiClient(configuration)
    model = ClusterModel(stale_after=0.5)
    watcher = ClusterWatcher(
        model=model,
        api_client=api_client,
        backoff_initial=0.05,
        backoff_max=0.2,
        watch_timeout_seconds=2,  # short watches: resuming after a normal end is exercised
    )
    await watcher.start()
    try:
        assert await watcher.wait_synced(10)
        yield Env(sim, client.CoreV1Api(api_client), model, watcher)
    finally:
        await watcher.stop()
        await api_client.close()
        await sim.stop()


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)


def server_pod(name: str, namespace: str = "hub", cpu: str = "1") -> dict[str, object]:
    return pod_manifest(
        name,
        namespace=namespace,
        requests={"cpu": cpu, "memory": "1Gi"},
        labels={PROFILE_LABEL: "small"},
        image=IMAGE,
    )


def can_start(env: Env) -> int | None:
    return env.model.availability([SMALL])["small"].can_start_now


async def test_pods_use_capacity_and_give_it_back(env: Env) -> None:
    got = env.model.availability([SMALL])["small"]
    assert (got.status, got.can_start_now, got.fast_start, got.running) == ("available", 8, 4, 0)
    for i in range(3):
        await env.api.create_namespaced_pod("hub", server_pod(f"jupyter-{i}"))
    # Another workload in another namespace uses capacity too (but is no server).
    other = pod_manifest("batch", namespace="other", requests={"cpu": "2"})
    await env.api.create_namespaced_pod("other", other)
    await eventually(lambda: can_start(env) == 3 and env.model.running("small") == 3)
    for i in range(3):
        await env.api.delete_namespaced_pod(f"jupyter-{i}", "hub", grace_period_seconds=0)
    await eventually(lambda: can_start(env) == 6 and env.model.running("small") == 0)
    await env.api.delete_namespaced_pod("batch", "other", grace_period_seconds=0)
    await eventually(lambda: can_start(env) == 8)
    assert env.watcher.events_applied > 0


async def test_closed_watches_resume_without_a_relist(env: Env) -> None:
    relists = env.watcher.relists
    for i in range(3):
        assert env.sim.faults.close_watches() >= 0
        await env.api.create_namespaced_pod("hub", server_pod(f"jupyter-{i}"))
        await eventually(lambda i=i: env.model.running("small") == i + 1)  # type: ignore[misc]
    await eventually(lambda: can_start(env) == 5)
    assert env.watcher.relists == relists
    assert not env.model.stale


async def test_gone_resource_version_relists(env: Env) -> None:
    relists = env.watcher.relists
    # A change neither watch sees, then compaction: both watches' versions are now too old.
    env.sim.create_namespace("elsewhere")
    env.sim.store.create("pods", "hub", server_pod("jupyter-a", cpu="3"))
    env.sim.create_namespace("elsewhere-too")
    env.sim.faults.compact()
    env.sim.faults.close_watches()
    await eventually(lambda: env.watcher.relists > relists)
    await eventually(lambda: can_start(env) == 5 and env.model.running("small") == 1)
    assert env.model.synced and not env.model.stale


async def test_server_errors_make_the_view_stale_then_it_recovers(env: Env) -> None:
    env.sim.faults.fail_next(100_000, 500)
    env.sim.faults.close_watches()
    await eventually(lambda: env.model.stale, timeout=5)
    assert env.model.synced  # the last view is kept, marked stale
    refusal = env.model.reserve(SMALL)
    assert isinstance(refusal, Refusal) and refusal.reason == "unsynced"
    assert "watches down" in refusal.message
    assert "HTTP 500" in (env.watcher.last_error or "")
    # Changes made while the API fails are seen once it answers again.
    env.sim.store.create("pods", "hub", server_pod("during-outage", cpu="4"))
    env.sim.faults.clear()
    await eventually(lambda: not env.model.stale)
    await eventually(lambda: env.model.running("small") == 1)
    assert isinstance(env.model.reserve(SMALL), Reservation)


async def test_node_going_not_ready_removes_its_capacity(env: Env) -> None:
    env.sim.faults.node_not_ready("cpu-1")
    await eventually(lambda: can_start(env) == 4)
    assert env.model.availability([SMALL])["small"].fast_start == 0
    env.sim.faults.node_not_ready("cpu-1", ready=True)
    await eventually(lambda: can_start(env) == 8)
    env.sim.add_node("gpu-1", allocatable={"cpu": "8", "memory": "64Gi"})
    await eventually(lambda: can_start(env) == 10)  # 16 fit, quota 10 left


async def test_fifty_concurrent_spawns_end_with_max_servers_running(env: Env) -> None:
    env.sim.add_node("big-1", allocatable={"cpu": "64", "memory": "256Gi"})
    await eventually(lambda: env.model.fit_count(SMALL)[0] == 72)
    refusals: list[str] = []

    async def spawn(i: int) -> bool:
        admitted = env.model.reserve(SMALL, namespace="hub", pod_name=f"jupyter-{i}")
        if isinstance(admitted, Refusal):
            refusals.append(admitted.message)
            return False
        try:
            await env.api.create_namespaced_pod("hub", server_pod(f"jupyter-{i}"))
        except Exception:
            admitted.release()
            raise
        return True

    started = await asyncio.gather(*(spawn(i) for i in range(50)))
    assert sum(started) == 10
    assert set(refusals) == {"profile 'small' is full: 10 of 10 servers running (max_servers)"}
    await eventually(lambda: env.model.running("small") == 10 and env.model.reserved("small") == 0)
    pods = await env.api.list_namespaced_pod("hub", label_selector=f"{PROFILE_LABEL}=small")
    assert len(pods.items) == 10
    got = env.model.availability([SMALL])["small"]
    assert (got.status, got.can_start_now, got.running) == ("full", 0, 10)


async def test_a_failing_first_list_is_retried_and_stop_marks_the_view_unknown(env: Env) -> None:
    await env.watcher.stop()
    assert env.model.availability([SMALL])["small"].status == "unknown"
    env.sim.faults.fail_next(3, 429)
    env.sim.faults.fail_next(2, 503)
    watcher = ClusterWatcher(
        model=env.model, api_client=env.api.api_client, backoff_initial=0.05, backoff_max=0.1
    )
    await watcher.start()
    try:
        assert await watcher.wait_synced(10)
        assert watcher.errors >= 1
        assert env.model.availability([SMALL])["small"].can_start_now == 8
        with pytest.raises(RuntimeError, match="already started"):
            await watcher.start()
    finally:
        await watcher.stop()


async def test_api_client_from_kubeconfig_set_after_import(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = env.sim.write_kubeconfig(tmp_path / "kubeconfig.yaml")
    monkeypatch.setenv("KUBECONFIG", str(path))
    api_client = await api_client_from_environment()
    try:
        model = ClusterModel()
        watcher = ClusterWatcher(model=model, api_client=api_client)
        await watcher.start()
        try:
            assert await watcher.wait_synced(10)
            assert sorted(model.node_names()) == ["cpu-1", "cpu-2"]
        finally:
            await watcher.stop()
    finally:
        await api_client.close()
