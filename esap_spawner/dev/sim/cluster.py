"""Cluster fixtures: nodes and pre-existing pods from a YAML file (or a dict).

```yaml
namespaces: [default, jhub]          # optional; "default" always exists
nodes:
  - name: cpu-1
    labels: {node-type: cpu}
    taints: [{key: dedicated, value: gpu, effect: NoSchedule}]
    allocatable: {cpu: "8", memory: 32Gi, pods: "110", nvidia.com/gpu: "1"}
    images: [quay.io/jupyter/scipy-notebook:2026-01-01]   # already pulled
    unschedulable: false
    ready: true
pods:
  - {name: busy, namespace: default, node: cpu-1, requests: {cpu: "6"}, labels: {app: x}}
  - manifest: {metadata: {name: raw}, spec: {containers: [...]}}   # any pod manifest
```

A fixture pod without ``node`` is placed by the scheduler; one with ``node`` is bound
there and, with ``phase: Running`` (the default for bound fixture pods), adopted by the
kubelet as it is. Errors name the entry and the key at fault.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Cluster", "ClusterError", "load_cluster", "node_manifest", "pod_manifest"]

_NODE_KEYS = {"name", "labels", "taints", "allocatable", "capacity", "images", "unschedulable",
              "ready", "annotations"}  # fmt: skip
_POD_KEYS = {"name", "namespace", "node", "requests", "limits", "labels", "phase", "image",
             "manifest", "command"}  # fmt: skip


class ClusterError(ValueError):
    """A cluster fixture that cannot be loaded."""


@dataclass
class Cluster:
    """Objects to create when a simulator starts: namespaces, then nodes, then pods."""

    namespaces: list[str] = field(default_factory=lambda: ["default"])
    nodes: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)


def node_manifest(
    name: str,
    *,
    allocatable: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, Any]] | None = None,
    images: list[str] | None = None,
    unschedulable: bool = False,
    ready: bool = True,
    annotations: dict[str, str] | None = None,
    capacity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Node object as the API accepts it on POST (status included)."""
    alloc = {k: str(v) for k, v in (allocatable or {"cpu": "4", "memory": "16Gi"}).items()}
    alloc.setdefault("pods", "110")
    spec: dict[str, Any] = {"taints": copy.deepcopy(taints or [])}
    if unschedulable:
        spec["unschedulable"] = True
    status: dict[str, Any] = {
        "allocatable": alloc,
        "capacity": {k: str(v) for k, v in (capacity or alloc).items()},
        "images": [{"names": [image], "sizeBytes": 0} for image in images or []],
    }
    if not ready:
        status["conditions"] = [{"type": "Ready", "status": "False", "reason": "KubeletNotReady"}]
        spec["taints"].append({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"})
    meta: dict[str, Any] = {"name": name, "labels": dict(labels or {})}
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": "Node", "metadata": meta, "spec": spec, "status": status}


def pod_manifest(
    name: str,
    *,
    namespace: str = "default",
    node: str | None = None,
    requests: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    image: str = "busybox:1.36",
    command: list[str] | None = None,
    phase: str | None = None,
) -> dict[str, Any]:
    """A simple one-container Pod; bound to ``node`` and Running when ``node`` is given."""
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = {k: str(v) for k, v in requests.items()}
    if limits:
        resources["limits"] = {k: str(v) for k, v in limits.items()}
    container: dict[str, Any] = {"name": "main", "image": image, "resources": resources}
    if command:
        container["command"] = list(command)
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "spec": {"containers": [container]},
    }
    if node:
        pod["spec"]["nodeName"] = node
        phase = phase or "Running"
    if phase:
        pod["status"] = {"phase": phase}
        if phase == "Running":
            pod["status"]["containerStatuses"] = [
                {"name": "main", "image": image, "imageID": "", "ready": True, "restartCount": 0,
                 "state": {"running": {}}}
            ]  # fmt: skip
    return pod


def _check_keys(where: str, entry: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ClusterError(f"{where}: expected a mapping, got {entry!r}")
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ClusterError(f"{where}: unknown keys {unknown} (allowed: {sorted(allowed)})")
    return entry


def cluster_from_dict(data: Any, source: str = "cluster") -> Cluster:
    """Build a :class:`Cluster` from parsed YAML, with errors naming the entry at fault."""
    if data is None:
        return Cluster()
    data = _check_keys(source, data, {"namespaces", "nodes", "pods"})
    namespaces = list(dict.fromkeys(["default", *(data.get("namespaces") or [])]))
    nodes = []
    for n, entry in enumerate(data.get("nodes") or []):
        entry = _check_keys(f"{source}: nodes[{n}]", entry, _NODE_KEYS)
        if not entry.get("name"):
            raise ClusterError(f"{source}: nodes[{n}]: a node needs a name")
        nodes.append(node_manifest(**entry))
    pods = []
    for n, entry in enumerate(data.get("pods") or []):
        entry = _check_keys(f"{source}: pods[{n}]", entry, _POD_KEYS)
        if "manifest" in entry:
            manifest = copy.deepcopy(entry["manifest"])
            manifest.setdefault("metadata", {}).setdefault(
                "namespace", entry.get("namespace", "default")
            )
            pods.append(manifest)
            continue
        if not entry.get("name"):
            raise ClusterError(f"{source}: pods[{n}]: a pod needs a name (or a manifest)")
        pods.append(pod_manifest(**entry))
    for pod in pods:
        ns = pod["metadata"].get("namespace", "default")
        if ns not in namespaces:
            namespaces.append(ns)
    return Cluster(namespaces=namespaces, nodes=nodes, pods=pods)


def load_cluster(path: str | Path) -> Cluster:
    """Read a cluster fixture YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ClusterError(f"cannot read cluster file {str(path)!r}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ClusterError(f"{path}: not valid YAML: {exc}") from None
    return cluster_from_dict(data, str(path))
