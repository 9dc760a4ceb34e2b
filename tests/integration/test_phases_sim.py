"""Phase durations from the events a (simulated) cluster really emits, read over HTTP as raw
JSON the way KubeSpawner's event reflector holds them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from esap_spawner.dev.sim import SimulatorThread, pod_manifest
from esap_spawner.dev.sim.kubelet import KubeletDelays
from esap_spawner.observe.phases import SpawnTimeline, phase_durations
from esap_spawner.spawn.status import Phase
from tests.harness.sim import k8s_api

pytestmark = pytest.mark.integration

PULL = 0.6
CLUSTER = {
    "nodes": [{"name": "n1", "allocatable": {"cpu": "2", "memory": "4Gi"},
               "images": ["present/image:1"]}]
}  # fmt: skip


async def _raw_events(api: Any, namespace: str) -> list[dict[str, Any]]:
    response = await api.list_namespaced_event(namespace, _preload_content=False)
    return list(json.loads(await response.read())["items"])


async def _spawn(api: Any, name: str, **kwargs: Any) -> tuple[SpawnTimeline, list[dict]]:
    """Create a pod, wait until it runs or 3 s pass; the spawner's marks and the events."""
    requested = time.time()
    await api.create_namespaced_pod("default", pod_manifest(name, **kwargs))
    created = time.time()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        pod = await api.read_namespaced_pod(name, "default")
        if pod.status.phase == "Running":
            break
        await asyncio.sleep(0.02)
    finished = time.time()
    timeline = SpawnTimeline(requested=requested, validated=requested, pod_created=created,
                             finished=finished)  # fmt: skip
    return timeline, await _raw_events(api, "default")


async def test_phases_from_simulated_events(sim_factory: Callable[..., SimulatorThread]) -> None:
    delays = KubeletDelays(pull=PULL, create=0.02, start=0.02, stop=0.02)
    sim = sim_factory(CLUSTER, kubelet="fake", delays=delays)
    api = k8s_api(sim)
    try:
        timeline, events = await _spawn(api, "cold", image="new/image:1",
                                        requests={"cpu": "500m"})  # fmt: skip
        cold = phase_durations(timeline, events, pod_name="cold", container="main")
        assert cold[Phase.image] == pytest.approx(PULL, abs=0.2)
        assert 0 <= cold[Phase.scheduling] < 1.0
        assert 0 <= cold[Phase.startup] < 1.0
        total = (timeline.finished or 0) - timeline.requested
        assert sum(cold.values()) <= total + 0.05

        timeline, events = await _spawn(api, "warm", image="present/image:1",
                                        requests={"cpu": "500m"})  # fmt: skip
        warm = phase_durations(timeline, events, pod_name="warm", container="main")
        assert warm[Phase.image] == 0.0  # "already present on machine"

        timeline, events = await _spawn(api, "huge", requests={"cpu": "64"})
        huge = phase_durations(timeline, events, pod_name="huge", container="main")
        # never scheduled: all the time after creation is scheduling; no image, no startup
        assert huge[Phase.scheduling] == pytest.approx(
            (timeline.finished or 0) - (timeline.pod_created or 0), abs=0.01
        )
        assert Phase.image not in huge and Phase.startup not in huge
        assert any(e["reason"] == "FailedScheduling" for e in events)
    finally:
        await api.api_client.close()
