"""The cluster model: fit counts, availability, reservations and incremental consistency."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esap_spawner.capacity.model import (
    Availability,
    ClusterModel,
    Refusal,
    Reservation,
)
from esap_spawner.capacity.requirements import ProfileRequirements, describe_vector, image_aliases
from esap_spawner.capacity.reservations import Held
from esap_spawner.spawn.records import SpawnDurations
from tests.harness.clock import Clock
from tests.harness.cluster_objects import PROFILE_LABEL, model_of, node, pod

IMAGE = "quay.io/jupyter/scipy-notebook:2026-01-01"


def profile(
    slug: str = "small",
    cpu: str = "1",
    memory: str = "2Gi",
    *,
    gpu: int = 0,
    node_selector: dict[str, str] | None = None,
    tolerations: list[dict[str, str]] | None = None,
    image: str | None = IMAGE,
    max_servers: int | None = None,
) -> ProfileRequirements:
    requests: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpu:
        requests["nvidia.com/gpu"] = gpu
    return ProfileRequirements.build(
        slug,
        requests=requests,
        node_selector=node_selector,
        tolerations=tolerations or [],
        image=image,
        max_servers=max_servers,
    )


GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}

FIT_TABLE: list[
    tuple[str, list[dict[str, Any]], list[dict[str, Any]], ProfileRequirements, int]
] = [
    ("cpu bound", [node("a", "4", "16Gi")], [], profile(cpu="1", memory="2Gi"), 4),
    ("memory bound", [node("a", "16", "5Gi")], [], profile(cpu="1", memory="2Gi"), 2),
    ("millicores", [node("a", "3500m", "64Gi")], [], profile(cpu="500m"), 7),
    (
        "fragmentation: 2 x 3 free CPU holds two 2-CPU servers, not three",
        [node("a", "4"), node("b", "4")],
        [pod("1", "a", cpu="1"), pod("2", "b", cpu="1")],
        profile(cpu="2", memory="1Gi"),
        2,
    ),
    ("pods allocatable", [node("a", "64", "64Gi", pods="3")], [pod("1", "a")], profile(), 2),
    (
        "no pods allocatable reported",
        [node("a", "512", "1Ti", pods=None)],
        [],
        profile("p", "1", "1Gi"),
        512,
    ),
    (
        "node selector",
        [node("a", labels={"pool": "user"}), node("b", labels={"pool": "core"}), node("c")],
        [],
        profile(node_selector={"pool": "user"}),
        4,
    ),
    ("untolerated taint", [node("a", taints=[GPU_TAINT])], [], profile(), 0),
    (
        "tolerated taint",
        [node("a", taints=[GPU_TAINT])],
        [],
        profile(tolerations=[GPU_TOLERATION]),
        4,
    ),
    (
        "PreferNoSchedule does not block",
        [node("a", taints=[{"key": "x", "effect": "PreferNoSchedule"}])],
        [],
        profile(),
        4,
    ),
    (
        "NoExecute blocks",
        [node("a", taints=[{"key": "x", "value": "y", "effect": "NoExecute"}])],
        [],
        profile(),
        0,
    ),
    (
        "GPU: only GPU nodes, one per GPU",
        [node("cpu", "64", "256Gi"), node("g", "64", "256Gi", gpu=2, taints=[GPU_TAINT])],
        [pod("1", "g", gpu=1)],
        profile("gpu", "4", "16Gi", gpu=1, tolerations=[GPU_TOLERATION]),
        1,
    ),
    ("GPU on a node without GPUs", [node("a", "64", "256Gi")], [], profile(gpu=1), 0),
    ("NotReady node", [node("a"), node("b", ready=False)], [], profile(), 4),
    ("unschedulable node", [node("a"), node("b", unschedulable=True)], [], profile(), 4),
    (
        "unschedulable node tolerated",
        [node("b", unschedulable=True)],
        [],
        profile(
            tolerations=[
                {
                    "key": "node.kubernetes.io/unschedulable",
                    "operator": "Exists",
                    "effect": "NoSchedule",
                }
            ]
        ),
        4,
    ),
    (
        "terminal pods are not counted",
        [node("a")],
        [pod("1", "a", "2", phase="Succeeded"), pod("2", "a", "2", phase="Failed")],
        profile(),
        4,
    ),
    (
        "pending unbound pods are not counted against nodes",
        [node("a")],
        [pod("1", None, "4", phase="Pending")],
        profile(),
        4,
    ),
    (
        "pods being deleted count until gone",
        [node("a")],
        [pod("1", "a", "3", deleting=True)],
        profile(),
        1,
    ),
    ("over-committed node", [node("a", "2")], [pod("1", "a", "3")], profile(), 0),
    (
        "bound pending pods count",
        [node("a")],
        [pod("1", "a", "3", phase="Pending")],
        profile(),
        1,
    ),
]


@pytest.mark.parametrize(
    ("nodes", "pods", "req", "expected"), [c[1:] for c in FIT_TABLE], ids=[c[0] for c in FIT_TABLE]
)
def test_fit_count_table(
    nodes: list[dict[str, Any]], pods: list[dict[str, Any]], req: ProfileRequirements, expected: int
) -> None:
    model = model_of(nodes, pods)
    assert model.fit_count(req)[0] == expected
    # The cached answer after events equals the answer of a fresh model.
    assert model_of(nodes, pods).fit_count(req)[0] == expected


def test_fast_start_counts_slots_on_nodes_with_the_image() -> None:
    nodes = [node("a", images=(IMAGE,)), node("b"), node("c", images=("other:1",))]
    model = model_of(nodes)
    assert model.fit_count(profile(image=IMAGE)) == (12, 4)
    assert model.fit_count(profile(image="other:1")) == (12, 4)
    assert model.fit_count(profile(image=None)) == (12, 0)


def test_image_aliases_cover_docker_hub_names() -> None:
    assert "docker.io/library/python:3.12" in image_aliases("python:3.12")
    assert "docker.io/jupyter/base-notebook:latest" in image_aliases("jupyter/base-notebook")
    assert image_aliases("quay.io/x/y:1") == frozenset({"quay.io/x/y:1"})


def test_events_move_capacity_in_and_out() -> None:
    model = model_of([node("a")])
    req = profile()
    assert model.fit_count(req)[0] == 4
    model.apply("ADDED", pod("1", None, "2", phase="Pending"))
    assert model.fit_count(req)[0] == 4
    model.apply("MODIFIED", pod("1", "a", "2", phase="Pending"))
    assert model.fit_count(req)[0] == 2
    model.apply("MODIFIED", pod("1", "a", "2", phase="Running"))
    assert model.fit_count(req)[0] == 2
    model.apply("MODIFIED", pod("1", "a", "2", phase="Succeeded"))
    assert model.fit_count(req)[0] == 4
    model.apply("DELETED", pod("1", "a", "2", phase="Succeeded"))
    assert model.fit_count(req)[0] == 4
    model.apply("ADDED", pod("2", "a", "3"))
    model.apply("MODIFIED", node("a", ready=False))
    assert model.fit_count(req)[0] == 0
    model.apply("MODIFIED", node("a", "8"))
    assert model.fit_count(req)[0] == 5
    model.apply("DELETED", node("a", "8"))
    assert model.fit_count(req)[0] == 0
    model.apply("ADDED", node("a", "8"))
    assert model.fit_count(req)[0] == 5  # the pod bound to "a" still counts
    model.apply("DELETED", pod("2", "a", "3"))
    assert model.fit_count(req)[0] == 8


def test_bad_events_are_refused_with_a_clear_message() -> None:
    model = model_of([])
    with pytest.raises(
        ValueError, match="expected a Node, a Pod or a ResourceQuota, got kind 'Service'"
    ):
        model.apply("ADDED", {"kind": "Service", "metadata": {"name": "x"}})
    with pytest.raises(ValueError, match="unknown watch event type 'ERROR'"):
        model.apply("ERROR", pod("1"))
    with pytest.raises(ValueError, match="negative request"):
        profile(cpu="-1")


def test_running_counts_labelled_non_terminal_pods_bound_or_pending() -> None:
    pods = [
        pod("1", "a", profile="small"),
        pod("2", None, phase="Pending", profile="small"),
        pod("3", "a", phase="Succeeded", profile="small"),
        pod("4", "a", profile="big"),
        pod("5", "a"),
    ]
    model = model_of([node("a", "64", "64Gi")], pods)
    assert (model.running("small"), model.running("big"), model.running("gpu")) == (2, 1, 0)
    model.apply("MODIFIED", pod("2", "a", phase="Failed", profile="small"))
    model.apply("DELETED", pod("4", "a", profile="big"))
    assert (model.running("small"), model.running("big")) == (1, 0)


AVAILABILITY_TABLE = [
    # (cpu free on one node, running, max_servers) -> status, can_start_now
    ("plenty", "16", 0, None, "available", 16),
    ("few left", "2", 0, None, "limited", 2),
    ("none fit", "0", 0, None, "full", 0),
    ("quota left is the limit", "16", 8, 10, "limited", 2),
    ("at quota", "16", 10, 10, "full", 0),
    ("over quota", "16", 12, 10, "full", 0),
    ("fit is the limit", "1", 0, 10, "limited", 1),
]


@pytest.mark.parametrize(
    ("cpu", "running", "max_servers", "status", "can"),
    [c[1:] for c in AVAILABILITY_TABLE],
    ids=[c[0] for c in AVAILABILITY_TABLE],
)
def test_availability_table(
    cpu: str, running: int, max_servers: int | None, status: str, can: int
) -> None:
    nodes = [node("a", cpu, "1Ti"), node("busy", "64", "1Ti", images=(IMAGE,))]
    # The "busy" node (the one with the image) is full; running servers request nothing.
    pods = [pod("fill", "busy", "64", "0")]
    pods += [pod(f"r{i}", "busy", "0", "0", profile="small") for i in range(running)]
    req = profile(cpu="1", memory="1Gi", max_servers=max_servers)
    got = model_of(nodes, pods).availability([req], limited_threshold=2)["small"]
    assert got == Availability(status, can, 0, running, max_servers, None)  # type: ignore[arg-type]


def test_availability_is_unknown_until_synced_and_estimates_from_recent_spawns() -> None:
    durations = SpawnDurations(keep=3)
    for seconds in (100, 10, 20, 30):
        durations.record("small", seconds)
    model = ClusterModel(spawn_durations=durations, profile_label=PROFILE_LABEL)
    req = profile(max_servers=5)
    assert model.availability([req])["small"] == Availability("unknown", None, None, None, 5, 20.0)
    model.replace_all([node("a", images=(IMAGE,))], [])
    assert model.availability([req, profile("other", image=None)]) == {
        "small": Availability("available", 4, 4, 0, 5, 20.0),
        "other": Availability("available", 4, 0, 0, None, None),
    }


def test_staleness_follows_the_watches_on_the_injected_clock() -> None:
    clock = Clock()
    model = ClusterModel(clock=clock, stale_after=30, profile_label=PROFILE_LABEL)
    assert (model.synced, model.stale, model.as_of, model.view_age_seconds()) == (
        False,
        True,
        None,
        None,
    )
    model.replace_all([node("a")], [])
    assert (model.synced, model.stale, model.as_of, model.view_age_seconds()) == (
        True,
        False,
        clock.now,
        0.0,
    )
    model.watch_down("pods")
    clock.now += 29
    assert not model.stale and model.view_age_seconds() == 29
    clock.now += 2
    assert model.stale
    assert model.reserve(profile()) == Refusal(
        "unsynced", "the cluster view is not available (watches down for 31 s): try again shortly"
    )
    model.watch_up("pods")
    assert not model.stale
    clock.now += 5
    model.apply("ADDED", pod("1", "a"))
    assert model.as_of == clock.now
    model.mark_unsynced()
    assert model.stale and model.availability([profile()])["small"].status == "unknown"


# ---------------------------------------------------------------- admission


def test_refusal_messages_say_what_is_wrong() -> None:
    model = ClusterModel(profile_label=PROFILE_LABEL)
    assert model.reserve(profile()) == Refusal(
        "unsynced", "the cluster view is not available (watch not synced): try again shortly"
    )
    model.replace_all(
        [node("a", "8", "32G"), node("b", "8", "40G")],
        [
            pod("1", "a", "500m", "2G"),
            pod("2", "b", "1", "10G"),
            *(pod(f"g{i}", "a", "0", "0", profile="gpu") for i in range(2)),
        ],
    )
    refusal = model.reserve(profile("gpu", max_servers=2))
    assert refusal == Refusal("full", "profile 'gpu' is full: 2 of 2 servers running (max_servers)")
    refusal = model.reserve(profile("big", "16", "64G"))
    assert isinstance(refusal, Refusal) and refusal.reason == "no_room"
    assert str(refusal) == (
        "profile 'big' cannot start now: no node has room (needs 16 CPU, 64 GB; "
        "largest free: 7.5 CPU, 30 GB)"
    )
    refusal = model.reserve(profile("sel", node_selector={"pool": "gpu"}))
    assert str(refusal).startswith(
        "profile 'sel' cannot start now: no Ready, schedulable node matches"
    )


def test_describe_vector() -> None:
    assert (
        describe_vector(profile(cpu="1500m", memory="4G", gpu=2).requests)
        == "1.5 CPU, 4 GB, 2 nvidia.com/gpu"
    )


def test_reservation_holds_quota_until_the_pod_appears_and_capacity_until_bound() -> None:
    model = model_of([node("a", "4", "64Gi")])
    req = profile(cpu="1", max_servers=3)
    r = model.reserve(req, namespace="hub", pod_name="jupyter-ann")
    assert isinstance(r, Reservation)
    assert model.fit_count(req)[0] == 3 and model.reserved("small") == 1
    assert model.availability([req])["small"].can_start_now == 2
    # An unrelated pod with the same name in another namespace does not match.
    model.apply("ADDED", pod("x", None, namespace="other", name="jupyter-ann", phase="Pending"))
    assert model.reserved("small") == 1
    model.apply(
        "ADDED",
        pod("p1", None, namespace="hub", name="jupyter-ann", phase="Pending", profile="small"),
    )
    assert (model.reserved("small"), model.running("small"), r.holds_node) == (0, 1, True)
    assert model.fit_count(req)[0] == 3  # still held: the pod is not bound yet
    model.apply("MODIFIED", pod("p1", "a", namespace="hub", name="jupyter-ann", profile="small"))
    assert not r.active
    assert model.fit_count(req)[0] == 3  # now held by the pod itself, not twice
    assert model.availability([req])["small"].can_start_now == 2
    model.apply("DELETED", pod("p1", "a", namespace="hub", name="jupyter-ann", profile="small"))
    assert model.fit_count(req)[0] == 4


def test_reservation_release_and_expiry() -> None:
    clock = Clock()
    model = model_of([node("a", "2", "64Gi")], clock=clock)
    req = profile(cpu="1", max_servers=5)
    r1 = model.reserve(req, ttl=60)
    r2 = model.reserve(req, ttl=120)
    assert isinstance(r1, Reservation) and isinstance(r2, Reservation)
    assert isinstance(model.reserve(req), Refusal)
    r1.release()
    r1.release()  # idempotent
    assert model.fit_count(req)[0] == 1 and model.reserved("small") == 1
    clock.now += 121
    assert model.availability([req])["small"].can_start_now == 2
    assert not r2.active


def test_relist_keeps_reservations_and_matches_listed_pods() -> None:
    # An old pod of the same name (being deleted) is already known: it must not match.
    old = pod("0", "a", "0", namespace="hub", name="jupyter-bo", profile="small", deleting=True)
    model = model_of([node("a", "4", "64Gi")], [old])
    req = profile(cpu="1", max_servers=10)
    r = model.reserve(req, namespace="hub", pod_name="jupyter-bo")
    assert isinstance(r, Reservation)
    model.replace_all([node("a", "4", "64Gi")], [old, pod("9", "b", "1")])
    assert model.fit_count(req)[0] == 3 and r.holds_quota and model.running("small") == 1
    model.apply("MODIFIED", old)
    assert r.holds_quota
    model.replace_all(
        [node("a", "4", "64Gi")],
        [pod("1", "a", namespace="hub", name="jupyter-bo", profile="small")],
    )
    assert not r.active and model.fit_count(req)[0] == 3 and model.running("small") == 1
    # A pending pod holding a reservation's capacity vanishes during a relist: hold dropped.
    r2 = model.reserve(req, namespace="hub", pod_name="jupyter-cy")
    assert isinstance(r2, Reservation)
    cy = pod("2", None, namespace="hub", name="jupyter-cy", phase="Pending", profile="small")
    model.apply("ADDED", cy)
    assert r2.holds_node and not r2.holds_quota and model.fit_count(req)[0] == 2
    model.replace_all([node("a", "4", "64Gi")], [])
    assert not r2.active and model.fit_count(req)[0] == 4


async def test_fifty_concurrent_spawns_never_exceed_max_servers() -> None:
    """Spawns interleave at every await; the model admits exactly max_servers of them."""
    model = model_of([node(f"n{i}", "16", "64Gi") for i in range(8)])
    req = profile(cpu="1", max_servers=10)
    peak = 0

    async def spawn(i: int) -> bool:
        nonlocal peak
        await asyncio.sleep(random.random() / 1000)
        r = model.reserve(req, namespace="hub", pod_name=f"jupyter-{i}")
        if isinstance(r, Refusal):
            assert r.reason == "full"
            return False
        await asyncio.sleep(random.random() / 1000)  # the API call creating the pod
        model.apply(
            "ADDED",
            pod(
                f"u{i}",
                None,
                namespace="hub",
                name=f"jupyter-{i}",
                phase="Pending",
                profile="small",
            ),
        )
        await asyncio.sleep(random.random() / 1000)  # the scheduler binding it
        model.apply(
            "MODIFIED", pod(f"u{i}", "n0", namespace="hub", name=f"jupyter-{i}", profile="small")
        )
        peak = max(peak, model.running("small"))
        return True

    admitted = await asyncio.gather(*(spawn(i) for i in range(50)))
    assert sum(admitted) == 10
    assert model.running("small") == 10 == peak
    assert model.reserved("small") == 0


# ---------------------------------------------------------------- incremental == recomputed


NODES = 30


def _random_events(
    rng: random.Random, n: int
) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """A random stream of watch events and the final objects it leaves behind."""
    nodes: dict[str, dict[str, Any]] = {}
    pods: dict[str, dict[str, Any]] = {}
    events: list[tuple[str, dict[str, Any]]] = []
    next_uid = 0
    for _ in range(n):
        roll = rng.random()
        if roll < 0.15 or not nodes:
            name = f"n{rng.randrange(NODES)}"
            if name in nodes and rng.random() < 0.2:
                events.append(("DELETED", nodes.pop(name)))
                continue
            obj = node(
                name,
                str(rng.choice([2, 4, 8])),
                rng.choice(["8Gi", "32Gi"]),
                gpu=rng.choice([0, 0, 2]),
                labels={"pool": rng.choice(["user", "core"])},
                taints=rng.choice([[], [], [GPU_TAINT]]),
                ready=rng.random() > 0.2,
                unschedulable=rng.random() < 0.1,
                images=rng.choice([(), (IMAGE,)]),
            )
            events.append(("MODIFIED" if name in nodes else "ADDED", obj))
            nodes[name] = obj
        elif (roll < 0.5 and len(pods) < 3 * NODES) or not pods:
            next_uid += 1
            obj = pod(
                str(next_uid),
                rng.choice([None, *(f"n{i}" for i in range(NODES))]),
                rng.choice(["100m", "500m", "1", "2"]),
                rng.choice(["256Mi", "1Gi", "4Gi"]),
                gpu=rng.choice([0, 0, 1]),
                phase=rng.choice(["Pending", "Running"]),
                profile=rng.choice([None, "small", "gpu"]),
            )
            events.append(("ADDED", obj))
            pods[obj["metadata"]["uid"]] = obj
        else:
            uid = rng.choice(list(pods))
            old = pods[uid]
            if rng.random() < 0.4:
                events.append(("DELETED", pods.pop(uid)))
                continue
            obj = {
                **old,
                "spec": dict(old["spec"]),
                "status": {"phase": rng.choice(["Pending", "Running", "Succeeded", "Failed"])},
            }
            if "nodeName" not in obj["spec"] and rng.random() < 0.7:
                obj["spec"]["nodeName"] = f"n{rng.randrange(NODES)}"
            events.append(("MODIFIED", obj))
            pods[uid] = obj
    return events, nodes, pods


PROPERTY_PROFILES = [
    profile(),
    profile("gpu", "2", "4Gi", gpu=1, tolerations=[GPU_TOLERATION]),
    profile("user", "500m", node_selector={"pool": "user"}),
]


def _assert_matches_recomputation(
    model: ClusterModel, nodes: dict[str, Any], pods: dict[str, Any]
) -> None:
    fresh = model_of(list(nodes.values()), list(pods.values()))
    assert model.snapshot() == fresh.snapshot()
    for req in PROPERTY_PROFILES:
        assert model.fit_count(req) == fresh.fit_count(req)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ten_thousand_random_events_equal_a_full_recomputation(seed: int) -> None:
    rng = random.Random(seed)
    events, nodes, pods = _random_events(rng, 10_000)
    model = model_of([])
    for kind, obj in events:
        model.apply(kind, obj)
        if rng.random() < 0.2:  # ask often, so cached answers must follow the events
            model.fit_count(rng.choice(PROPERTY_PROFILES))
    _assert_matches_recomputation(model, nodes, pods)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(1, 300), ask_every=st.integers(1, 50))
def test_random_event_streams_equal_a_full_recomputation(seed: int, n: int, ask_every: int) -> None:
    events, nodes, pods = _random_events(random.Random(seed), n)
    model = model_of([])
    for i, (kind, obj) in enumerate(events):
        model.apply(kind, obj)
        if i % ask_every == 0:
            model.fit_count(PROPERTY_PROFILES[i % len(PROPERTY_PROFILES)])
    _assert_matches_recomputation(model, nodes, pods)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(1, 300))
def test_reservations_leave_no_trace_once_released(seed: int, n: int) -> None:
    """Reserve and release at random between events; once every reservation is released
    (or consumed by its pod), the model equals a full recomputation."""
    rng = random.Random(seed)
    events, nodes, pods = _random_events(rng, n)
    model = model_of([])
    held: list[Reservation] = []
    for kind, obj in events:
        roll = rng.random()
        if roll < 0.3 and kind == "ADDED" and obj["kind"] == "Pod":  # a spawn: reserve first
            name = obj["metadata"]["name"]
            r = model.reserve(rng.choice(PROPERTY_PROFILES), namespace="default", pod_name=name)
            if isinstance(r, Reservation):
                held.append(r)
        elif roll < 0.4:
            r = model.reserve(rng.choice(PROPERTY_PROFILES))
            if isinstance(r, Reservation):
                held.append(r)
        elif roll < 0.5 and held:
            held.pop(rng.randrange(len(held))).release()
        model.apply(kind, obj)
    for r in held:
        r.release()
    assert all(model.reserved(p.slug) == 0 for p in PROPERTY_PROFILES)
    _assert_matches_recomputation(model, nodes, pods)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(1, 200))
def test_the_version_changes_whenever_an_answer_does(seed: int, n: int) -> None:
    """One change at a time (an event, a reservation or its release, a watch down or up, a
    relist, a lost sync, time lapsing a reservation, a quota), each followed by a question: while
    ``version`` stays the same, so do availability, ``as_of`` and staleness, so answers
    cached by version are current. (Staleness also turns with time alone: out of the way
    here with a long ``stale_after``; the service bounds the age of what it caches.)"""
    rng = random.Random(seed)
    clock = Clock()
    events, nodes, pods = _random_events(rng, n)
    model = ClusterModel(profile_label=PROFILE_LABEL, clock=clock, stale_after=1e9)
    model.replace_all([], [])
    held: list[Reservation] = []
    last: tuple[int, tuple[Any, ...]] | None = None
    changes = 0
    for kind, obj in events:
        roll = rng.random()
        if roll < 0.1:
            r = model.reserve(rng.choice(PROPERTY_PROFILES), ttl=rng.choice([5, 500]))
            if isinstance(r, Reservation):
                held.append(r)
        elif roll < 0.15 and held:
            held.pop(rng.randrange(len(held))).release()
        elif roll < 0.2:
            (model.watch_down if rng.random() < 0.5 else model.watch_up)("pods")
        elif roll < 0.22:
            model.replace_all(list(nodes.values()), list(pods.values()))
        elif roll < 0.24:
            model.mark_unsynced()
        elif roll < 0.26:
            clock.now += 10  # lapses the short reservations when availability is asked
        elif roll < 0.28:  # the hub namespace's quota, as its watch feeds it
            hard = {"requests.cpu": rng.choice(["2", "6", "40"])}
            model.quotas.apply("ADDED", {"kind": "ResourceQuota", "metadata": {"uid": "q"},
                                         "status": {"hard": hard, "used": {}}})  # fmt: skip
        else:
            model.apply(kind, obj)
        answer = (model.availability(PROPERTY_PROFILES), model.as_of, model.stale)
        if last is not None and last[0] == model.version:
            assert answer == last[1]
        elif last is not None and answer != last[1]:
            changes += 1
        last = (model.version, answer)
    assert changes > 0 or n < 100  # a long stream does move the answers


# ---------------------------------------------------------------- site profiles


def test_site_profiles_are_counted_with_their_requests_placement_and_quota() -> None:
    from pathlib import Path

    import esap_spawner
    from esap_spawner.site import profiles
    from esap_spawner.site.model import load_site

    site = load_site(Path(esap_spawner.__file__).parent / "site" / "examples" / "site.yaml")
    by_slug = {p.slug: p for p in site.profiles}
    gpu_taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    nodes = [
        node("cpu", "8", "64Gi", images=("quay.io/jupyter/scipy-notebook:2026-01-01",)),
        node(
            "g",
            "16",
            "128Gi",
            gpu=2,
            labels={"esap.escape.eu/node-pool": "gpu"},
            taints=[gpu_taint],
        ),
    ]
    model = ClusterModel()  # counts servers by the spawner's own label
    assert model.profile_label == profiles.PROFILE_LABEL
    server = pod("1", "g", "4", "16Gi", gpu=1)
    server["metadata"]["labels"] = {profiles.PROFILE_LABEL: "gpu"}
    model.replace_all(nodes, [server])
    got = model.availability(site.profiles)
    # small: 0.5 CPU, 1 GiB -> 16 on "cpu", all with the image; "g" is tainted.
    assert got["small"] == Availability("available", 16, 16, 0, None, None)
    # gpu: 4 CPU, 16 GiB, 1 GPU, only on the pool node; one GPU left; quota 4, 1 running.
    assert got["gpu"] == Availability("limited", 1, 0, 1, 4, None)
    # casa: 2 CPU, 8 GiB -> 4 on "cpu"; quota 10.
    assert got["casa"].can_start_now == 4 and got["casa"].max_servers == 10
    assert model.fit_count(by_slug["gammapy"]) == (8, 0)


# ---------------------------------------------------------------- watch stream lines


def test_watch_lines_become_events_and_errors() -> None:
    from esap_spawner.capacity import watch as cluster_watch

    line = b'{"type": "ADDED", "object": {"kind": "Pod", "metadata": {"uid": "1"}}}'
    assert cluster_watch.ClusterWatcher._event("pods", line) == (
        "ADDED",
        {"kind": "Pod", "metadata": {"uid": "1"}},
    )
    gone = b'{"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}'
    with pytest.raises(cluster_watch._Gone):
        cluster_watch.ClusterWatcher._event("pods", gone)
    failed = b'{"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "boom"}}'
    with pytest.raises(cluster_watch.WatchError, match="pods: HTTP 500: boom") as info:
        cluster_watch.ClusterWatcher._event("pods", failed)
    assert info.value.status == 500


# ---------------------------------------------------------------- one capacity authority


def test_held_says_what_each_reservation_still_holds() -> None:
    model = model_of([node("a", "4", "64Gi")])
    req = profile(cpu="1", max_servers=3)
    r = model.reserve(req, namespace="hub", pod_name="jupyter-ann", ttl=60)
    assert isinstance(r, Reservation)
    (held,) = model.reservations.held()
    assert held == Held("small", "a", req.requests, True, True, r.expires_at, "hub", "jupyter-ann")
    model.apply("ADDED", pod("p1", None, namespace="hub", name="jupyter-ann", profile="small"))
    (held,) = model.reservations.held()
    assert (held.holds_quota, held.holds_node) == (False, True)  # the pod counts, unbound
    model.apply("MODIFIED", pod("p1", "a", namespace="hub", name="jupyter-ann", profile="small"))
    assert model.reservations.held() == []


def test_a_model_that_adopts_the_hubs_reservations_answers_as_the_hub() -> None:
    nodes = [node("a", "4", "64Gi"), node("b", "2", "64Gi")]
    hub, service = model_of(nodes), model_of(nodes)
    req = profile(cpu="1", max_servers=5)
    for name in ("ann", "bob"):
        assert isinstance(hub.reserve(req, namespace="hub", pod_name=name), Reservation)
    assert service.availability([req]) != hub.availability([req])  # what the issue was
    service.reservations.adopt(hub.reservations.held())
    assert service.availability([req]) == hub.availability([req])
    assert service.reserved("small") == 2 and service.reservations.held() == []  # not its own
    # the hub's pod appears: once the service sees both the pod and the new publication,
    # they agree again, and nothing is counted twice
    for model in (hub, service):
        model.apply("ADDED", pod("p1", "a", namespace="hub", name="ann", profile="small"))
    service.reservations.adopt(hub.reservations.held())
    assert service.availability([req]) == hub.availability([req])
    assert service.availability([req])["small"].can_start_now == 3


def test_adopting_replaces_what_was_adopted_and_the_same_publication_changes_nothing() -> None:
    clock = Clock()
    service = model_of([node("a", "4", "64Gi")], clock=clock)
    req = profile(cpu="1")
    changes: list[int] = []
    service.reservations.listen(lambda: changes.append(1))
    one = Held("small", "a", req.requests, True, True, clock.now + 30)
    service.reservations.adopt([one, one])
    assert service.fit_count(req)[0] == 2 and service.reserved("small") == 2
    before = len(changes)
    service.reservations.adopt([one, one])  # the same publication again: nothing moves
    assert len(changes) == before
    service.reservations.adopt([one])
    assert service.fit_count(req)[0] == 3 and service.reserved("small") == 1
    # adopted reservations wait for no pod, however it is named, and lapse on time
    service.apply("ADDED", pod("p1", None, name="jupyter-ann", profile="small"))
    assert service.reserved("small") == 1
    clock.now += 31
    assert service.availability([req])["small"].can_start_now == 4
    service.reservations.adopt([])
    assert service.fit_count(req)[0] == 4 and service.reserved("small") == 0


def test_a_pod_the_service_sees_first_settles_the_adopted_reservation_at_once() -> None:
    """The service may see the hub's pod before the hub publishes that it saw it: the pod
    and its reservation are not counted twice meanwhile, nor after a publication that is
    still behind."""
    nodes = [node("a", "4", "64Gi")]
    hub, service = model_of(nodes), model_of(nodes)
    req = profile(cpu="1", max_servers=3)
    assert isinstance(hub.reserve(req, namespace="hub", pod_name="ann"), Reservation)
    service.reservations.adopt(hub.reservations.held())
    service.apply("ADDED", pod("p1", None, namespace="hub", name="ann", profile="small"))
    assert service.availability([req])["small"].can_start_now == 2  # ann's once, not twice
    assert service.fit_count(req)[0] == 3  # the unbound pod's node share is held once
    # the hub admits bob before it sees ann's pod: a publication still behind on ann
    assert isinstance(hub.reserve(req, namespace="hub", pod_name="bob"), Reservation)
    behind = hub.reservations.held()
    assert [h.holds_quota for h in behind] == [True, True]
    service.reservations.adopt(behind)
    assert service.availability([req])["small"].can_start_now == 1  # ann's pod, bob's slot
    assert service.fit_count(req)[0] == 2
    service.apply("MODIFIED", pod("p1", "a", namespace="hub", name="ann", profile="small"))
    assert service.fit_count(req)[0] == 2 and service.reserved("small") == 1
    assert isinstance(hub.reserve(req, namespace="hub", pod_name="cat"), Reservation)
    service.reservations.adopt(hub.reservations.held())  # behind on ann's settled pod
    assert service.reserved("small") == 2 and service.fit_count(req)[0] == 1  # bob, cat
    # a later spawn's pod of the same name is another reservation: it holds its slot
    (ann,) = [h for h in behind if h.pod_name == "ann"]
    later = replace(ann, expires_at=ann.expires_at + 1)
    service.reservations.adopt([later])
    assert service.reserved("small") == 1 and service.fit_count(req)[0] == 2


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(1, 200))
def test_after_each_publication_the_service_answers_as_the_hub(seed: int, n: int) -> None:
    """The hub reserves, releases and sees pods at random; the service sees the same pods
    and adopts each publication: every profile's availability is the hub's."""
    rng = random.Random(seed)
    events, _, _ = _random_events(rng, n)
    hub, service = model_of([]), model_of([])
    held: list[Reservation] = []
    for kind, obj in events:
        roll = rng.random()
        if roll < 0.3 and kind == "ADDED" and obj["kind"] == "Pod":
            r = hub.reserve(
                rng.choice(PROPERTY_PROFILES), namespace="default", pod_name=obj["metadata"]["name"]
            )
            if isinstance(r, Reservation):
                held.append(r)
        elif roll < 0.4 and held:
            held.pop(rng.randrange(len(held))).release()
        hub.apply(kind, obj)
        service.apply(kind, obj)
        service.reservations.adopt(hub.reservations.held())
        assert service.availability(PROPERTY_PROFILES) == hub.availability(PROPERTY_PROFILES)
