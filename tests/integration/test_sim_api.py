"""The simulator's REST semantics through the real kubernetes_asyncio client over HTTP.

Each test starts its own simulator (fake kubelet) so that nodes and faults stay private.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio.client import ApiException, CoreV1Api

from esap_spawner.dev.sim import SimulatorThread, pod_manifest
from tests.harness.sim import k8s_api

pytestmark = pytest.mark.integration

CLUSTER = {
    "nodes": [
        {"name": "n1", "labels": {"zone": "a"}, "allocatable": {"cpu": "4", "memory": "8Gi"}},
        {"name": "n2", "labels": {"zone": "b"}, "allocatable": {"cpu": "2", "memory": "4Gi"}},
    ]
}


@pytest.fixture
async def cluster(sim_factory: Callable[..., SimulatorThread]) -> Any:
    sim = sim_factory(CLUSTER, kubelet="fake")
    api = k8s_api(sim)
    try:
        yield sim, api
    finally:
        await api.api_client.close()


def status_of(error: ApiException) -> dict[str, Any]:
    body = json.loads(error.body)
    assert body["kind"] == "Status"
    assert body["code"] == error.status
    return body


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


async def test_create_fills_server_fields_and_get_list(cluster: Any) -> None:
    _, api = cluster
    body = {"metadata": {"name": "settings", "labels": {"app": "x"}}, "data": {"k": "v"}}
    created, code, _ = await api.create_namespaced_config_map_with_http_info("default", body)
    assert code == 201
    meta = created.metadata
    assert (meta.namespace, meta.name) == ("default", "settings")
    assert meta.uid and meta.creation_timestamp and meta.resource_version
    assert (created.kind, created.api_version) == ("ConfigMap", "v1")
    got = await api.read_namespaced_config_map("settings", "default")
    assert got.data == {"k": "v"} and got.metadata.uid == meta.uid
    listed = await api.list_namespaced_config_map("default")
    assert [c.metadata.name for c in listed.items] == ["settings"]
    assert int(listed.metadata.resource_version) >= int(meta.resource_version)


async def test_errors_are_status_objects(cluster: Any) -> None:
    _, api = cluster
    with pytest.raises(ApiException) as missing:
        await api.read_namespaced_pod("nope", "default")
    assert status_of(missing.value)["reason"] == "NotFound"
    assert missing.value.status == 404

    pod = pod_manifest("p")
    await api.create_namespaced_pod("default", pod)
    with pytest.raises(ApiException) as dup:
        await api.create_namespaced_pod("default", pod)
    assert (dup.value.status, status_of(dup.value)["reason"]) == (409, "AlreadyExists")

    nameless = {"metadata": {}, "data": {}}
    with pytest.raises(ApiException) as invalid:
        await api.create_namespaced_config_map("default", nameless)
    assert (invalid.value.status, status_of(invalid.value)["reason"]) == (422, "Invalid")

    bad_label = {"metadata": {"name": "x", "labels": {"app": "not ok!"}}}
    with pytest.raises(ApiException) as invalid_label:
        await api.create_namespaced_config_map("default", bad_label)
    assert invalid_label.value.status == 422
    assert "metadata.labels" in status_of(invalid_label.value)["message"]

    no_containers = {"metadata": {"name": "empty"}, "spec": {"containers": []}}
    with pytest.raises(ApiException) as invalid_pod:
        await api.create_namespaced_pod("default", no_containers)
    assert invalid_pod.value.status == 422

    with pytest.raises(ApiException) as no_ns:
        await api.create_namespaced_config_map("elsewhere", {"metadata": {"name": "x"}})
    assert no_ns.value.status == 404
    assert 'namespaces "elsewhere" not found' in status_of(no_ns.value)["message"]


async def test_generate_name_and_put_conflict(cluster: Any) -> None:
    _, api = cluster
    made = await api.create_namespaced_secret(
        "default", {"metadata": {"generateName": "token-"}, "stringData": {"a": "b"}}
    )
    assert made.metadata.name.startswith("token-") and len(made.metadata.name) == 11
    stale = api.api_client.sanitize_for_serialization(made)
    assert made.data == {"a": "Yg=="}  # stringData is stored base64-encoded in data
    fresh = await api.patch_namespaced_secret(
        made.metadata.name, "default", {"metadata": {"labels": {"v": "2"}}}
    )
    assert int(fresh.metadata.resource_version) > int(made.metadata.resource_version)
    with pytest.raises(ApiException) as conflict:
        await api.replace_namespaced_secret(made.metadata.name, "default", stale)
    assert (conflict.value.status, status_of(conflict.value)["reason"]) == (409, "Conflict")


async def test_merge_strategic_and_json_patch(cluster: Any) -> None:
    sim, api = cluster
    pod = pod_manifest("web", labels={"app": "web", "tier": "front"})
    pod["spec"]["containers"].append({"name": "side", "image": "busybox:1"})
    await api.create_namespaced_pod("default", pod)

    # a dict body: the client sends a strategic merge patch; lists merge by name
    patched = await api.patch_namespaced_pod(
        "web",
        "default",
        {"metadata": {"labels": {"tier": None, "v": "1"}},
         "spec": {"containers": [{"name": "side", "image": "busybox:2"}]}},
    )  # fmt: skip
    assert patched.metadata.labels == {"app": "web", "v": "1"}
    assert [(c.name, c.image) for c in patched.spec.containers] == [
        ("main", "busybox:1.36"),
        ("side", "busybox:2"),
    ]
    # a list body: JSON patch
    patched = await api.patch_namespaced_pod(
        "web",
        "default",
        [
            {"op": "add", "path": "/metadata/annotations", "value": {"a": "1"}},
            {"op": "replace", "path": "/metadata/labels/v", "value": "2"},
            {"op": "replace", "path": "/spec/containers/1/image", "value": "busybox:3"},
        ],
    )
    assert patched.metadata.annotations == {"a": "1"}
    assert patched.metadata.labels["v"] == "2"
    assert [c.image for c in patched.spec.containers] == ["busybox:1.36", "busybox:3"]
    # most of a pod's spec is immutable, as in Kubernetes
    with pytest.raises(ApiException) as immutable:
        await api.patch_namespaced_pod(
            "web", "default", [{"op": "remove", "path": "/spec/containers/1"}]
        )
    assert immutable.value.status == 422
    assert "Forbidden: pod updates may not change fields" in status_of(immutable.value)["message"]
    # a plain JSON merge patch replaces lists
    async with (
        aiohttp.ClientSession() as session,
        session.patch(
            f"{sim.url}/api/v1/namespaces/default/pods/web",
            data=json.dumps({"metadata": {"labels": {"app": None}}}),
            headers={"Content-Type": "application/merge-patch+json"},
        ) as response,
    ):
        assert response.status == 200
        assert (await response.json())["metadata"]["labels"] == {"v": "2"}
    with pytest.raises(ApiException) as bad:
        await api.patch_namespaced_pod(
            "web", "default", [{"op": "remove", "path": "/metadata/nothing"}]
        )
    assert bad.value.status == 422


async def test_label_and_field_selectors(cluster: Any) -> None:
    _, api = cluster
    for name, labels in [
        ("a", {"app": "a", "tier": "web"}),
        ("b", {"app": "b", "tier": "db", "gpu": "yes"}),
        ("c", {"app": "c"}),
    ]:
        await api.create_namespaced_pod("default", pod_manifest(name, labels=labels))

    async def names(**kwargs: Any) -> list[str]:
        pods = await api.list_namespaced_pod("default", **kwargs)
        return sorted(p.metadata.name for p in pods.items)

    assert await names(label_selector="app in (a, b)") == ["a", "b"]
    assert await names(label_selector="app notin (a)") == ["b", "c"]
    assert await names(label_selector="tier!=web") == ["b", "c"]
    assert await names(label_selector="gpu") == ["b"]
    assert await names(label_selector="!gpu,app=a") == ["a"]
    assert await names(field_selector="metadata.name=c") == ["c"]
    assert await names(field_selector="metadata.name!=c,metadata.namespace=default") == ["a", "b"]

    await eventually(lambda: names(field_selector="status.phase=Running"))
    running = await names(field_selector="status.phase=Running")
    assert running and set(running) <= {"a", "b", "c"}
    on_n1 = await names(field_selector="spec.nodeName=n1")
    on_n2 = await names(field_selector="spec.nodeName=n2")
    assert sorted(on_n1 + on_n2) == ["a", "b", "c"]

    all_pods = await api.list_pod_for_all_namespaces(label_selector="app")
    assert len(all_pods.items) == 3
    with pytest.raises(ApiException) as bad:
        await api.list_namespaced_pod("default", label_selector="app in (a")
    assert bad.value.status == 400


async def test_delete_with_grace_sets_deletion_timestamp_first(cluster: Any) -> None:
    _, api = cluster
    await api.create_namespaced_pod("default", pod_manifest("slow"))

    async def running() -> bool:
        pod = await api.read_namespaced_pod("slow", "default")
        return bool(pod.status.phase == "Running")

    assert await eventually(running)
    deleted = await api.delete_namespaced_pod("slow", "default", grace_period_seconds=30)
    assert deleted.metadata.deletion_timestamp is not None
    assert deleted.metadata.deletion_grace_period_seconds == 30
    # still there while the kubelet stops it, then gone
    still = await api.read_namespaced_pod("slow", "default")
    assert still.metadata.deletion_timestamp is not None

    async def gone(name: str) -> bool:
        try:
            await api.read_namespaced_pod(name, "default")
        except ApiException as exc:
            return exc.status == 404
        return False

    assert await eventually(lambda: gone("slow"))
    # grace 0 removes at once
    await api.create_namespaced_pod("default", pod_manifest("fast", node="n1"))
    await api.delete_namespaced_pod("fast", "default", grace_period_seconds=0)
    assert await gone("fast")


async def test_owner_references_are_garbage_collected(cluster: Any) -> None:
    _, api = cluster
    owner = await api.create_namespaced_pod("default", pod_manifest("owner"))
    ref = {"apiVersion": "v1", "kind": "Pod", "name": "owner", "uid": owner.metadata.uid}
    await api.create_namespaced_secret(
        "default", {"metadata": {"name": "owned", "ownerReferences": [ref]}}
    )
    await api.create_namespaced_service(
        "default",
        {"metadata": {"name": "owned", "ownerReferences": [ref]},
         "spec": {"ports": [{"port": 80}]}},
    )  # fmt: skip
    await api.create_namespaced_secret("default", {"metadata": {"name": "independent"}})
    await api.delete_namespaced_pod("owner", "default", grace_period_seconds=0)

    async def secrets_left() -> list[str]:
        return [s.metadata.name for s in (await api.list_namespaced_secret("default")).items]

    assert await eventually(lambda: _equal(secrets_left, ["independent"]))
    assert (await api.list_namespaced_service("default")).items == []


async def _equal(fetch: Callable[[], Any], expected: Any) -> bool:
    return bool(await fetch() == expected)


async def test_namespace_deletion_takes_its_contents(cluster: Any) -> None:
    _, api = cluster
    await api.create_namespace({"metadata": {"name": "team"}})
    await api.create_namespaced_pod("team", pod_manifest("p", namespace="team"))
    await api.create_namespaced_config_map("team", {"metadata": {"name": "cm"}})
    await api.create_namespaced_config_map("default", {"metadata": {"name": "cm"}})
    await api.delete_namespace("team")

    async def namespace_gone() -> bool:
        try:
            await api.read_namespace("team")
        except ApiException as exc:
            return exc.status == 404
        return False

    assert await eventually(namespace_gone)
    assert (await api.list_namespaced_pod("team")).items == []
    assert [c.metadata.name for c in (await api.list_config_map_for_all_namespaces()).items] == [
        "cm"
    ]


async def test_nodes_created_through_the_api_with_status(cluster: Any) -> None:
    _, api = cluster
    node = {
        "metadata": {"name": "big", "labels": {"size": "xl"}},
        "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "nvidia.com/gpu": "4"}},
    }
    created = await api.create_node(node)
    assert created.status.allocatable["nvidia.com/gpu"] == "4"
    assert created.status.capacity["cpu"] == "64"
    assert [c.type for c in created.status.conditions] == ["Ready"]
    big = pod_manifest("needs-gpu", limits={"nvidia.com/gpu": "2"})
    await api.create_namespaced_pod("default", big)

    async def placed() -> str | None:
        return (await api.read_namespaced_pod("needs-gpu", "default")).spec.node_name

    assert await eventually(placed) == "big"
    names = sorted(n.metadata.name for n in (await api.list_node()).items)
    assert names == ["big", "n1", "n2"]
    status = await api.patch_node_status("big", {"status": {"allocatable": {"cpu": "32"}}})
    assert status.status.allocatable["cpu"] == "32"


async def test_faults_failures_latency_and_nodes(cluster: Any) -> None:
    sim, api = cluster
    sim.faults.fail_next(2, 503)
    for _ in range(2):
        with pytest.raises(ApiException) as failed:
            await api.list_namespaced_pod("default")
        assert failed.value.status == 503
    await api.list_namespaced_pod("default")
    sim.faults.fail_next(1, 429)
    with pytest.raises(ApiException) as throttled:
        await api.list_node()
    assert throttled.value.status == 429
    assert throttled.value.headers["Retry-After"] == "1"

    sim.faults.set_latency(0.3)
    began = time.monotonic()
    await api.list_node()
    assert time.monotonic() - began >= 0.3
    sim.faults.clear()

    await api.create_namespaced_pod("default", pod_manifest("on-n2", node="n2"))
    sim.faults.node_not_ready("n1")
    sim.faults.remove_node("n2")
    with pytest.raises(ApiException) as orphan:
        await api.read_namespaced_pod("on-n2", "default")
    assert orphan.value.status == 404  # pods of a removed node go with it
    await api.create_namespaced_pod("default", pod_manifest("stuck"))

    async def failed_scheduling() -> list[Any]:
        events = await api.list_namespaced_event(
            "default", field_selector="involvedObject.name=stuck,reason=FailedScheduling"
        )
        return events.items

    events = await eventually(failed_scheduling)
    assert events[0].message == ("0/1 nodes are available: 1 node(s) had untolerated taint(s).")
    sim.faults.node_not_ready("n1", ready=True)

    async def scheduled() -> str | None:
        return (await api.read_namespaced_pod("stuck", "default")).spec.node_name

    assert await eventually(scheduled) == "n1"
    with pytest.raises(ValueError, match="code must be one of"):
        sim.faults.fail_next(1, 418)


async def test_discovery_and_version(cluster: Any) -> None:
    sim, _ = cluster
    async with aiohttp.ClientSession() as session:
        for path, kind in [("/api", "APIVersions"), ("/api/v1", "APIResourceList"),
                           ("/apis", "APIGroupList")]:  # fmt: skip
            async with session.get(sim.url + path) as response:
                assert (await response.json())["kind"] == kind
        async with session.get(sim.url + "/version") as response:
            assert (await response.json())["major"] == "1"
        async with session.get(sim.url + "/api/v1/widgets") as response:
            assert response.status == 404
            assert (await response.json())["reason"] == "NotFound"


async def test_kubeconfig_points_at_the_simulator(cluster: Any, tmp_path: Any) -> None:
    sim, _ = cluster
    path = sim.write_kubeconfig(tmp_path / "kc.yaml")
    from kubernetes_asyncio import client, config

    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(path), client_configuration=configuration)
    assert configuration.host == sim.url
    async with client.ApiClient(configuration) as api_client:
        nodes = await CoreV1Api(api_client).list_node()
    assert len(nodes.items) == 2


SCHEDULING_CLUSTER = {
    "nodes": [
        {"name": "small", "labels": {"zone": "a"}, "allocatable": {"cpu": "2", "memory": "4Gi"}},
        {"name": "large", "labels": {"zone": "b", "disk": "ssd"},
         "allocatable": {"cpu": "16", "memory": "64Gi"}},
        {"name": "gpu", "labels": {"zone": "b"},
         "allocatable": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"},
         "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
    ]
}  # fmt: skip
GPU_TOLERATION = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
ZONE_A = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
            ]
        }
    }
}
PLACEMENTS: list[tuple[str, dict[str, Any], str]] = [
    # (pod, extra spec / resources, expected node or FailedScheduling message)
    ("ssd", {"nodeSelector": {"disk": "ssd"}}, "large"),
    ("zone-a", {"affinity": ZONE_A}, "small"),
    ("big", {"requests": {"cpu": "12"}}, "large"),
    ("gpu", {"limits": {"nvidia.com/gpu": "1"}, "tolerations": GPU_TOLERATION}, "gpu"),
    ("second-gpu", {"limits": {"nvidia.com/gpu": "1"}, "tolerations": GPU_TOLERATION},
     "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
    ("gpu-untolerated", {"limits": {"nvidia.com/gpu": "1"}},
     "0/3 nodes are available: 1 node(s) had untolerated taint(s), "
     "2 Insufficient nvidia.com/gpu."),
    ("zone-a-too-big", {"affinity": ZONE_A, "requests": {"cpu": "4"}},
     "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match Pod's node "
     "affinity/selector, 1 node(s) had untolerated taint(s)."),
]  # fmt: skip


async def test_scheduler_places_pods_or_says_why_not(
    sim_factory: Callable[..., SimulatorThread],
) -> None:
    sim = sim_factory(SCHEDULING_CLUSTER, kubelet="fake")
    api = k8s_api(sim)
    try:
        for name, extra, expected in PLACEMENTS:
            extra = dict(extra)
            manifest = pod_manifest(
                name, requests=extra.pop("requests", None), limits=extra.pop("limits", None)
            )
            manifest["spec"].update(extra)
            await api.create_namespaced_pod("default", manifest)

            async def outcome(pod_name: str = name) -> str | None:
                pod = await api.read_namespaced_pod(pod_name, "default")
                if pod.spec.node_name:
                    return str(pod.spec.node_name)
                events = await api.list_namespaced_event(
                    "default",
                    field_selector=f"involvedObject.name={pod_name},reason=FailedScheduling",
                )
                return events.items[0].message if events.items else None

            assert await eventually(outcome) == expected, name
    finally:
        await api.api_client.close()


async def test_status_subresource_is_separate_from_the_main_resource(cluster: Any) -> None:
    _, api = cluster
    await api.create_namespaced_pod("default", pod_manifest("s", phase="Pending"))
    # a write to the main resource cannot change status, one to /status changes only status
    changed = await api.patch_namespaced_pod(
        "s", "default", {"metadata": {"labels": {"a": "1"}}, "status": {"phase": "Failed"}}
    )
    assert changed.metadata.labels == {"a": "1"} and changed.status.phase != "Failed"
    changed = await api.patch_namespaced_pod_status(
        "s", "default", {"metadata": {"labels": {"b": "2"}}, "status": {"message": "hello"}}
    )
    assert changed.status.message == "hello"
    assert changed.metadata.labels == {"a": "1"}


async def test_image_pulls_recorded_on_the_node(cluster: Any) -> None:
    _, api = cluster

    async def messages(pod_name: str) -> list[str]:
        events = await api.list_namespaced_event(
            "default", field_selector=f"involvedObject.name={pod_name}"
        )
        return [f"{e.reason}: {e.message}" for e in events.items]

    async def started(pod_name: str) -> bool:
        return any(m.startswith("Started") for m in await messages(pod_name))

    on_n1 = {"nodeSelector": {"kubernetes.io/hostname": "n1"}}
    for name in ("first", "second"):
        manifest = pod_manifest(name, image="quay.io/example/notebook:1")
        manifest["spec"].update(on_n1)
        await api.create_namespaced_pod("default", manifest)
        assert await eventually(lambda n=name: started(n))
    first, second = await messages("first"), await messages("second")
    assert 'Pulling: Pulling image "quay.io/example/notebook:1"' in first
    assert any(m.startswith('Pulled: Successfully pulled image "quay.io/example/') for m in first)
    assert not any(m.startswith("Pulling") for m in second)
    assert (
        'Pulled: Container image "quay.io/example/notebook:1" already present on machine' in second
    )
    node = await api.read_node("n1")
    assert ["quay.io/example/notebook:1"] in [image.names for image in node.status.images]
