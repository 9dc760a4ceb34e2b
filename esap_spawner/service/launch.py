"""The BinderHub-compatible launch route: ESAP's unchanged Deploy button lands here.

``GET v2/<provider>/<spec>?urlpath=...`` (see :mod:`.binder` for what is accepted) checks
the link, refuses a repository host the site does not allow, looks ``HEAD`` up as the
repository's default branch (:mod:`.git_remote`, in the event loop with a timeout), and
redirects the browser to the hub's spawn page with the options in the style the hub wants
(``/hub/spawn?opt-workflow=...&opt-ref=main&opt-filepath=...``). The hub logs the user in
first if needed; the spawner then shows the prefilled form with a summary and waits for
the user's Start (:mod:`esap_spawner.spawn.confirm`): the link alone never starts code.

The route needs no token (a browser following a link has none for the service), so it
says nothing about the site's profiles: a ``profile`` the link names is judged by the hub,
with the user known, on the form (an unknown or forbidden one is refused there). A link
that cannot be used gets a 400 (403 for a host the site does not allow, 404/502/504 when
the repository cannot be asked): a readable HTML page for browsers, the service's JSON
error for API clients (``Accept`` without ``text/html``). Nothing a link holds produces a
500.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import unquote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape

from esap_spawner.service.binder import Launch, LaunchError, parse_launch
from esap_spawner.service.git_remote import RemoteError
from esap_spawner.service.handlers import ApiError, BaseHandler
from esap_spawner.service.views import QueryStyle
from esap_spawner.spawn.option_values import host_allowed, workflow_host
from esap_spawner.spawn.options import DEFAULT_BRANCH, query_string_keys

__all__ = ["LaunchHandler", "launch_routes", "spawn_redirect"]

_templates = Environment(
    loader=PackageLoader("esap_spawner.service", "templates"),
    autoescape=select_autoescape(["html"]),
)


def spawn_redirect(hub_base_url: str, launch: Launch, *, style: QueryStyle) -> str:
    """The hub's spawn page with the launch's options (``ref`` resolved beforehand)."""
    keys = query_string_keys(style)
    query: list[tuple[str, str]] = []
    if launch.profile:
        query.append((keys["profile"], launch.profile))
    query += [(keys["dataset"], did) for did in launch.datasets]
    query.append((keys["workflow"], launch.repo))
    if launch.ref != DEFAULT_BRANCH:
        query.append((keys["ref"], launch.ref))
    if launch.filepath:
        query.append((keys["filepath"], launch.filepath))
    base = hub_base_url if hub_base_url.endswith("/") else hub_base_url + "/"
    return f"{base}hub/spawn?{urlencode(query)}"


class LaunchHandler(BaseHandler):
    """``GET v2/<provider>/<spec>``: check, resolve ``HEAD``, redirect to the spawn form."""

    route = "launch"

    async def get(self, *path_args: str) -> None:
        state = self.state
        query = {
            key: [v.decode("utf-8", "replace") for v in values]
            for key, values in self.request.query_arguments.items()
        }
        # the raw path: tornado hands path arguments on decoded once, which would turn an
        # encoded repository URL's %2F into path separators (the route matched the raw path,
        # so it starts with the prefix and v2/)
        raw_provider, _sep, raw_spec = self.request.path[len(state.prefix) + 3 :].partition("/")
        try:
            launch = parse_launch(unquote(raw_provider), raw_spec, query)
        except LaunchError as exc:
            raise ApiError(400, "invalid_launch_link", exc.message) from None
        hosts = state.site.workflows.allowed_hosts
        host = workflow_host(launch.repo)
        if not host_allowed(host, hosts):
            raise ApiError(
                403,
                "workflow_host_not_allowed",
                f"this hub does not start workflows from {host}; allowed hosts: {', '.join(hosts)}",
            )
        if launch.ref == DEFAULT_BRANCH and state.default_branches is not None:
            try:
                branch = await state.default_branches.lookup(launch.repo)
            except RemoteError as exc:
                raise ApiError(exc.status, "repository_unavailable", exc.message) from None
            launch = dataclasses.replace(launch, ref=branch)
        self.redirect(spawn_redirect(state.hub_base_url, launch, style=state.query_style))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if "text/html" not in self.request.headers.get("Accept", ""):
            super().write_error(status_code, **kwargs)
            return
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.message if isinstance(exc, ApiError) else "the link could not be used"
        base = self.state.hub_base_url
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(
            _templates.get_template("launch-error.html").render(
                status=status_code,
                message=message,
                link=self.request.uri,
                home=(base if base.endswith("/") else base + "/") + "hub/home",
            )
        )


def launch_routes(prefix: str) -> list[tuple[str, type[BaseHandler]]]:
    """``v2/<provider>/...`` under ``prefix`` (git, gh, gl: :data:`.binder.PROVIDERS`; any
    other provider gets the 400 page naming those)."""
    return [(prefix + r"v2/([^/]+)/(.*)", LaunchHandler)]
