"""What one advertising-service process owns: the service's context.

:class:`ServiceContext` holds, for one ``esap-spawner service`` process, what its answers
are made from, and runs what keeps them current:

- the **site** and its **catalogue** (the package's one factory, adapted for
  ``POST api/v1/locality`` by :func:`~esap_spawner.service.catalogue.locality_backend`);
- the **database** the hub's spawner writes, its schema checked, and the **spawn history**
  read from it (:mod:`esap_spawner.service.history`);
- the **cluster model**, fed by a **watcher** once :meth:`ServiceContext.watch` is called,
  and holding the hub's reservations (:mod:`esap_spawner.capacity.sharing`);
- the **jobs** (:meth:`ServiceContext.run_jobs`): re-read the history, sample availability,
  take in the hub's reservations, each in a worker thread on its own period.

:class:`~esap_spawner.service.app.ESAPService` opens one, hands its parts to the tornado
application (:func:`~esap_spawner.service.app.make_app`) and closes it when it stops;
nothing lives at module level.
"""

from __future__ import annotations

import asyncio
import logging
import os
from functools import partial
from typing import TYPE_CHECKING

from esap_spawner.capacity.model import ClusterModel
from esap_spawner.capacity.sharing import adopt_published
from esap_spawner.observe.db import Database
from esap_spawner.observe.schema import SchemaError
from esap_spawner.observe.urls import database_problem
from esap_spawner.service.catalogue import locality_backend
from esap_spawner.service.history import SpawnHistory, every, sample_availability
from esap_spawner.service.interfaces import LocalityCatalogue
from esap_spawner.site.model import Site, load_site

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient
    from traitlets.config import Config

    from esap_spawner.capacity.watch import ClusterWatcher

__all__ = ["ServiceContext"]

log = logging.getLogger(__name__)

UPGRADE_HINT = "set ESAPService.db_upgrade_on_start to upgrade them at start"


class ServiceContext:
    """The site, catalogue, database, history and cluster model of one service process."""

    def __init__(
        self, *, site: Site, catalogue: LocalityCatalogue, history: SpawnHistory | None
    ) -> None:
        self.site = site
        self.catalogue = catalogue
        self.history = history
        self.model = ClusterModel(spawn_durations=history)
        self.watcher: ClusterWatcher | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._api_client: ApiClient | None = None

    @classmethod
    def open(cls, *, site_file: str, db_url: str, db_upgrade: bool) -> ServiceContext:
        """Read the site file (:class:`~esap_spawner.site.model.SiteError` when it is bad),
        build its catalogue, and open the database when ``db_url`` is set (an out-of-date
        schema raises :class:`~esap_spawner.observe.schema.SchemaError` unless
        ``db_upgrade``)."""
        site = load_site(site_file)
        history = None
        if db_url:
            db = Database(db_url)
            _check_schema(db, upgrade=db_upgrade)
            log.info("spawn history, reservations and availability samples in %r", db)
            history = SpawnHistory(db, [p.slug for p in site.profiles])
        else:
            log.info("no db_url: estimated_start_seconds is null, the hub's reservations unseen")
        return cls(site=site, catalogue=locality_backend(site), history=history)

    @property
    def db(self) -> Database | None:
        return self.history.db if self.history is not None else None

    async def watch(self, *, kubeconfig: str, config: Config) -> str | None:
        """Watch the cluster (``kubeconfig``, else the environment's); the reason in words
        when the configuration cannot be loaded (the service answers 'unknown' then)."""
        from esap_spawner.capacity.watch import ClusterWatcher, api_client_from_environment

        if kubeconfig:  # kubernetes_asyncio reads it from the environment
            os.environ["KUBECONFIG"] = kubeconfig
        try:
            api_client = await api_client_from_environment()
        except Exception as exc:  # a broken kubeconfig must not stop the service
            log.error("cannot load the Kubernetes configuration: %s", exc)
            return (
                f"the Kubernetes configuration could not be loaded ({exc}): "
                "availability is 'unknown'"
            )
        self._api_client = api_client
        self.watcher = ClusterWatcher(model=self.model, api_client=api_client, config=config)
        await self.watcher.start()
        self._tasks.append(asyncio.create_task(self._warm(self.watcher)))
        return None

    async def _warm(self, watcher: ClusterWatcher) -> None:
        """Once the first lists are in, answer every profile once, so the first caller
        does not pay the full pass over the cluster (0.7 s at 10,000 nodes)."""
        if await watcher.wait_synced(timeout=None):
            threshold = self.site.service.limited_threshold
            self.model.availability(self.site.profiles, limited_threshold=threshold)
            log.info("cluster view synced")

    def run_jobs(
        self,
        *,
        history_refresh_seconds: float,
        availability_sample_seconds: float,
        reservations_poll_seconds: float,
        limited_threshold: int,
    ) -> None:
        """Start the database jobs (none without a database); a period of 0 turns the
        availability samples or the reservations off."""
        history = self.history
        if history is None:
            return
        db = history.db
        profiles = self.site.profiles
        sample = partial(
            sample_availability, db, self.model, profiles, limited_threshold=limited_threshold
        )
        jobs = [every(history_refresh_seconds, history.refresh_in_thread,
                      what="reading the spawn history")]  # fmt: skip
        if availability_sample_seconds > 0:
            jobs.append(every(availability_sample_seconds, sample, what="sampling availability"))
        if reservations_poll_seconds > 0:
            adopt = partial(adopt_published, self.model.reservations, db)
            jobs.append(every(reservations_poll_seconds, adopt, what="reading the reservations"))
        for job in jobs:
            self._tasks.append(asyncio.create_task(job))

    async def close(self) -> None:
        """Stop the jobs and the watcher; release the database, the API client and the
        catalogue."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.watcher is not None:
            await self.watcher.stop()
            self.watcher = None
        if self._api_client is not None:
            await self._api_client.close()
            self._api_client = None
        if self.db is not None:
            self.db.dispose()
        close = getattr(self.catalogue, "close", None)
        if close is not None:
            await close()


def _check_schema(db: Database, *, upgrade: bool) -> None:
    """Create the tables on an empty database, refuse an out-of-date one (raises
    :class:`~esap_spawner.observe.schema.SchemaError`) unless told to upgrade it."""
    try:
        status = db.ensure_schema(upgrade=upgrade, hint=UPGRADE_HINT)
    except SchemaError:
        raise
    except Exception as exc:  # unreachable: the history jobs retry and log
        log.warning("cannot check the esap tables: %s", database_problem(db.url, exc))
    else:
        log.info("esap tables in %r: %s", db, status.describe())
