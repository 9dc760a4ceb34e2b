"""What a portal reads to wire this hub in: the spawn options, and ESAP's facility fixture.

- ``GET api/v1/options``: the JSON Schema of the user options, derived from their one
  declaration (:func:`esap_spawner.spawn.options.options_schema`), with ``profile`` narrowed
  to the profiles the caller may see (as dask-gateway's ``GET /api/v1/options``).
- ``GET api/v1/esap/fixture[?pk=N]``: this hub as the Django fixture ESAP loads its
  facilities from (``manage.py loaddata``): a JSON list with one
  ``{"model": "ida.facility", "pk": N, "fields": {name, description, url, facilitytype}}``.

:func:`fixture_entry` is the pure part, shared with ``esap-spawner esap-fixture``, which
builds one fixture from several hubs. ESAP's Facility holds ``name`` (at most 30
characters), ``description``, ``url`` and ``facilitytype`` (at most 240): a longer name or
description is cut with a warning, so the fixture always loads; a longer or missing ``url``
is refused, since a cut URL would send ESAP's Deploy button to a wrong address.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from esap_spawner.service.handlers import ApiError, BaseHandler
from esap_spawner.spawn.options import options_schema

__all__ = ["FIXTURE_MODEL", "LIMITS", "FixtureError", "fixture_entry", "portal_routes"]

log = logging.getLogger(__name__)

FIXTURE_MODEL = "ida.facility"
LIMITS = {"name": 30, "description": 240, "url": 240, "facilitytype": 240}
MAX_PK = 2**31 - 1


class FixtureError(ValueError):
    """A facility that cannot become a valid fixture entry."""


def _cut(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def fixture_entry(facility: Mapping[str, Any], pk: int) -> tuple[dict[str, Any], list[str]]:
    """ESAP's fixture entry for a facility (``GET api/v1/facility``'s answer), and a
    warning for each field that had to be cut."""
    if not isinstance(pk, int) or isinstance(pk, bool) or not 1 <= pk <= MAX_PK:
        raise FixtureError(f"pk must be a whole number from 1 to {MAX_PK}, not {pk!r}")
    url = facility.get("url")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise FixtureError(f"the facility has no http(s) url: {url!r}")
    if len(url) > LIMITS["url"]:
        raise FixtureError(
            f"the facility url is {len(url)} characters; ESAP stores at most {LIMITS['url']}"
        )
    fields: dict[str, str] = {}
    warnings = []
    for key in ("name", "description"):
        value = facility.get(key)
        text = value if isinstance(value, str) else ""
        fields[key] = _cut(text, LIMITS[key])
        if fields[key] != text:
            warnings.append(
                f"{key} {text!r} is longer than {LIMITS[key]} characters: cut to {fields[key]!r}"
            )
    if not fields["name"]:
        raise FixtureError("the facility has no name")
    fields["url"] = url
    fields["facilitytype"] = "jupyterhub"
    return {"model": FIXTURE_MODEL, "pk": pk, "fields": fields}, warnings


class OptionsHandler(BaseHandler):
    """``GET api/v1/options``: the user options' JSON Schema for this caller."""

    route = "options"

    async def get(self) -> None:
        caller = await self.authenticate()
        answers = self.state.answers
        audience = answers.audience(caller)
        self.write_prepared(answers.once(audience, "options", options_schema))


class FixtureHandler(BaseHandler):
    """``GET api/v1/esap/fixture[?pk=N]``: this hub as ESAP's facility fixture."""

    route = "esap_fixture"

    async def get(self) -> None:
        await self.authenticate()
        raw = self.get_query_argument("pk", "1")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_PK:
            raise ApiError(400, "invalid_pk", f"pk must be a whole number from 1 to {MAX_PK}")
        try:
            entry, warnings = fixture_entry(self.state.facility.data, int(raw))
        except FixtureError as exc:
            raise ApiError(409, "facility_not_loadable", str(exc)) from None
        for warning in warnings:  # the site file's own limits keep name and description short
            log.warning("esap fixture: %s", warning)
        self.write_json([entry])


def portal_routes(prefix: str) -> list[tuple[str, type[BaseHandler]]]:
    api = prefix + "api/v1/"
    return [(api + "options", OptionsHandler), (api + "esap/fixture", FixtureHandler)]
