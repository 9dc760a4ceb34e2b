"""The live cluster model: what each profile can start now.

:class:`ClusterModel` is pure: it holds, per node, allocatable resources, what bound
non-terminal pods request, labels, taints, readiness and cached images, and per pod what
it contributed, so that applying a watch event costs O(1) in the size of the cluster. It
never talks to Kubernetes; :mod:`esap_spawner.capacity.watch` feeds it from list+watch.

Questions it answers, all from memory:

- :meth:`ClusterModel.fit_count`: how many more servers of a profile fit now (a bin-packing
  count over Ready, schedulable nodes the profile may use, within the namespace's quotas)
  and how many of those on nodes that already hold its image. Per-profile answers are
  cached; events only mark nodes dirty, and a question re-examines the dirty nodes.
- :meth:`ClusterModel.availability`: per profile ``status``, ``can_start_now``,
  ``fast_start``, ``running``, ``max_servers``, ``estimated_start_seconds``.
- :meth:`ClusterModel.reserve`: admission for the spawner (see its docstring).

Units inside the model are integers: CPU in millicores, every other resource in its base
unit (bytes, devices, pods), rounded up as the Kubernetes scheduler does.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from esap_spawner.capacity.nodes import FitCache, Node, no_room_message, room
from esap_spawner.capacity.quota import Quotas
from esap_spawner.capacity.requirements import (
    KnownRequirements,
    ProfileRequirements,
    Vector,
    pod_vector,
)
from esap_spawner.capacity.reservations import Ledger, Refusal, Reservation
from esap_spawner.site.profiles import PROFILE_LABEL

__all__ = [
    "Availability",
    "ClusterModel",
    "ProfileRequirements",
    "Refusal",
    "Reservation",
]

Status = Literal["available", "limited", "full", "unknown"]

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
# Per pod: (node it counts against or None, its request vector or None, profile slug or None).
_PodEntry = tuple[str | None, Vector | None, str | None]
_NOT_COUNTED: _PodEntry = (None, None, None)


@dataclass(frozen=True)
class Availability:
    """Live availability of one profile, as the advertising API shows it."""

    status: Status
    can_start_now: int | None
    fast_start: int | None
    running: int | None
    max_servers: int | None
    estimated_start_seconds: float | None


class ClusterModel:
    """Nodes and pods of a cluster, kept current by watch events; see the module docstring.

    ``clock`` returns wall-clock seconds (``time.time``); tests pass their own.
    ``spawn_durations(slug)`` returns recent spawn durations of a profile in seconds.
    ``stale_after`` is how long (seconds) watches may be down before the view is stale.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        spawn_durations: Callable[[str], Sequence[float]] | None = None,
        stale_after: float = 30.0,
        profile_label: str = PROFILE_LABEL,
    ) -> None:
        self.clock = clock
        self.spawn_durations = spawn_durations
        self.stale_after = stale_after
        self.profile_label = profile_label
        self._nodes: dict[str, Node] = {}
        self._requested: dict[str, dict[str, int]] = {}
        self._pods: dict[str, _PodEntry] = {}
        self._running: dict[str, int] = {}
        self._caches: dict[tuple[Any, ...], FitCache] = {}
        self._requirements = KnownRequirements()  # of the profiles asked about
        self._synced = False
        self._as_of: float | None = None
        self._down_since: dict[str, float] = {}
        self.reservations = Ledger(self._add_vector)
        self.reservations.listen(self._changed)
        self.quotas = Quotas()  # the hub namespace's ResourceQuotas
        self._version = 0

    # ------------------------------------------------------------------ sync state
    @property
    def synced(self) -> bool:
        """True once a full list was applied, until :meth:`mark_unsynced`."""
        return self._synced

    @property
    def as_of(self) -> float | None:
        """Clock time of the last successful sync or applied event (None before any)."""
        return self._as_of

    @property
    def stale(self) -> bool:
        """Not synced, or some watch down for more than ``stale_after`` seconds."""
        if not self._synced:
            return True
        if not self._down_since:
            return False
        return self.clock() - min(self._down_since.values()) > self.stale_after

    @property
    def version(self) -> int:
        """Moves with every change of what the model answers (but time's: staleness)."""
        return self._version + self.quotas.version

    def _changed(self, *, seen: bool = False) -> None:
        """Something the answers depend on changed; ``seen``: an event or a list, now."""
        if seen:
            self._as_of = self.clock()
        self._version += 1

    def view_age_seconds(self) -> float | None:
        """Seconds since the view was last known current: 0 while every watch is up,
        else the time since the first watch went down; None before the first sync."""
        if not self._synced:
            return None
        if not self._down_since:
            return 0.0
        return max(0.0, self.clock() - min(self._down_since.values()))

    def watch_down(self, kind: str) -> None:
        """The watch of ``kind`` ("nodes"/"pods") failed; the view may fall behind."""
        self._down_since.setdefault(kind, self.clock())
        self._changed()

    def watch_up(self, kind: str) -> None:
        """The watch of ``kind`` is connected again and resumed without loss."""
        self._down_since.pop(kind, None)
        self._changed()

    def mark_synced(self) -> None:
        """Nodes and pods were both listed (by :meth:`replace_nodes`/:meth:`replace_pods`)."""
        self._synced = True
        self._changed(seen=True)

    def mark_unsynced(self) -> None:
        """Forget that the view is complete (the watcher stopped or must start over)."""
        self._synced = False
        self._changed()

    # ------------------------------------------------------------------ events
    def apply(self, event_type: str, obj: Mapping[str, Any]) -> None:
        """Apply one watch event (ADDED, MODIFIED, DELETED; BOOKMARK is ignored) of a
        Node, a Pod or a ResourceQuota, told apart by the object's ``kind``."""
        if event_type == "BOOKMARK":
            return
        kind = obj.get("kind")
        if kind == "Pod":
            self.apply_pod(event_type, obj)
        elif kind == "Node":
            self.apply_node(event_type, obj)
        elif kind == "ResourceQuota":
            self.quotas.apply(event_type, obj)
        else:
            raise ValueError(f"expected a Node, a Pod or a ResourceQuota, got kind {kind!r}")

    def apply_node(self, event_type: str, obj: Mapping[str, Any]) -> None:
        if event_type not in ("ADDED", "MODIFIED", "DELETED"):
            raise ValueError(f"unknown watch event type {event_type!r}")
        name = obj["metadata"]["name"]
        if event_type == "DELETED":
            self._nodes.pop(name, None)
            req = self._requested.get(name)
            if req is not None and not any(req.values()):
                del self._requested[name]
        else:
            self._nodes[name] = Node(obj)
            self._requested.setdefault(name, {})
        self._mark_dirty(name)
        self._changed(seen=True)

    def apply_pod(self, event_type: str, obj: Mapping[str, Any]) -> None:
        if event_type not in ("ADDED", "MODIFIED", "DELETED"):
            raise ValueError(f"unknown watch event type {event_type!r}")
        meta = obj["metadata"]
        uid: str = meta["uid"]
        old = self._pods.get(uid)
        if event_type == "DELETED":
            new = _NOT_COUNTED
            if old is not None:
                del self._pods[uid]
        else:
            new = self._pod_entry(obj)
            self._pods[uid] = new
        if old is not None:
            self._remove_contribution(old)
        self._add_contribution(new)
        if self.reservations.matching:
            self._match_reservation(
                meta, uid, new, is_new=old is None, gone=event_type == "DELETED"
            )
        self._changed(seen=True)

    def replace_all(
        self, nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]
    ) -> None:
        """Replace the whole view by a fresh list of nodes and pods; the model is synced."""
        self.replace_nodes(nodes)
        self.replace_pods(pods)
        self._synced = True
        self._down_since.clear()
        self._changed()

    def replace_nodes(self, nodes: Iterable[Mapping[str, Any]]) -> None:
        """Replace every node by a fresh list (pods and their requests stay)."""
        self._nodes = {}
        for obj in nodes:
            node = Node(obj)
            self._nodes[node.name] = node
            self._requested.setdefault(node.name, {})
        for name in [n for n, r in self._requested.items() if n not in self._nodes]:
            if not any(self._requested[name].values()):
                del self._requested[name]
        self._invalidate_all()
        self._changed(seen=True)

    def replace_pods(self, pods: Iterable[Mapping[str, Any]]) -> None:
        """Replace every pod by a fresh list; node reservations held by spawns stay."""
        old_pods, self._pods = self._pods, {}
        self._running = {}
        self._requested = {name: {} for name in self._nodes}
        for node, vector in self.reservations.node_loads():
            self._add_vector(node, vector)
        for obj in pods:
            meta = obj["metadata"]
            uid = meta["uid"]
            is_new = uid not in old_pods
            entry = self._pod_entry(obj)
            self._pods[uid] = entry
            self._add_contribution(entry)
            if self.reservations.matching:
                self._match_reservation(meta, uid, entry, is_new=is_new, gone=False)
        self.reservations.pods_gone(self._pods)  # their pods went away while the watch was down
        self._invalidate_all()
        self._changed(seen=True)

    def _pod_entry(self, obj: Mapping[str, Any]) -> _PodEntry:
        status = obj.get("status") or {}
        if status.get("phase") in TERMINAL_PHASES:
            return _NOT_COUNTED
        labels = obj["metadata"].get("labels")
        profile = labels.get(self.profile_label) if labels else None
        node_name = (obj.get("spec") or {}).get("nodeName")
        if not node_name:
            return (None, None, profile)
        # Share the node's own name string rather than keeping one copy per pod.
        node_name = self._intern_node(node_name)
        return (node_name, pod_vector(obj), profile)

    def _intern_node(self, name: str) -> str:
        node = self._nodes.get(name)
        return node.name if node is not None else name

    def _add_contribution(self, entry: _PodEntry) -> None:
        node, vector, profile = entry
        if vector is not None and node is not None:
            self._add_vector(node, vector)
        if profile is not None:
            self._running[profile] = self._running.get(profile, 0) + 1

    def _remove_contribution(self, entry: _PodEntry) -> None:
        node, vector, profile = entry
        if vector is not None and node is not None:
            self._add_vector(node, vector, -1)
        if profile is not None:
            left = self._running[profile] - 1
            if left:
                self._running[profile] = left
            else:
                del self._running[profile]

    def _add_vector(self, node: str, vector: Vector, sign: int = 1) -> None:
        requested = self._requested.get(node)
        if requested is None:
            requested = self._requested[node] = {}
        for resource, value in vector:
            requested[resource] = requested.get(resource, 0) + sign * value
        self._mark_dirty(node)

    def _mark_dirty(self, node: str) -> None:
        for cache in self._caches.values():
            cache.dirty.add(node)

    def _invalidate_all(self) -> None:
        for cache in self._caches.values():
            cache.all_dirty = True
            cache.dirty.clear()

    # ------------------------------------------------------------------ questions
    def running(self, slug: str) -> int:
        """Non-terminal pods (bound or pending) labelled with profile ``slug``."""
        return self._running.get(slug, 0)

    def requested(self, node: str) -> dict[str, int]:
        """What pods bound to ``node`` request (and spawns hold), without zero entries."""
        return {r: v for r, v in self._requested.get(node, {}).items() if v}

    def node_names(self) -> list[str]:
        return list(self._nodes)

    def snapshot(self) -> dict[str, Any]:
        """The whole view as plain data (for comparisons and debugging)."""
        nodes = {
            name: {
                "allocatable": dict(n.allocatable),
                "requested": self.requested(name),
                "ready": n.ready,
                "unschedulable": n.unschedulable,
                "labels": dict(n.labels),
                "taints": list(n.taints),
                "images": sorted(n.images),
            }
            for name, n in self._nodes.items()
        }
        return {"nodes": nodes, "running": dict(self._running), "pods": len(self._pods)}

    def fit_count(self, profile: ProfileRequirements | Any) -> tuple[int, int]:
        """``(count, fast)``: how many more servers of ``profile`` fit now, and how many of
        those on nodes that already hold the profile's image. Reservations count as used;
        the namespace's ResourceQuotas cap both (:mod:`esap_spawner.capacity.quota`)."""
        cache = self._refresh(req := self._requirements(profile))
        left = self.quotas.room(req, self.reservations)
        cap = cache.total if left is None else left
        return min(cache.total, cap), min(cache.fast, cap)

    def _refresh(self, req: ProfileRequirements) -> FitCache:
        key = req.placement_key
        cache = self._caches.get(key)
        if cache is None:
            if len(self._caches) >= 256:
                self._caches.pop(next(iter(self._caches)))
            cache = self._caches[key] = FitCache(req)
        if cache.all_dirty or len(cache.dirty) > len(self._nodes) // 2:
            cache.per_node.clear()
            cache.total = cache.fast = 0
            names: Iterable[str] = self._nodes
            cache.all_dirty = False
        else:
            names = cache.dirty
        for name in list(names):
            old = cache.per_node.pop(name, None)
            if old is not None:
                cache.total -= old[0]
                if old[1]:
                    cache.fast -= old[0]
            node = self._nodes.get(name)
            if node is None:
                continue
            count = self._node_fit(node, cache.req)
            if count:
                fast = bool(cache.wanted_images & node.images)
                cache.per_node[name] = (count, fast)
                cache.total += count
                if fast:
                    cache.fast += count
        cache.dirty.clear()
        return cache

    def _node_fit(self, node: Node, req: ProfileRequirements) -> int:
        if not node.admits(req):
            return 0
        return room(node, self._requested.get(node.name, {}), req.requests)

    def availability(
        self, profiles: Iterable[ProfileRequirements | Any], *, limited_threshold: int = 2
    ) -> dict[str, Availability]:
        """Availability of each profile, by slug; see :class:`Availability`.

        A profile is ``limited`` when at most ``limited_threshold`` more servers can start
        (the site file's ``service.availability.limited_threshold``, passed as it is).
        """
        self.reservations.expire(self.clock())
        result: dict[str, Availability] = {}
        for profile in profiles:
            req = self._requirements(profile)
            estimate = self._estimate(req.slug)
            if not self._synced:
                result[req.slug] = Availability(
                    "unknown", None, None, None, req.max_servers, estimate
                )
                continue
            running = self.running(req.slug)
            count, fast = self.fit_count(req)
            can = count
            if req.max_servers is not None:
                left = req.max_servers - running - self.reservations.reserved(req.slug)
                can = max(0, min(count, left))
            status: Status = (
                "full" if can == 0 else "limited" if can <= limited_threshold else "available"
            )
            result[req.slug] = Availability(
                status, can, min(fast, can), running, req.max_servers, estimate
            )
        return result

    def _estimate(self, slug: str) -> float | None:
        if self.spawn_durations is None:
            return None
        recent = list(self.spawn_durations(slug))
        return float(statistics.median(recent)) if recent else None

    # ------------------------------------------------------------------ admission
    def reserve(
        self,
        profile: ProfileRequirements | Any,
        *,
        namespace: str | None = None,
        pod_name: str | None = None,
        ttl: float = 600.0,
    ) -> Reservation | Refusal:
        """Admit one spawn of ``profile`` or say why not, atomically.

        The check (quota: running + reserved < max_servers; fit: some node has room) and
        the hold happen with no ``await`` in between, so concurrent spawns in one asyncio
        loop cannot both take the last slot. That is sound because JupyterHub runs its
        spawners in one process; two hubs sharing one quota would need a shared lock.

        The reservation holds quota until a new pod ``namespace/pod_name`` appears in the
        model and node capacity until that pod is bound (or finishes, or is deleted). Call
        :meth:`Reservation.release` when the spawn fails; it also lapses after ``ttl``.
        """
        req = self._requirements(profile)
        self.reservations.expire(self.clock())
        if not self._synced:
            return Refusal(
                "unsynced",
                "the cluster view is not available (watch not synced): try again shortly",
            )
        if self.stale:
            age = self.view_age_seconds() or 0.0
            return Refusal(
                "unsynced",
                f"the cluster view is not available (watches down for {age:.0f} s): "
                "try again shortly",
            )
        if req.max_servers is not None:
            taken = self.running(req.slug) + self.reservations.reserved(req.slug)
            if taken >= req.max_servers:
                return Refusal(
                    "full",
                    f"profile {req.slug!r} is full: {taken} of {req.max_servers} servers "
                    "running (max_servers)",
                )
        if self.quotas.room(req, self.reservations) == 0:
            return Refusal("quota", self.quotas.refusal_message(req, self.reservations))
        cache = self._refresh(req)
        if cache.total == 0:
            return Refusal("no_room", no_room_message(req, self._nodes.values(), self._requested))
        node = next((n for n, (_, fast) in cache.per_node.items() if fast), None)
        if node is None:
            node = next(iter(cache.per_node))
        return self.reservations.hold(
            Reservation(
                slug=req.slug,
                namespace=namespace,
                pod_name=pod_name,
                node=node,
                vector=req.requests,
                expires_at=self.clock() + ttl,
                quota_use=self.quotas.use(req),
            )
        )

    def release(self, reservation: Reservation) -> None:
        """Drop whatever ``reservation`` still holds. Idempotent."""
        self.reservations.release(reservation)

    def _match_reservation(
        self, meta: Mapping[str, Any], uid: str, entry: _PodEntry, *, is_new: bool, gone: bool
    ) -> None:
        settled = gone or entry is _NOT_COUNTED or entry[1] is not None
        self.reservations.pod_seen(meta, uid, settled=settled, is_new=is_new, gone=gone)

    def reserved(self, slug: str) -> int:
        """Spawns of ``slug`` admitted whose pod has not appeared yet."""
        return self.reservations.reserved(slug)
