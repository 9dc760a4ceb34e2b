"""Watch semantics: resume, 410 after compaction, timeoutSeconds, selectors, closing watches."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import kubernetes_asyncio
import pytest
from kubernetes_asyncio import watch
from kubernetes_asyncio.client import ApiException
from packaging.version import Version

from esap_spawner.dev.sim import SimulatorThread
from tests.harness.sim import k8s_api

pytestmark = pytest.mark.integration


@pytest.fixture
async def cluster(sim_factory: Callable[..., SimulatorThread]) -> Any:
    sim = sim_factory({"nodes": [{"name": "n1"}]}, kubelet="fake", history=50)
    api = k8s_api(sim)
    try:
        yield sim, api
    finally:
        await api.api_client.close()


def cm(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "data": {}}


async def collect(api: Any, method: str, timeout: int = 1, **kwargs: Any) -> list[tuple[str, str]]:
    """(type, name) of every event of one watch that ends after ``timeout`` seconds."""
    seen = []
    w = watch.Watch()
    async with w.stream(getattr(api, method), timeout_seconds=timeout, **kwargs) as stream:
        async for event in stream:
            seen.append((event["type"], event["raw_object"]["metadata"]["name"]))
    return seen


async def test_resume_from_resource_version(cluster: Any) -> None:
    _, api = cluster
    await api.create_namespaced_config_map("default", cm("before"))
    listed = await api.list_namespaced_config_map("default")
    rv = listed.metadata.resource_version
    await api.create_namespaced_config_map("default", cm("one"))
    await api.patch_namespaced_config_map("one", "default", {"data": {"k": "v"}})
    await api.create_namespaced_config_map("default", cm("two"))
    await api.delete_namespaced_config_map("one", "default")
    events = await collect(
        api, "list_namespaced_config_map", namespace="default", resource_version=rv
    )
    assert events == [("ADDED", "one"), ("MODIFIED", "one"), ("ADDED", "two"), ("DELETED", "one")]
    # without a resourceVersion: the current objects as ADDED, then new changes
    events = await collect(api, "list_namespaced_config_map", namespace="default")
    assert sorted(events) == [("ADDED", "before"), ("ADDED", "two")]


async def test_410_gone_after_compaction(cluster: Any) -> None:
    sim, api = cluster
    rv = (await api.list_namespaced_config_map("default")).metadata.resource_version
    await api.create_namespaced_config_map("default", cm("x"))
    sim.faults.compact()
    with pytest.raises(ApiException) as gone:
        await collect(api, "list_namespaced_config_map", namespace="default", resource_version=rv)
    assert gone.value.status == 410
    # on the wire: a 200 stream carrying one ERROR event with a 410 Status, as Kubernetes does
    url = f"{sim.url}/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        event = json.loads(await response.text())
    assert event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")


async def test_bounded_history_compacts_by_itself(cluster: Any) -> None:
    _, api = cluster
    rv = (await api.list_namespaced_config_map("default")).metadata.resource_version
    for n in range(60):  # history=50 in this simulator
        await api.create_namespaced_config_map("default", cm(f"c{n}"))
    with pytest.raises(ApiException) as gone:
        await collect(api, "list_namespaced_config_map", namespace="default", resource_version=rv)
    assert gone.value.status == 410


async def test_timeout_seconds_ends_the_stream(cluster: Any) -> None:
    _, api = cluster
    rv = (await api.list_namespaced_config_map("default")).metadata.resource_version
    began = time.monotonic()
    events = await collect(
        api, "list_namespaced_config_map", timeout=1, namespace="default", resource_version=rv
    )
    took = time.monotonic() - began
    assert events == []
    assert 0.9 <= took < 3


async def test_selectors_on_watches(cluster: Any) -> None:
    _, api = cluster
    rv = (await api.list_namespaced_config_map("default")).metadata.resource_version
    await api.create_namespaced_config_map("default", cm("a", app="x"))
    await api.create_namespaced_config_map("default", cm("b", app="y"))
    await api.patch_namespaced_config_map("b", "default", {"metadata": {"labels": {"app": "x"}}})
    await api.patch_namespaced_config_map("a", "default", {"metadata": {"labels": {"app": "z"}}})
    await api.create_namespaced_config_map("default", cm("c", app="x"))
    events = await collect(
        api,
        "list_namespaced_config_map",
        namespace="default",
        resource_version=rv,
        label_selector="app=x",
    )
    # an object that starts matching reads as ADDED, one that stops as DELETED
    assert events == [("ADDED", "a"), ("ADDED", "b"), ("DELETED", "a"), ("ADDED", "c")]
    events = await collect(
        api,
        "list_namespaced_config_map",
        namespace="default",
        resource_version=rv,
        field_selector="metadata.name!=a",
        label_selector="app in (x, y)",
    )
    assert events == [("ADDED", "b"), ("MODIFIED", "b"), ("ADDED", "c")]


async def test_event_watch_with_field_selector_across_namespaces(cluster: Any) -> None:
    _, api = cluster
    rv = (await api.list_event_for_all_namespaces()).metadata.resource_version
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}}
    await api.create_namespaced_pod("default", pod)
    await asyncio.sleep(1)  # the fake kubelet starts the pod
    events = await collect(
        api,
        "list_event_for_all_namespaces",
        resource_version=rv,
        field_selector="involvedObject.kind=Pod,involvedObject.name=p",
    )
    seen = []
    for _, name in events:
        assert name.startswith("p.")
        event = await api.read_namespaced_event(name, "default")
        seen.append((event.reason, event.involved_object.field_path, event.source.component))
    assert seen == [
        ("Scheduled", None, "default-scheduler"),
        ("Pulling", "spec.containers{c}", "kubelet"),
        ("Pulled", "spec.containers{c}", "kubelet"),
        ("Created", "spec.containers{c}", "kubelet"),
        ("Started", "spec.containers{c}", "kubelet"),
    ]
    assert event.first_timestamp and event.last_timestamp and event.event_time
    assert event.count == 1 and event.involved_object.uid


async def test_capitalised_and_numeric_watch_flags(cluster: Any) -> None:
    sim, api = cluster
    await api.create_namespaced_config_map("default", cm("only"))
    async with aiohttp.ClientSession() as session:
        for flag in ("True", "true", "1"):
            url = f"{sim.url}/api/v1/namespaces/default/configmaps?watch={flag}&timeoutSeconds=1"
            async with session.get(url) as response:
                lines = (await response.text()).splitlines()
            assert [json.loads(line)["type"] for line in lines] == ["ADDED"], flag


async def test_close_all_watches(cluster: Any) -> None:
    sim, api = cluster
    rv = (await api.list_namespaced_config_map("default")).metadata.resource_version
    watching = asyncio.ensure_future(
        collect(api, "list_namespaced_config_map", timeout=30, namespace="default",
                resource_version=rv)
    )  # fmt: skip
    await asyncio.sleep(0.5)
    began = time.monotonic()
    assert sim.faults.close_watches() == 1
    assert await asyncio.wait_for(watching, 5) == []
    assert time.monotonic() - began < 5


async def test_bookmark_before_a_timeout_when_allowed(cluster: Any) -> None:
    sim, api = cluster
    rv = (await api.list_namespaced_config_map("default")).metadata.resource_version
    await api.create_namespaced_config_map("default", cm("seen"))
    await api.create_namespaced_secret("default", {"metadata": {"name": "other-kind"}})
    url = (
        f"{sim.url}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"
        "&timeoutSeconds=1&allowWatchBookmarks=true"
    )
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        events = [json.loads(line) for line in (await response.text()).splitlines()]
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    bookmark = events[1]["object"]
    assert bookmark["kind"] == "ConfigMap"
    # the bookmark's version covers the secret created after the config map
    assert int(bookmark["metadata"]["resourceVersion"]) > int(
        events[0]["object"]["metadata"]["resourceVersion"]
    )


@pytest.mark.skipif(
    Version(kubernetes_asyncio.__version__) < Version("33.3"),
    reason="kubernetes_asyncio before 33.3 fails on every BOOKMARK event, from any API server "
    "(it reads the typed object as a dict: tomplus/kubernetes_asyncio#363); the product's "
    "cluster watch reads watch streams itself and KubeSpawner asks for no bookmarks",
)
async def test_kubernetes_asyncio_takes_the_bookmarks_in_its_stride(cluster: Any) -> None:
    _, api = cluster
    rv = (await api.list_namespaced_config_map("default")).metadata.resource_version
    await api.create_namespaced_config_map("default", cm("seen"))
    secret = await api.create_namespaced_secret("default", {"metadata": {"name": "other-kind"}})
    w = watch.Watch()
    seen = []
    async with w.stream(
        api.list_namespaced_config_map, namespace="default", resource_version=rv,
        timeout_seconds=1, allow_watch_bookmarks=True,
    ) as stream:  # fmt: skip
        async for event in stream:
            seen.append(event["type"])
    assert seen == ["ADDED", "BOOKMARK"]
    # resumes from the bookmark's version, which covers the secret made after the config map
    assert int(w.resource_version) >= int(secret.metadata.resource_version)
