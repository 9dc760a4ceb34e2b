"""The hub's own view of the cluster: one ClusterModel and one ClusterWatcher per process.

JupyterHub runs every spawner of a hub in one process and one event loop, so one model
serves them all: admission (:meth:`ClusterModel.reserve`) is atomic there, and the spawn
form can show live availability without asking Kubernetes. The watcher starts on first use
(the first spawn or form), not at import, and follows the hub's ``KUBECONFIG`` or in-cluster
service account, like KubeSpawner does. The watcher takes the hub's configuration
(``c.ClusterWatcher.stale_after``, ``backoff_max``...), and the view's age is exported as
``esap_cluster_view_age_seconds`` on ``/hub/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from esap_spawner.capacity.model import ClusterModel
from esap_spawner.capacity.watch import ClusterWatcher, api_client_from_environment
from esap_spawner.observe import metrics
from esap_spawner.spawn.records import SpawnDurations

log = logging.getLogger(__name__)


class HubClusterView:
    """A lazily started, process-wide cluster model fed by watches."""

    def __init__(self) -> None:
        self.durations = SpawnDurations()
        self.model = ClusterModel(spawn_durations=self.durations)
        self.watcher: ClusterWatcher | None = None
        self._starting: asyncio.Lock | None = None

    async def ensure_started(
        self, *, sync_timeout: float, namespace: str | None = None
    ) -> ClusterModel:
        """Start watching if not yet, and wait up to ``sync_timeout`` s for a first sync.
        ``namespace`` is where servers start: its ResourceQuotas are watched too.

        Returns the model either way: an unsynced model refuses admissions with a reason
        and answers ``unknown`` availability, which is what callers should show.
        """
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self.watcher is None:
                api_client = await api_client_from_environment()
                where = {"namespace": namespace} if namespace else {}
                self.watcher = ClusterWatcher(
                    model=self.model, api_client=api_client, parent=_hub_app(), **where
                )
                metrics.watch_cluster_view(self.model.view_age_seconds)
                await self.watcher.start()
                log.info("esap: watching nodes and pods for live capacity")
        if not self.model.synced:
            await self.watcher.wait_synced(sync_timeout)
        return self.model

    async def stop(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()
            self.watcher = None


def _hub_app() -> Any:
    """The running JupyterHub application (its config reaches the watcher), else None."""
    try:
        from jupyterhub.app import JupyterHub
    except ImportError:  # pragma: no cover - the hub is a dependency
        return None
    return JupyterHub.instance() if JupyterHub.initialized() else None


_VIEW: HubClusterView | None = None


def hub_view() -> HubClusterView:
    """The process's cluster view (created on first call)."""
    global _VIEW
    if _VIEW is None:
        _VIEW = HubClusterView()
    return _VIEW
