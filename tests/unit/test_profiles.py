"""Profiles: golden KubeSpawner profile_list entries, access by group, server requests."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from esap_spawner.site.model import parse_site
from esap_spawner.site.profiles import (
    PROFILE_LABEL,
    Gpu,
    Profile,
    default_profile,
    kubespawner_profile,
    may_use,
    visible_profiles,
)

SITE = parse_site(
    """
facility: {name: Test Hub, url: "https://hub.example.org/"}
profiles:
  - slug: small
    display_name: "Small: 2 CPU, 4 GB"
    description: General Python.
    default: true
    cpu: {guarantee: 500m, limit: 2}
    memory: {guarantee: 1G, limit: 4G}
    image: quay.io/jupyter/scipy-notebook:2026-01-01
  - slug: gpu
    display_name: "GPU: 1 A100"
    cpu: {guarantee: 4, limit: 8}
    memory: {guarantee: 16Gi, limit: 32Gi}
    gpu: {count: 1, resource: nvidia.com/gpu, model: A100}
    image: quay.io/jupyter/pytorch-notebook:cuda12-2026-01-01
    node_selector: {esap.escape.eu/node-pool: gpu}
    tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
    allowed_groups: [gpu-users]
    max_servers: 4
  - slug: tuned
    cpu: {limit: 1}
    kubespawner_override:
      cpu_limit: 1.5
      image: registry.example.org/tuned:1
      extra_labels: {team: radio}
      node_selector: {disk: ssd}
      environment: {OMP_NUM_THREADS: "1"}
      start_timeout: 600
  - slug: bare
"""
)


def test_cpu_profile_golden() -> None:
    assert kubespawner_profile(SITE.profile("small")) == {
        "display_name": "Small: 2 CPU, 4 GB",
        "slug": "small",
        "description": "General Python.",
        "default": True,
        "kubespawner_override": {
            "cpu_guarantee": 0.5,
            "cpu_limit": 2.0,
            "mem_guarantee": 1_000_000_000,
            "mem_limit": 4_000_000_000,
            "image": "quay.io/jupyter/scipy-notebook:2026-01-01",
            "extra_labels": {PROFILE_LABEL: "small"},
        },
    }


def test_gpu_profile_golden() -> None:
    assert kubespawner_profile(SITE.profile("gpu")) == {
        "display_name": "GPU: 1 A100",
        "slug": "gpu",
        "description": "",
        "default": False,
        "kubespawner_override": {
            "cpu_guarantee": 4.0,
            "cpu_limit": 8.0,
            "mem_guarantee": 16 * 2**30,
            "mem_limit": 32 * 2**30,
            "extra_resource_limits": {"nvidia.com/gpu": "1"},
            "extra_resource_guarantees": {"nvidia.com/gpu": "1"},
            "image": "quay.io/jupyter/pytorch-notebook:cuda12-2026-01-01",
            "node_selector": {"esap.escape.eu/node-pool": "gpu"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "extra_labels": {PROFILE_LABEL: "gpu"},
        },
    }


def test_admin_override_is_merged_last() -> None:
    assert kubespawner_profile(SITE.profile("tuned"))["kubespawner_override"] == {
        "cpu_limit": 1.5,  # replaces ours
        "image": "registry.example.org/tuned:1",
        "extra_labels": {PROFILE_LABEL: "tuned", "team": "radio"},  # merged one level
        "node_selector": {"disk": "ssd"},
        "environment": {"OMP_NUM_THREADS": "1"},
        "start_timeout": 600,
    }


def test_profile_without_resources_still_labels_its_pods() -> None:
    assert kubespawner_profile(SITE.profile("bare")) == {
        "display_name": "bare",
        "slug": "bare",
        "description": "",
        "default": False,
        "kubespawner_override": {"extra_labels": {PROFILE_LABEL: "bare"}},
    }


def test_entry_shares_nothing_with_the_profile() -> None:
    profile = SITE.profile("gpu")
    entry = kubespawner_profile(profile)
    entry["kubespawner_override"]["node_selector"]["x"] = "y"
    entry["kubespawner_override"]["tolerations"][0]["key"] = "changed"
    tuned = kubespawner_profile(SITE.profile("tuned"))
    tuned["kubespawner_override"]["environment"]["A"] = "B"
    assert profile.node_selector == {"esap.escape.eu/node-pool": "gpu"}
    assert profile.tolerations[0]["key"] == "nvidia.com/gpu"
    assert SITE.profile("tuned").kubespawner_override["environment"] == {"OMP_NUM_THREADS": "1"}


def test_memory_bytes_are_what_kubespawner_keeps() -> None:
    """KubeSpawner's ByteSpecification reads "4G" as 4 GiB; we hand it bytes, so the pod
    gets the Kubernetes meaning of the site file's quantity."""
    from jupyterhub.traitlets import ByteSpecification
    from traitlets import HasTraits

    class Holder(HasTraits):
        mem_limit = ByteSpecification(None, allow_none=True)

    holder = Holder()
    holder.mem_limit = kubespawner_profile(SITE.profile("small"))["kubespawner_override"][
        "mem_limit"
    ]
    assert holder.mem_limit == 4 * 10**9


USERS: list[tuple[str, list[str], bool, dict[str, bool]]] = [
    # who, groups, admin, {slug: may use}
    ("plain user", [], False, {"small": True, "gpu": False, "tuned": True}),
    ("in gpu-users", ["gpu-users"], False, {"small": True, "gpu": True, "tuned": True}),
    ("in another group", ["radio"], False, {"small": True, "gpu": False, "tuned": True}),
    ("in several groups", ["radio", "gpu-users"], False, {"gpu": True}),
    ("admin without groups", [], True, {"small": True, "gpu": True, "tuned": True}),
]


@pytest.mark.parametrize(
    ("groups", "admin", "expected"), [u[1:] for u in USERS], ids=[u[0] for u in USERS]
)
def test_may_use(groups: list[str], admin: bool, expected: dict[str, bool]) -> None:
    for slug, allowed in expected.items():
        assert may_use(SITE.profile(slug), groups=groups, is_admin=admin) is allowed, slug


@pytest.mark.parametrize(
    ("groups", "admin", "slugs"),
    [
        ([], False, ("small", "tuned", "bare")),
        (["gpu-users"], False, ("small", "gpu", "tuned", "bare")),
        ([], True, ("small", "gpu", "tuned", "bare")),
    ],
)
def test_visible_profiles_keep_site_order(
    groups: list[str], admin: bool, slugs: tuple[str, ...]
) -> None:
    visible = visible_profiles(SITE.profiles, groups=groups, is_admin=admin)
    assert tuple(p.slug for p in visible) == slugs


def test_group_generator_is_read_once() -> None:
    groups = (g for g in ["gpu-users"])
    visible = visible_profiles(SITE.profiles, groups=groups, is_admin=False)
    assert [p.slug for p in visible] == ["small", "gpu", "tuned", "bare"]


@pytest.mark.parametrize(
    ("slug", "expected"),
    [
        ("small", {"cpu": Decimal("0.5"), "memory": 10**9}),
        ("gpu", {"cpu": Decimal(4), "memory": 16 * 2**30, "nvidia.com/gpu": 1}),
        # the admin's override counts: cpu_limit 1.5 replaces the site's 1
        ("tuned", {"cpu": Decimal("1.5"), "memory": 0}),
        ("bare", {"cpu": Decimal(0), "memory": 0}),
    ],
)
def test_server_requests(slug: str, expected: dict[str, Any]) -> None:
    assert SITE.profile(slug).spec.requests == expected


def test_server_requests_read_admin_overrides_as_kubespawner_does() -> None:
    profile = Profile(
        slug="x",
        display_name="x",
        cpu_limit=2,
        memory_limit="1G",
        memory_limit_bytes=10**9,
        kubespawner_override={
            "mem_guarantee": "2G",  # JupyterHub reads this as 2 GiB
            "cpu_guarantee": 0,  # 0 means unset to KubeSpawner: the limit is the request
            "extra_resource_guarantees": {"example.org/fpga": "2"},
        },
    )
    assert profile.spec.requests == {
        "cpu": Decimal(2),
        "memory": 2 * 2**30,
        "example.org/fpga": 2,
    }
    assert profile.spec.limits == {"cpu": Decimal(2), "memory": 10**9}


def test_one_spec_per_profile_for_the_pod_and_the_capacity_model() -> None:
    """Derived once; the pod's overrides and the model's requirements both come from it,
    the administrator's override of the placement and the image included."""
    from esap_spawner.capacity.requirements import requirements_of

    tuned = SITE.profile("tuned")
    assert tuned.spec is tuned.spec
    assert kubespawner_profile(tuned)["kubespawner_override"] == tuned.spec.override
    assert (tuned.spec.node_selector, tuned.spec.image) == (
        {"disk": "ssd"},
        "registry.example.org/tuned:1",
    )
    req = requirements_of(tuned)
    assert (req.selector_dict, req.image) == ({"disk": "ssd"}, "registry.example.org/tuned:1")
    assert dict(req.requests)["cpu"] == 1500  # millicores, from the override's cpu_limit
    # a key an override sets to None leaves KubeSpawner's selector, and the model's too
    unpinned = Profile(
        slug="u",
        display_name="u",
        node_selector={"pool": "user", "zone": "a"},
        kubespawner_override={"node_selector": {"zone": None}},
    )
    assert unpinned.spec.override["node_selector"] == {"pool": "user", "zone": None}
    assert requirements_of(unpinned).selector_dict == {"pool": "user"}


def test_profiles_hash_and_compare() -> None:
    a = Profile(slug="a", display_name="A", node_selector={"x": "y"}, gpu=Gpu(1, "nvidia.com/gpu"))
    b = Profile(slug="a", display_name="A", node_selector={"x": "y"}, gpu=Gpu(1, "nvidia.com/gpu"))
    assert a == b and len({a, b}) == 1


def test_default_profile_is_the_marked_one_else_the_only_one() -> None:
    small, gpu, tuned, _ = SITE.profiles
    assert default_profile(SITE.profiles) is small
    assert default_profile((gpu, small)) is small  # marked wins wherever it stands
    assert default_profile((tuned,)) is tuned  # the only one
    assert default_profile((gpu, tuned)) is None  # two, none marked: the caller chooses
    assert default_profile(()) is None
    assert SITE.default_profile is small
