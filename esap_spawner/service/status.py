"""The service's root page (``GET <prefix>``, e.g. ``/services/esap/``): this hub, now.

For users and administrators: the facility, each profile with its live availability, the
cluster view's age, the staging requests in flight, and links to the API. The profiles and
figures are the API's own: the page renders the prepared ``api/v1/profiles`` data of the
caller's audience (:mod:`esap_spawner.service.answers`), so the page and the API never
disagree. A small script fetches the page again every :data:`REFRESH_SECONDS` and swaps in
its live part; without scripts it is a snapshot. Rendered by Jinja with autoescape.

Who sees what, as for the API: a request with a token is judged like an API call. A browser
signs in through the hub (OAuth, :class:`jupyterhub.services.auth.HubOAuth`) when the
service runs under JupyterHub, and sees the profiles that user may start; the hub lists the
service in its Services menu (it has a URL) and this page is what opens there. Without a
hub (a token file), a browser sees the anonymous view when anonymous access is on, else a
page that says how to call the API instead. Staging rows (which datasets) are shown to
admins and portals only; others see the totals.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from tornado import web

from esap_spawner.service.auth import ANONYMOUS, AuthError, Caller, caller_from_model
from esap_spawner.service.handlers import ApiError, BaseHandler
from esap_spawner.service.history import SpawnHistory
from esap_spawner.site.profiles import Profile
from esap_spawner.site.quantity import format_bytes
from esap_spawner.spawn.form import resource_summary

__all__ = ["REFRESH_SECONDS", "OAuthCallbackHandler", "StatusPageHandler", "status_context"]

REFRESH_SECONDS = 15

_templates = Environment(
    loader=PackageLoader("esap_spawner.service", "templates"),
    autoescape=select_autoescape(["html"]),
)


def _duration(seconds: float) -> str:
    """``42 s``, ``7 min``, ``3.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _clock(timestamp: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(timestamp))


def _profile_row(profile: Profile, p: Mapping[str, Any]) -> dict[str, Any]:
    """One table row: the API's figures for ``p``, the form's words for its resources."""
    a = p["availability"]
    running = "?" if a["running"] is None else str(a["running"])
    if a["max_servers"] is not None:
        running += f" of {a['max_servers']}"
    start = a["estimated_start_seconds"]
    return {
        "slug": p["slug"],
        "display_name": p["display_name"],
        "description": p["description"],
        "capabilities": ", ".join(p["hardware_capabilities"]),
        "resources": resource_summary(profile),
        "image": p["image"] or "",
        "groups": ", ".join(p.get("allowed_groups") or ()),
        "status": a["status"],
        "can_start_now": "?" if a["can_start_now"] is None else a["can_start_now"],
        "fast_start": a["fast_start"],
        "running": running,
        "start": "-" if start is None else _duration(start),
        "spawn_url": p["spawn_url"],
    }


def _view(
    listing: Mapping[str, Any], *, age: float | None, now: float, as_of: float | None
) -> dict[str, Any]:
    message = listing.get("message")
    if as_of is not None:
        changed = f"last change seen {_duration(max(0.0, now - as_of))} ago, at {_clock(as_of)}"
    else:
        changed = "nothing seen yet"
    if message:
        return {
            "warn": True,
            "text": f"{message[0].upper()}{message[1:]} ({changed}).",
            "age": None if age is None else _duration(age),
        }
    connected = "the watches are connected" if not age else "a watch is reconnecting"
    return {
        "warn": False,
        "text": f"Live availability: {connected}; {changed}.",
        "age": _duration(age or 0.0),
    }


def _staging(history: SpawnHistory | None, *, detail: bool, now: float) -> dict[str, Any]:
    if history is None:
        return {"text": "Not shown: the service has no database (ESAPService.db_url).", "rows": []}
    if history.read_at is None:
        return {"text": "Not read from the database yet.", "rows": []}
    when = f"as of {_clock(history.read_at)}"
    staging = history.staging
    if not staging:
        return {"text": f"None right now ({when}).", "rows": []}
    files = (sum(s.files_done for s in staging), sum(s.files_total for s in staging))
    size = (sum(s.bytes_done for s in staging), sum(s.bytes_total for s in staging))
    text = (
        f"{len(staging)} request{'s' if len(staging) > 1 else ''} in flight: {files[0]} of"
        f" {files[1]} files, {format_bytes(size[0])} of {format_bytes(size[1])} ({when})."
    )
    rows = (
        [
            {
                "did": s.did,
                "state": s.state or "-",
                "files": f"{s.files_done} / {s.files_total}",
                "bytes": f"{format_bytes(s.bytes_done)} / {format_bytes(s.bytes_total)}",
                "age": _duration(max(0.0, now - s.started)),
            }
            for s in staging
        ]
        if detail
        else []
    )
    return {"text": text, "rows": rows}


def status_context(
    *,
    facility: Any,
    profiles: Sequence[Profile],
    listing: Mapping[str, Any],
    caller: Caller,
    history: SpawnHistory | None,
    view_age: float | None,
    as_of: float | None,
    hub_url: str,
    prefix: str,
    now: float,
) -> dict[str, Any]:
    """What the template shows, from plain data: ``listing`` is the API's body for the
    caller's audience, ``profiles`` the same profiles (in the same order) from the site."""
    notes = {
        "portal": "every profile, with the groups that may use it",
        "anonymous": "the profiles open to everyone",
    }
    api = f"{prefix}api/v1/"
    return {
        "facility": facility,
        "hub_url": hub_url,
        "who": caller.name if caller.kind != "anonymous" else None,
        "audience_note": notes.get(caller.kind, "the profiles you may start"),
        "view": _view(listing, age=view_age, now=now, as_of=as_of),
        "profiles": [
            _profile_row(profile, p)
            for profile, p in zip(profiles, listing["profiles"], strict=True)
        ],
        "staging": _staging(history, detail=caller.is_portal or caller.is_admin, now=now),
        "api": {
            "profiles": f"{api}profiles",
            "facility": f"{api}facility",
            "openapi": f"{api}openapi.json",
            "health": f"{prefix}health",
        },
        "refresh": REFRESH_SECONDS,
        "xsrf_token": "",  # the handler's, when a browser signed in through the hub
    }


def render_status(context: Mapping[str, Any]) -> str:
    return _templates.get_template("status.html").render(**context)


class StatusPageHandler(HubOAuthenticated, BaseHandler):
    """``GET <prefix>``: the page (see the module docstring)."""

    route = "status"

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")

    @property
    def hub_auth(self) -> Any:  # HubOAuthenticated's, from the service's state
        return self.state.browser_auth

    async def get(self) -> None:
        caller = await self.page_caller()
        if caller is None:  # sent to the hub to sign in
            return
        state = self.state
        answers = state.answers
        audience = answers.audience(caller)
        context = status_context(
            facility=state.site.facility,
            profiles=audience.profiles,
            listing=answers.listing(audience).data,
            caller=caller,
            history=state.history,
            view_age=state.capacity.view_age_seconds(),
            as_of=state.capacity.as_of,
            hub_url=answers.root,
            prefix=state.prefix,
            now=time.time(),
        )
        # for the page's own refresh requests, which carry the sign-in cookie
        context["xsrf_token"] = self.xsrf_token.decode() if state.browser_auth else ""
        self.finish(render_status(context))

    async def page_caller(self) -> Caller | None:
        """The caller: by token like the API, else the hub's sign-in (None: redirected)."""
        state = self.state
        if self.request.headers.get("Authorization"):
            return await self.authenticate()
        if state.browser_auth is not None:
            try:
                model = await state.browser_auth.get_user(self, sync=False)
            except Exception as exc:  # HubAuth raises HTTPError when the hub is away
                raise ApiError(
                    503, "hub_unavailable", f"the hub could not be reached: {exc}", retry_after=10
                ) from exc
            if model is None:
                self.redirect(self.get_login_url())
                return None
            caller = caller_from_model(model, service_name=state.service_name)
            if caller.kind == "other":
                raise ApiError(
                    403,
                    "insufficient_scope",
                    "your account may not use this service (no access scope)",
                )
            return caller
        if state.allow_anonymous:
            return ANONYMOUS
        raise ApiError(
            401,
            "sign_in_unavailable",
            "this service runs without a hub, so browsers cannot sign in: call the API with a"
            f" token (see {state.prefix}api/v1/openapi.json)",
        )

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.message if isinstance(exc, ApiError | AuthError) else "internal error"
        if isinstance(exc, ApiError) and exc.retry_after is not None:
            self.set_header("Retry-After", str(exc.retry_after))
        self.set_header("Content-Type", "text/html; charset=utf-8")
        page = _ERROR.render(status=status_code, message=message, prefix=self.state.prefix)
        self.finish(page)


_ERROR = _templates.from_string(
    """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{{ status }}</title>
</head><body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 2em auto">
<h1>{{ status }}</h1><p>{{ message }}</p>
<p><a href="{{ prefix }}api/v1/openapi.json">The API document</a></p></body></html>"""
)


class OAuthCallbackHandler(HubOAuthCallbackHandler):
    """``GET <prefix>oauth_callback``: where the hub sends a browser back after sign-in."""

    @property
    def hub_auth(self) -> Any:
        return self.settings["esap"].browser_auth


def page_routes(prefix: str, *, oauth: bool) -> Sequence[tuple[str, Any, dict[str, str]]]:
    """The page, the prefix without its slash sent there, and, with a hub to sign in
    through, the OAuth callback."""
    found: list[tuple[str, Any, dict[str, str]]] = [(prefix, StatusPageHandler, {})]
    if prefix != "/":
        found.append((prefix.rstrip("/"), web.RedirectHandler, {"url": prefix}))
    if oauth:
        found.append((prefix + "oauth_callback", OAuthCallbackHandler, {}))
    return found
