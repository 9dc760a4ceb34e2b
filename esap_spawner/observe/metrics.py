"""Every Prometheus metric of esap-spawner, in one place.

Naming follows JupyterHub's scheme ``<prefix>_<noun>_<verb>_<unit>`` with the prefix
``esap``; counters end in ``_total`` (prometheus_client adds it). Every label value that
comes from a fixed set is an :class:`~enum.Enum` member here, and every such value is
pre-created, so a series exists (at zero) before its first event and dashboards never show
"no data" where they should show 0.

Two groups of metrics live in two registries:

**Hub side** (:class:`HubMetrics`, one instance :data:`HUB` in prometheus_client's default
``REGISTRY``, which JupyterHub serves at ``/hub/metrics``): spawns, their phases, staging,
and per-profile availability and view age as the spawner's cluster view sees it. The hub's
context (:mod:`esap_spawner.spawn.context`) holds it as ``metrics``; one line each::

    from esap_spawner.data.catalogue.base import StagingStatus
    from esap_spawner.spawn.status import SpawnStatus
    hub = context.metrics                                               # HUB by default
    hub.init_profile_labels([p.slug for p in site.profiles])            # site read
    hub.observe_spawn(slug, SpawnStatus.success, 12.3, phases)          # spawn ended
    hub.observe_staging(StagingStatus.success, 41.0, 2_000_000)         # staging ended
    hub.set_profile_availability(model.availability(site.profiles))     # view changed
    hub.watch_cluster_view(model.view_age_seconds)                      # view started

``phases`` is the ``dict[Phase, float]`` that :func:`esap_spawner.observe.phases.phase_durations`
returns. Status arguments accept the Enum member or its string value.

**Service side** (:class:`ServiceMetrics`, a fresh ``CollectorRegistry`` per instance, so
several apps in one process do not share counters): the advertising service's requests,
its catalogue calls, per-profile availability and the age of its cluster view. The
service builds one per app and serves ``service_metrics.exposition()`` on its
``metrics`` route::

    sm = ServiceMetrics(view_age=capacity.view_age_seconds, profiles=slugs)
    sm.observe_request("profiles", 200, seconds)             # in on_finish
    sm.observe_catalogue("locality", CatalogueStatus.success, seconds)
    sm.set_profile_availability(availability_by_slug)
    body, content_type = sm.exposition()

Tests build :class:`HubMetrics` on their own ``CollectorRegistry`` to read series back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from enum import Enum, StrEnum
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from esap_spawner.data.catalogue.base import StagingStatus
from esap_spawner.spawn.status import Phase, SpawnStatus

__all__ = [
    "HUB",
    "PREFIX",
    "SPAWN_BUCKETS",
    "CatalogueOperation",
    "CatalogueStatus",
    "HubMetrics",
    "ServiceMetrics",
]

PREFIX = "esap"

# JupyterHub's server_spawn_duration_seconds buckets, so the two histograms compare.
SPAWN_BUCKETS: tuple[float, ...] = (0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 180, 300, 600)
# Phases range from milliseconds (validate) to minutes (image pulls).
PHASE_BUCKETS: tuple[float, ...] = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 180, 300, 600,
)  # fmt: skip
# Staging takes seconds (one small file) to hours (tape recalls).
STAGING_BUCKETS: tuple[float, ...] = (
    1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800,
)  # fmt: skip
# Requests to the service are answered from memory: milliseconds.
REQUEST_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
)  # fmt: skip
# Catalogue calls go to Rucio over HTTP.
CATALOGUE_BUCKETS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class CatalogueOperation(StrEnum):
    """Calls the service makes to its data catalogue (label ``operation``)."""

    resolve = "resolve"
    locality = "locality"
    stage = "stage"
    progress = "progress"
    release = "release"


class CatalogueStatus(StrEnum):
    """How a catalogue call ended (label ``status``)."""

    success = "success"
    not_found = "not_found"
    unavailable = "unavailable"  # the catalogue could not be reached or timed out
    failure = "failure"  # any other error


def _value(enum: type[Enum], value: Enum | str) -> str:
    """The label value for ``value``, refusing anything outside ``enum``."""
    if isinstance(value, enum):
        return str(value.value)
    try:
        return str(enum(value).value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in enum)
        raise ValueError(f"unknown {enum.__name__} {value!r}; expected one of: {allowed}") from None


def _check_seconds(seconds: float, what: str) -> float:
    value = float(seconds)
    if math.isnan(value) or value < 0:
        raise ValueError(f"{what} must be a non-negative number of seconds, not {seconds!r}")
    return value


def _count_or_nan(value: Any) -> float:
    return math.nan if value is None else float(value)


class _ViewAge:
    """``esap_cluster_view_age_seconds``, read from a callable at each scrape."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.gauge = Gauge(
            f"{PREFIX}_cluster_view_age_seconds",
            "Seconds since the cluster view was last known current (NaN before the first sync)",
            registry=registry,
        )
        self.gauge.set(math.nan)

    def watch(self, view_age: Callable[[], float | None]) -> None:
        self.gauge.set_function(lambda: _count_or_nan(view_age()))


class _ProfileGauges:
    """``esap_profile_available_servers`` and ``esap_profile_running_servers``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.available = Gauge(
            f"{PREFIX}_profile_available_servers",
            "Servers of this profile that could start now (NaN while the cluster view is unknown)",
            ["profile"],
            registry=registry,
        )
        self.running = Gauge(
            f"{PREFIX}_profile_running_servers",
            "Servers of this profile running now (pods counted by the cluster view)",
            ["profile"],
            registry=registry,
        )

    def init(self, slugs: Iterable[str]) -> None:
        # NaN until the cluster view says otherwise: 0 would read as "full".
        for slug in slugs:
            self.available.labels(profile=slug).set(math.nan)
            self.running.labels(profile=slug).set(math.nan)

    def set(self, availability_by_slug: Mapping[str, Any]) -> None:
        for slug, availability in availability_by_slug.items():
            self.available.labels(profile=slug).set(_count_or_nan(availability.can_start_now))
            self.running.labels(profile=slug).set(_count_or_nan(availability.running))

    def follow(self, slugs: Iterable[str], availability: Callable[[], Mapping[str, Any]]) -> None:
        """Read each profile's series from ``availability()`` at every scrape."""

        def field(slug: str, name: str) -> Callable[[], float]:
            def read() -> float:
                found = availability().get(slug)
                return math.nan if found is None else _count_or_nan(getattr(found, name))

            return read

        for slug in slugs:
            self.available.labels(profile=slug).set_function(field(slug, "can_start_now"))
            self.running.labels(profile=slug).set_function(field(slug, "running"))


class HubMetrics:
    """The spawner's metrics: spawns, phases, staging, profile availability.

    Build it on a registry (the default ``REGISTRY`` for :data:`HUB`, which JupyterHub
    serves at ``/hub/metrics``; a fresh ``CollectorRegistry`` in tests).
    """

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.spawn_duration = Histogram(
            f"{PREFIX}_spawn_duration_seconds",
            "Time from spawn request to server ready (or to failure), by profile and outcome",
            ["profile", "status"],
            buckets=SPAWN_BUCKETS,
            registry=registry,
        )
        self.spawn_phase_duration = Histogram(
            f"{PREFIX}_spawn_phase_duration_seconds",
            "Time a spawn spent in one phase (validate, staging, scheduling, image, startup)",
            ["profile", "phase"],
            buckets=PHASE_BUCKETS,
            registry=registry,
        )
        self.staging_duration = Histogram(
            f"{PREFIX}_staging_duration_seconds",
            "Time from staging request to data local (or to giving up), by outcome",
            ["status"],
            buckets=STAGING_BUCKETS,
            registry=registry,
        )
        self.staging_bytes = Counter(
            f"{PREFIX}_staging_bytes",
            "Bytes brought to the destination RSE by staging requests",
            registry=registry,
        )
        self.staging_requests = Counter(
            f"{PREFIX}_staging_requests",
            "Staging requests that ended, by outcome",
            ["status"],
            registry=registry,
        )
        self.profiles = _ProfileGauges(registry)
        self.view_age = _ViewAge(registry)
        for status in StagingStatus:
            self.staging_duration.labels(status=status.value)
            self.staging_requests.labels(status=status.value)

    def init_profile_labels(self, slugs: Iterable[str]) -> None:
        """Pre-create every (profile, status) and (profile, phase) series at zero."""
        slugs = list(slugs)
        for slug in slugs:
            for status in SpawnStatus:
                self.spawn_duration.labels(profile=slug, status=status.value)
            for phase in Phase:
                self.spawn_phase_duration.labels(profile=slug, phase=phase.value)
        self.profiles.init(slugs)

    def observe_spawn(
        self,
        profile: str,
        status: SpawnStatus | str,
        seconds: float,
        phases: Mapping[Phase | str, float] | None = None,
    ) -> None:
        """Record one finished spawn: its total time and the time of each measured phase.

        Phases absent from ``phases`` were not measured (no staging, the pod never
        existed) and are not observed.
        """
        label = _value(SpawnStatus, status)
        total = _check_seconds(seconds, "spawn duration")
        checked = {
            _value(Phase, phase): _check_seconds(value, f"phase {phase!s} duration")
            for phase, value in (phases or {}).items()
        }
        self.spawn_duration.labels(profile=profile, status=label).observe(total)
        for phase, value in checked.items():
            self.spawn_phase_duration.labels(profile=profile, phase=phase).observe(value)

    def observe_staging(
        self, status: StagingStatus | str, seconds: float, bytes_done: int = 0
    ) -> None:
        """Record one finished staging request: outcome, duration and bytes brought."""
        label = _value(StagingStatus, status)
        duration = _check_seconds(seconds, "staging duration")
        if bytes_done < 0:
            raise ValueError(f"bytes_done must not be negative, not {bytes_done!r}")
        self.staging_duration.labels(status=label).observe(duration)
        self.staging_requests.labels(status=label).inc()
        if bytes_done:
            self.staging_bytes.inc(bytes_done)

    def set_profile_availability(self, availability_by_slug: Mapping[str, Any]) -> None:
        """Set the gauges from objects with ``can_start_now`` and ``running`` (None: NaN)."""
        self.profiles.set(availability_by_slug)

    def watch_cluster_view(self, view_age: Callable[[], float | None]) -> None:
        """Export ``view_age()`` (seconds, None before the first sync) at each scrape."""
        self.view_age.watch(view_age)

    def follow_profile_availability(
        self, slugs: Iterable[str], availability: Callable[[], Mapping[str, Any]]
    ) -> None:
        """Export, at each scrape, ``can_start_now`` and ``running`` of each of ``slugs``
        from ``availability()`` (``{slug: Availability}``; what the hub would admit now)."""
        self.profiles.follow(slugs, availability)


class ServiceMetrics:
    """The advertising service's metrics, in a registry of their own.

    ``view_age`` is called at each scrape and returns the seconds since the cluster view
    was last known current, or None before the first sync (exported as NaN).
    """

    def __init__(
        self,
        *,
        view_age: Callable[[], float | None] | None = None,
        profiles: Iterable[str] = (),
        handlers: Iterable[str] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.request_duration = Histogram(
            f"{PREFIX}_advertiser_request_duration_seconds",
            "Time the advertising service took to answer, by handler and HTTP status code",
            ["handler", "code"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.catalogue_duration = Histogram(
            f"{PREFIX}_catalogue_request_duration_seconds",
            "Time a call to the data catalogue (Rucio) took, by operation and outcome",
            ["operation", "status"],
            buckets=CATALOGUE_BUCKETS,
            registry=self.registry,
        )
        self.view_age = _ViewAge(self.registry)
        self.profiles = _ProfileGauges(self.registry)
        for operation in CatalogueOperation:
            for status in CatalogueStatus:
                self.catalogue_duration.labels(operation=operation.value, status=status.value)
        # the series of each answered (handler, code), so a request skips the label look-up
        self._request_series: dict[tuple[str, int | str], Any] = {}
        for handler in handlers:
            self.request_duration.labels(handler=handler, code="200")
        self.profiles.init(profiles)
        if view_age is not None:
            self.view_age.watch(view_age)

    def observe_request(self, handler: str, code: int | str, seconds: float) -> None:
        """Record one answered request (``handler`` is the route's name, e.g. ``profiles``)."""
        series = self._request_series.get((handler, code))
        if series is None:
            series = self.request_duration.labels(handler=handler, code=str(int(code)))
            self._request_series[(handler, code)] = series
        series.observe(_check_seconds(seconds, "request duration"))

    def observe_catalogue(
        self, operation: CatalogueOperation | str, status: CatalogueStatus | str, seconds: float
    ) -> None:
        """Record one call to the data catalogue."""
        self.catalogue_duration.labels(
            operation=_value(CatalogueOperation, operation),
            status=_value(CatalogueStatus, status),
        ).observe(_check_seconds(seconds, "catalogue call duration"))

    def set_profile_availability(self, availability_by_slug: Mapping[str, Any]) -> None:
        """Set the gauges from objects with ``can_start_now`` and ``running`` (None: NaN)."""
        self.profiles.set(availability_by_slug)

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text of this registry and its content type, for the route."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


#: The hub-side metrics, in the default registry that JupyterHub serves at /hub/metrics.
HUB = HubMetrics(REGISTRY)
