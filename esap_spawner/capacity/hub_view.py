"""The hub's own view of the cluster: one ClusterModel fed by one ClusterWatcher.

JupyterHub runs every spawner of a hub in one process and one event loop, so one model
serves them all (the hub's :class:`~esap_spawner.spawn.context.HubContext` holds it):
admission (:meth:`ClusterModel.reserve`) is atomic there, and the spawn form can show live
availability without asking Kubernetes. The watcher starts on first use (the first spawn
or form), not at import, on the API client KubeSpawner itself uses (built from its
``k8s_api_host``, ``k8s_api_ssl_ca_cert`` and ``k8s_api_verify_ssl``), so the view can
never look at another cluster than the one servers start in. It takes the hub's
configuration (``c.ClusterWatcher.stale_after``, ``backoff_max``...), and the view's age is
exported as ``esap_cluster_view_age_seconds`` on ``/hub/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from esap_spawner.capacity.model import ClusterModel
from esap_spawner.capacity.watch import ClusterWatcher
from esap_spawner.observe.metrics import HubMetrics

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient
    from traitlets.config import Config

__all__ = ["HubClusterView"]

log = logging.getLogger(__name__)


class HubClusterView:
    """A lazily started cluster model fed by watches, for one hub process.

    ``durations(slug)`` gives recent spawn durations (the availability's estimate);
    ``metrics`` exports the view's age.
    """

    def __init__(self, *, durations: Callable[[str], Sequence[float]], metrics: HubMetrics) -> None:
        self.model = ClusterModel(spawn_durations=durations)
        self.metrics = metrics
        self.watcher: ClusterWatcher | None = None
        self._starting: asyncio.Lock | None = None

    async def ensure_started(
        self,
        *,
        api_client: ApiClient,
        config: Config,
        sync_timeout: float,
        namespace: str | None = None,
    ) -> ClusterModel:
        """Start watching through ``api_client`` (KubeSpawner's) with the hub's ``config``
        if not yet, and wait up to ``sync_timeout`` s for a first sync. ``namespace`` is
        where servers start: its ResourceQuotas are watched too.

        Returns the model either way: an unsynced model refuses admissions with a reason
        and answers ``unknown`` availability, which is what callers should show.
        """
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self.watcher is None:
                where = {"namespace": namespace} if namespace else {}
                self.watcher = ClusterWatcher(
                    model=self.model, api_client=api_client, config=config, **where
                )
                self.metrics.watch_cluster_view(self.model.view_age_seconds)
                await self.watcher.start()
                log.info("esap: watching nodes and pods for live capacity")
        if not self.model.synced:
            await self.watcher.wait_synced(sync_timeout)
        return self.model

    async def stop(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()
            self.watcher = None
