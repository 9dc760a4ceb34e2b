"""The simulator's scheduler: binds Pending pods to nodes.

Placement uses :mod:`esap_spawner.capacity.placement`.

It keeps what each node has bound (summed requests and a pod count) up to date from the
store's change stream, so a pass costs O(pending pods x nodes) and never rescans all pods.
A pod that fits nowhere stays Pending with a ``PodScheduled=False`` condition and a
``FailedScheduling`` event worded as kube-scheduler words it; it is retried whenever a node
or a pod changes. Among nodes that fit, the one with the most free cpu+memory share wins
(kube-scheduler's default LeastAllocated scoring, simplified).
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

from esap_spawner.capacity.placement import (
    failed_scheduling_message,
    fit_reasons,
    node_allocatable,
    pod_requests,
)
from esap_spawner.dev.sim.clock import now_rfc3339
from esap_spawner.dev.sim.events import record_event
from esap_spawner.dev.sim.store import Change, Store
from esap_spawner.site.quantity import QuantityError

__all__ = ["Scheduler"]

log = logging.getLogger("esap_spawner.dev.sim.scheduler")
Key = tuple[str, str]


def _contribution(pod: dict[str, Any] | None) -> dict[str, Decimal] | None:
    if pod is None or not pod.get("spec", {}).get("nodeName"):
        return None
    if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
        return None
    try:
        used = pod_requests(pod["spec"])
    except (QuantityError, ValueError):
        used = {}
    used["pods"] = used.get("pods", Decimal(0)) + 1
    return used


def _wants_scheduling(pod: dict[str, Any]) -> bool:
    spec = pod.get("spec", {})
    return (
        not spec.get("nodeName")
        and spec.get("schedulerName", "default-scheduler") == "default-scheduler"
        and "deletionTimestamp" not in pod["metadata"]
        and pod.get("status", {}).get("phase", "Pending") == "Pending"
    )


class Scheduler:
    """Binds pods; run :meth:`run` as a task on the simulator's loop."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.usage: dict[str, dict[str, Decimal]] = {}
        self.pending: dict[Key, None] = {}  # insertion-ordered set
        self._last_message: dict[Key, str] = {}
        self._wake = asyncio.Event()
        store.listeners.append(self._on_change)
        for node in store.objects("nodes"):
            self.usage.setdefault(node["metadata"]["name"], {})
        for pod in store.objects("pods"):
            self._account(pod, +1)
            if _wants_scheduling(pod):
                self.pending[(pod["metadata"]["namespace"], pod["metadata"]["name"])] = None

    def _account(self, pod: dict[str, Any] | None, sign: int) -> None:
        used = _contribution(pod)
        if used is None or pod is None:
            return
        node = self.usage.setdefault(pod["spec"]["nodeName"], {})
        for name, amount in used.items():
            node[name] = node.get(name, Decimal(0)) + sign * amount

    def _on_change(self, change: Change) -> None:
        if change.resource == "nodes":
            self._wake.set()
            return
        if change.resource != "pods":
            return
        obj = change.entry.obj
        key = (change.namespace, obj["metadata"]["name"])
        self._account(change.old, -1)
        if change.type == "DELETED":
            self.pending.pop(key, None)
            self._last_message.pop(key, None)
            self._wake.set()
            return
        self._account(obj, +1)
        if _wants_scheduling(obj):
            if key not in self.pending:
                self.pending[key] = None
                self._wake.set()
        else:
            self.pending.pop(key, None)
            if _contribution(change.old) is not None and _contribution(obj) is None:
                self._wake.set()  # a pod finished: its room is free again

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                self.schedule_pending()
            except Exception:  # one bad pod must not stop the scheduler
                log.exception("scheduling pass failed")
            await asyncio.sleep(0)

    def schedule_pending(self) -> None:
        """One pass over the pending pods, oldest first."""
        nodes = self.store.objects("nodes")
        for key in list(self.pending):
            pod = self.store.find("pods", *key)
            if pod is None or not _wants_scheduling(pod):
                self.pending.pop(key, None)
                continue
            self._schedule(key, pod, nodes)

    def _schedule(self, key: Key, pod: dict[str, Any], nodes: list[dict[str, Any]]) -> None:
        reasons: dict[str, list[str]] = {}
        best: tuple[float, str] | None = None
        try:
            requests = pod_requests(pod["spec"])
            for node in nodes:
                name = node["metadata"]["name"]
                used = self.usage.get(name, {})
                why = fit_reasons(pod["spec"], node, used)
                if why:
                    reasons[name] = why
                    continue
                score = self._score(node, used, requests)
                if best is None or score > best[0]:
                    best = (score, name)
        except (QuantityError, ValueError) as exc:
            self._unschedulable(key, pod, f"invalid pod resources or affinity: {exc}")
            return
        if best is None:
            self._unschedulable(key, pod, failed_scheduling_message(reasons))
            return
        self._bind(key, pod, best[1])

    @staticmethod
    def _score(
        node: dict[str, Any], used: dict[str, Decimal], requests: dict[str, Decimal]
    ) -> float:
        allocatable = node_allocatable(node)
        shares = []
        for resource in ("cpu", "memory"):
            total = allocatable.get(resource, Decimal(0))
            if total > 0:
                after = used.get(resource, Decimal(0)) + requests.get(resource, Decimal(0))
                shares.append(float((total - after) / total))
        return sum(shares) / len(shares) if shares else 0.0

    def _bind(self, key: Key, pod: dict[str, Any], node: str) -> None:
        def bind(p: dict[str, Any]) -> None:
            p["spec"]["nodeName"] = node
            conditions = [
                c for c in p.setdefault("status", {}).get("conditions", [])
                if c.get("type") != "PodScheduled"
            ]  # fmt: skip
            conditions.append(
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now_rfc3339()}
            )
            p["status"]["conditions"] = conditions

        self.pending.pop(key, None)
        self._last_message.pop(key, None)
        bound = self.store.modify("pods", key[0], key[1], bind)
        record_event(
            self.store,
            bound,
            "Scheduled",
            f"Successfully assigned {key[0]}/{key[1]} to {node}",
            component="default-scheduler",
        )

    def _unschedulable(self, key: Key, pod: dict[str, Any], message: str) -> None:
        if self._last_message.get(key) == message:
            return
        self._last_message[key] = message

        def mark(p: dict[str, Any]) -> None:
            conditions = [
                c for c in p.setdefault("status", {}).get("conditions", [])
                if c.get("type") != "PodScheduled"
            ]  # fmt: skip
            conditions.append(
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastTransitionTime": now_rfc3339(),
                }
            )
            p["status"]["conditions"] = conditions

        marked = self.store.modify("pods", key[0], key[1], mark)
        record_event(
            self.store,
            marked,
            "FailedScheduling",
            message,
            type_="Warning",
            component="default-scheduler",
        )
