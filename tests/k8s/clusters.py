"""Generated clusters for the differential capacity test: one seed, one cluster.

A :class:`Scenario` is plain data: nodes in the simulator's cluster-file format (mixed sizes,
labels, NoSchedule taints, GPUs as an extended resource, cordoned nodes, cached images),
foreign pods in other namespaces, an optional ResourceQuota for the hub's namespace, a site
file's profiles (guarantees and limits, GPUs, node selectors, tolerations, ``max_servers``) and
how many servers of each profile already run. :func:`scenario` is pure and deterministic: the
same seed gives the same cluster, so a failure is replayed from its seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

SCIPY = "quay.io/jupyter/scipy-notebook:2026-01-01"
PYTORCH = "quay.io/jupyter/pytorch-notebook:2026-01-01"
GPU = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU, "value": "present", "effect": "NoSchedule"}
GPU_TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}
BATCH_TAINT = {"key": "dedicated", "value": "batch", "effect": "NoSchedule"}
FOREIGN_NAMESPACES = ("foreign-a", "foreign-b")

# (kind, cpu, memory, pods): allocatable of the node kinds clusters are made of
NODE_KINDS = [
    ("small", "2", "4Gi", "8"),
    ("medium", "3500m", "15Gi", "12"),
    ("large", "8", "31Gi", "16"),
    ("highmem", "4", "62Gi", "10"),
    ("gpu", "8", "30Gi", "10"),
]


@dataclass
class Scenario:
    """One generated cluster and the site that runs on it."""

    seed: int
    nodes: list[dict[str, Any]]
    foreign_pods: list[dict[str, Any]]
    quota: dict[str, str] | None
    profiles: list[dict[str, Any]]
    running: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """A few lines that say what the cluster is (for failure messages)."""
        nodes = ", ".join(
            f"{n['name']}({n['allocatable']}{' tainted' if n.get('taints') else ''}"
            f"{' cordoned' if n.get('unschedulable') else ''})"
            for n in self.nodes
        )
        profiles = ", ".join(
            f"{p['slug']}(cpu {p.get('cpu')}, memory {p.get('memory')}, gpu {p.get('gpu')}, "
            f"selector {p.get('node_selector')}, max {p.get('max_servers')})"
            for p in self.profiles
        )
        return (
            f"seed {self.seed}\n  nodes: {nodes}\n  quota: {self.quota}\n"
            f"  foreign pods: {len(self.foreign_pods)}\n  profiles: {profiles}\n"
            f"  running: {self.running}"
        )


def _node(rng: random.Random, seed: int, index: int) -> dict[str, Any]:
    kind, cpu, memory, pods = rng.choice(NODE_KINDS)
    allocatable = {"cpu": cpu, "memory": memory, "pods": pods}
    node: dict[str, Any] = {
        "name": f"s{seed}-{kind}-{index}",
        "labels": {"node-type": kind, "zone": rng.choice(["a", "b"])},
        "allocatable": allocatable,
        "taints": [],
        "images": [],
    }
    if kind == "gpu":
        allocatable[GPU] = str(rng.randint(1, 4))
        if rng.random() < 0.7:
            node["taints"].append(dict(GPU_TAINT))
        if rng.random() < 0.6:
            node["images"].append(PYTORCH)
    elif rng.random() < 0.15:
        node["taints"].append(dict(BATCH_TAINT))
    if rng.random() < 0.5:
        node["images"].append(SCIPY)
    if rng.random() < 0.08:
        node["unschedulable"] = True
    return node


def _foreign_pod(rng: random.Random, index: int) -> dict[str, Any]:
    requests = {
        "cpu": rng.choice(["100m", "250m", "500m", "1", "1500m", "3"]),
        "memory": rng.choice(["128Mi", "512Mi", "1Gi", "3Gi", "8Gi"]),
    }
    spec: dict[str, Any] = {
        "containers": [
            {"name": "work", "image": "busybox:1.36", "resources": {"requests": requests}}
        ]
    }
    if rng.random() < 0.3:
        spec["tolerations"] = [dict(GPU_TOLERATION)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"foreign-{index}", "namespace": rng.choice(FOREIGN_NAMESPACES)},
        "spec": spec,
    }


def _profile(rng: random.Random, slug: str) -> dict[str, Any]:
    shape = rng.choice(["small", "medium", "big", "gpu", "highmem", "no-limit", "zone"])
    profile: dict[str, Any] = {"slug": slug, "display_name": slug, "image": SCIPY}
    cpu = rng.choice(["250m", "500m", "1", "1.5", "2"])
    memory = rng.choice(["256M", "1G", "1500Mi", "2G", "4G"])
    if shape == "big":
        cpu, memory = rng.choice(["3", "4", "6"]), rng.choice(["8G", "12Gi"])
    if shape == "highmem":
        memory = rng.choice(["16G", "24Gi"])
        profile["node_selector"] = {"node-type": "highmem"}
    profile["cpu"] = {"guarantee": cpu, "limit": "8"}
    profile["memory"] = {"guarantee": memory, "limit": "32G"}
    if shape == "no-limit":  # a guarantee without a limit: no limits in the pod
        profile["cpu"] = {"guarantee": cpu}
        profile["memory"] = {"guarantee": memory}
    if shape == "gpu":
        profile["gpu"] = {"count": rng.randint(1, 2), "resource": GPU}
        profile["image"] = PYTORCH
        profile["tolerations"] = [dict(GPU_TOLERATION)]
        if rng.random() < 0.5:
            profile["node_selector"] = {"node-type": "gpu"}
    if shape == "zone":
        profile["node_selector"] = {"zone": rng.choice(["a", "b"])}
    if rng.random() < 0.2:
        profile["tolerations"] = [*profile.get("tolerations", []), dict(BATCH_TAINT)]
        profile["tolerations"][-1]["operator"] = "Equal"
    if rng.random() < 0.3:
        profile["max_servers"] = rng.randint(1, 6)
    return profile


def _quota(rng: random.Random) -> dict[str, str] | None:
    if rng.random() < 0.55:
        return None
    choices = {
        "pods": lambda: str(rng.randint(2, 12)),
        "requests.cpu": lambda: rng.choice(["2", "3500m", "6"]),
        "requests.memory": lambda: rng.choice(["6Gi", "10G", "24Gi"]),
        "limits.cpu": lambda: rng.choice(["8", "20"]),
        "limits.memory": lambda: rng.choice(["64G", "200Gi"]),
        f"requests.{GPU}": lambda: str(rng.randint(1, 3)),
    }
    keys = rng.sample(sorted(choices), rng.randint(1, 3))
    return {key: choices[key]() for key in keys}


def scenario(seed: int) -> Scenario:
    """The cluster of ``seed``."""
    rng = random.Random(seed)
    nodes = [_node(rng, seed, i) for i in range(rng.randint(2, 5))]
    if rng.random() < 0.5 and not any(n["labels"]["node-type"] == "gpu" for n in nodes):
        nodes[-1] = _node_of_kind(rng, seed, len(nodes) - 1, "gpu")
    foreign = [_foreign_pod(rng, i) for i in range(rng.randint(0, 6))]
    slugs = [f"p{i}" for i in range(rng.randint(2, 4))]
    profiles = [_profile(rng, slug) for slug in slugs]
    running = {slug: rng.choice([0, 0, 1, 2]) for slug in slugs}
    return Scenario(seed, nodes, foreign, _quota(rng), profiles, running)


def _node_of_kind(rng: random.Random, seed: int, index: int, kind: str) -> dict[str, Any]:
    while True:
        node = _node(rng, seed, index)
        if node["labels"]["node-type"] == kind:
            return node
