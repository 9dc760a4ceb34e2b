"""esap_spawner.observe.phases: phase durations from realistic kubelet/scheduler event lists."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from esap_spawner.observe.phases import (
    SpawnTimeline,
    event_time,
    parse_go_duration,
    phase_durations,
    pull_seconds,
)
from esap_spawner.spawn.status import Phase

POD = "jupyter-alice"
NS = "jhub"
IMAGE = "quay.io/jupyter/scipy-notebook:2026-01-01"
T0 = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC).timestamp()


def iso(seconds: float, micro: bool = False) -> str:
    moment = datetime.fromtimestamp(T0 + seconds, tz=UTC)
    if micro:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def kubelet(reason: str, at: float, message: str, container: str | None = "notebook",
            *, pod: str = POD, init: bool = False, count: int = 1) -> dict[str, Any]:  # fmt: skip
    """An event as the core/v1 API returns it from the kubelet (second resolution)."""
    involved: dict[str, Any] = {"kind": "Pod", "namespace": NS, "name": pod, "apiVersion": "v1"}
    if container is not None:
        kind = "initContainers" if init else "containers"
        involved["fieldPath"] = f"spec.{kind}{{{container}}}"
    return {
        "kind": "Event",
        "metadata": {"name": f"{pod}.{reason.lower()}", "namespace": NS},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": iso(at),
        "lastTimestamp": iso(at),
        "count": count,
        "type": "Normal",
        "eventTime": None,
        "reportingComponent": "kubelet",
    }


def scheduler(reason: str, at: float, message: str, *, pod: str = POD) -> dict[str, Any]:
    """An event from default-scheduler: eventTime in microseconds, no firstTimestamp."""
    return {
        "kind": "Event",
        "metadata": {"name": f"{pod}.{reason.lower()}", "namespace": NS},
        "involvedObject": {"kind": "Pod", "namespace": NS, "name": pod},
        "reason": reason,
        "message": message,
        "source": {},
        "firstTimestamp": None,
        "lastTimestamp": None,
        "eventTime": iso(at, micro=True),
        "reportingComponent": "default-scheduler",
        "type": "Warning" if reason == "FailedScheduling" else "Normal",
    }


def cold_start_events() -> list[dict[str, Any]]:
    """Pod created at 2.0; waits for a node until 9.5; pulls an init image (present) and the
    notebook image (41.325 s stated); the notebook starts at 54."""
    return [
        scheduler("FailedScheduling", 2.1, "0/3 nodes are available: 3 Insufficient cpu. "
                  "preemption: 0/3 nodes are available: 3 No preemption victims found."),
        scheduler("Scheduled", 9.5, f"Successfully assigned {NS}/{POD} to node-1"),
        kubelet("Pulled", 10, 'Container image "quay.io/jupyterhub/k8s-network-tools:4.0.0" '
                "already present on machine", "block-cloud-metadata", init=True),
        kubelet("Created", 10, "Created container block-cloud-metadata", "block-cloud-metadata",
                init=True),
        kubelet("Started", 11, "Started container block-cloud-metadata", "block-cloud-metadata",
                init=True),
        kubelet("Pulling", 12, f'Pulling image "{IMAGE}"'),
        kubelet("Pulled", 53, f'Successfully pulled image "{IMAGE}" in 41.325s (41.325s including'
                " waiting). Image size: 1577284231 bytes."),
        kubelet("Created", 53, "Created container notebook"),
        kubelet("Started", 54, "Started container notebook"),
    ]  # fmt: skip


COLD = SpawnTimeline(requested=T0, validated=T0 + 0.05, pod_created=T0 + 2.0, finished=T0 + 60.0)


def test_cold_start_phases() -> None:
    phases = phase_durations(COLD, cold_start_events(), pod_name=POD)
    assert phases == {
        Phase.validate: pytest.approx(0.05),
        Phase.scheduling: pytest.approx(7.5),
        Phase.image: pytest.approx(41.325),
        Phase.startup: pytest.approx(6.0),
    }
    assert Phase.staging not in phases


def test_order_of_events_does_not_matter() -> None:
    events = cold_start_events()
    expected = phase_durations(COLD, events, pod_name=POD)
    for seed in range(5):
        shuffled = events[:]
        random.Random(seed).shuffle(shuffled)
        assert phase_durations(COLD, shuffled, pod_name=POD) == expected


def test_warm_start_image_already_present_is_zero_and_staging_counted() -> None:
    timeline = SpawnTimeline(requested=T0, validated=T0 + 0.1, staging_started=T0 + 0.2,
                             staging_finished=T0 + 30.2, pod_created=T0 + 31.0,
                             finished=T0 + 35.0)  # fmt: skip
    events = [
        scheduler("Scheduled", 31.2, f"Successfully assigned {NS}/{POD} to node-2"),
        kubelet("Pulled", 32, f'Container image "{IMAGE}" already present on machine'),
        kubelet("Created", 32, "Created container notebook"),
        kubelet("Started", 33, "Started container notebook"),
    ]
    phases = phase_durations(timeline, events)
    assert phases[Phase.image] == 0.0
    assert phases[Phase.staging] == pytest.approx(30.0)
    assert phases[Phase.scheduling] == pytest.approx(0.2)
    assert phases[Phase.startup] == pytest.approx(2.0)


def test_old_kubelet_message_and_timestamps_without_stated_time() -> None:
    # kubelet 1.20-1.23 states the pull time without "including waiting"
    assert pull_seconds('Successfully pulled image "nginx" in 2.613232765s') == pytest.approx(
        2.613232765
    )
    # older kubelets state nothing: the Pulling -> Pulled timestamps are used
    events = [
        kubelet("Pulling", 12, f'pulling image "{IMAGE}"'),
        kubelet("Pulled", 40, f'Successfully pulled image "{IMAGE}"'),
        kubelet("Started", 41, "Started container notebook"),
    ]
    phases = phase_durations(COLD, events)
    assert phases[Phase.image] == 28.0
    assert phases[Phase.startup] == 19.0


def test_pull_that_never_finished_is_closed_at_the_end_of_the_spawn() -> None:
    timeline = SpawnTimeline(requested=T0, validated=T0, pod_created=T0 + 1, finished=T0 + 300)
    events = [
        scheduler("Scheduled", 1.5, f"Successfully assigned {NS}/{POD} to node-1"),
        kubelet("Pulling", 2, f'Pulling image "{IMAGE}"'),
        kubelet("Failed", 20, f'Failed to pull image "{IMAGE}": context deadline exceeded'),
        kubelet("BackOff", 21, f'Back-off pulling image "{IMAGE}"', count=14),
    ]
    phases = phase_durations(timeline, events)
    assert phases[Phase.image] == 298.0
    assert Phase.startup not in phases


def test_pod_that_never_schedules_spends_the_rest_in_scheduling() -> None:
    timeline = SpawnTimeline(requested=T0, validated=T0 + 0.01, pod_created=T0 + 1,
                             finished=T0 + 301)  # fmt: skip
    events = [
        scheduler("FailedScheduling", 1.1, "0/3 nodes are available: 3 Insufficient memory."),
        scheduler("FailedScheduling", 61.0, "0/3 nodes are available: 3 Insufficient memory."),
    ]
    phases = phase_durations(timeline, events)
    assert phases == {Phase.validate: pytest.approx(0.01), Phase.scheduling: 300.0}


def test_scheduling_start_falls_back_to_first_failed_scheduling() -> None:
    timeline = SpawnTimeline(requested=T0, validated=T0, finished=T0 + 50)
    events = [
        scheduler("FailedScheduling", 5.0, "0/1 nodes are available: 1 Insufficient cpu."),
        scheduler("Scheduled", 20.0, f"Successfully assigned {NS}/{POD} to node-1"),
    ]
    assert phase_durations(timeline, events)[Phase.scheduling] == pytest.approx(15.0)


def test_missing_scheduled_event_is_bounded_by_the_kubelets_first_event() -> None:
    events = [e for e in cold_start_events() if e["reason"] != "Scheduled"]
    # the init image Pulled event at 10 s proves the pod was bound by then
    assert phase_durations(COLD, events)[Phase.scheduling] == 8.0


def test_refused_at_validation_spends_all_its_time_validating() -> None:
    timeline = SpawnTimeline(requested=T0, finished=T0 + 0.3)
    assert phase_durations(timeline, []) == {Phase.validate: pytest.approx(0.3)}


def test_staging_that_failed_is_closed_at_the_end() -> None:
    timeline = SpawnTimeline(requested=T0, validated=T0 + 1, staging_started=T0 + 1,
                             finished=T0 + 3601)  # fmt: skip
    assert phase_durations(timeline, [])[Phase.staging] == 3600.0


def test_events_of_other_pods_and_objects_are_ignored() -> None:
    events = cold_start_events()
    events.append(kubelet("Pulling", 0, 'Pulling image "other"', pod="jupyter-bob"))
    events.append(kubelet("Pulled", 500, 'Successfully pulled image "other"', pod="jupyter-bob"))
    events.append({**scheduler("Scheduled", 100, "x"), "involvedObject": {"kind": "Node",
                   "name": POD}})  # fmt: skip
    assert phase_durations(COLD, events, pod_name=POD) == phase_durations(
        COLD, cold_start_events(), pod_name=POD
    )


def test_negative_spans_from_second_rounding_clamp_to_zero() -> None:
    # the spawner marked ready at 53.6 s, the kubelet rounds Started to 54 s
    timeline = SpawnTimeline(requested=T0, validated=T0, pod_created=T0 + 2, finished=T0 + 53.6)
    phases = phase_durations(timeline, cold_start_events())
    assert phases[Phase.startup] == 0.0


def test_sidecar_fallback_uses_the_last_started_container() -> None:
    events = [
        kubelet("Started", 10, "Started container proxy", "proxy"),
        kubelet("Started", 12, "Started container lab", "lab"),
    ]
    timeline = SpawnTimeline(requested=T0, finished=T0 + 20, pod_created=T0, validated=T0)
    assert phase_durations(timeline, events)[Phase.startup] == 8.0
    assert phase_durations(timeline, events, container="proxy")[Phase.startup] == 10.0


def test_events_k8s_io_shape_and_datetimes() -> None:
    event = {
        "reason": "Pulled",
        "note": f'Container image "{IMAGE}" already present on machine',
        "regarding": {"kind": "Pod", "name": POD, "fieldPath": "spec.containers{notebook}"},
        "eventTime": None,
        "deprecatedFirstTimestamp": datetime.fromtimestamp(T0 + 5, tz=UTC),
    }
    assert event_time(event) == T0 + 5
    timeline = SpawnTimeline(requested=T0, validated=T0, pod_created=T0, finished=T0 + 10)
    assert phase_durations(timeline, [event])[Phase.image] == 0.0


def test_event_time_preference_and_garbage() -> None:
    assert event_time({"eventTime": iso(1.5, micro=True), "firstTimestamp": iso(9)}) == T0 + 1.5
    assert event_time({"firstTimestamp": iso(3), "lastTimestamp": iso(9)}) == T0 + 3
    assert event_time({"metadata": {"creationTimestamp": iso(4)}}) == T0 + 4
    assert event_time({"firstTimestamp": "yesterday"}) is None
    timeline = SpawnTimeline(requested=T0, validated=T0 + 1)
    # events without any time are dropped, not crashed on
    assert phase_durations(timeline, [{"reason": "Started"}]) == {Phase.validate: 1.0}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3.2s", 3.2), ("345ms", 0.345), ("1m2.5s", 62.5), ("1h0m0s", 3600.0), ("0s", 0.0),
     ("250µs", 0.00025), ("1.5", None), ("", None), ("s", None), ("3x", None)],
)  # fmt: skip
def test_parse_go_duration(text: str, seconds: float | None) -> None:
    found = parse_go_duration(text)
    if seconds is None:
        assert found is None
    else:
        assert found == pytest.approx(seconds)


def test_pull_seconds_prefers_time_including_waiting() -> None:
    message = 'Successfully pulled image "x:1" in 1m2s (1m30s including waiting). Image size: 5'
    assert pull_seconds(message) == 90.0
    assert pull_seconds('Pulling image "x:1"') is None


def test_events_without_field_path_name_the_container_in_the_message() -> None:
    # some emitters (the simulator, older kubelets' Pulled) leave out involvedObject.fieldPath
    events = [
        kubelet("Pulling", 3, 'Pulling image "init:1"', None),
        kubelet("Pulled", 5, 'Successfully pulled image "init:1" in 2s (2s including waiting)',
                None),
        kubelet("Started", 6, "Started container fetch-data", None),
        kubelet("Pulled", 20, f'Container image "{IMAGE}" already present on machine', None),
        kubelet("Started", 21, "Started container notebook", None),
        kubelet("Started", 22, "Started container sidecar", None),
    ]  # fmt: skip
    timeline = SpawnTimeline(requested=T0, validated=T0, pod_created=T0 + 1, finished=T0 + 30)
    phases = phase_durations(timeline, events)
    assert phases[Phase.image] == 2.0
    assert phases[Phase.startup] == 9.0  # from the notebook's start, not the sidecar's
