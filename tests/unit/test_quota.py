"""ResourceQuotas in the cluster model: what one server uses of each key, how many more the
quotas admit, and admission that holds quota for spawns whose pods are not counted yet."""

from __future__ import annotations

from typing import Any

import pytest

from esap_spawner.capacity.model import Refusal, Reservation
from esap_spawner.capacity.quota import Quota, quota_room, server_use
from esap_spawner.capacity.requirements import ProfileRequirements, intern_vector
from tests.harness.cluster_objects import PROFILE_LABEL, model_of, node, pod


def quota(hard: dict[str, str], used: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "kind": "ResourceQuota",
        "metadata": {"uid": f"q-{sorted(hard)}", "name": "hub", "namespace": "jhub"},
        "spec": {"hard": hard, **spec},
        "status": {"hard": hard, "used": used or {}},
    }


def server(
    cpu: str = "1", memory: str = "1G", limits: dict[str, str] | None = None
) -> ProfileRequirements:
    return ProfileRequirements.build(
        "small", requests={"cpu": cpu, "memory": memory}, limits=limits
    )


def room(hard: dict[str, str], used: dict[str, str], req: ProfileRequirements) -> int | None:
    found = Quota.from_object(quota(hard, used))
    assert found is not None
    return quota_room([found], req.requests, req.limits)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("pods", 1),
        ("count/pods", 1),
        ("requests.cpu", 500),
        ("cpu", 500),
        ("requests.memory", 10**9),
        ("limits.cpu", 2000),
        ("limits.memory", None),  # tracked but not set: the API server refuses the pod
        ("requests.nvidia.com/gpu", 0),
        ("services", 0),
        ("requests.storage", 0),
    ],
)
def test_what_one_server_uses_of_each_key(key: str, expected: int | None) -> None:
    req = server("500m", "1G", {"cpu": "2"})
    assert server_use(key, dict(req.requests), dict(req.limits)) == expected


@pytest.mark.parametrize(
    ("hard", "used", "expected"),
    [
        ({"pods": "5"}, {"pods": "3"}, 2),
        ({"pods": "5"}, {"pods": "6"}, 0),  # over (a quota lowered under its use)
        ({"requests.cpu": "3500m"}, {"requests.cpu": "1"}, 2),
        ({"requests.cpu": "4", "pods": "10"}, {"pods": "9"}, 1),
        ({"requests.memory": "10G"}, {"requests.memory": "0"}, 10),
        ({"limits.memory": "100G"}, {}, 0),  # the profile sets no memory limit
        ({"requests.nvidia.com/gpu": "2"}, {}, None),  # a CPU server uses no GPU
        ({"services": "1"}, {"services": "1"}, None),
    ],
)
def test_room_is_the_tightest_key(
    hard: dict[str, str], used: dict[str, str], expected: int | None
) -> None:
    assert room(hard, used, server("1", "1G", {"cpu": "2"})) == expected


def test_scoped_quotas_are_left_out() -> None:
    assert Quota.from_object(quota({"pods": "1"}, scopes=["BestEffort"])) is None
    scoped = quota({"pods": "1"}, scopeSelector={"matchExpressions": []})
    assert Quota.from_object(scoped) is None


def test_the_model_caps_fit_and_fast_by_the_quota_and_says_why() -> None:
    model = model_of([node("a", cpu="16", images=("img:1",))], [])
    req = ProfileRequirements.build(
        "small", requests={"cpu": "1", "memory": "1G"}, limits={"cpu": "2"}, image="img:1"
    )
    assert model.fit_count(req) == (16, 16)
    model.apply("ADDED", quota({"pods": "4", "limits.cpu": "5"}, {"pods": "1"}))
    assert model.fit_count(req) == (2, 2)  # limits.cpu: 5 // 2
    availability = model.availability([req])["small"]
    assert (availability.can_start_now, availability.fast_start) == (2, 2)

    model.apply("MODIFIED", quota({"pods": "4", "limits.cpu": "5"}, {"pods": "4"}))
    refused = model.reserve(req)
    assert isinstance(refused, Refusal) and refused.reason == "quota"
    assert "jhub/hub: pods 4 of 4 used, a server needs 1" in refused.message
    model.apply("DELETED", quota({"pods": "4", "limits.cpu": "5"}))
    assert model.fit_count(req) == (16, 16)


def test_a_reservation_holds_quota_until_its_pod_is_counted() -> None:
    model = model_of([node("a", cpu="16")], [])
    model.quotas.replace([quota({"pods": "2"}, {"pods": "0"})])
    req = server()
    first = model.reserve(req, namespace="jhub", pod_name="jupyter-a")
    second = model.reserve(req, namespace="jhub", pod_name="jupyter-b")
    assert isinstance(first, Reservation) and isinstance(second, Reservation)
    third = model.reserve(req)
    assert isinstance(third, Refusal)
    assert "pods 2 of 2 used" in third.message
    # the pod appears and the quota controller counts it: one slot is still held by `second`
    model.apply("ADDED", pod("p1", profile="small", namespace="jhub", name="jupyter-a"))
    model.apply("MODIFIED", quota({"pods": "2"}, {"pods": "1"}))
    assert model.quotas.room(req, model.reservations) == 0
    second.release()
    assert model.quotas.room(req, model.reservations) == 1


def test_a_profile_without_the_tracked_limit_cannot_start() -> None:
    model = model_of([node("a", cpu="16")], [])
    model.quotas.replace([quota({"limits.cpu": "10"})])
    refused = model.reserve(server())
    assert isinstance(refused, Refusal)
    assert "tracks limits.cpu, which the profile does not set" in refused.message
    assert model.availability([server()])["small"].can_start_now == 0


def test_site_profiles_carry_their_limits() -> None:
    from esap_spawner.capacity.requirements import requirements_of
    from esap_spawner.site.model import parse_site

    site = parse_site(
        {
            "facility": {"name": "q", "description": "", "url": "http://x/"},
            "profiles": [
                {"slug": "a", "cpu": {"guarantee": 1, "limit": 2},
                 "memory": {"guarantee": "1G", "limit": "2G"},
                 "gpu": {"count": 1, "resource": "nvidia.com/gpu"}},
                {"slug": "b", "cpu": {"guarantee": "500m"}},
            ],
        }
    )  # fmt: skip
    a, b = (requirements_of(p) for p in site.profiles)
    assert a.limits == intern_vector({"cpu": 2, "memory": 2 * 10**9, "nvidia.com/gpu": 1})
    assert b.limits == ()
    assert PROFILE_LABEL  # the helpers' label is the model's under test
