"""Where a spawn's time went: phase durations from the spawner's marks and pod events.

Pure functions over plain data. Input:

- a :class:`SpawnTimeline`, the spawner's own marks in seconds since the epoch
  (``time.time()``): when the spawn was requested, its options validated, staging started
  and ended, the pod created, and when the spawn finished (server ready, or failure);
- the pod's Kubernetes events as the API returns them (dicts with ``reason``,
  ``message``, ``involvedObject`` and ``eventTime`` / ``firstTimestamp`` /
  ``lastTimestamp``; events.k8s.io's ``regarding``/``note``/``deprecatedFirstTimestamp``
  are read too). Timestamps may be RFC 3339 strings or datetimes.

Phases (:class:`esap_spawner.spawn.status.Phase`):

``validate``    requested -> options validated (a spawn refused at validation spends all
                its time here)
``staging``     staging started -> staging ended (absent when nothing was staged)
``scheduling``  pod created -> ``Scheduled`` event (a pod that never bound: until the end)
``image``       per container, ``Pulling`` -> ``Pulled``, summed; zero when the kubelet
                says the image is "already present on machine"; the pull time printed by
                newer kubelets (``in 3.2s (3.4s including waiting)``) wins over timestamps
                (which have one-second resolution)
``startup``     the notebook container's ``Started`` event -> spawn finished

A phase whose start is unknown (events lost, spawn ended before it) is absent from the
result rather than guessed; a phase that started but never ended is closed at the end of
the spawn; negative spans from clock skew or second rounding are clamped to 0. Events may
arrive in any order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from esap_spawner.spawn.status import Phase

__all__ = [
    "SpawnTimeline",
    "event_time",
    "parse_go_duration",
    "phase_durations",
    "pull_seconds",
]


@dataclass(frozen=True)
class SpawnTimeline:
    """The spawner's own marks for one spawn, seconds since the epoch (None: did not happen)."""

    requested: float
    validated: float | None = None
    staging_started: float | None = None
    staging_finished: float | None = None
    pod_created: float | None = None
    finished: float | None = None


def _timestamp(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float):
        return float(value)
    else:
        text = str(value).strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def event_time(event: Mapping[str, Any]) -> float | None:
    """When ``event`` first happened (seconds since the epoch), or None if it says nothing."""
    for key in ("eventTime", "firstTimestamp", "deprecatedFirstTimestamp", "lastTimestamp"):
        found = _timestamp(event.get(key))
        if found is not None:
            return found
    metadata = event.get("metadata") or {}
    return _timestamp(metadata.get("creationTimestamp"))


_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
             "h": 3600.0}  # fmt: skip
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float | None:
    """Seconds in a Go ``time.Duration`` string (``1m2.5s``, ``345ms``), or None."""
    text = text.strip()
    if text in ("0", "0s"):
        return 0.0
    total, pos = 0.0, 0
    for match in _GO_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None


_PULLED_IN = re.compile(
    r"[Ss]uccessfully pulled image .*? in (?P<pull>[0-9.]+[a-zµμ]+(?:[0-9.]+[a-zµμ]+)*)"
    r"(?: \((?P<waiting>[0-9.]+[a-zµμ]+(?:[0-9.]+[a-zµμ]+)*) including waiting\))?"
)


def pull_seconds(message: str) -> float | None:
    """The pull time a ``Pulled`` event's message states: 0 for "already present on
    machine", the time including waiting when given, else the pull time, else None."""
    if "already present on machine" in message:
        return 0.0
    match = _PULLED_IN.search(message)
    if match is None:
        return None
    return parse_go_duration(match.group("waiting") or match.group("pull"))


def _message(event: Mapping[str, Any]) -> str:
    return str(event.get("message") or event.get("note") or "")


def _involved(event: Mapping[str, Any]) -> Mapping[str, Any]:
    return event.get("involvedObject") or event.get("regarding") or {}


def _container_key(event: Mapping[str, Any]) -> str:
    path = _involved(event).get("fieldPath")
    if path:
        return str(path)
    quoted = re.search(r'image "([^"]+)"', _message(event))
    return quoted.group(1) if quoted else ""


_NAMED = re.compile(r"\{([^}]+)\}$")
_CONTAINER_IN_MESSAGE = re.compile(r"^(?:Started|Created) container (\S+)$")


@dataclass(frozen=True)
class _Event:
    reason: str
    at: float
    container: str
    message: str

    @property
    def container_name(self) -> str | None:
        """The container's name, from the fieldPath or else from "Started container x"."""
        named = _NAMED.search(self.container)
        if named:
            return named.group(1)
        said = _CONTAINER_IN_MESSAGE.match(self.message.strip())
        return said.group(1) if said else None


def _pod_events(events: Iterable[Mapping[str, Any]], pod_name: str | None) -> list[_Event]:
    found = []
    for event in events:
        involved = _involved(event)
        if involved.get("kind", "Pod") != "Pod":
            continue
        if pod_name is not None and involved.get("name") not in (None, pod_name):
            continue
        at = event_time(event)
        if at is None:
            continue
        found.append(
            _Event(str(event.get("reason") or ""), at, _container_key(event), _message(event))
        )
    found.sort(key=lambda e: e.at)
    return found


def _span(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, end - start)


def _first(events: list[_Event], reason: str) -> _Event | None:
    return next((e for e in events if e.reason == reason), None)


def _scheduling(timeline: SpawnTimeline, events: list[_Event]) -> float | None:
    failed = _first(events, "FailedScheduling")
    start = timeline.pod_created
    if start is None and failed is not None:
        start = failed.at
    scheduled = _first(events, "Scheduled")
    if scheduled is not None:
        end: float | None = scheduled.at
    else:
        # bound for sure once the kubelet acts on the pod
        later = [e.at for e in events if e.reason in ("Pulling", "Pulled", "Created", "Started")]
        end = min(later) if later else timeline.finished
    return _span(start, end)


def _image(timeline: SpawnTimeline, events: list[_Event]) -> float | None:
    by_container: dict[str, list[_Event]] = {}
    for event in events:
        if event.reason in ("Pulling", "Pulled"):
            by_container.setdefault(event.container, []).append(event)
    if not by_container:
        return None
    total = 0.0
    for pulls in by_container.values():
        pulling = _first(pulls, "Pulling")
        pulled = [e for e in pulls if e.reason == "Pulled"]
        stated = next((s for s in (pull_seconds(e.message) for e in pulled) if s is not None), None)
        if stated is not None:
            total += stated
            continue
        if pulling is None:
            continue  # a Pulled event without a stated time nor its Pulling: unknown
        after = [e.at for e in pulled if e.at >= pulling.at]
        end = after[0] if after else (pulled[0].at if pulled else timeline.finished)
        total += _span(pulling.at, end) or 0.0
    return total


def _startup(timeline: SpawnTimeline, events: list[_Event], container: str) -> float | None:
    started = [e for e in events if e.reason == "Started"]
    if not started:
        return None
    main = [e for e in started if e.container_name == container]
    if not main:
        main = [e for e in started if e.container.startswith("spec.containers")] or started
        return _span(max(e.at for e in main), timeline.finished)
    return _span(main[0].at, timeline.finished)


def phase_durations(
    timeline: SpawnTimeline,
    events: Iterable[Mapping[str, Any]] = (),
    *,
    pod_name: str | None = None,
    container: str = "notebook",
) -> dict[Phase, float]:
    """Seconds per phase for one spawn (phases that cannot be known are absent).

    ``pod_name`` keeps only events about that pod (events of other objects are always
    ignored); ``container`` names the notebook container (KubeSpawner's is ``notebook``).
    """
    pod_events = _pod_events(events, pod_name)
    found: dict[Phase, float | None] = {}
    validated = timeline.validated
    if validated is None and timeline.staging_started is None and timeline.pod_created is None:
        validated = timeline.finished  # refused while validating: all the time is here
    found[Phase.validate] = _span(timeline.requested, validated)
    if timeline.staging_started is not None:
        end = timeline.staging_finished
        found[Phase.staging] = _span(timeline.staging_started, end or timeline.finished)
    found[Phase.scheduling] = _scheduling(timeline, pod_events)
    found[Phase.image] = _image(timeline, pod_events)
    found[Phase.startup] = _startup(timeline, pod_events, container)
    return {phase: seconds for phase, seconds in found.items() if seconds is not None}
