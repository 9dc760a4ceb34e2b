"""The spawn form: the profiles a user may use, with their resources and live availability,
then the other options as declared in :mod:`esap_spawner.spawn.options`, and, for a link
that asks to run a workflow or mount datasets, the summary to confirm
(:mod:`esap_spawner.spawn.confirm`). Rendered from ``templates/form.html`` with autoescape;
pure (the spawner gathers what it shows).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from esap_spawner.site.profiles import Profile, default_profile
from esap_spawner.spawn.options import OPTIONS, form_fields

__all__ = ["render_form", "resource_summary"]

_templates = Environment(
    loader=PackageLoader("esap_spawner.spawn", "templates"),
    autoescape=select_autoescape(["html"]),
)

_UNITS = {"Ki": "KiB", "Mi": "MiB", "Gi": "GiB", "Ti": "TiB", "k": "kB", "M": "MB", "G": "GB"}
_UNIT_QUANTITY = re.compile(r"^([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G)$")


def _memory(quantity: str | None) -> str | None:
    """A memory quantity as the administrator wrote it, in words: ``4Gi`` -> ``4 GiB``."""
    if quantity is None:
        return None
    match = _UNIT_QUANTITY.match(str(quantity))
    return f"{match[1]} {_UNITS[match[2]]}" if match else f"{quantity} bytes"


def resource_summary(profile: Profile) -> str:
    """What a server of this profile gets, in a few words: ``1-2 CPU, 1 GiB-2 GiB, 1 GPU``."""

    def span(low: str | None, high: str | None) -> str:
        if low and high and low != high:
            return f"{low} to {high}"
        return high or low or "?"

    def cores(value: float | None) -> str | None:
        return None if value is None else f"{value:g}"

    parts = [
        f"{span(cores(profile.cpu_guarantee), cores(profile.cpu_limit))} CPU",
        f"{span(_memory(profile.memory_guarantee), _memory(profile.memory_limit))} memory",
    ]
    if profile.gpu.count:
        model = f" {profile.gpu.model}" if profile.gpu.model else ""
        parts.append(f"{profile.gpu.count}{model} GPU")
    return ", ".join(parts)


def render_form(
    profiles: Sequence[Profile],
    availability: Mapping[str, Any] | None,
    *,
    chosen: Mapping[str, Any],
    confirm: Mapping[str, Any] | None = None,
) -> str:
    """The form's HTML: ``chosen`` prefills the fields and checks its profile (else the
    default, else the first: a radio group shows one choice checked), ``confirm`` is the
    summary of a link waiting for the user's Start."""
    selected = chosen.get("profile")
    if selected not in {p.slug for p in profiles}:
        preselected = default_profile(profiles) or next(iter(profiles), None)
        selected = preselected.slug if preselected is not None else None
    return _templates.get_template("form.html").render(
        profiles=[
            {
                "profile": p,
                "summary": resource_summary(p),
                "availability": (availability or {}).get(p.slug),
            }
            for p in profiles
        ],
        profile_option=OPTIONS[0],
        selected=selected,
        fields=form_fields(chosen),
        confirm=confirm,
    )
