"""Nodes and pods as the Kubernetes API returns them (plain dicts), for the capacity model's
tests and the service's in-process harness.

Pods carry the profile under :data:`PROFILE_LABEL`, a label of the tests' own, so the
model under test is built with it (:func:`model_of`); ``label=`` gives another (the
product's, for a model with its default).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from esap_spawner.capacity.model import ClusterModel

PROFILE_LABEL = "test.esap.example/profile"


def node(
    name: str,
    cpu: str = "4",
    memory: str = "16Gi",
    *,
    gpu: int = 0,
    pods: str | None = "110",
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    ready: bool = True,
    unschedulable: bool = False,
    images: tuple[str, ...] = (),
) -> dict[str, Any]:
    allocatable: dict[str, str] = {"cpu": cpu, "memory": memory}
    if pods is not None:
        allocatable["pods"] = pods
    if gpu:
        allocatable["nvidia.com/gpu"] = str(gpu)
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"taints": taints or [], "unschedulable": unschedulable},
        "status": {
            "allocatable": allocatable,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "images": [{"names": [image, f"{image.split(':')[0]}@sha256:abc"]} for image in images],
        },
    }


def pod(
    uid: str,
    node_name: str | None = None,
    cpu: str = "1",
    memory: str = "1Gi",
    *,
    gpu: int = 0,
    phase: str = "Running",
    profile: str | None = None,
    label: str = PROFILE_LABEL,
    namespace: str = "default",
    name: str | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    requests: dict[str, str] = {"cpu": cpu, "memory": memory}
    limits: dict[str, str] = {}
    if gpu:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(gpu)
    meta: dict[str, Any] = {
        "uid": uid,
        "name": name or f"pod-{uid}",
        "namespace": namespace,
        "labels": {label: profile} if profile else {},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    spec: dict[str, Any] = {
        "containers": [{"name": "c", "resources": {"requests": requests, "limits": limits}}]
    }
    if node_name:
        spec["nodeName"] = node_name
    return {"kind": "Pod", "metadata": meta, "spec": spec, "status": {"phase": phase}}


def model_of(
    nodes: Sequence[dict[str, Any]], pods: Sequence[dict[str, Any]] = (), **kw: Any
) -> ClusterModel:
    model = ClusterModel(profile_label=PROFILE_LABEL, **kw)
    model.replace_all(nodes, pods)
    return model
