"""The scheduler's filter rules (esap_spawner.capacity.placement) on a table of pods and nodes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from esap_spawner.capacity.placement import (
    failed_scheduling_message,
    fit_reasons,
    matches_node_selector,
    matches_required_affinity,
    node_allocatable,
    pod_requests,
    untolerated_taint,
)


def node(
    name: str = "n1",
    *,
    cpu: str = "4",
    memory: str = "16Gi",
    gpu: str | None = None,
    pods: str | None = None,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    unschedulable: bool = False,
    ready: bool | None = None,
) -> dict[str, Any]:
    allocatable = {"cpu": cpu, "memory": memory}
    if gpu is not None:
        allocatable["nvidia.com/gpu"] = gpu
    if pods is not None:
        allocatable["pods"] = pods
    status: dict[str, Any] = {"allocatable": allocatable}
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
    spec: dict[str, Any] = {"taints": taints or []}
    if unschedulable:
        spec["unschedulable"] = True
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec, "status": status}


def pod(
    requests: dict[str, str] | None = None,
    limits: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return {"containers": [{"name": "notebook", "resources": resources}], **spec}


NOTHING: dict[str, Decimal] = {}
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
ZONE_A = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
            ]
        }
    }
}

CASES = [
    ("fits", pod({"cpu": "1", "memory": "1Gi"}), node(), NOTHING, []),
    ("no requests fit anywhere", pod(), node(cpu="0", memory="0"), NOTHING, []),
    ("cpu short", pod({"cpu": "5"}), node(), NOTHING, ["Insufficient cpu"]),
    (
        "cpu short after bound pods",
        pod({"cpu": "1"}),
        node(),
        {"cpu": Decimal("3.5")},
        ["Insufficient cpu"],
    ),
    ("exactly full fits", pod({"cpu": "500m"}), node(), {"cpu": Decimal("3.5")}, []),
    (
        "cpu and memory short",
        pod({"cpu": "8", "memory": "32Gi"}),
        node(),
        NOTHING,
        ["Insufficient cpu", "Insufficient memory"],
    ),
    (
        "limit stands in for request",
        pod(limits={"memory": "20Gi"}),
        node(),
        NOTHING,
        ["Insufficient memory"],
    ),
    (
        "gpu on a cpu node",
        pod(limits={"nvidia.com/gpu": "1"}),
        node(),
        NOTHING,
        ["Insufficient nvidia.com/gpu"],
    ),
    ("gpu on a gpu node", pod(limits={"nvidia.com/gpu": "1"}), node(gpu="1"), NOTHING, []),
    (
        "gpus in use",
        pod(limits={"nvidia.com/gpu": "1"}),
        node(gpu="2"),
        {"nvidia.com/gpu": Decimal(2)},
        ["Insufficient nvidia.com/gpu"],
    ),
    ("too many pods", pod(), node(pods="2"), {"pods": Decimal(2)}, ["Too many pods"]),
    (
        "node selector matches",
        pod(nodeSelector={"disk": "ssd"}),
        node(labels={"disk": "ssd"}),
        NOTHING,
        [],
    ),
    (
        "node selector misses",
        pod(nodeSelector={"disk": "ssd"}),
        node(labels={"disk": "hdd"}),
        NOTHING,
        ["node(s) didn't match Pod's node affinity/selector"],
    ),
    ("affinity In matches", pod(affinity=ZONE_A), node(labels={"zone": "a"}), NOTHING, []),
    (
        "affinity In misses",
        pod(affinity=ZONE_A),
        node(labels={"zone": "b"}),
        NOTHING,
        ["node(s) didn't match Pod's node affinity/selector"],
    ),
    (
        "taint not tolerated",
        pod(),
        node(taints=[GPU_TAINT]),
        NOTHING,
        ["node(s) had untolerated taint(s)"],
    ),
    ("taint tolerated", pod(tolerations=[GPU_TOLERATION]), node(taints=[GPU_TAINT]), NOTHING, []),
    (
        "PreferNoSchedule is not a filter",
        pod(),
        node(taints=[{"key": "x", "value": "y", "effect": "PreferNoSchedule"}]),
        NOTHING,
        [],
    ),
    (
        "taint before resources",
        pod({"cpu": "99"}),
        node(taints=[GPU_TAINT]),
        NOTHING,
        ["node(s) had untolerated taint(s)"],
    ),
    ("unschedulable", pod(), node(unschedulable=True), NOTHING, ["node(s) were unschedulable"]),
    (
        "not ready",
        pod(),
        node(ready=False),
        NOTHING,
        ["node(s) had untolerated taint(s)"],
    ),
    ("ready", pod(), node(ready=True), NOTHING, []),
    (
        "nodeName elsewhere",
        pod(nodeName="n2"),
        node(),
        NOTHING,
        ["node(s) didn't match the requested node name"],
    ),
]


@pytest.mark.parametrize(
    ("pod_spec", "the_node", "used", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_fit_reasons(
    pod_spec: dict[str, Any], the_node: dict[str, Any], used: dict[str, Decimal], expected: list
) -> None:
    assert fit_reasons(pod_spec, the_node, used) == expected


def test_pod_requests_sums_containers_and_takes_max_with_init_containers() -> None:
    spec = {
        "containers": [
            {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
            {"resources": {"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}}},
        ],
        "initContainers": [
            {"resources": {"requests": {"cpu": "2"}}},
            {"resources": {"requests": {"memory": "1Gi"}}},
        ],
        "overhead": {"cpu": "100m"},
    }
    assert pod_requests(spec) == {"cpu": Decimal("2.1"), "memory": Decimal(2 * 2**30)}


def test_request_wins_over_limit() -> None:
    spec = pod({"cpu": "1"}, {"cpu": "4"})
    assert pod_requests(spec) == {"cpu": Decimal(1)}


def test_node_allocatable_falls_back_to_capacity() -> None:
    the_node = {"status": {"capacity": {"cpu": "2", "memory": "1Ki"}}}
    assert node_allocatable(the_node) == {"cpu": Decimal(2), "memory": Decimal(1024)}


@pytest.mark.parametrize(
    ("toleration", "tolerated"),
    [
        ({"operator": "Exists"}, True),
        ({"key": "k", "operator": "Exists"}, True),
        ({"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}, True),
        ({"key": "k", "value": "v"}, True),
        ({"key": "k", "operator": "Equal", "value": "w"}, False),
        ({"key": "k", "operator": "Exists", "effect": "NoExecute"}, False),
        ({"key": "other", "operator": "Exists"}, False),
    ],
)
def test_tolerations(toleration: dict[str, str], tolerated: bool) -> None:
    taint = {"key": "k", "value": "v", "effect": "NoSchedule"}
    result = untolerated_taint(node(taints=[taint]), [toleration])
    assert (result is None) is tolerated


@pytest.mark.parametrize(
    ("expressions", "labels", "matches"),
    [
        ([{"key": "zone", "operator": "NotIn", "values": ["a"]}], {"zone": "b"}, True),
        ([{"key": "zone", "operator": "NotIn", "values": ["a"]}], {}, True),
        ([{"key": "zone", "operator": "NotIn", "values": ["a"]}], {"zone": "a"}, False),
        ([{"key": "gpu", "operator": "Exists"}], {"gpu": ""}, True),
        ([{"key": "gpu", "operator": "DoesNotExist"}], {"gpu": ""}, False),
        ([{"key": "cores", "operator": "Gt", "values": ["8"]}], {"cores": "16"}, True),
        ([{"key": "cores", "operator": "Lt", "values": ["8"]}], {"cores": "16"}, False),
        ([{"key": "cores", "operator": "Gt", "values": ["8"]}], {"cores": "many"}, False),
        (
            [
                {"key": "zone", "operator": "In", "values": ["a", "b"]},
                {"key": "gpu", "operator": "Exists"},
            ],
            {"zone": "b"},
            False,
        ),
    ],
)
def test_affinity_expressions(
    expressions: list[dict[str, Any]], labels: dict[str, str], matches: bool
) -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": expressions}]
            }
        }
    }
    assert matches_required_affinity(labels, affinity) is matches


def test_affinity_terms_are_ored() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                    {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]},
                ]
            }
        }
    }
    assert matches_required_affinity({"gpu": "1"}, affinity)
    assert not matches_required_affinity({"zone": "b"}, affinity)
    assert matches_required_affinity({"zone": "b"}, None)


def test_unknown_operator_is_a_clear_error() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Near"}]}]
            }
        }
    }
    with pytest.raises(ValueError, match="Near"):
        matches_required_affinity({"a": "1"}, affinity)


def test_node_selector() -> None:
    assert matches_node_selector({"a": "1", "b": "2"}, {"a": "1"})
    assert not matches_node_selector({"a": "1"}, {"a": "1", "b": "2"})
    assert matches_node_selector(None, None)


def test_failed_scheduling_message_counts_and_sorts_like_the_scheduler() -> None:
    message = failed_scheduling_message(
        {
            "a": ["Insufficient cpu"],
            "b": ["Insufficient cpu", "Insufficient memory"],
            "c": ["node(s) didn't match Pod's node affinity/selector"],
        }
    )
    assert message == (
        "0/3 nodes are available: 1 Insufficient memory, "
        "1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient cpu."
    )
    assert failed_scheduling_message({}) == "no nodes available to schedule pods"
