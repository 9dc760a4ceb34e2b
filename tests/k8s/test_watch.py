"""The hub's list+watch edge (ClusterWatcher) against the real API server's watch semantics.

- an API server restart: the watch breaks, the view is marked down, and it resumes (the
  restarted server's watch cache no longer holds the old resourceVersion: 410, relist);
- etcd compaction: on a server without a watch cache (watches go to etcd), resuming from a
  compacted resourceVersion answers 410 Gone, and the watcher lists again;
- bookmarks: the real server sends BOOKMARKs before a watch's ``timeoutSeconds`` ends; the
  watcher resumes from them without relisting;
- paginated lists: 5,000 pods listed in pages of ``limit`` with ``continue`` tokens;
- ResourceQuotas of the hub's namespace follow their controller's counts.

Pods here name a scheduler that does not exist: nobody binds them, so thousands cost no
scheduling work, and list/watch is what is exercised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from esap_spawner.capacity.model import ClusterModel
from esap_spawner.capacity.requirements import ProfileRequirements
from esap_spawner.capacity.watch import ClusterWatcher, api_client_from_environment
from esap_spawner.dev.sim.cluster import node_manifest
from esap_spawner.site.profiles import PROFILE_LABEL
from tests.harness.kube import create_many, start_control_plane
from tools.kube.control_plane import ControlPlane

NODES = [node_manifest(f"w-{i}", allocatable={"cpu": "8", "memory": "32Gi"}) for i in range(2)]
PROFILE = ProfileRequirements.build("p", requests={"cpu": "1", "memory": "1Gi"})


def idle_pod(name: str, profile: str = "p") -> dict[str, Any]:
    """A pod no scheduler takes (``schedulerName`` of none): it stays Pending, unbound."""
    return {
        "metadata": {"name": name, "labels": {PROFILE_LABEL: profile}},
        "spec": {
            "schedulerName": "nobody",
            "containers": [{"name": "c", "image": "busybox:1.36",
                            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}],
        },
    }  # fmt: skip


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    plane = start_control_plane()
    try:
        plane.register(NODES)
        yield plane
    finally:
        plane.stop()


async def eventually(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


class Watching:
    """A ClusterWatcher on a control plane, with its model; counts its list pages."""

    def __init__(self, plane: ControlPlane, tmp_path: Path, **traits: Any) -> None:
        self.plane = plane
        self.kubeconfig = plane.write_kubeconfig(tmp_path / "kubeconfig")
        self.model = ClusterModel()
        self.traits = traits
        self.pages: dict[str, int] = {}
        self.watcher: ClusterWatcher | None = None

    async def start(self) -> ClusterWatcher:
        api = await api_client_from_environment(str(self.kubeconfig))
        watcher = ClusterWatcher(model=self.model, api_client=api, **self.traits)
        listing = watcher._call

        def counting(kind: str) -> Any:  # a seam: count list pages (not watch requests)
            call = listing(kind)

            def counted(*args: Any, **kwargs: Any) -> Any:
                if not kwargs.get("watch"):
                    self.pages[kind] = self.pages.get(kind, 0) + 1
                return call(*args, **kwargs)

            return counted

        watcher._call = counting  # type: ignore[method-assign]
        self.watcher = watcher
        await watcher.start()
        assert await watcher.wait_synced(60)
        return watcher

    async def stop(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()
            await self.watcher.api.api_client.close()

    def pods(self, namespace: str) -> int:
        """Non-terminal pods of profile p the API server has in ``namespace``."""
        items = self.plane.api.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
        return sum(1 for pod in items if pod["metadata"]["labels"].get(PROFILE_LABEL) == "p")


@pytest.fixture
async def watching(plane: ControlPlane, tmp_path: Path) -> AsyncIterator[Watching]:
    found = Watching(plane, tmp_path, watch_timeout_seconds=300)
    yield found
    await found.stop()


async def test_the_view_resumes_after_an_api_server_restart(
    plane: ControlPlane, watching: Watching
) -> None:
    ns = plane.create_namespace("restart")
    watcher = await watching.start()
    model = watching.model
    plane.api.post(f"/api/v1/namespaces/{ns}/pods", idle_pod("before"))
    await eventually(lambda: model.running("p") == 1, "the first pod in the view")
    relists = watcher.relists

    await asyncio.to_thread(plane.restart_apiserver, down=2)
    plane.api.post(f"/api/v1/namespaces/{ns}/pods", idle_pod("after"))
    plane.api.request("DELETE", f"/api/v1/namespaces/{ns}/pods/before")
    await eventually(
        lambda: model.running("p") == watching.pods(ns) == 1 and not model.stale,
        "the view to follow the restarted server",
    )
    assert watcher.errors >= 1  # the broken watch was seen, and the view marked down
    # the restarted server's watch cache starts at its own list: the old version is gone
    assert watcher.relists > relists


async def test_a_compacted_resource_version_is_listed_again(tmp_path: Path) -> None:
    # Without a watch cache the API server watches etcd itself, whose compaction forgets
    # old revisions (with the cache, the restart above is what loses them).
    plane = start_control_plane(apiserver_flags=["--watch-cache=false"])
    watching = Watching(plane, tmp_path, watch_timeout_seconds=2)
    try:
        ns = plane.create_namespace("compaction")
        watcher = await watching.start()
        relists = watcher.relists
        for i in range(20):  # other objects move etcd's revision past the pods' last one
            plane.api.post(f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": f"c{i}"}})
        revision = plane.compact_etcd()
        await eventually(lambda: watcher.relists > relists, "a relist after 410 Gone", 30)
        assert "resourcequotas" not in (watcher.last_error or "")
        plane.api.post(f"/api/v1/namespaces/{ns}/pods", idle_pod("after"))
        await eventually(lambda: watching.model.running("p") == 1, "the view to follow")
        assert not watching.model.stale
        assert plane.etcd_revision() > revision
    finally:
        await watching.stop()
        plane.stop()


async def test_bookmarks_move_the_watch_on_without_a_relist(
    plane: ControlPlane, tmp_path: Path
) -> None:
    ns = plane.create_namespace("bookmarks")
    watching = Watching(plane, tmp_path, watch_timeout_seconds=10)
    try:
        watcher = await watching.start()
        relists = watcher.relists
        # The real server sends BOOKMARKs in the last seconds before timeoutSeconds ends when
        # its cache moved past the version the watch began at (docs/simulator.md): an event
        # during the watch does that.
        await asyncio.sleep(1)
        plane.api.post(f"/api/v1/namespaces/{ns}/pods", idle_pod("during"))
        await eventually(lambda: watcher.bookmarks >= 1, "a bookmark", 20)
        await asyncio.sleep(4)  # the watch ran out; it resumed from the bookmark's version
        plane.api.post(f"/api/v1/namespaces/{ns}/pods", idle_pod("after"))
        await eventually(lambda: watching.model.running("p") == 2, "the next event")
        assert watcher.relists == relists
        assert watcher.errors == 0
    finally:
        await watching.stop()


async def test_five_thousand_pods_are_listed_in_pages(
    plane: ControlPlane, watching: Watching
) -> None:
    ns = plane.create_namespace("many")
    pods = [idle_pod(f"p{i:04d}", profile="many") for i in range(5000)]
    assert await create_many(plane, f"/api/v1/namespaces/{ns}/pods", pods) == 5000
    watcher = await watching.start()
    assert watching.model.running("many") == 5000
    assert watching.pages["pods"] >= 10  # pages of watcher.page_size (500) with `continue`
    assert watcher.relists == len(watcher.kinds)
    # and the watch follows changes to them
    plane.api.request("DELETE", f"/api/v1/namespaces/{ns}/pods", timeout=300)
    await eventually(lambda: watching.model.running("many") == 0, "5000 deletions in the view")


async def test_the_namespace_quotas_follow_their_controller(
    plane: ControlPlane, tmp_path: Path
) -> None:
    ns = plane.create_namespace("quota")
    plane.api.post(
        f"/api/v1/namespaces/{ns}/resourcequotas",
        {"metadata": {"name": "hub"}, "spec": {"hard": {"pods": "3"}}},
    )
    watching = Watching(plane, tmp_path, namespace=ns)
    try:
        await watching.start()
        model = watching.model
        await eventually(lambda: model.quotas.room(PROFILE, ()) == 3, "the quota in the view")
        plane.api.post(f"/api/v1/namespaces/{ns}/pods", idle_pod("one"))
        plane.api.post(f"/api/v1/namespaces/{ns}/pods", idle_pod("two"))
        await eventually(lambda: model.quotas.room(PROFILE, ()) == 1, "the quota's use")
        plane.api.request("DELETE", f"/api/v1/namespaces/{ns}/pods/one")
        await eventually(lambda: model.quotas.room(PROFILE, ()) == 2, "the quota given back")
        plane.api.request("DELETE", f"/api/v1/namespaces/{ns}/resourcequotas/hub")
        await eventually(lambda: model.quotas.room(PROFILE, ()) is None, "the quota gone")
    finally:
        await watching.stop()
