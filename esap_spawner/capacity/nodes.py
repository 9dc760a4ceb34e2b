"""What the cluster model keeps of a node, and how many servers fit on it.

:class:`Node` is the model's summary of one Node object (allocatable resources in the
model's integer units, labels, taints, readiness, cached images); :func:`room` counts how
many more pods of one request vector fit beside what is requested there;
:class:`FitCache` keeps those counts per node for one profile; and
:func:`no_room_message` says, in a user's words, why none does. What pods request of a node
lives in :class:`~esap_spawner.capacity.model.ClusterModel`, keyed by node name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from esap_spawner.capacity import placement
from esap_spawner.capacity.requirements import (
    ProfileRequirements,
    Vector,
    describe_vector,
    image_aliases,
    quantity_int,
)

__all__ = ["MAX_PER_NODE", "FitCache", "Node", "no_room_message", "room"]

# Beyond this many servers per node a count is not worth making (nodes without a "pods"
# limit and profiles requesting nothing).
MAX_PER_NODE = 1000
# An unschedulable node admits pods that tolerate this taint (kube-scheduler's rule).
UNSCHEDULABLE_VIEW = {
    "spec": {"taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}
}


class Node:
    """What the model keeps of one node (requested lives apart, keyed by node name)."""

    __slots__ = (
        "_taint_view",
        "allocatable",
        "images",
        "labels",
        "name",
        "ready",
        "taints",
        "unschedulable",
    )

    def __init__(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        self.name: str = meta["name"]
        alloc = status.get("allocatable") or status.get("capacity") or {}
        self.allocatable: dict[str, int] = {r: quantity_int(r, q) for r, q in alloc.items()}
        self.labels: dict[str, str] = dict(meta.get("labels") or {})
        self.taints: list[dict[str, Any]] = list(spec.get("taints") or ())
        # The shape placement.untolerated_taint reads (readiness is checked apart).
        self._taint_view = {"spec": {"taints": self.taints}}
        self.unschedulable: bool = bool(spec.get("unschedulable"))
        self.ready: bool = placement.node_is_ready(obj)
        self.images: frozenset[str] = frozenset(
            name for image in status.get("images") or () for name in image.get("names") or ()
        )

    def admits(self, req: ProfileRequirements) -> bool:
        """Ready, schedulable (or tolerating that), selector matched, every taint tolerated."""
        if not self.ready:
            return False
        tolerations = req.toleration_dicts
        if (
            self.unschedulable
            and placement.untolerated_taint(UNSCHEDULABLE_VIEW, tolerations) is not None
        ):
            return False
        if req.node_selector and not placement.matches_node_selector(
            self.labels, req.selector_dict
        ):
            return False
        return not self.taints or placement.untolerated_taint(self._taint_view, tolerations) is None


def room(node: Node, requested: Mapping[str, int], vector: Vector) -> int:
    """How many ``vector``-sized pods still fit on ``node`` beside ``requested`` (resources
    alone; at most :data:`MAX_PER_NODE`)."""
    count = MAX_PER_NODE
    for resource, value in vector:
        alloc = node.allocatable.get(resource)
        if alloc is None:
            if resource == "pods":  # no pod limit reported: as the scheduler, no limit
                continue
            return 0
        free = alloc - requested.get(resource, 0)
        if free < value:
            return 0
        if free // value < count:
            count = free // value
    return count


def no_room_message(
    req: ProfileRequirements, nodes: Iterable[Node], requested: Mapping[str, Mapping[str, int]]
) -> str:
    """Why no node can hold one more server of ``req``, naming the freest node that admits it
    (``requested``: what is already requested per node name)."""
    needs = describe_vector(req.requests)
    best: tuple[float, Node] | None = None
    for node in nodes:
        if not node.admits(req):
            continue
        used = requested.get(node.name, {})
        ratio = min((node.allocatable.get(r, 0) - used.get(r, 0)) / v for r, v in req.requests)
        if best is None or ratio > best[0]:
            best = (ratio, node)
    if best is None:
        return (
            f"profile {req.slug!r} cannot start now: no Ready, schedulable node matches its "
            f"node_selector and tolerations (needs {needs})"
        )
    node = best[1]
    used = requested.get(node.name, {})
    free = tuple((r, max(0, node.allocatable.get(r, 0) - used.get(r, 0))) for r, _ in req.requests)
    return (
        f"profile {req.slug!r} cannot start now: no node has room (needs {needs}; "
        f"largest free: {describe_vector(free)})"
    )


class FitCache:
    """Per-node fit of one profile's placement key, refreshed lazily on dirty nodes."""

    __slots__ = ("all_dirty", "dirty", "fast", "per_node", "req", "total", "wanted_images")

    def __init__(self, req: ProfileRequirements) -> None:
        self.req = req
        self.wanted_images = image_aliases(req.image)
        self.per_node: dict[str, tuple[int, bool]] = {}
        self.dirty: set[str] = set()
        self.all_dirty = True
        self.total = 0
        self.fast = 0
