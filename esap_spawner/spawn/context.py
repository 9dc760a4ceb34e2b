"""What every ESAPSpawner of one hub process shares: the hub's context.

JupyterHub makes a spawner per server, but they all run in the hub's one process and
event loop, and they share what that process knows. :class:`HubContext` owns it:

- the **site** (:attr:`~HubContext.site`): read once, read again when the file changes
  (each profile's metric series created then); a file that turns bad while the hub runs
  is reported and the last good one kept;
- the site's **catalogue** (:attr:`~HubContext.catalogue`), built once per version of the
  site by :func:`~esap_spawner.data.catalogue.factory.catalogue_from_site`;
- the **database** (:meth:`~HubContext.database`), opened once, its schema checked;
- the **cluster view** (:attr:`~HubContext.cluster`): one model of nodes and pods fed by one
  watcher, on KubeSpawner's own API client, and the reservations of admitted spawns, which
  are published to the database for the advertising service
  (:mod:`esap_spawner.capacity.sharing`);
- the **API clients** it has seen (:meth:`~HubContext.use_api_client`): the environment's
  proxy and ``.netrc`` looked up once per client instead of per request
  (:mod:`esap_spawner.capacity.api_lookups`);
- the **metrics** (the hub side of :mod:`esap_spawner.observe.metrics`; once the view runs,
  each profile's ``esap_profile_available_servers`` is what the hub would admit at the
  moment of the scrape), the recent spawn **durations** and the **background** tasks
  writing spawn records.

The hub's context lives in JupyterHub's shared settings (the one dict every ``User`` of a
hub holds, ``user.settings``) under ``esap_contexts``, one per site file and database URL:
:meth:`HubContext.of` finds or makes it. Nothing is kept at module level, so two hubs in one
process (tests) never share anything, and a test hands a spawner the context it built
(``ESAPSpawner(context=HubContext(...))``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Callable, Coroutine, Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from esap_spawner.capacity.api_lookups import look_up_once
from esap_spawner.capacity.hub_view import HubClusterView
from esap_spawner.capacity.model import Availability, ClusterModel
from esap_spawner.capacity.sharing import ReservationPublisher
from esap_spawner.data.catalogue.base import Catalogue
from esap_spawner.data.catalogue.factory import catalogue_from_site
from esap_spawner.observe.db import Database
from esap_spawner.observe.metrics import HUB, HubMetrics
from esap_spawner.observe.schema import SchemaError
from esap_spawner.observe.urls import database_problem
from esap_spawner.site.model import Site, SiteError, load_site
from esap_spawner.spawn.records import SpawnAttempt, SpawnDurations, record_spawn
from esap_spawner.spawn.status import SpawnStatus

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient
    from traitlets.config import Config

    from esap_spawner.spawn.spawner import ESAPSpawner

__all__ = ["SETTINGS_KEY", "UPGRADE_HINT", "HubContext"]

log = logging.getLogger(__name__)

SETTINGS_KEY = "esap_contexts"
UPGRADE_HINT = "set c.ESAPSpawner.db_upgrade_on_start = True (ESAP_DATABASE_UPGRADE=true)"


class HubContext:
    """The site, catalogue, database, cluster view and metrics of one hub process.

    ``db_url`` empty: no database (no spawn history). ``db_upgrade``: an out-of-date
    schema is upgraded when first opened instead of refused.
    """

    def __init__(
        self,
        *,
        site_file: str,
        db_url: str = "",
        db_upgrade: bool = False,
        metrics: HubMetrics = HUB,
    ) -> None:
        self.site_file = site_file
        self.db_url = db_url
        self.db_upgrade = db_upgrade
        self.metrics = metrics
        self.durations = SpawnDurations()
        self.cluster = HubClusterView(durations=self.durations, metrics=metrics)
        ledger = self.cluster.model.reservations
        self.publisher = ReservationPublisher(ledger, self.database) if db_url else None
        self._site: tuple[float, Site] | None = None
        self._catalogue: tuple[Site, Catalogue | None] | None = None
        self._db: Database | None = None
        self._opening: asyncio.Lock | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._jobs: dict[str, asyncio.Future[Any]] = {}  # loops that run while the hub does
        self._api_clients: weakref.WeakSet[Any] = weakref.WeakSet()

    @classmethod
    def of(cls, spawner: ESAPSpawner) -> HubContext:
        """The context of ``spawner``'s hub for its site file and database, made on first
        use; a spawner whose user holds no hub settings (a tool, a test) gets its own."""
        settings = getattr(spawner.user, "settings", None)
        key = (spawner.site_file, spawner.db_url)
        contexts: MutableMapping[tuple[str, str], HubContext] = (
            settings.setdefault(SETTINGS_KEY, {}) if isinstance(settings, dict) else {}
        )
        found = contexts.get(key)
        if found is None:
            found = contexts[key] = cls(
                site_file=spawner.site_file,
                db_url=spawner.db_url,
                db_upgrade=spawner.db_upgrade_on_start,
            )
        return found

    # -- the site and its catalogue ----------------------------------------------------

    @property
    def site(self) -> Site:
        """The site file, read again when its modification time changes."""
        mtime = os.stat(self.site_file).st_mtime  # (asked several times per spawn)
        if self._site is not None and self._site[0] == mtime:
            return self._site[1]
        try:
            site = load_site(self.site_file)
        except SiteError as exc:
            if self._site is None:
                raise
            log.error("esap: the changed site file is not used, the last good one is:\n%s", exc)
            self._site = (mtime, self._site[1])
            return self._site[1]
        self._site = (mtime, site)
        self.metrics.init_profile_labels(site.slugs)  # every series exists before a spawn
        if self.cluster.watcher is not None:
            self._follow_availability(site)
        return site

    @property
    def catalogue(self) -> Catalogue | None:
        """The site's catalogue (None for ``data.catalogue: none``), one per site version."""
        site = self.site
        if self._catalogue is None or self._catalogue[0] is not site:
            old = self._catalogue[1] if self._catalogue is not None else None
            self._catalogue = (site, catalogue_from_site(site))
            if old is not None:
                self.in_background(old.close())
        return self._catalogue[1]

    # -- the cluster view ---------------------------------------------------------------

    def use_api_client(self, api_client: ApiClient) -> None:
        """The first time a spawner uses ``api_client`` (KubeSpawner's shared one): stop its
        per-request look-ups of a proxy and ``.netrc`` when the environment has neither for
        the API server (:func:`~esap_spawner.capacity.api_lookups.look_up_once`)."""
        if api_client not in self._api_clients:
            self._api_clients.add(api_client)
            if look_up_once(api_client):
                log.debug("esap: no proxy or .netrc for %s: not looked up per request",
                          api_client.configuration.host)  # fmt: skip

    async def cluster_model(
        self,
        *,
        api_client: ApiClient,
        config: Config,
        sync_timeout: float,
        namespace: str | None = None,
    ) -> ClusterModel:
        """The cluster view's model, started on first use (see
        :meth:`~esap_spawner.capacity.hub_view.HubClusterView.ensure_started`); from then
        on its reservations are published whenever they change."""
        started = self.cluster.watcher is not None
        model = await self.cluster.ensure_started(
            api_client=api_client, config=config, sync_timeout=sync_timeout, namespace=namespace
        )
        if not started:
            self._follow_availability(self.site)
            if self.publisher is not None:
                self.publisher.start()
        return model

    def _follow_availability(self, site: Site) -> None:
        """``/hub/metrics`` shows what the hub would admit now, per profile of ``site``."""
        model = self.cluster.model

        def availability() -> Mapping[str, Availability]:
            current = self._site[1] if self._site is not None else site  # no file read here
            threshold = current.service.limited_threshold
            return model.availability(current.profiles, limited_threshold=threshold)

        self.metrics.follow_profile_availability(site.slugs, availability)

    # -- the database ------------------------------------------------------------------

    async def database(self) -> Database | None:
        """The database, opened (in a worker thread) and its schema checked on first use.

        None without ``db_url``, or when it cannot be reached (logged: spawns go on without
        their history; it is tried again next time). An out-of-date schema raises
        :class:`~esap_spawner.observe.schema.SchemaError` unless ``db_upgrade``.
        """
        if not self.db_url:
            return None
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._db is None:
                try:
                    self._db = await asyncio.to_thread(self._open)
                except SchemaError:
                    raise
                except Exception as exc:
                    log.warning("esap: %s", database_problem(self.db_url, exc))
        return self._db

    def _open(self) -> Database:
        db = Database(self.db_url)
        try:
            db.ensure_schema(upgrade=self.db_upgrade, hint=UPGRADE_HINT)
        except BaseException:
            db.dispose()
            raise
        return db

    # -- what a spawn leaves -------------------------------------------------------------

    def record(
        self,
        attempt: SpawnAttempt,
        status: SpawnStatus,
        reason: str | None,
        events: Iterable[Mapping[str, Any]],
    ) -> None:
        """Record an ended spawn (metrics, duration, database row) in the background."""

        async def write() -> None:
            try:
                db = await self.database()
            except SchemaError as exc:  # already refused the spawn; the row cannot be kept
                log.warning("esap: the spawn of %s is not recorded: %s", attempt.user, exc)
                db = None
            await record_spawn(
                attempt,
                status,
                reason,
                events,
                metrics=self.metrics,
                durations=self.durations,
                db=db,
            )

        self.in_background(write())

    # -- background work and the end ---------------------------------------------------

    def in_background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` without waiting for it, kept referenced until it is done."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start_once(self, name: str, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Start ``work()`` the first time ``name`` is asked for: a loop that runs while the
        hub does (stopped by :meth:`close`)."""
        if name not in self._jobs:
            self._jobs[name] = asyncio.ensure_future(work())

    async def close(self) -> None:
        """Stop the loops, watching and publishing, finish the background work, release the
        catalogue and the database."""
        for job in self._jobs.values():
            job.cancel()
        await asyncio.gather(*self._jobs.values(), return_exceptions=True)
        self._jobs.clear()
        if self.publisher is not None:
            await self.publisher.stop()
        await self.cluster.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._catalogue is not None and self._catalogue[1] is not None:
            await self._catalogue[1].close()
        self._catalogue = None
        if self._db is not None:
            self._db.dispose()
            self._db = None
