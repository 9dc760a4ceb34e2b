"""What the service needs from the parts around it, as small protocols.

The service reads the cluster through :class:`CapacityView` (which
:class:`esap_spawner.capacity.model.ClusterModel` satisfies) and data locality through
:class:`LocalityCatalogue`. Until a data catalogue is configured, :class:`NoCatalogue`
answers ``unknown`` for every DID and says why; a real catalogue (Rucio, static) plugs in
by implementing the same two methods (:mod:`esap_spawner.service.catalogue` adapts the
project's :class:`esap_spawner.data.catalogue.Catalogue`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from esap_spawner.site.profiles import Profile

__all__ = [
    "AvailabilityLike",
    "CapacityView",
    "CheckResult",
    "LocalityCatalogue",
    "LocalityUnavailable",
    "MayUse",
    "NoCatalogue",
]


class AvailabilityLike(Protocol):
    """One profile's live availability (see :class:`esap_spawner.capacity.model.Availability`)."""

    @property
    def status(self) -> str: ...
    @property
    def can_start_now(self) -> int | None: ...
    @property
    def fast_start(self) -> int | None: ...
    @property
    def running(self) -> int | None: ...
    @property
    def max_servers(self) -> int | None: ...
    @property
    def estimated_start_seconds(self) -> float | None: ...


class CapacityView(Protocol):
    """The cached cluster view the service answers from; never blocks on Kubernetes."""

    @property
    def synced(self) -> bool: ...
    @property
    def stale(self) -> bool: ...
    @property
    def as_of(self) -> float | None: ...
    @property
    def version(self) -> int:
        """Changes whenever what the view answers changes (answers are cached by it)."""
        ...

    def view_age_seconds(self) -> float | None: ...
    def availability(
        self, profiles: Iterable[Profile], *, limited_threshold: int = ...
    ) -> Mapping[str, AvailabilityLike]: ...


class MayUse(Protocol):
    """Whether a caller in ``groups`` (an admin or not) may start ``profile``
    (:func:`esap_spawner.site.profiles.may_use`)."""

    def __call__(self, profile: Profile, *, groups: Iterable[str], is_admin: bool) -> bool: ...


@dataclass(frozen=True)
class CheckResult:
    """One named health check: ``ok``, and words an operator can act on."""

    ok: bool
    message: str


class LocalityUnavailable(Exception):
    """The catalogue cannot answer now (the route answers 503 with Retry-After)."""


class LocalityCatalogue(Protocol):
    """Where datasets are, as the ``POST api/v1/locality`` route reports it.

    The route times each ``locality`` call into ``esap_catalogue_request_duration_seconds``
    unless the backend has a ``remote`` attribute that is False (it calls no catalogue). A
    backend with ``cache_seconds`` (how long it keeps what it learned) lets the route answer
    a repeat question (same caller, same body) with the same bytes for that long.
    """

    async def locality(self, dids: Sequence[str]) -> list[dict[str, Any]]:
        """One result per DID (distinct, in order), with the fields of the ``LocalityResult``
        schema; raises :class:`LocalityUnavailable` when the catalogue cannot answer."""
        ...

    def health(self) -> CheckResult:
        """Whether the catalogue can answer now (from cached state, no I/O)."""
        ...


class NoCatalogue:
    """No data catalogue configured: every DID is ``unknown``, with the reason.

    ``remote`` is False: answering makes no call to a catalogue, so the service's
    ``esap_catalogue_request_duration_seconds`` does not count it.
    """

    remote = False

    message = (
        "data locality needs a configured data catalogue (site file 'data.catalogue'); "
        "none is configured, so locality is unknown"
    )

    async def locality(self, dids: Sequence[str]) -> list[dict[str, Any]]:
        return [
            {
                "did": did,
                "status": "unknown",
                "files_total": None,
                "files_local": None,
                "bytes_total": None,
                "bytes_local": None,
                "local_rses": [],
                "staging_required": None,
                "estimated_staging_seconds": None,
                "message": self.message,
            }
            for did in dids
        ]

    def health(self) -> CheckResult:
        return CheckResult(True, "no data catalogue configured: locality answers 'unknown'")
