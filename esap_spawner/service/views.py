"""The JSON the advertising service answers, built from plain data (no I/O).

Each function returns the body of one route as a dict whose shape the OpenAPI document
(``openapi.json`` next to this module) describes; the handlers only choose what the caller
may see and serialise the result.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from esap_spawner.site.quantity import parse_bytes, parse_quantity
from esap_spawner.spawn.options import query_string_keys

if TYPE_CHECKING:
    from esap_spawner.service.interfaces import AvailabilityLike
    from esap_spawner.site.model import Facility
    from esap_spawner.site.profiles import Profile

__all__ = [
    "API_VERSION",
    "esap_url",
    "facility_body",
    "iso_utc",
    "profile_body",
    "spawn_url",
]

API_VERSION = "1.0"
QueryStyle = Literal["opt", "plain"]
LAUNCH_TEMPLATE = "v2/git/{repo}/{ref}?urlpath=lab/tree/{filepath}"


def spawn_query(style: QueryStyle) -> str:
    """The deep-link template's query, in the style the running hub wants (``opt-profile=``
    for JupyterHub 6, ``profile=`` before)."""
    keys = query_string_keys(style)
    values = {"profile": "{profile}", "dataset": "{did}", "workflow": "{workflow}",
              "ref": "{ref}", "filepath": "{filepath}"}  # fmt: skip
    return "hub/spawn?" + "&".join(f"{keys[name]}={values[name]}" for name in values)


def iso_utc(timestamp: float | None) -> str | None:
    """``1767225600.5`` -> ``"2026-01-01T00:00:00.500Z"``; None stays None."""
    if timestamp is None:
        return None
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def hub_root(facility_url: str | None, hub_base_url: str) -> str:
    """Where ``hub/...`` links start: the public URL when known, else the hub's base path."""
    root = facility_url or hub_base_url or "/"
    return root if root.endswith("/") else root + "/"


def esap_url(root: str, *, prefix: str, hub_base_url: str) -> str:
    """The URL ESAP stores as this facility's ``url``: its Deploy button appends
    ``v2/git/...`` to it as it is, which must land on this service's launch route, so it is
    the hub's public URL plus the service's path below the hub's base URL (with the
    trailing ``/``): ``https://hub.example.org/services/esap/``."""
    base = hub_base_url if hub_base_url.endswith("/") else hub_base_url + "/"
    below = prefix[len(base) :] if prefix.startswith(base) else prefix.lstrip("/")
    return root + below


def spawn_url(profile_slug: str, *, root: str, style: QueryStyle = "plain") -> str:
    """The hub's deep link that opens the spawn page with this profile chosen."""
    key = query_string_keys(style)["profile"]
    return f"{root}hub/spawn?{key}={quote(profile_slug, safe='')}"


def facility_body(
    facility: Facility, *, root: str, prefix: str, launch_root: str, style: QueryStyle = "plain"
) -> dict[str, Any]:
    """``GET api/v1/facility``: ESAP's Facility fields plus what a portal needs to link.

    ``url`` is ``launch_root`` (see :func:`esap_url`), what ESAP must store; ``hub_url`` is
    the hub's own public URL."""
    api = f"{prefix}api/v1/"
    return {
        "name": facility.name,
        "description": facility.description,
        "url": launch_root,
        "hub_url": root,
        "facilitytype": "jupyterhub",
        "keywords": list(facility.keywords),
        "api_version": API_VERSION,
        "links": {
            "self": f"{api}facility",
            "profiles": f"{api}profiles",
            "profile": f"{api}profiles/{{slug}}",
            "locality": f"{api}locality",
            "openapi": f"{api}openapi.json",
            "options": f"{api}options",
            "esap_fixture": f"{api}esap/fixture",
            "health": f"{prefix}health",
            "metrics": f"{prefix}metrics",
        },
        "spawn_url_template": root + spawn_query(style),
        "launch_url_template": launch_root + LAUNCH_TEMPLATE,
    }


def _cpu(value: Any) -> float | None:
    if value is None:
        return None
    return float(parse_quantity(value))


def _memory(value: Any, value_bytes: int | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {
        "bytes": int(value_bytes) if value_bytes is not None else parse_bytes(value),
        "quantity": str(value),
    }


def resources_body(profile: Profile) -> dict[str, Any]:
    """CPU in cores, memory in bytes with the quantity as the site file wrote it, GPUs."""
    gpu = profile.gpu
    return {
        "cpu": {"guarantee": _cpu(profile.cpu_guarantee), "limit": _cpu(profile.cpu_limit)},
        "memory": {
            "guarantee": _memory(profile.memory_guarantee, profile.memory_guarantee_bytes),
            "limit": _memory(profile.memory_limit, profile.memory_limit_bytes),
        },
        "gpu": {
            "count": int(gpu.count),
            "resource": gpu.resource if gpu.count else None,
            "model": gpu.model if gpu.count else None,
        },
    }


def availability_body(availability: AvailabilityLike) -> dict[str, Any]:
    return {
        "status": availability.status,
        "can_start_now": availability.can_start_now,
        "fast_start": availability.fast_start,
        "running": availability.running,
        "max_servers": availability.max_servers,
        "estimated_start_seconds": availability.estimated_start_seconds,
    }


def profile_body(
    profile: Profile,
    availability: AvailabilityLike,
    *,
    root: str,
    with_groups: bool,
    style: QueryStyle = "plain",
) -> dict[str, Any]:
    """One profile as the API shows it; ``allowed_groups`` only for portal callers."""
    body: dict[str, Any] = {
        "slug": profile.slug,
        "display_name": profile.display_name,
        "description": profile.description,
        "resources": resources_body(profile),
        "image": profile.image,
        "hardware_capabilities": list(profile.hardware_capabilities),
        "availability": availability_body(availability),
        "spawn_url": spawn_url(profile.slug, root=root, style=style),
    }
    if with_groups:
        body["allowed_groups"] = sorted(profile.allowed_groups)
    return body


def profiles_body(
    profiles: Sequence[Profile],
    availability: Mapping[str, AvailabilityLike],
    *,
    as_of: float | None,
    stale: bool,
    root: str,
    with_groups: bool,
    message: str | None = None,
    style: QueryStyle = "plain",
) -> dict[str, Any]:
    """``GET api/v1/profiles``: every visible profile with its live availability."""
    body: dict[str, Any] = {
        "as_of": iso_utc(as_of),
        "stale": stale,
        "profiles": [
            profile_body(p, availability[p.slug], root=root, with_groups=with_groups, style=style)
            for p in profiles
        ],
    }
    if message:
        body["message"] = message
    return body
