"""Faults of the Kubernetes API seen through the cluster view and the advertising service.

A private simulator (fake kubelet) on this event loop, the real :class:`ClusterWatcher`
feeding a :class:`ClusterModel`, and the service's tornado app over HTTP on 127.0.0.1 reading
that model, as ``esap-spawner service`` wires them. Each fault is injected with
``sim.faults``; after each, the watched model must equal a model built from a fresh list of
the simulator's objects (:func:`assert_view_is_the_truth`): nothing lost, nothing counted
twice. Spawns through a real hub under the same faults are in ``test_faults_hub.py``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes_asyncio import client
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.httpserver import HTTPServer

from esap_spawner.capacity.model import ClusterModel, Refusal, Reservation
from esap_spawner.capacity.watch import ClusterWatcher
from esap_spawner.dev.sim import Simulator, SimulatorThread, pod_manifest
from esap_spawner.service.app import make_app
from esap_spawner.service.auth import StaticTokenAuth
from esap_spawner.site.model import load_site
from esap_spawner.site.profiles import PROFILE_LABEL
from tests.harness.hub import free_port

pytestmark = pytest.mark.integration

IMAGE = "quay.io/jupyter/minimal-notebook:2026-01-01"
PORTAL = "portal-token"
SITE_YAML = f"""
facility: {{name: Faults, description: fault tests, url: "http://127.0.0.1/"}}
profiles:
  - slug: small
    display_name: Small
    cpu: {{guarantee: 1, limit: 1}}
    memory: {{guarantee: 1Gi, limit: 1Gi}}
    image: {IMAGE}
    max_servers: 10
"""
CLUSTER = {
    "namespaces": ["hub"],
    "nodes": [
        {"name": "cpu-1", "allocatable": {"cpu": "4", "memory": "16Gi"}},
        {"name": "cpu-2", "allocatable": {"cpu": "4", "memory": "16Gi"}},
    ],
}


@dataclass
class Env:
    sim: Simulator
    model: ClusterModel
    watcher: ClusterWatcher
    url: str
    site: Any

    async def get(self, path: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        try:
            r = await AsyncHTTPClient().fetch(
                self.url + path, headers={"Authorization": f"token {PORTAL}"}, request_timeout=10
            )
        except HTTPClientError as e:
            if e.response is None:
                raise
            r = e.response
        return r.code, json.loads(r.body), dict(r.headers)

    async def small(self) -> tuple[bool, dict[str, Any]]:
        """(stale, availability of 'small') as the service answers them."""
        code, body, _ = await self.get("api/v1/profiles")
        assert code == 200, body
        (profile,) = body["profiles"]
        return body["stale"], profile["availability"]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    sim = Simulator(CLUSTER)
    await sim.start()
    site_file = tmp_path / "site.yaml"
    site_file.write_text(SITE_YAML)
    site = load_site(site_file)
    api_client = client.ApiClient(client.Configuration(host=sim.url))
    model = ClusterModel(stale_after=1.0)
    watcher = ClusterWatcher(
        model=model, api_client=api_client, backoff_initial=0.05, backoff_max=0.5
    )
    # a portal's token: health's details are for portals and operators only
    portal = StaticTokenAuth([{"token": PORTAL, "scopes": ["custom:esap:read"]}])
    app = make_app(site=site, capacity=model, auth=portal)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    server = HTTPServer(app)
    server.add_sockets([sock])
    await watcher.start()
    try:
        assert await watcher.wait_synced(10)
        yield Env(sim, model, watcher, f"http://127.0.0.1:{sock.getsockname()[1]}/", site)
    finally:
        server.stop()
        await watcher.stop()
        await api_client.close()
        await sim.stop()


async def eventually(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll ``check`` (sync or async) until it returns something true; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


def server_pod(name: str, node: str | None = None) -> dict[str, Any]:
    return pod_manifest(
        name,
        namespace="hub",
        node=node,
        requests={"cpu": "1", "memory": "1Gi"},
        labels={PROFILE_LABEL: "small"},
        image=IMAGE,
    )


def truth(sim: Simulator) -> dict[str, Any]:
    """The view a fresh list of the simulator's nodes and pods gives."""
    fresh = ClusterModel()
    fresh.replace_nodes(sim.store.objects("nodes"))
    fresh.replace_pods(sim.store.objects("pods"))
    fresh.mark_synced()
    return fresh.snapshot()


async def assert_view_is_the_truth(env: Env) -> None:
    """The watched view catches up with the simulator's objects exactly, every watch up."""

    def caught_up() -> bool:
        current = env.model.synced and not env.model.stale and not env.model.view_age_seconds()
        return current and env.model.snapshot() == truth(env.sim)

    await eventually(caught_up, "the view matches a list, watches up")


async def test_dropped_watches_under_churn_lose_nothing(env: Env) -> None:
    relists = env.watcher.relists
    for i in range(6):
        env.sim.faults.close_watches()
        env.sim.store.create("pods", "hub", server_pod(f"jupyter-{i}"))
        if i % 2:
            env.sim.store.delete("pods", "hub", f"jupyter-{i - 1}", grace=0)
        env.sim.faults.node_not_ready("cpu-2", ready=i % 3 != 0)
    env.sim.faults.node_not_ready("cpu-2", ready=True)
    await assert_view_is_the_truth(env)
    assert env.model.running("small") == 3
    assert env.watcher.relists == relists  # resumed from resourceVersions, no relist
    stale, availability = await env.small()
    assert (stale, availability["running"]) == (False, 3)


@pytest.mark.parametrize("code", [500, 429, 503])
async def test_an_api_outage_is_stale_everywhere_then_recovers(env: Env, code: int) -> None:
    env.sim.store.create("pods", "hub", server_pod("before", node="cpu-1"))
    await eventually(lambda: env.model.running("small") == 1, "the first pod seen")

    env.sim.faults.fail_next(1_000_000, code)  # every request fails until clear()
    env.sim.faults.close_watches()
    await eventually(lambda: env.model.stale, "the model turns stale")
    stale, availability = await env.small()
    assert stale is True
    assert availability["running"] == 1  # the last view is kept, and flagged
    code_, health, headers = await env.get("health")
    assert code_ == 503 and headers.get("Retry-After") == "30", health
    assert health["checks"]["cluster"]["ok"] is False
    assert "cluster view stale" in health["checks"]["cluster"]["message"]
    refusal = env.model.reserve(env.site.profile("small"), namespace="hub", pod_name="x")
    assert isinstance(refusal, Refusal)
    assert refusal.message.startswith("the cluster view is not available (watches down for")
    assert f"HTTP {code}" in (env.watcher.last_error or "")

    # changes made during the outage are seen once the API answers again
    env.sim.store.create("pods", "hub", server_pod("during", node="cpu-2"))
    env.sim.store.delete("pods", "hub", "before", grace=0)
    env.sim.faults.clear()
    await assert_view_is_the_truth(env)
    stale, availability = await env.small()
    assert (stale, availability["running"], availability["status"]) == (False, 1, "available")
    code_, health, _ = await env.get("health")
    assert code_ == 200 and health["checks"]["cluster"]["ok"] is True, health
    admitted = env.model.reserve(env.site.profile("small"), namespace="hub", pod_name="y")
    assert isinstance(admitted, Reservation)
    admitted.release()


async def test_gone_resource_versions_relist_and_the_service_follows(env: Env) -> None:
    relists = env.watcher.relists
    for i in range(3):  # changes the watches never see as events
        env.sim.store.create("pods", "hub", server_pod(f"unseen-{i}", node="cpu-1"))
    env.sim.faults.compact()
    env.sim.faults.close_watches()
    env.sim.store.delete("pods", "hub", "unseen-0", grace=0)
    await eventually(lambda: env.watcher.relists >= relists + 2, "both kinds listed again")
    await assert_view_is_the_truth(env)
    stale, availability = await env.small()
    assert (stale, availability["running"]) == (False, 2)
    assert availability["can_start_now"] == 6  # 8 CPUs, 2 taken


async def test_a_lost_node_takes_its_servers_and_its_room(env: Env) -> None:
    for i in range(3):
        env.sim.store.create("pods", "hub", server_pod(f"on-1-{i}", node="cpu-1"))
    env.sim.store.create("pods", "hub", server_pod("on-2", node="cpu-2"))
    await eventually(lambda: env.model.running("small") == 4, "four servers seen")
    stale, availability = await env.small()
    assert (availability["running"], availability["can_start_now"]) == (4, 4)

    env.sim.faults.remove_node("cpu-1")
    # the simulator's pod garbage collector deletes the pods bound to the lost node
    assert [p["metadata"]["name"] for p in env.sim.store.objects("pods")] == ["on-2"]
    await assert_view_is_the_truth(env)
    assert env.model.node_names() == ["cpu-2"]
    stale, availability = await env.small()
    assert (stale, availability["running"], availability["can_start_now"]) == (False, 1, 3)


def test_the_service_process_says_stale_during_an_outage(
    sim_factory: Callable[..., SimulatorThread], tmp_path: Path
) -> None:
    """``esap-spawner service`` itself, its watcher configured from ``--config``."""
    sim = sim_factory(CLUSTER, kubelet="fake")
    kubeconfig = sim.write_kubeconfig(tmp_path / "kubeconfig")
    site_file = tmp_path / "site.yaml"
    site_file.write_text(SITE_YAML)
    config = tmp_path / "service_config.py"
    config.write_text(
        "c.ClusterWatcher.stale_after = 1.0\n"
        "c.ClusterWatcher.backoff_initial = 0.05\n"
        "c.ClusterWatcher.backoff_max = 0.5\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [sys.executable, "-m", "esap_spawner.cli", "service", "--site-file", str(site_file),
               "--port", str(port), "--kubeconfig", str(kubeconfig), "--allow-anonymous",
               "--config", str(config)]  # fmt: skip
    with (tmp_path / "service.log").open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)

    def answers() -> tuple[int, bool | None]:
        """(health status, stale) as the service answers them now."""
        try:
            health = requests.get(url + "health", timeout=5).status_code
            stale = requests.get(url + "api/v1/profiles", timeout=5).json()["stale"]
        except requests.RequestException:
            return 0, None
        return health, stale

    def until(expected: tuple[int, bool], what: str) -> None:
        deadline = time.monotonic() + 30
        while answers() != expected:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"{what}: {answers()}\n{(tmp_path / 'service.log').read_text()}"
                )
            time.sleep(0.1)

    try:
        until((200, False), "synced and current")
        sim.faults.fail_next(1_000_000, 503)
        sim.faults.close_watches()
        until((503, True), "stale during the outage")
        sim.faults.clear()
        until((200, False), "current again")
    finally:
        proc.terminate()
        proc.wait(10)
