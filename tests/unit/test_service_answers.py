"""Prepared answers and the caller cache of the advertising service (no I/O).

The property that matters: at every moment, the prepared answer of an audience equals what
rendering it from scratch would give (figures, ``as_of``, ``stale``, message), while it is
only rendered again when the cluster view changed.
"""

from __future__ import annotations

import gzip
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esap_spawner.capacity.model import ClusterModel
from esap_spawner.service.answers import accepts_gzip
from esap_spawner.service.auth import ANONYMOUS, Caller, CallerCache
from esap_spawner.service.expiring import ExpiringCache
from esap_spawner.service.state import ServiceState
from esap_spawner.service.views import profiles_body
from esap_spawner.site.model import parse_site
from esap_spawner.site.profiles import PROFILE_LABEL, may_use

SITE = {
    "facility": {"name": "Answers", "description": "tests", "url": "https://hub.example.org/"},
    "profiles": [
        {"slug": "small", "display_name": "Small", "cpu": {"guarantee": 1},
         "memory": {"guarantee": "2G"}, "max_servers": 6},
        {"slug": "radio", "display_name": "Radio", "cpu": {"guarantee": 2},
         "memory": {"guarantee": "4G"}, "allowed_groups": ["radio"]},
        {"slug": "both", "display_name": "Both", "cpu": {"guarantee": 4},
         "memory": {"guarantee": "8G"}, "allowed_groups": ["radio", "optical"]},
    ],
}  # fmt: skip

PORTAL = Caller("portal", "esap", scopes=frozenset({"custom:esap:read"}))


def user(*groups: str, admin: bool = False) -> Caller:
    return Caller("user", "u", frozenset(groups), admin)


class Clock:
    def __init__(self, now: float = 1_767_225_600.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def node(name: str, cpu: str = "8") -> dict[str, Any]:
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": {}},
        "spec": {},
        "status": {"allocatable": {"cpu": cpu, "memory": "64G", "pods": "110"}},
    }


def pod(uid: str, node_name: str | None, profile: str, cpu: str = "1") -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"resources": {"requests": {"cpu": cpu}}}]}
    if node_name:
        spec["nodeName"] = node_name
    return {
        "kind": "Pod",
        "metadata": {"uid": uid, "name": uid, "namespace": "hub",
                     "labels": {PROFILE_LABEL: profile}},
        "spec": spec,
        "status": {"phase": "Running"},
    }  # fmt: skip


def state_of(model: ClusterModel, monotonic: Clock | None = None) -> ServiceState:
    state = ServiceState(site=parse_site(SITE, source="test"), capacity=model, may_use=may_use)
    if monotonic is not None:
        state.answers.clock = monotonic
    return state


def fresh(state: ServiceState, caller: Caller) -> dict[str, Any]:
    """The listing rendered from scratch, as the handlers did per request before."""
    answers = state.answers
    audience = answers.audience(caller)
    availability = state.capacity.availability(
        audience.profiles, limited_threshold=state.limited_threshold
    )
    body = profiles_body(audience.profiles, availability, as_of=state.capacity.as_of,
                         stale=state.capacity.stale, root=answers.root,
                         with_groups=audience.with_groups, message=answers.message(),
                         style=state.query_style)  # fmt: skip
    return json.loads(json.dumps(body))


def test_callers_with_the_same_view_share_one_audience() -> None:
    state = state_of(ClusterModel())
    answers = state.answers
    slugs = lambda c: [p.slug for p in answers.audience(c).profiles]  # noqa: E731
    assert slugs(PORTAL) == ["small", "radio", "both"]
    assert answers.audience(PORTAL).with_groups
    assert slugs(user("radio")) == ["small", "radio", "both"]
    assert slugs(user("optical")) == ["small", "both"]
    assert slugs(user()) == slugs(ANONYMOUS) == ["small"]
    assert slugs(user(admin=True)) == ["small", "radio", "both"]
    # one audience per distinct view: the admin and a radio user see the same, no groups
    assert answers.audience(user(admin=True)) is answers.audience(user("radio"))
    assert answers.audience(user("radio", "optical")) is answers.audience(user("radio"))
    assert answers.audience(ANONYMOUS) is answers.audience(user("other"))
    assert answers.audience(PORTAL) is not answers.audience(user("radio"))
    assert not answers.audience(user("radio")).with_groups


def test_an_answer_is_made_again_only_when_its_inputs_change() -> None:
    clock, monotonic = Clock(), Clock(100.0)
    model = ClusterModel(clock=clock)
    model.replace_all([node("a")], [])
    state = state_of(model, monotonic)
    answers = state.answers
    audience = answers.audience(PORTAL)
    first = answers.listing(audience)
    assert answers.listing(audience) is first  # nothing changed: the same bytes
    assert answers.single(audience, "small") is answers.single(audience, "small")

    clock.now += 1
    model.apply("ADDED", pod("p1", "a", "small"))  # an event: made again, with its as_of
    second = answers.listing(audience)
    assert second is not first and second.etag != first.etag
    assert json.loads(second.body)["as_of"] == "2026-01-01T00:00:01.000Z"
    assert (
        json.loads(answers.single(audience, "small").body)["profile"]["availability"]["running"]
        == 1
    )

    model.watch_down("pods")
    watch_down = answers.listing(audience)
    assert watch_down is not second and json.loads(watch_down.body)["stale"] is False
    clock.now += model.stale_after + 1  # time alone turns the view stale: seen at once
    stale = answers.listing(audience)
    assert json.loads(stale.body)["stale"] is True
    assert "stale" in json.loads(stale.body)["message"]

    assert answers.listing(audience) is stale
    monotonic.now += answers.max_age  # the longest an answer is kept
    assert answers.listing(audience) is not stale

    state.cluster_note = "the Kubernetes configuration could not be loaded"
    assert json.loads(answers.listing(audience).body)["message"] == state.cluster_note


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), steps=st.integers(1, 80))
def test_prepared_answers_always_equal_a_fresh_rendering(seed: int, steps: int) -> None:
    rng = random.Random(seed)
    clock = Clock()
    model = ClusterModel(clock=clock)
    state = state_of(model, Clock())  # the answers' own clock stands still: no max_age
    callers = [PORTAL, user("radio"), user("optical"), ANONYMOUS]
    pods: list[dict[str, Any]] = []
    for i in range(steps):
        roll = rng.random()
        if roll < 0.1:
            model.replace_all([node("a"), node("b", "4")], pods)
        elif roll < 0.5 or not pods:
            pods.append(pod(f"p{i}", rng.choice(["a", "b", None]), rng.choice(["small", "radio"])))
            model.apply("ADDED", pods[-1])
        elif roll < 0.7:
            model.apply("DELETED", pods.pop(rng.randrange(len(pods))))
        elif roll < 0.8:
            (model.watch_down if rng.random() < 0.5 else model.watch_up)("pods")
        elif roll < 0.85:
            model.mark_unsynced()
        clock.now += rng.choice([0, 0.001, 1, 40])
        caller = rng.choice(callers)
        audience = state.answers.audience(caller)
        answer = state.answers.listing(audience)
        assert json.loads(answer.body) == fresh(state, caller)
        for slug in audience.slugs:
            one = json.loads(state.answers.single(audience, slug).body)  # type: ignore[union-attr]
            listed = next(p for p in json.loads(answer.body)["profiles"] if p["slug"] == slug)
            assert one["profile"] == listed and one["as_of"] == json.loads(answer.body)["as_of"]


def test_a_profile_the_audience_cannot_see_has_no_answer() -> None:
    state = state_of(ClusterModel())
    answers = state.answers
    assert answers.single(answers.audience(user()), "radio") is None
    assert answers.single(answers.audience(PORTAL), "nope") is None
    assert answers.single(answers.audience(PORTAL), "radio") is not None


def test_gzip_variant_decompresses_to_the_body_and_has_its_own_etag() -> None:
    state = state_of(ClusterModel())
    answer = state.answers.listing(state.answers.audience(PORTAL))
    assert gzip.decompress(answer.gzip) == answer.body
    assert answer.gzip is answer.gzip  # compressed once
    assert answer.gzip_etag != answer.etag and answer.gzip_etag.startswith(answer.etag[:-1])
    assert state.facility.body and json.loads(state.facility.body)["name"] == "Answers"


@pytest.mark.parametrize(
    "header, accepted",
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, GZIP;q=0.5", True),
        ("deflate, gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("x-gzip", True),
        ("*", True),
        ("identity", False),
        ("gzip;q=nonsense", False),
        ("gzipped", False),
    ],
)
def test_accepts_gzip(header: str | None, accepted: bool) -> None:
    assert accepts_gzip(header) is accepted


def test_caller_cache_keeps_callers_for_max_age_by_digest() -> None:
    clock = Clock(0.0)
    cache = CallerCache(300, clock=clock)
    alice = user("radio")
    assert cache.get("t-alice") is None
    cache.put("t-alice", alice)
    assert cache.get("t-alice") is alice
    assert cache.get("t-other") is None
    assert all(isinstance(k, bytes) and b"t-alice" not in k for k in cache.entries._entries)
    clock.now = 299.9
    assert cache.get("t-alice") is alice
    clock.now = 300.0
    assert cache.get("t-alice") is None


def test_caller_cache_is_bounded_expired_first_then_oldest() -> None:
    clock = Clock(0.0)
    cache = CallerCache(10, max_entries=3, clock=clock)
    cache.put("a", PORTAL)
    clock.now = 5
    cache.put("b", PORTAL)
    cache.put("c", PORTAL)
    clock.now = 11  # "a" expired
    cache.put("d", PORTAL)
    assert len(cache) == 3 and cache.get("b") and cache.get("c") and cache.get("d")
    cache.put("b", PORTAL)  # refreshed: now the newest
    cache.put("e", PORTAL)  # full, nothing expired: the oldest ("c") goes
    assert cache.get("c") is None and cache.get("b") and cache.get("e")
    off = CallerCache(0)
    off.put("a", PORTAL)
    assert off.get("a") is None
    with pytest.raises(ValueError, match="max_age"):
        CallerCache(-1)
    with pytest.raises(ValueError, match="max_entries"):
        ExpiringCache(1, max_entries=0)
