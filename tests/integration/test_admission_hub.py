"""Admission through a real hub: quota and room are checked before any pod exists.

On the simulator the hub runs on a simulator of its own with the fake kubelet; on the real
control plane (tests/harness/kube.py) in a namespace of its own on the session cluster. Either
way pods become Running and nothing listens, so fifty spawns cost no real servers: what is
measured is how many pods the spawner creates and what the refused users are told.

Pod addresses are on loopback, so the hub's HTTP check of an admitted server is refused at once
and retried until ``http_timeout``; that outlasts the hub's ``slow_spawn_timeout`` (10 s), so
the hub answers an admitted spawn 202 (pending) before it fails, and a refusal 409.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from esap_spawner.observe.db import Database
from esap_spawner.site.profiles import PROFILE_LABEL
from tests.harness.hub import HubProcess, hub_on_cluster
from tests.harness.kube import Backend

pytestmark = pytest.mark.integration

HTTP_TIMEOUT = 15  # seconds the hub waits for an admitted server: more than slow_spawn_timeout

CLUSTER = {
    "nodes": [
        {"name": f"cpu-{i}", "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"}}
        for i in range(3)
    ]
}
SITE = {
    "facility": {"name": "Admission", "description": "tests", "url": "http://127.0.0.1/"},
    "profiles": [
        {
            "slug": "quota",
            "display_name": "Quota of ten",
            "default": True,
            "cpu": {"guarantee": 0.1, "limit": 1},
            "memory": {"guarantee": "128M", "limit": "512M"},
            "image": "quay.io/jupyter/minimal-notebook:2026-01-01",
            "max_servers": 10,
        },
        {
            "slug": "huge",
            "display_name": "More than any node",
            "cpu": {"guarantee": 40, "limit": 40},
            "memory": {"guarantee": "8G", "limit": "8G"},
            "image": "quay.io/jupyter/minimal-notebook:2026-01-01",
        },
    ],
}


@dataclass
class Cluster:
    """Where the hub spawns: its API server, namespace and kubeconfig."""

    url: str
    namespace: str
    kubeconfig: Path
    http: dict[str, Any]  # what requests needs to talk to the API server


@pytest.fixture
def cluster(kube: Backend, sim_factory: Any, tmp_path: Path) -> Iterator[Cluster]:
    if kube.name == "sim":
        sim = sim_factory(CLUSTER, kubelet="fake")
        sim.create_namespace("admission")
        yield Cluster(sim.url, "admission", sim.write_kubeconfig(tmp_path / "kubeconfig"), {})
        return
    namespace = f"admission-{uuid.uuid4().hex[:6]}"
    kube.create_namespace(namespace)
    try:
        yield Cluster(kube.url, namespace, kube.kubeconfig, kube.requests_options())
    finally:
        kube.delete_namespace(namespace)


@pytest.fixture
def hub(cluster: Cluster, tmp_path: Path) -> Any:
    config = f"\nc.KubeSpawner.http_timeout = {HTTP_TIMEOUT}"
    config += "\nc.JupyterHub.concurrent_spawn_limit = 0\n"
    hub = hub_on_cluster(
        tmp_path, SITE, namespace=cluster.namespace, kubeconfig=cluster.kubeconfig,
        start_timeout=20, config=config,
    )  # fmt: skip
    hub.cluster = cluster
    yield hub
    hub.stop()


def profile_pods(cluster: Cluster, slug: str) -> list[dict[str, Any]]:
    r = requests.get(
        f"{cluster.url}/api/v1/namespaces/{cluster.namespace}/pods",
        params={"labelSelector": f"{PROFILE_LABEL}={slug}"},
        timeout=10,
        **cluster.http,
    )
    r.raise_for_status()
    return list(r.json()["items"])


def test_profile_that_fits_nowhere_is_refused_at_once(hub: HubProcess) -> None:
    hub.create_user("hugo")
    r = hub.api("POST", "/users/hugo/server", json={"profile": "huge"})
    assert r.status_code == 409, r.text
    message = r.json()["message"]
    assert "cannot start now" in message and "no node has room" in message
    assert profile_pods(hub.cluster, "huge") == []  # type: ignore[attr-defined]


class PodWatch:
    """Every pod of a profile the API server reports, from one watch stream in a thread."""

    def __init__(self, cluster: Cluster, slug: str) -> None:
        self.url = f"{cluster.url}/api/v1/namespaces/{cluster.namespace}/pods"
        self.http = cluster.http
        self.params = {"watch": "1", "labelSelector": f"{PROFILE_LABEL}={slug}"}
        self.added: set[str] = set()
        self.live: set[str] = set()
        self.most_at_once = 0
        self.stopped = threading.Event()
        self.response: requests.Response | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(requests.RequestException, ValueError, AttributeError):
            # the API server sends the headers with the first event: open it here
            self.response = requests.get(
                self.url, params=self.params, stream=True, timeout=300, **self.http
            )
            for line in self.response.iter_lines():
                if self.stopped.is_set():
                    return
                event = json.loads(line)
                name = event["object"]["metadata"]["name"]
                if event["type"] == "ADDED":
                    self.added.add(name)
                    self.live.add(name)
                elif event["type"] == "DELETED":
                    self.live.discard(name)
                self.most_at_once = max(self.most_at_once, len(self.live))

    def close(self) -> None:
        # Closing the response from here would block on the reading thread's lock; the
        # simulator ends the stream when it stops, and the reader is a daemon thread.
        self.stopped.set()


def test_fifty_concurrent_spawns_never_exceed_max_servers(hub: HubProcess) -> None:
    names = [f"u{i:02d}-{uuid.uuid4().hex[:4]}" for i in range(50)]
    for name in names:
        hub.create_user(name)
    watch = PodWatch(hub.cluster, "quota")  # type: ignore[attr-defined]
    started = time.time()

    def spawn(name: str) -> tuple[int, str]:
        r = hub.api("POST", f"/users/{name}/server", json={"profile": "quota"}, timeout=60)
        return r.status_code, r.text

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(spawn, names))
    # A refusal decided within the hub's slow_spawn_timeout answers 409 at once; on a
    # loaded machine some answer 202 and are refused a moment later. Either way each
    # spawn ends in exactly one history row with its outcome and reason.
    for code, text in answers:
        assert code in (201, 202, 409), text
        if code == 409:
            assert "profile 'quota' is full" in text and "(max_servers)" in text

    db = Database(f"sqlite:///{hub.workdir}/esap.sqlite")
    deadline = time.monotonic() + 120
    records = []
    while time.monotonic() < deadline:
        records = db.spawns_between(started - 1)
        if len(records) == 50:
            break
        time.sleep(0.5)
    watch.close()
    outcomes = Counter(r.outcome for r in records)
    assert len(records) == 50, outcomes
    assert outcomes["refused"] == 40, outcomes
    for record in records:
        if record.outcome == "refused":
            assert "profile 'quota' is full" in (record.failure_reason or "")
    # the ten admitted spawns created pods (nothing listens in fake pods, so they then
    # fail their HTTP check); never more than ten pods of the profile existed
    assert len(watch.added) == 10, watch.added
    assert watch.most_at_once <= 10


def test_the_view_watches_the_cluster_kubespawner_spawns_in(
    sim_factory: Any, tmp_path: Path
) -> None:
    """KUBECONFIG names one cluster, c.KubeSpawner.k8s_api_host another: servers start in
    the second, so admission must count the second's nodes, not the kubeconfig's."""
    elsewhere = sim_factory({"nodes": [{"name": "tiny", "allocatable": {"cpu": "50m"}}]})
    spawns_here = sim_factory(CLUSTER, kubelet="fake")
    spawns_here.create_namespace("admission")
    kubeconfig = elsewhere.write_kubeconfig(tmp_path / "kubeconfig")
    config = f"\nc.KubeSpawner.k8s_api_host = {spawns_here.url!r}"
    config += f"\nc.KubeSpawner.http_timeout = {HTTP_TIMEOUT}\n"
    hub = hub_on_cluster(
        tmp_path, SITE, namespace="admission", kubeconfig=kubeconfig, start_timeout=20,
        config=config,
    )  # fmt: skip
    try:
        hub.create_user("kim")
        r = hub.api("POST", "/users/kim/server", json={"profile": "quota"})
        # admitted (the tiny node of the kubeconfig's cluster would have refused it) ...
        assert r.status_code in (201, 202), r.text
        deadline = time.monotonic() + 30
        where = Cluster(spawns_here.url, "admission", kubeconfig, {})
        while not profile_pods(where, "quota") and time.monotonic() < deadline:
            time.sleep(0.2)
        # ... and its pod is in the cluster KubeSpawner talks to
        assert [p["metadata"]["name"] for p in profile_pods(where, "quota")] == ["jupyter-kim"]
    finally:
        hub.stop()
