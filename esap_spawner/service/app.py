"""The advertising service as a tornado Application, and the traitlets app that runs it.

:func:`make_app` builds the tornado Application from plain objects (a site, a cluster
view, an auth strategy): what tests and benchmarks use in-process.
:class:`ESAPService` is the configurable program (``esap-spawner service``): it reads
the site file, picks the auth strategy (the hub's tokens when run by JupyterHub, a token
file otherwise), opens its :class:`~.context.ServiceContext` (the site, the catalogue, the
hub's database, the cluster model and its watcher when a Kubernetes configuration exists,
and the jobs that keep them current), and listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import tornado.web
from traitlets import Bool, Enum, Float, Integer, TraitError, Unicode, default, validate

from esap_spawner import __version__
from esap_spawner.capacity.watch import ClusterWatcher
from esap_spawner.service.auth import AuthStrategy, auth_from_environment
from esap_spawner.service.cli import CommandLineApp
from esap_spawner.service.context import ServiceContext
from esap_spawner.service.git_remote import DefaultBranches
from esap_spawner.service.handlers import NotFoundHandler, load_openapi, routes
from esap_spawner.service.history import SpawnHistory
from esap_spawner.service.hub_version import installed_query_style, running_hub_query_style
from esap_spawner.service.interfaces import CapacityView, LocalityCatalogue, NoCatalogue
from esap_spawner.service.launch import launch_routes
from esap_spawner.service.portal import portal_routes
from esap_spawner.service.state import ServiceState
from esap_spawner.service.status import page_routes
from esap_spawner.service.views import QueryStyle

if TYPE_CHECKING:
    from esap_spawner.service.interfaces import MayUse
    from esap_spawner.site.model import Site

__all__ = ["ESAPService", "kube_config_available", "make_app"]

log = logging.getLogger(__name__)

_STYLES: dict[str, QueryStyle] = {"opt": "opt", "plain": "plain"}  # "auto": None


def make_app(
    *,
    site: Site,
    capacity: CapacityView,
    auth: AuthStrategy | None,
    may_use: MayUse | None = None,
    catalogue: LocalityCatalogue | None = None,
    prefix: str = "/",
    hub_base_url: str = "/",
    service_name: str = "esap",
    allow_anonymous: bool = False,
    limited_threshold: int | None = None,
    max_dids: int | None = None,
    metrics_require_auth: bool = True,
    max_body_size: int = 1 << 20,
    cluster_note: str | None = None,
    site_file: str | None = None,
    query_style: QueryStyle | None = None,
    default_branches: DefaultBranches | None = None,
    history: SpawnHistory | None = None,
    browser_auth: Any = None,
) -> tornado.web.Application:
    """The service's tornado Application (:mod:`.handlers`; the page at the prefix: :mod:`.status`).

    ``may_use`` defaults to :func:`esap_spawner.site.profiles.may_use`. ``max_body_size``
    bounds request bodies (:mod:`esap_spawner.service.bodies`). ``cluster_note`` says
    why availability is unknown when no cluster is configured (shown in answers and in
    ``health``). ``query_style`` defaults to the style of the JupyterHub installed here.
    ``browser_auth``: the hub's OAuth (HubOAuth) for browsers to sign in to the page.
    """
    if may_use is None:
        from esap_spawner.site.profiles import may_use as site_may_use

        may_use = site_may_use
    state = ServiceState(
        site=site,
        capacity=capacity,
        may_use=may_use,
        auth=auth,
        catalogue=catalogue if catalogue is not None else NoCatalogue(),
        prefix=prefix,
        hub_base_url=hub_base_url,
        service_name=service_name,
        allow_anonymous=allow_anonymous,
        limited_threshold=(
            site.service.limited_threshold if limited_threshold is None else limited_threshold
        ),
        max_dids=site.service.locality_max_dids if max_dids is None else max_dids,
        metrics_require_auth=metrics_require_auth,
        cluster_note=cluster_note,
        site_file=site_file,
        query_style=query_style or installed_query_style(),
        default_branches=default_branches,
        history=history,
        browser_auth=browser_auth,
    )
    oauth = browser_auth is not None
    pages = page_routes(prefix, oauth=oauth)
    return tornado.web.Application(
        [*routes(prefix), *portal_routes(prefix), *launch_routes(prefix), *pages],
        esap=state,
        esap_openapi=load_openapi(),
        max_body_size=max_body_size,
        default_handler_class=NotFoundHandler,
        compress_response=False,
        # signs the OAuth cookie; new per process: after a restart the hub signs in again
        cookie_secret=os.urandom(32) if oauth else None,
    )


def kube_config_available(kubeconfig: str = "") -> bool:
    """True when a kubeconfig file or the in-cluster service account is present."""
    if kubeconfig:
        return Path(kubeconfig).is_file()
    env = os.environ.get("KUBECONFIG", "")
    if env:
        return any(Path(p).is_file() for p in env.split(os.pathsep) if p)
    if (Path.home() / ".kube" / "config").is_file():
        return True
    return (
        bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        and Path("/var/run/secrets/kubernetes.io/serviceaccount/token").is_file()
    )


def _service_url_part(part: str) -> str:
    url = os.environ.get("JUPYTERHUB_SERVICE_URL", "")
    if not url:
        return ""
    parsed = urlparse(url)
    if part == "ip":
        return parsed.hostname or ""
    return str(parsed.port or "")


class ESAPService(CommandLineApp):
    """Run the advertising service (under JupyterHub as the service ``esap``, or alone)."""

    name = "esap-service"
    description = __doc__ or ""

    version = __version__
    classes = [ClusterWatcher]  # configured through this app's config (its context's watcher)

    site_file = Unicode(
        "",
        help="""The site file (YAML) with the facility and its profiles, e.g.
        ``/etc/esap/site.yaml``. The same file the spawner reads.""",
    ).tag(config=True)

    ip = Unicode(
        help="""Address to listen on. Default: the host of ``JUPYTERHUB_SERVICE_URL`` when the
        hub runs the service, else ``127.0.0.1``.""",
    ).tag(config=True)

    @default("ip")
    def _default_ip(self) -> str:
        return _service_url_part("ip") or "127.0.0.1"

    port = Integer(
        help="""Port to listen on, e.g. ``10101``. Default: the port of
        ``JUPYTERHUB_SERVICE_URL`` when the hub runs the service, else 8890.""",
    ).tag(config=True)

    @default("port")
    def _default_port(self) -> int:
        return int(_service_url_part("port") or 8890)

    prefix = Unicode(
        help="""URL prefix of every route, e.g. ``/services/esap/``. Default:
        ``JUPYTERHUB_SERVICE_PREFIX`` when the hub runs the service, else ``/``.""",
    ).tag(config=True)

    @default("prefix")
    def _default_prefix(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or "/"

    @validate("prefix")
    def _slashes(self, proposal: Any) -> str:
        value = str(proposal["value"]) or "/"
        return "/" + value.strip("/") + "/" if value.strip("/") else "/"

    service_name = Unicode(
        help="""The service's name in JupyterHub, e.g. ``esap``; users need the scope
        ``access:services!service=<name>``. Default: ``JUPYTERHUB_SERVICE_NAME`` or
        ``esap``.""",
    ).tag(config=True)

    @default("service_name")
    def _default_service_name(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_NAME") or "esap"

    token_file = Unicode(
        "",
        help="""A JSON file of tokens for running without a hub, e.g. ``tokens.json`` holding
        ``[{"token": "...", "name": "portal", "scopes": ["custom:esap:read"]}]``. Ignored
        when the hub runs the service (its tokens are checked with the hub).""",
    ).tag(config=True)

    allow_anonymous = Bool(
        False,
        help="""Answer requests without a token; such callers see only profiles open to every
        user (``facility``, ``profiles``). Off by default. ``POST api/v1/locality`` needs a
        token even then: it asks the data catalogue with the site's account.""",
    ).tag(config=True)

    limited_threshold = Integer(
        None,
        allow_none=True,
        help="""A profile is ``limited`` (not ``available``) when at most this many more
        servers can start now, e.g. ``2``. Default: the site file's
        ``service.availability.limited_threshold``.""",
    ).tag(config=True)

    max_dids = Integer(
        None,
        allow_none=True,
        help="""Most DIDs accepted in one ``POST api/v1/locality``, e.g. ``100``; more gets
        413. Default: the site file's ``service.locality.max_dids``.""",
    ).tag(config=True)

    metrics_require_auth = Bool(
        True,
        help="""Require a token with ``custom:esap:read`` or ``read:metrics`` for
        ``GET metrics``. Set False to let Prometheus scrape without a token.""",
    ).tag(config=True)

    max_body_size = Integer(
        1 << 20,
        help="""Largest request body the service reads, in bytes, e.g. ``1048576`` (1 MiB, the
        default: 1,000 DIDs of the longest kind take about a quarter of it). A larger body is
        refused with 413 from its ``Content-Length`` (or as soon as a chunked body passes the
        limit), before it is read and before the token is checked.""",
    ).tag(config=True)

    @validate("max_body_size")
    def _positive_body_size(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if value < 1:
            raise TraitError(f"max_body_size must be at least 1 byte, not {value!r}")
        return value

    kubeconfig = Unicode(
        "",
        help="""A kubeconfig file for the cluster view, e.g. ``~/.kube/config``. Default:
        ``KUBECONFIG``, ``~/.kube/config`` or the in-cluster service account. With none,
        availability is ``unknown`` and the answers say so.""",
    ).tag(config=True)

    db_url = Unicode(
        help="""The database the hub's spawner records spawns in (``ESAPSpawner.db_url``;
        give both the same URL), e.g. ``sqlite:////srv/jupyterhub/esap.sqlite`` or
        ``postgresql+psycopg://u:p@db/esap``. The service reads the recent successful
        spawns of each profile from it (``estimated_start_seconds`` is their median) and
        writes availability samples to it (the report's "availability over time").
        Empty disables both: ``estimated_start_seconds`` is then ``null``. Default:
        ``ESAP_DATABASE_URL`` when set (the hub's snippet hands the spawner's URL on so),
        else ``sqlite:///esap.sqlite``, the spawner's default (a relative path: the hub's
        working directory, which a managed service shares).""",
    ).tag(config=True)

    @default("db_url")
    def _default_db_url(self) -> str:
        from esap_spawner.observe.db import url_from_environment  # the spawner's default too

        return url_from_environment()

    db_upgrade_on_start = Bool(
        False,
        help="""Upgrade the database's esap tables to this esap-spawner's schema at start.
        False (the default): the service refuses to start on an out-of-date schema and
        names ``esap-spawner db upgrade``. An empty database gets its tables either way.""",
    ).tag(config=True)

    availability_sample_seconds = Float(
        60.0,
        help="""Store what each profile can start now in the database every this many
        seconds, e.g. ``60``; ``0`` disables sampling. Samples are taken only while the
        cluster view is synced and current.""",
    ).tag(config=True)

    history_refresh_seconds = Float(
        60.0,
        help="""Re-read the recent spawn durations from the database every this many
        seconds, e.g. ``60`` (in a worker thread: answers never wait for the database).""",
    ).tag(config=True)

    reservations_poll_seconds = Float(
        0.5,
        help="""Read the hub's reservations (admitted spawns whose pods are not counted yet)
        from the database every this many seconds, e.g. ``0.5``, so what the service
        advertises is what the hub would admit (one capacity authority). The service's
        answers trail the hub's decisions by about this much; ``0`` stops reading them.""",
    ).tag(config=True)

    @validate("availability_sample_seconds", "history_refresh_seconds", "reservations_poll_seconds")
    def _not_negative(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if value < 0:
            name = proposal["trait"].name
            raise TraitError(f"{name} must be at least 0, not {value!r}")
        if proposal["trait"].name == "history_refresh_seconds" and value == 0:
            raise TraitError("history_refresh_seconds must be more than 0")
        return value

    workflow_ca_file = Unicode(
        help="""A CA bundle (PEM) for the https certificates of workflow repositories, used
        when a launch link (``v2/git/...``) asks for ``HEAD`` and the service looks up the
        repository's default branch, e.g. ``/etc/ssl/site-ca.pem``. Default:
        ``GIT_SSL_CAINFO`` when set (git's own variable), else the system's CAs.""",
    ).tag(config=True)

    @default("workflow_ca_file")
    def _default_workflow_ca_file(self) -> str:
        return os.environ.get("GIT_SSL_CAINFO", "")

    workflow_lookup_timeout = Float(
        10.0,
        help="""Seconds a launch link waits for a repository to name its default branch,
        e.g. ``10``; past it the link gets a 504 page.""",
    ).tag(config=True)

    hub_query_style = Enum(
        ["auto", "opt", "plain"],
        "auto",
        help="""How the published spawn links pass options to the hub: ``opt``
        (``hub/spawn?opt-profile=small``, JupyterHub 6), ``plain`` (``?profile=small``,
        JupyterHub 5), or ``auto``: asked from the running hub's API at start
        (``JUPYTERHUB_API_URL``), else the JupyterHub installed beside the service.""",
    ).tag(config=True)

    def build(self) -> tuple[tornado.web.Application, bool]:
        """The tornado app over a fresh :class:`~.context.ServiceContext` (``self.context``),
        and whether a cluster is configured to watch."""
        if not self.site_file:
            raise ValueError("no site file: pass --site-file FILE")
        self.context = context = ServiceContext.open(
            site_file=self.site_file, db_url=self.db_url, db_upgrade=self.db_upgrade_on_start
        )
        auth, browser_auth = auth_from_environment(
            token_file=self.token_file, service_name=self.service_name
        )
        note = None
        watch = kube_config_available(self.kubeconfig)
        if not watch:
            note = (
                "no Kubernetes configuration found (KUBECONFIG, ~/.kube/config or in-cluster): "
                "availability is 'unknown'"
            )
            self.log.warning(note)
        app = make_app(
            site=context.site,
            capacity=context.model,
            auth=auth,
            catalogue=context.catalogue,
            prefix=self.prefix,
            hub_base_url=os.environ.get("JUPYTERHUB_BASE_URL") or "/",
            service_name=self.service_name,
            allow_anonymous=self.allow_anonymous,
            limited_threshold=self.limited_threshold,
            max_dids=self.max_dids,
            metrics_require_auth=self.metrics_require_auth,
            max_body_size=self.max_body_size,
            cluster_note=note,
            site_file=self.site_file,
            query_style=_STYLES.get(self.hub_query_style),
            default_branches=DefaultBranches(
                timeout=self.workflow_lookup_timeout,
                ca_file=self.workflow_ca_file or None,
                allowed_hosts=context.site.workflows.allowed_hosts,
            ),
            history=context.history,
            browser_auth=browser_auth,
        )
        return app, watch

    async def serve(self) -> None:
        """Listen and run until cancelled; watch the cluster when one is configured."""
        app, watch = self.build()
        context, state = self.context, app.settings["esap"]
        if watch:
            problem = await context.watch(kubeconfig=self.kubeconfig, config=self.config)
            if problem is not None:
                state.cluster_note, state.cluster_ok = problem, False
        api_url = os.environ.get("JUPYTERHUB_API_URL")
        if self.hub_query_style == "auto" and api_url:
            state.query_style = await running_hub_query_style(api_url)
        context.run_jobs(
            history_refresh_seconds=self.history_refresh_seconds,
            availability_sample_seconds=self.availability_sample_seconds,
            reservations_poll_seconds=self.reservations_poll_seconds,
            limited_threshold=state.limited_threshold,
        )
        # no route takes a body larger than max_body_size: tornado refuses one before reading it
        server = app.listen(
            self.port, address=self.ip, xheaders=True, max_body_size=self.max_body_size
        )
        self.log.info("ESAP service listening on http://%s:%i%s", self.ip, self.port, self.prefix)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):  # the hub stops services with SIGTERM
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
            self.log.info("stopping")
        finally:
            server.stop()
            await context.close()

    def start(self) -> None:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(self.serve())
