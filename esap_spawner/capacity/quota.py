"""ResourceQuotas of the hub's namespace: how many more servers they let the API server admit.

Quota admission refuses a pod (403 "exceeded quota") when it would take a quota's
``status.used`` beyond ``status.hard`` for any key the quota tracks, and, for the compute keys
(``cpu``, ``memory``, ``requests.*`` and ``limits.*`` of both), when a container does not state
the resource at all ("must specify limits.cpu"). Found by the k8s tier's differential test:
without this, the model advertised servers that the real API server refused.

A server uses, per key: ``pods`` and ``count/pods`` one; ``requests.<r>`` (and plain ``cpu``,
``memory``, ``ephemeral-storage``) its request of ``r``; ``limits.<r>`` its limit of ``r``;
nothing of any other key (services, claims, storage). Quotas with ``scopes`` or a
``scopeSelector`` apply to some pods only and are left out (docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from esap_spawner.capacity.requirements import (
    ProfileRequirements,
    Vector,
    describe_vector,
    quantity_int,
)

__all__ = ["Quota", "Quotas", "quota_room", "quota_shortfall", "quota_use", "server_use"]

# Keys whose resource every container must state once a quota tracks them.
STATED = frozenset(
    {"cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"}
)
_PLAIN_REQUESTS = frozenset({"cpu", "memory", "ephemeral-storage"})


def _resource_of(key: str) -> tuple[str, str] | None:
    """``("requests" | "limits", resource)`` for a compute key, else None."""
    if key in _PLAIN_REQUESTS:
        return "requests", key
    for kind in ("requests", "limits"):
        if key.startswith(kind + "."):
            return kind, key[len(kind) + 1 :]
    return None


@dataclass(frozen=True)
class Quota:
    """One ResourceQuota, as its controller last counted it (integer model units)."""

    name: str
    hard: Mapping[str, int]
    used: Mapping[str, int]

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Quota | None:
        """The quota of a ResourceQuota object; None for a scoped one (not modelled)."""
        spec = obj.get("spec") or {}
        if spec.get("scopes") or spec.get("scopeSelector"):
            return None
        status = obj.get("status") or {}
        hard = status.get("hard") or spec.get("hard") or {}
        used = status.get("used") or {}
        meta = obj.get("metadata") or {}
        return cls(
            name=f"{meta.get('namespace', '')}/{meta.get('name', '')}",
            hard={key: _units(key, q) for key, q in hard.items()},
            used={key: _units(key, q) for key, q in used.items()},
        )


def _units(key: str, quantity: Any) -> int:
    found = _resource_of(key)
    return quantity_int(found[1] if found else key, quantity)


def server_use(key: str, requests: Mapping[str, int], limits: Mapping[str, int]) -> int | None:
    """What one server adds to quota ``key``; None when the quota demands a resource the
    server does not state (the API server refuses such a pod whatever the room)."""
    if key in ("pods", "count/pods"):
        return 1
    found = _resource_of(key)
    if found is None:
        return 0
    kind, resource = found
    value = (requests if kind == "requests" else limits).get(resource, 0)
    if not value and key in STATED:
        return None
    return value


def quota_room(
    quotas: Iterable[Quota],
    requests: Vector,
    limits: Vector,
    *,
    pending: Iterable[Mapping[str, int]] = (),
) -> int | None:
    """How many more servers (``requests``, ``limits``) the quotas admit, after ``pending``
    uses (admitted spawns whose pods are not counted yet); None when no quota limits them."""
    request_of, limit_of = dict(requests), dict(limits)
    held: dict[str, int] = {}
    for use in pending:
        for key, amount in use.items():
            held[key] = held.get(key, 0) + amount
    room: int | None = None
    for quota in quotas:
        for key, hard in quota.hard.items():
            need = server_use(key, request_of, limit_of)
            if need is None:
                return 0
            if need == 0:
                continue
            left = max(0, hard - quota.used.get(key, 0) - held.get(key, 0)) // need
            room = left if room is None else min(room, left)
    return room


def quota_use(quotas: Iterable[Quota], requests: Vector, limits: Vector) -> dict[str, int]:
    """What one server adds to each key the quotas track (held by a reservation)."""
    request_of, limit_of = dict(requests), dict(limits)
    use: dict[str, int] = {}
    for quota in quotas:
        for key in quota.hard:
            need = server_use(key, request_of, limit_of)
            if need:
                use[key] = need
    return use


def quota_shortfall(
    quotas: Iterable[Quota],
    requests: Vector,
    limits: Vector,
    *,
    pending: Iterable[Mapping[str, int]] = (),
) -> list[str]:
    """Why the quotas admit no more server, in words: ``"ns/hub: pods 5 of 5 used"``,
    ``"ns/hub: tracks limits.cpu, which the profile does not set"``."""
    request_of, limit_of = dict(requests), dict(limits)
    held: dict[str, int] = {}
    for use in pending:
        for key, amount in use.items():
            held[key] = held.get(key, 0) + amount
    reasons = []
    for quota in quotas:
        for key, hard in sorted(quota.hard.items()):
            need = server_use(key, request_of, limit_of)
            if need is None:
                reasons.append(f"{quota.name}: tracks {key}, which the profile does not set")
            elif need and hard - quota.used.get(key, 0) - held.get(key, 0) < need:
                taken = quota.used.get(key, 0) + held.get(key, 0)
                reasons.append(
                    f"{quota.name}: {key} {_show(key, taken)} of {_show(key, hard)} used, "
                    f"a server needs {_show(key, need)}"
                )
    return reasons


def _show(key: str, value: int) -> str:
    """A quota amount in words (``3.5 CPU``, ``10 GB``; counts as they are)."""
    found = _resource_of(key)
    if found is None or found[1] not in ("cpu", "memory", "ephemeral-storage"):
        return str(value)
    return describe_vector(((found[1], value),))


class Quotas:
    """The ResourceQuotas of the hub's namespace, as its watch feeds them (by uid)."""

    def __init__(self) -> None:
        self._by_uid: dict[str, Quota] = {}
        self.version = 0  # one more at every change (part of the model's version)

    def __bool__(self) -> bool:
        return bool(self._by_uid)

    def apply(self, event_type: str, obj: Mapping[str, Any]) -> None:
        """One watch event (ADDED, MODIFIED, DELETED) of a ResourceQuota."""
        if event_type not in ("ADDED", "MODIFIED", "DELETED"):
            raise ValueError(f"unknown watch event type {event_type!r}")
        quota = None if event_type == "DELETED" else Quota.from_object(obj)
        if quota is None:
            self._by_uid.pop(obj["metadata"]["uid"], None)
        else:
            self._by_uid[obj["metadata"]["uid"]] = quota
        self.version += 1

    def replace(self, objs: Iterable[Mapping[str, Any]]) -> None:
        """Replace every quota by a fresh list."""
        self._by_uid = {}
        self.version += 1
        for obj in objs:
            self.apply("ADDED", obj)

    def room(self, req: ProfileRequirements, holds: Iterable[Any]) -> int | None:
        """How many more servers of ``req`` the quotas admit, after what the reservations
        in ``holds`` that still hold quota will use (None: no quota limits them)."""
        if not self._by_uid:
            return None
        pending = [r.quota_use for r in holds if r.holds_quota]
        return quota_room(self._by_uid.values(), req.requests, req.limits, pending=pending)

    def use(self, req: ProfileRequirements) -> dict[str, int]:
        """What one server of ``req`` takes of each tracked key (a reservation holds it)."""
        return quota_use(self._by_uid.values(), req.requests, req.limits)

    def refusal_message(self, req: ProfileRequirements, holds: Iterable[Any]) -> str:
        pending = [r.quota_use for r in holds if r.holds_quota]
        why = quota_shortfall(self._by_uid.values(), req.requests, req.limits, pending=pending)
        return (
            f"profile {req.slug!r} cannot start now: the namespace's ResourceQuota has no room "
            f"for one more server ({'; '.join(why)})"
        )
