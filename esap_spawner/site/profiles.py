"""Compute profiles: the typed model, KubeSpawner ``profile_list`` entries, and access.

A :class:`Profile` is built by :mod:`esap_spawner.site.model` from a validated site file, so every
value in it is already checked (quantities parse, limits are not below guarantees, a GPU has
a resource name). Everything here is a pure function over that model:

- :attr:`Profile.spec` (a :class:`ServerSpec`, derived once per profile by
  :func:`server_spec`) is what one server of the profile gets, the administrator's
  ``kubespawner_override`` merged in: KubeSpawner's overrides, and the requests, limits,
  placement and image read from them. The pod builder (:func:`kubespawner_profile`, one
  KubeSpawner ``profile_list`` entry) and the capacity model
  (:func:`esap_spawner.capacity.requirements.requirements_of`) both read it, so they never
  disagree on what a server of a profile is;
- :func:`may_use` / :func:`visible_profiles` decide who may start which profile
  (``allowed_groups`` empty means everyone; admins may use every profile);
- :func:`default_profile` is the profile a spawn gets when it names none.

Memory is handed to KubeSpawner as a whole number of bytes, never as the site file's
string: JupyterHub's ``ByteSpecification`` reads ``"4G"`` as 4 GiB, while Kubernetes (and the
site file) read it as 4 * 10**9 bytes. Passing bytes keeps one meaning everywhere.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import Any

from esap_spawner.site.quantity import parse_bytes, parse_quantity

PROFILE_LABEL = "esap.escape.eu/profile"
"""Pod label carrying the profile slug; the cluster model counts running servers by it."""


@dataclass(frozen=True)
class Gpu:
    """GPUs of a profile: ``count`` devices of the extended resource ``resource``."""

    count: int = 0
    resource: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class Profile:
    """One compute profile from the site file, with its defaults filled in.

    ``memory_guarantee`` / ``memory_limit`` keep the quantity as the site file wrote it
    (``"4Gi"``); ``*_bytes`` hold the parsed value. CPU is in cores. Mappings and lists
    (``node_selector``, ``tolerations``, ``kubespawner_override``) are plain containers:
    treat them as read-only; :func:`kubespawner_profile` hands out deep copies.
    """

    slug: str
    display_name: str
    description: str = ""
    default: bool = False
    cpu_guarantee: float | None = None
    cpu_limit: float | None = None
    memory_guarantee: str | None = None
    memory_limit: str | None = None
    memory_guarantee_bytes: int | None = None
    memory_limit_bytes: int | None = None
    gpu: Gpu = field(default_factory=Gpu)
    image: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    allowed_groups: tuple[str, ...] = ()
    max_servers: int | None = None
    hardware_capabilities: tuple[str, ...] = ()
    kubespawner_override: Mapping[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:
        # Profiles hold dicts, so the generated hash would fail; equal profiles share
        # their slug and display name, which is enough for sets and dict keys.
        return hash((self.slug, self.display_name))

    @cached_property
    def spec(self) -> ServerSpec:
        """What one server of this profile gets (:func:`server_spec`), derived once."""
        return server_spec(self)


@dataclass(frozen=True)
class ServerSpec:
    """What one server of a profile gets, the administrator's ``kubespawner_override``
    merged in (treat the mappings as read-only).

    ``override`` is KubeSpawner's override dict (see :func:`kubespawner_profile`);
    ``requests`` and ``limits`` are read from it: ``cpu`` in cores (exact
    :class:`~decimal.Decimal`), ``memory`` in bytes (as JupyterHub reads an override, so
    ``"4G"`` there is 4 GiB), each extended resource (GPUs) in devices. A request is the
    guarantee when set, else the limit (Kubernetes defaults a request to its limit), else 0;
    ``limits`` holds only the limits that are set (what a ResourceQuota's ``limits.*`` keys
    count). ``node_selector`` leaves out the keys an override removes (set to ``None``).
    """

    override: Mapping[str, Any]
    requests: Mapping[str, Decimal | int]
    limits: Mapping[str, Decimal | int]
    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, Any], ...]
    image: str | None


def server_spec(profile: Profile) -> ServerSpec:
    """Derive what one server of ``profile`` gets (use :attr:`Profile.spec`: it is kept)."""
    override = _override(profile)
    node_selector = override.get("node_selector") or {}
    return ServerSpec(
        override=override,
        requests=_requests(override),
        limits=_limits(override),
        node_selector={k: v for k, v in node_selector.items() if v is not None},
        tolerations=tuple(dict(t) for t in override.get("tolerations") or ()),
        image=override.get("image"),
    )


def kubespawner_profile(profile: Profile) -> dict[str, Any]:
    """One KubeSpawner ``profile_list`` entry for ``profile``, from its :attr:`~Profile.spec`.

    The result shares nothing with ``profile``: KubeSpawner may update it in place.
    """
    return {
        "display_name": profile.display_name,
        "slug": profile.slug,
        "description": profile.description,
        "default": profile.default,
        "kubespawner_override": copy.deepcopy(dict(profile.spec.override)),
    }


def _override(profile: Profile) -> dict[str, Any]:
    """KubeSpawner's override for ``profile``.

    It holds, when set in the profile: ``cpu_guarantee`` and
    ``cpu_limit`` (floats, cores), ``mem_guarantee`` and ``mem_limit`` (ints, bytes), the GPU
    as ``extra_resource_limits`` and ``extra_resource_guarantees`` (``{resource: "count"}``;
    Kubernetes needs both equal for extended resources), ``image``, ``node_selector``,
    ``tolerations``, and ``extra_labels`` with :data:`PROFILE_LABEL`. Empty node selectors
    and tolerations are left out, so the hub's own settings apply. The administrator's
    ``kubespawner_override`` is merged last: a dict value is merged one level into ours
    (as KubeSpawner merges dict traits; ``None`` values are kept, KubeSpawner then removes
    that key), anything else replaces ours. Shares nothing with ``profile``.
    """
    override: dict[str, Any] = {}
    if profile.cpu_guarantee is not None:
        override["cpu_guarantee"] = float(profile.cpu_guarantee)
    if profile.cpu_limit is not None:
        override["cpu_limit"] = float(profile.cpu_limit)
    if profile.memory_guarantee_bytes is not None:
        override["mem_guarantee"] = int(profile.memory_guarantee_bytes)
    if profile.memory_limit_bytes is not None:
        override["mem_limit"] = int(profile.memory_limit_bytes)
    if profile.gpu.count > 0 and profile.gpu.resource:
        override["extra_resource_limits"] = {profile.gpu.resource: str(profile.gpu.count)}
        override["extra_resource_guarantees"] = {profile.gpu.resource: str(profile.gpu.count)}
    if profile.image:
        override["image"] = profile.image
    if profile.node_selector:
        override["node_selector"] = dict(profile.node_selector)
    if profile.tolerations:
        override["tolerations"] = [dict(t) for t in profile.tolerations]
    override["extra_labels"] = {PROFILE_LABEL: profile.slug}

    for key, value in copy.deepcopy(dict(profile.kubespawner_override)).items():
        ours = override.get(key)
        if isinstance(value, dict) and isinstance(ours, dict):
            override[key] = {**ours, **value}
        else:
            override[key] = value
    return override


def default_profile(profiles: Sequence[Profile]) -> Profile | None:
    """The profile a spawn gets when it names none: the first of ``profiles`` marked
    ``default``, else the only one, else None (the caller must choose).

    The one rule for the site (:attr:`~esap_spawner.site.model.Site.default_profile`), the
    options validator (over the profiles a user may use) and the form's preselection.
    """
    marked = next((p for p in profiles if p.default), None)
    if marked is not None:
        return marked
    return profiles[0] if len(profiles) == 1 else None


def may_use(profile: Profile, *, groups: Iterable[str], is_admin: bool) -> bool:
    """Whether a user in ``groups`` may start ``profile``.

    Admins may use every profile; a profile without ``allowed_groups`` is open to everyone;
    otherwise the user needs at least one of its groups.
    """
    if is_admin or not profile.allowed_groups:
        return True
    return not set(profile.allowed_groups).isdisjoint(groups)


def visible_profiles(
    profiles: Iterable[Profile], *, groups: Iterable[str], is_admin: bool
) -> tuple[Profile, ...]:
    """The profiles a user may start, in site-file order."""
    group_set = frozenset(groups)
    return tuple(p for p in profiles if may_use(p, groups=group_set, is_admin=is_admin))


def _requests(override: Mapping[str, Any]) -> dict[str, Decimal | int]:
    cpu = _first_set(override, "cpu_guarantee", "cpu_limit")
    memory = _first_set(override, "mem_guarantee", "mem_limit")
    requests: dict[str, Decimal | int] = {
        "cpu": parse_quantity(cpu) if cpu is not None else Decimal(0),
        "memory": _hub_bytes(memory) if memory is not None else 0,
    }
    extra = {
        **(override.get("extra_resource_limits") or {}),
        **(override.get("extra_resource_guarantees") or {}),
    }
    for resource, count in extra.items():
        if count is not None:
            requests[resource] = parse_bytes(count)
    return requests


def _limits(override: Mapping[str, Any]) -> dict[str, Decimal | int]:
    limits: dict[str, Decimal | int] = {}
    cpu = _first_set(override, "cpu_limit")
    if cpu is not None:
        limits["cpu"] = parse_quantity(cpu)
    memory = _first_set(override, "mem_limit")
    if memory is not None:
        limits["memory"] = _hub_bytes(memory)
    for resource, count in (override.get("extra_resource_limits") or {}).items():
        if count is not None:
            limits[resource] = parse_bytes(count)
    return limits


def _first_set(override: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = override.get(key)
        if value:  # KubeSpawner treats 0 and None as "not set"
            return value
    return None


_HUB_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _hub_bytes(value: Any) -> int:
    """Bytes as JupyterHub's ``ByteSpecification`` reads them: ints as they are, and a
    K/M/G/T suffix in powers of 1024 (so an override of ``"4G"`` means 4 GiB)."""
    if isinstance(value, int | float):
        return int(value)
    text = str(value)
    if text[-1:] in _HUB_UNITS:
        return int(float(text[:-1]) * _HUB_UNITS[text[-1]])
    return parse_bytes(text)


def profile_slugs(profiles: Sequence[Profile]) -> str:
    """``"a, b, c"``: the slugs of ``profiles`` for messages."""
    return ", ".join(p.slug for p in profiles)
