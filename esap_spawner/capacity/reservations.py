"""Admitted spawns whose pods the cluster model has not counted yet: reservations.

A :class:`Reservation` holds one server's slot from the moment the spawner admits it
(:meth:`esap_spawner.capacity.model.ClusterModel.reserve`) until the model counts its pod:
quota (``max_servers``) until the pod is first seen, since a pod counts as running from
then on, and node capacity until the pod is bound to a node, finishes or goes away.

The :class:`Ledger` keeps a model's reservations and matches them against pod events; it
changes the model's node load only through the ``load`` callback it is given. Pure: no I/O,
no clock of its own (the model passes ``now``).

One capacity authority: the hub admits, so the hub's reservations are the ones that count.
It publishes what they hold (:meth:`Ledger.held`, a list of :class:`Held`) and the
advertising service's model takes them in (:meth:`Ledger.adopt`), so both subtract the
same slots; the transport is the database (:mod:`esap_spawner.spawn.context` publishes,
:mod:`esap_spawner.service.reservations` reads).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from esap_spawner.capacity.requirements import Vector

__all__ = ["Held", "Ledger", "Refusal", "Reservation"]

# (node, vector, sign): add (1) or take away (-1) a vector of requests on a node.
NodeLoad = Callable[[str, Vector, int], None]


@dataclass(eq=False)
class Reservation:
    """A slot held for one spawn until its pod shows up in the model (or it is released).

    It holds quota (``max_servers``, and ``quota_use`` of the namespace's ResourceQuotas)
    until the pod is first seen (a pod counts as running from then on) and node capacity
    until the pod is bound to a node, finishes or goes away.
    """

    slug: str
    namespace: str | None
    pod_name: str | None
    node: str | None
    vector: Vector
    expires_at: float
    holds_quota: bool = True
    holds_node: bool = True
    quota_use: Mapping[str, int] = field(default_factory=dict)
    _ledger: Ledger | None = field(default=None, repr=False)

    def release(self) -> None:
        """Give the slot back (the spawn failed or was cancelled). Idempotent."""
        if self._ledger is not None:
            self._ledger.release(self)

    @property
    def active(self) -> bool:
        return self.holds_quota or self.holds_node


@dataclass(frozen=True)
class Held:
    """What one reservation holds, as one process publishes it for another's model.

    ``expires_at`` is on the publisher's clock (wall-clock seconds in both processes).
    """

    slug: str
    node: str | None
    vector: Vector
    holds_quota: bool
    holds_node: bool
    expires_at: float
    namespace: str | None = None
    pod_name: str | None = None


@dataclass(frozen=True)
class Refusal:
    """Why a spawn cannot start now, in words a user can act on."""

    reason: Literal["full", "no_room", "quota", "unsynced"]
    message: str

    def __str__(self) -> str:
        return self.message


class Ledger:
    """The reservations of one cluster model, and what they hold.

    ``load(node, vector, sign)`` adds (sign 1) or removes (-1) a vector on the model's
    node; callbacks given to :meth:`listen` are called whenever what the reservations hold
    changes.
    """

    def __init__(self, load: NodeLoad) -> None:
        self._load = load
        self._listeners: list[Callable[[], None]] = []
        self._reservations: list[Reservation] = []
        self._awaiting_pod: dict[tuple[str | None, str], Reservation] = {}
        self._holding_uid: dict[str, Reservation] = {}
        self._quota: dict[str, int] = {}
        self._adopted: tuple[Held, ...] = ()
        self._adopted_reservations: list[Reservation] = []

    def listen(self, changed: Callable[[], None]) -> None:
        """Call ``changed()`` whenever what the reservations hold changes."""
        self._listeners.append(changed)

    def __iter__(self) -> Iterator[Reservation]:
        """The active reservations, oldest first."""
        return iter(list(self._reservations))

    def __bool__(self) -> bool:
        return bool(self._reservations)

    def reserved(self, slug: str) -> int:
        """Reservations of ``slug`` still holding quota (their pods not seen yet)."""
        return self._quota.get(slug, 0)

    @property
    def matching(self) -> bool:
        """Whether pod events may settle a reservation (some await or hold a pod)."""
        return bool(self._awaiting_pod or self._holding_uid)

    def hold(self, reservation: Reservation) -> Reservation:
        """Take ``reservation`` in: its quota, its node load, and its pod to wait for."""
        reservation._ledger = self
        self._reservations.append(reservation)
        if reservation.holds_quota:
            self._quota[reservation.slug] = self._quota.get(reservation.slug, 0) + 1
            if reservation.pod_name is not None:
                key = (reservation.namespace, reservation.pod_name)
                self._awaiting_pod[key] = reservation
        if reservation.holds_node and reservation.node is not None:
            self._load(reservation.node, reservation.vector, 1)
        self._changed()
        return reservation

    def held(self) -> list[Held]:
        """What this ledger's own reservations hold (adopted ones left out), to publish."""
        adopted = {id(r) for r in self._adopted_reservations}
        return [
            Held(
                slug=r.slug,
                node=r.node,
                vector=r.vector,
                holds_quota=r.holds_quota,
                holds_node=r.holds_node,
                expires_at=r.expires_at,
                namespace=r.namespace,
                pod_name=r.pod_name,
            )
            for r in self._reservations
            if id(r) not in adopted
        ]

    def adopt(self, held: Sequence[Held]) -> None:
        """Hold what another process's reservations hold (its latest publication), in place
        of what was adopted before.

        An adopted reservation waits for its pod as the publisher's own does: once this
        model sees the pod, it lets the quota go (and the node once the pod settles) at
        once, rather than count the pod and its reservation both until the publisher has
        seen the pod too and published again. A later publication of the same reservation
        (the same pod and expiry) keeps what this model has seen of it. Otherwise the
        publisher's next publication settles them, or they lapse at ``expires_at``.
        """
        fresh = tuple(held)
        if fresh == self._adopted:
            return
        seen = self._adopted_state()
        for r in self._adopted_reservations:
            self.release(r)
        self._adopted = fresh
        self._adopted_reservations = []
        for h in fresh:
            holds_quota, holds_node, uid = seen.get(_identity(h), (True, True, None))
            r = Reservation(
                slug=h.slug,
                namespace=h.namespace,
                pod_name=h.pod_name,
                node=h.node,
                vector=h.vector,
                expires_at=h.expires_at,
                holds_quota=h.holds_quota and holds_quota,
                holds_node=h.holds_node and holds_node,
            )
            self._adopted_reservations.append(r)  # settled ones too: what was seen stays
            if r.active:
                self.hold(r)
                if uid is not None and r.holds_node and not r.holds_quota:
                    self._holding_uid[uid] = r  # its pod is seen: it settles the node

    def _adopted_state(self) -> dict[tuple[str | None, str, float], tuple[bool, bool, str | None]]:
        """What this model has seen of each adopted reservation that names its pod:
        whether it still holds quota and node, and the uid of its pod once seen."""
        uids = {id(r): uid for uid, r in self._holding_uid.items()}
        return {
            _identity(r): (r.holds_quota, r.holds_node, uids.get(id(r)))
            for r in self._adopted_reservations
            if r.pod_name is not None
        }

    def release(self, reservation: Reservation) -> None:
        """Drop whatever ``reservation`` still holds. Idempotent."""
        self._drop_quota(reservation)
        self._drop_node(reservation)

    def expire(self, now: float) -> None:
        """Release the reservations whose ``expires_at`` has passed."""
        for r in [r for r in self._reservations if r.expires_at <= now]:
            self.release(r)

    def node_loads(self) -> Iterator[tuple[str, Vector]]:
        """``(node, vector)`` of every reservation holding node capacity (for a relist)."""
        for r in self._reservations:
            if r.holds_node and r.node is not None:
                yield r.node, r.vector

    def pod_seen(
        self, meta: Mapping[str, Any], uid: str, *, settled: bool, is_new: bool, gone: bool
    ) -> None:
        """A pod event: a new pod named as a reservation awaits takes its quota over;
        once that pod is ``settled`` (bound, finished) or ``gone``, it takes the node too."""
        r = self._holding_uid.get(uid)
        if r is None and is_new and not gone:
            r = self._awaiting_pod.get((meta.get("namespace"), meta["name"]))
            if r is not None:
                self._drop_quota(r)
                if r.holds_node:
                    self._holding_uid[uid] = r
        if r is not None and settled:
            self._drop_node(r)

    def pods_gone(self, present: Mapping[str, Any]) -> None:
        """After a relist: reservations whose pod is not in ``present`` (by uid) let go."""
        for uid, r in list(self._holding_uid.items()):
            if uid not in present:
                self._drop_node(r)

    def _drop_quota(self, r: Reservation) -> None:
        if not r.holds_quota:
            return
        r.holds_quota = False
        left = self._quota[r.slug] - 1
        if left:
            self._quota[r.slug] = left
        else:
            del self._quota[r.slug]
        if r.pod_name is not None and self._awaiting_pod.get((r.namespace, r.pod_name)) is r:
            del self._awaiting_pod[(r.namespace, r.pod_name)]
        self._forget_if_done(r)

    def _drop_node(self, r: Reservation) -> None:
        if not r.holds_node:
            return
        r.holds_node = False
        if r.node is not None:
            self._load(r.node, r.vector, -1)
        for uid, held in list(self._holding_uid.items()):
            if held is r:
                del self._holding_uid[uid]
        self._forget_if_done(r)

    def _forget_if_done(self, r: Reservation) -> None:
        if not r.active:
            self._reservations.remove(r)
        self._changed()

    def _changed(self) -> None:
        for changed in self._listeners:
            changed()


def _identity(r: Held | Reservation) -> tuple[str | None, str, float]:
    """One reservation across publications: its pod and its expiry (fixed at admission)."""
    return (r.namespace, r.pod_name or "", r.expires_at)
