"""The simulator's pure parts: selectors, patches, env resolution, validation, STATUS column."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from esap_spawner.dev.sim.patches import PatchError, apply_patch
from esap_spawner.dev.sim.podenv import container_env, expand, field_ref
from esap_spawner.dev.sim.selectors import (
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from esap_spawner.dev.sim.tables import pod_status
from esap_spawner.dev.sim.validation import validate


def labelled(**labels: str) -> dict[str, Any]:
    return {"metadata": {"labels": labels}}


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("", {}, True),
        ("app=x", {"app": "x"}, True),
        ("app==x", {"app": "x"}, True),
        ("app=x", {"app": "y"}, False),
        ("app!=x", {}, True),
        ("app!=x", {"app": "x"}, False),
        ("app in (x, y)", {"app": "y"}, True),
        ("app in (x,y)", {}, False),
        ("app notin (x)", {}, True),
        ("app notin (x)", {"app": "x"}, False),
        ("gpu", {"gpu": ""}, True),
        ("!gpu", {"gpu": ""}, False),
        ("app=x,tier in (web),!gpu", {"app": "x", "tier": "web"}, True),
        ("hub.jupyter.org/username=alice", {"hub.jupyter.org/username": "alice"}, True),
        ("app=", {"app": ""}, True),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], matches: bool) -> None:
    assert parse_label_selector(selector).matches(labelled(**labels)) is matches


@pytest.mark.parametrize("selector", ["app in (x", "app in x)", "a b c", "=x"])
def test_bad_label_selectors(selector: str) -> None:
    with pytest.raises(SelectorError):
        parse_label_selector(selector)


def test_field_selectors_on_dotted_paths() -> None:
    event = {"involvedObject": {"kind": "Pod", "name": "p"}, "reason": "Started"}
    assert parse_field_selector("involvedObject.kind=Pod").matches(event)
    assert parse_field_selector("involvedObject.kind=Pod,reason!=Failed").matches(event)
    assert not parse_field_selector("involvedObject.kind==Node").matches(event)
    assert parse_field_selector("spec.nodeName=").matches({"spec": {}})
    assert parse_field_selector("metadata.name=x").equality("metadata.name") == "x"
    assert parse_field_selector("metadata.name!=x").equality("metadata.name") is None
    with pytest.raises(SelectorError):
        parse_field_selector("involvedObject.kind")


def test_json_patch_operations() -> None:
    doc = {"a": {"b": [1, 2, 3]}, "c": 1}
    patched = apply_patch(
        doc,
        [
            {"op": "add", "path": "/a/b/-", "value": 4},
            {"op": "remove", "path": "/a/b/0"},
            {"op": "replace", "path": "/c", "value": 2},
            {"op": "copy", "from": "/c", "path": "/d"},
            {"op": "move", "from": "/d", "path": "/e~1f"},
            {"op": "test", "path": "/c", "value": 2},
        ],
        "application/json-patch+json",
    )
    assert patched == {"a": {"b": [2, 3, 4]}, "c": 2, "e/f": 2}
    assert doc == {"a": {"b": [1, 2, 3]}, "c": 1}  # the stored object is untouched
    with pytest.raises(PatchError, match="test operation failed"):
        apply_patch(doc, [{"op": "test", "path": "/c", "value": 9}], "application/json-patch+json")
    with pytest.raises(PatchError, match="out of range"):
        apply_patch(doc, [{"op": "remove", "path": "/a/b/3"}], "application/json-patch+json")


def test_merge_and_strategic_merge_patches() -> None:
    pod = {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}}
    change = {"spec": {"containers": [{"name": "b", "image": "2"}]}}
    strategic = apply_patch(pod, change, "application/strategic-merge-patch+json")
    assert [c["image"] for c in strategic["spec"]["containers"]] == ["1", "2"]
    merged = apply_patch(pod, change, "application/merge-patch+json")
    assert merged["spec"]["containers"] == [{"name": "b", "image": "2"}]
    with pytest.raises(PatchError) as unsupported:
        apply_patch(pod, change, "application/apply-patch+yaml")
    assert unsupported.value.code == 415


def test_expand_follows_kubernetes_rules() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$$(A) $(C) $A", env) == "$(A) $(C) $A"


def test_container_env_order_and_sources() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "x"}},
        "spec": {"nodeName": "n1"},
        "status": {"podIP": "127.1.2.3"},
    }
    secret = {"data": {"pw": base64.b64encode(b"hunter2").decode()}}
    config = {"data": {"mode": "fast", "level": "3"}}

    def lookup(resource: str, name: str) -> dict[str, Any] | None:
        return {"secrets": {"s": secret}, "configmaps": {"c": config}}[resource].get(name)

    container = {
        "envFrom": [{"configMapRef": {"name": "c"}, "prefix": "CFG_"}],
        "env": [
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "URL", "value": "http://$(IP):8888/$(LATER)"},
            {"name": "LATER", "value": "x"},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k",
                                                          "optional": True}}},
        ],
    }  # fmt: skip
    env = container_env(pod, container, base={"PATH": "/bin"}, lookup=lookup)
    assert env["URL"] == "http://127.1.2.3:8888/$(LATER)"  # only earlier variables expand
    assert (env["PW"], env["APP"], env["CFG_mode"], env["PATH"]) == ("hunter2", "x", "fast", "/bin")
    assert "OPT" not in env
    with pytest.raises(ValueError, match='secret "gone" not found'):
        container_env(
            pod,
            {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}]},
            base={},
            lookup=lookup,
        )
    assert field_ref(pod, "spec.nodeName") == "n1"
    with pytest.raises(ValueError, match="unsupported fieldRef"):
        field_ref(pod, "status.nothing")


@pytest.mark.parametrize(
    ("resource", "obj", "field"),
    [
        ("configmaps", {"metadata": {}}, "metadata.name"),
        ("configmaps", {"metadata": {"name": "Bad_Name"}}, "metadata.name"),
        ("namespaces", {"metadata": {"name": "a.b"}}, "metadata.name"),
        ("configmaps", {"metadata": {"name": "ok", "labels": {"k": "-bad"}}}, "metadata.labels"),
        ("configmaps", {"metadata": {"name": "ok", "labels": {"a/b/c": "v"}}}, "metadata.labels"),
        ("pods", {"metadata": {"name": "p"}, "spec": {"containers": []}}, "spec.containers"),
        ("pods", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}},
         "spec.containers[0].image"),
    ],
)  # fmt: skip
def test_validation_refuses(resource: str, obj: dict[str, Any], field: str) -> None:
    assert field in [f for f, _ in validate(resource, obj)]


def test_validation_accepts() -> None:
    ok = {"metadata": {"name": "a.b-c", "labels": {"hub.jupyter.org/username": "a_b.c", "e": ""}}}
    assert validate("configmaps", ok) == []


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"phase": "Running", "containerStatuses": [{"state": {"running": {}}}]}, "Running"),
        ({"phase": "Pending"}, "Pending"),
        ({"phase": "Pending", "initContainerStatuses": [
            {"state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}, "Init:Error"),
        ({"phase": "Pending", "initContainerStatuses": [
            {"state": {"terminated": {"exitCode": 0}}},
            {"state": {"waiting": {"reason": "PodInitializing"}}}]}, "Init:1/2"),
        ({"phase": "Running", "containerStatuses": [
            {"state": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}, "Error"),
    ],
)  # fmt: skip
def test_kubectl_status_column(status: dict[str, Any], expected: str) -> None:
    pod = {"metadata": {}, "spec": {"initContainers": [{}, {}]}, "status": status}
    assert pod_status(pod) == expected


def test_pod_spec_updates_limited_to_what_kubernetes_allows() -> None:
    from esap_spawner.dev.sim.validation import pod_update_causes

    old = {
        "containers": [{"name": "c", "image": "a:1"}],
        "tolerations": [{"key": "k", "operator": "Exists"}],
        "nodeName": "n1",
    }
    image = {**old, "containers": [{"name": "c", "image": "a:2"}]}
    added = {**old, "tolerations": [*old["tolerations"], {"key": "x", "operator": "Exists"}]}
    assert pod_update_causes(old, image) == []
    assert pod_update_causes(old, added) == []
    assert pod_update_causes(old, {**old, "activeDeadlineSeconds": 60}) == []
    moved = pod_update_causes(old, {**old, "nodeName": "n2"})
    assert moved and moved[0][0] == "spec"
    assert pod_update_causes(old, {**old, "tolerations": []})[0][0] == "spec.tolerations"
    env = {**old, "containers": [{"name": "c", "image": "a:1", "env": [{"name": "X"}]}]}
    assert pod_update_causes(old, env)


def test_ip_allocator_process_mode_a_loopback_subnet_per_simulator() -> None:
    import random

    from esap_spawner.dev.sim.processes import PROCESS_OCTETS, IPAllocator

    ips = IPAllocator("process", rng=random.Random(7))
    first = [ips.allocate() for _ in range(300)]
    assert len(set(first)) == 300
    assert {ip.split(".")[0] for ip in first} == {"127"}
    assert len({ip.split(".")[1] for ip in first}) == 1
    assert int(first[0].split(".")[1]) in PROCESS_OCTETS
    assert {ip.rsplit(".", 1)[1] for ip in first} <= {str(n) for n in range(2, 255)}
    assert ips.host_ip.endswith(".1") and ips.host_ip not in first


def test_ip_allocator_fake_mode_a_loopback_16_for_benchmark_clusters() -> None:
    import ipaddress
    import random

    from esap_spawner.dev.sim.processes import FAKE_OCTETS, IPAllocator

    ips = IPAllocator("fake", rng=random.Random(3))
    pods = [ips.allocate() for _ in range(20_000)]
    assert len(set(pods)) == 20_000
    second = int(ips.host_ip.split(".")[1])
    assert second in FAKE_OCTETS
    subnet = ipaddress.ip_network(f"127.{second}.0.0/16")
    assert all(ipaddress.ip_address(ip) in subnet for ip in [*pods, ips.host_ip])
    assert ips.host_ip not in pods
    assert {ip.rsplit(".", 1)[1] for ip in pods} <= {str(n) for n in range(2, 255)}


def test_ip_allocator_refuses_an_unknown_kubelet() -> None:
    from esap_spawner.dev.sim.processes import IPAllocator

    with pytest.raises(ValueError, match="kubelet must be 'fake' or 'process', not 'real'"):
        IPAllocator("real")


def test_pod_and_node_addresses_are_loopback_and_never_shared() -> None:
    """Process pods, fake pods and the real control plane's pods and nodes each have their own
    part of 127.0.0.0/8: a connection meant for one never reaches another."""
    import ipaddress

    from esap_spawner.dev.sim.processes import FAKE_OCTETS, PROCESS_OCTETS
    from tools.kube.control_plane import NODE_IP, POD_RANGE

    kwok_pods = ipaddress.ip_network(POD_RANGE)
    kwok_node = ipaddress.ip_address(NODE_IP)
    assert kwok_pods.is_loopback and kwok_node.is_loopback and kwok_node not in kwok_pods
    assert not set(PROCESS_OCTETS) & set(FAKE_OCTETS)
    kwok_octets = {kwok_pods.network_address.packed[1], kwok_node.packed[1]}
    assert not kwok_octets & (set(PROCESS_OCTETS) | set(FAKE_OCTETS))
    assert min(PROCESS_OCTETS) > 1  # 127.0.0.1 and 127.0.1.1 are the machine's own
