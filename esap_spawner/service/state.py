"""What every handler of the service shares: the site, the views, auth, settings, metrics.

One :class:`ServiceState` per tornado Application (in ``settings["esap"]``), with its own
:class:`esap_spawner.observe.metrics.ServiceMetrics` (a registry per app, so several apps in one
process, as in tests and benchmarks, do not share counters), its prepared answers
(:class:`~esap_spawner.service.answers.Answers`) and its cache of recent callers
(:class:`~esap_spawner.service.auth.CallerCache`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from esap_spawner.observe.metrics import ServiceMetrics
from esap_spawner.service.answers import Answers, Prepared
from esap_spawner.service.auth import DEFAULT_CACHE_MAX_AGE, AuthStrategy, CallerCache
from esap_spawner.service.expiring import ExpiringCache
from esap_spawner.service.git_remote import DefaultBranches
from esap_spawner.service.history import SpawnHistory
from esap_spawner.service.interfaces import CapacityView, LocalityCatalogue, NoCatalogue
from esap_spawner.service.views import QueryStyle, esap_url, facility_body, hub_root

if TYPE_CHECKING:
    from esap_spawner.service.interfaces import MayUse
    from esap_spawner.site.model import Site
    from esap_spawner.site.profiles import Profile

__all__ = ["ROUTES", "ServiceState"]

ROUTES = ("facility", "profiles", "profile", "locality", "openapi", "options", "esap_fixture",
          "launch", "health", "metrics", "other")  # fmt: skip


@dataclass
class ServiceState:
    """Everything the handlers read; built once by :func:`esap_spawner.service.app.make_app`.

    ``site`` is an :class:`esap_spawner.site.model.Site`; ``may_use(profile, *, groups,
    is_admin)`` decides which profiles a user may start (from :mod:`esap_spawner.site.profiles`).
    ``limited_threshold`` (a profile is ``limited`` when at most this many more servers
    can start) and ``max_dids`` are the site file's ``service`` section unless the
    service's options say otherwise (:func:`~esap_spawner.service.app.make_app` picks).
    ``cluster_note`` says why there is no cluster view (no configuration: ``cluster_ok``
    stays True, the service is meant to run so; a configuration that failed to load:
    False, and health says so). ``auth`` is None when no strategy is configured: every
    token is then refused (401) and only anonymous access (if allowed) works.
    ``query_style`` is how the running hub wants spawn options in a query string
    (``opt``: ``opt-profile=``, JupyterHub 6; ``plain``: ``profile=``); the launch route
    looks default branches up with ``default_branches`` (one with defaults when None).
    ``checks_seen``: whether each health check passed when last asked, so the log says
    when one changes.
    ``history`` is the spawn history read from the database (None without one);
    ``browser_auth`` a :class:`jupyterhub.services.auth.HubOAuth` through which browsers
    sign in to the status page (None without a hub).
    """

    site: Site
    capacity: CapacityView
    may_use: MayUse
    auth: AuthStrategy | None = None
    catalogue: LocalityCatalogue = field(default_factory=NoCatalogue)
    prefix: str = "/"
    hub_base_url: str = "/"
    service_name: str = "esap"
    allow_anonymous: bool = False
    limited_threshold: int = 2
    max_dids: int = 1000
    metrics_require_auth: bool = True
    cluster_note: str | None = None
    cluster_ok: bool = True
    site_file: str | None = None
    site_mtime: float | None = None
    query_style: QueryStyle = "opt"
    default_branches: DefaultBranches | None = None
    history: SpawnHistory | None = None
    browser_auth: Any = None
    metrics: ServiceMetrics = field(init=False)
    answers: Answers = field(init=False)
    callers: CallerCache = field(init=False)
    locality_answers: ExpiringCache[bytes, bytes] = field(init=False)
    facility: Prepared = field(init=False)
    checks_seen: dict[str, bool] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/") or not self.prefix.endswith("/"):
            raise ValueError(f"prefix must start and end with '/': {self.prefix!r}")
        if self.limited_threshold < 0:
            raise ValueError(f"limited_threshold must be at least 0: {self.limited_threshold!r}")
        if self.max_dids < 1:
            raise ValueError(f"max_dids must be at least 1: {self.max_dids!r}")
        if self.site_file is not None and self.site_mtime is None:
            try:
                self.site_mtime = os.stat(self.site_file).st_mtime
            except OSError:
                self.site_mtime = None
        if self.default_branches is None:
            hosts = getattr(getattr(self.site, "workflows", None), "allowed_hosts", ())
            self.default_branches = DefaultBranches(allowed_hosts=hosts)
        self.metrics = ServiceMetrics(
            view_age=self.capacity.view_age_seconds,
            profiles=[p.slug for p in self.profiles],
            handlers=ROUTES,
        )
        self.answers = Answers(self)
        max_age = getattr(self.auth, "cache_max_age", DEFAULT_CACHE_MAX_AGE)
        self.callers = CallerCache(float(max_age))
        # as long as the catalogue keeps what it learned (0: it keeps nothing, nor do we)
        cache_seconds = float(getattr(self.catalogue, "cache_seconds", 0.0))
        self.locality_answers = ExpiringCache(cache_seconds, max_entries=64)
        # the facility never changes while the service runs (a new site file needs a restart)
        facility = facility_body(self.site.facility, root=self.hub_root, prefix=self.prefix,
                                 launch_root=self.esap_url, style=self.query_style)  # fmt: skip
        self.facility = Prepared(facility, inputs=None, expires=float("inf"))

    @property
    def profiles(self) -> Sequence[Profile]:
        return tuple(self.site.profiles)

    @property
    def hub_root(self) -> str:
        """Where ``hub/...`` links start (the hub's public URL, else its base path)."""
        return hub_root(self.site.facility.url, self.hub_base_url)

    @property
    def esap_url(self) -> str:
        """What ESAP stores as this facility's ``url`` (see :func:`.views.esap_url`)."""
        return esap_url(self.hub_root, prefix=self.prefix, hub_base_url=self.hub_base_url)
