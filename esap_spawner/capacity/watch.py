"""The I/O edge of the cluster model: list+watch of nodes and pods through kubernetes_asyncio.

:class:`ClusterWatcher` lists nodes and pods cluster-wide (other workloads use capacity
too) and, given the hub's ``namespace``, that namespace's ResourceQuotas (they cap what can
start there); it applies the lists to a :class:`~esap_spawner.capacity.model.ClusterModel`,
then watches each from its list's resourceVersion:

- a watch that ends normally (the server's ``timeoutSeconds``) resumes from the last
  resourceVersion seen (events and bookmarks), so nothing is lost or applied twice;
- 410 Gone (as an HTTP status or as an ERROR event) means that version is too old: the
  kind is listed again and replaces the model's view of it;
- any other failure (500, 429, connection refused, a dropped stream) marks the watch down
  in the model (it turns ``stale`` after ``stale_after`` seconds) and is retried with
  exponential backoff and jitter; the model keeps its last view meanwhile;
- ResourceQuotas that may not be read (403, missing RBAC) are left out with a warning: the
  model then counts no quota, as before quotas were watched, and is not made stale.

Objects stay raw JSON dicts (``_preload_content=False``): building ``V1Pod`` models costs
far more than the model's own work (see ``benchmarks/capacity.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config
from traitlets import Float, Int, Unicode, default
from traitlets.config import LoggingConfigurable

from esap_spawner.capacity.api_lookups import look_up_once
from esap_spawner.capacity.model import ClusterModel

__all__ = ["ClusterWatcher", "WatchError", "api_client_from_environment"]

KINDS = ("nodes", "pods")
QUOTAS = "resourcequotas"
IN_CLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class WatchError(Exception):
    """The API server answered a list or watch with an error status."""

    def __init__(self, kind: str, status: int, message: str) -> None:
        super().__init__(f"{kind}: HTTP {status}: {message}")
        self.status = status


class _Gone(Exception):
    """410: the resourceVersion is too old; list again."""


async def api_client_from_environment(config_file: str | None = None) -> client.ApiClient:
    """An API client from ``config_file``, else ``KUBECONFIG``, else the in-cluster service
    account, else ``~/.kube/config``; the environment's proxy and ``.netrc`` looked up once
    (:func:`~esap_spawner.capacity.api_lookups.look_up_once`).

    ``KUBECONFIG`` is read now: kubernetes_asyncio reads it once, when it is imported.
    """
    configuration = client.Configuration()
    path = config_file or os.environ.get("KUBECONFIG")
    if path:
        await config.load_kube_config(config_file=path, client_configuration=configuration)
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            await config.load_kube_config(client_configuration=configuration)
    api_client = client.ApiClient(configuration)
    look_up_once(api_client)
    return api_client


class ClusterWatcher(LoggingConfigurable):
    """Keeps a :class:`ClusterModel` current from the Kubernetes API; see the module doc.

    Start and stop it explicitly::

        watcher = ClusterWatcher(model=model, api_client=api)
        await watcher.start()
        await watcher.wait_synced(timeout=30)
        ...
        await watcher.stop()
    """

    watch_timeout_seconds = Int(
        300,
        config=True,
        help="""Seconds each watch request asks the API server to stay open
        (``timeoutSeconds``); the watch then resumes from the last resourceVersion.
        Example: c.ClusterWatcher.watch_timeout_seconds = 600""",
    )
    page_size = Int(
        500,
        config=True,
        help="""Objects per page when listing nodes and pods (``limit``/``continue``).
        Example: c.ClusterWatcher.page_size = 1000""",
    )
    backoff_initial = Float(
        0.5,
        config=True,
        help="""Seconds to wait after the first failed list or watch; doubles on each
        further failure up to backoff_max. Example: c.ClusterWatcher.backoff_initial = 1""",
    )
    backoff_max = Float(
        30.0,
        config=True,
        help="""Longest wait between retries, in seconds.
        Example: c.ClusterWatcher.backoff_max = 60""",
    )
    connect_timeout = Float(
        10.0,
        config=True,
        help="""Seconds to wait for a connection to the API server.
        Example: c.ClusterWatcher.connect_timeout = 5""",
    )
    namespace = Unicode(
        None,
        allow_none=True,
        config=True,
        help="""The namespace servers start in (KubeSpawner's): its ResourceQuotas cap what
        the model counts. The hub passes its spawner's namespace; by default, in a pod, the
        pod's own namespace (KubeSpawner's default too); None watches no quota.
        Example: c.ClusterWatcher.namespace = "jhub" """,
    )
    stale_after = Float(
        None,
        allow_none=True,
        config=True,
        help="""Seconds the watches may be down before the view is stale: answers say
        ``stale``, ``health`` fails and the spawner refuses admissions. None keeps the
        model's own setting (30 s). Example: c.ClusterWatcher.stale_after = 60""",
    )

    @default("namespace")
    def _namespace_default(self) -> str | None:
        try:
            return Path(IN_CLUSTER_NAMESPACE).read_text().strip() or None
        except OSError:
            return None

    @default("log")
    def _log_default(self) -> logging.Logger:
        return logging.getLogger(__name__)

    def __init__(self, *, model: ClusterModel, api_client: client.ApiClient, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model
        if self.stale_after is not None:
            model.stale_after = self.stale_after
        self.api = client.CoreV1Api(api_client)
        self._tasks: list[asyncio.Task[None]] = []
        self._listed: set[str] = set()
        self._synced = asyncio.Event()
        self.events_applied = 0
        self.bookmarks = 0
        self.relists = 0
        self.errors = 0
        self.last_error: str | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start listing and watching in background tasks (returns at once)."""
        if self._tasks:
            raise RuntimeError("ClusterWatcher is already started")
        self._listed.clear()
        self._synced.clear()
        self._tasks = [
            asyncio.create_task(self._run(kind), name=f"esap-watch-{kind}") for kind in self.kinds
        ]

    @property
    def kinds(self) -> tuple[str, ...]:
        """What is listed and watched: nodes, pods and, with a namespace, its quotas."""
        return (*KINDS, QUOTAS) if self.namespace else KINDS

    async def stop(self) -> None:
        """Stop watching; the model is marked not synced (its view no longer follows)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.model.mark_unsynced()

    async def wait_synced(self, timeout: float | None = None) -> bool:
        """Wait until nodes and pods were both listed; False if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    # ------------------------------------------------------------------ loops
    async def _run(self, kind: str) -> None:
        version: str | None = None
        failures = 0
        while True:
            try:
                if version is None:
                    version = await self._relist(kind)
                    self.model.watch_up(kind)
                    failures = 0
                async for event_type, obj in self._watch(kind, version):
                    failures = 0
                    version = self._apply(kind, event_type, obj) or version
            except asyncio.CancelledError:
                raise
            except WatchError as exc:
                if kind == QUOTAS and exc.status in (401, 403, 404):
                    self._without_quotas(exc)
                    return
                failures = await self._failed(kind, exc, failures)
            except _Gone:
                self.log.info(
                    "watch of %s: resourceVersion %s is gone, listing again", kind, version
                )
                version = None
            except Exception as exc:
                failures = await self._failed(kind, exc, failures)

    async def _failed(self, kind: str, exc: Exception, failures: int) -> int:
        """Count a failure, mark the watch down, wait the backoff; the new failure count."""
        failures += 1
        self.errors += 1
        self.last_error = f"{kind}: {exc}"
        self.model.watch_down(kind)
        delay = min(self.backoff_max, self.backoff_initial * 2 ** (failures - 1))
        delay *= random.uniform(0.8, 1.2)
        self.log.warning("watch of %s failed (%s); retrying in %.1f s", kind, exc, delay)
        await asyncio.sleep(delay)
        return failures

    def _without_quotas(self, exc: WatchError) -> None:
        self.log.warning(
            "cannot read ResourceQuotas in namespace %s (%s): quotas are not counted; "
            "grant get/list/watch on resourcequotas there",
            self.namespace,
            exc,
        )
        self.model.watch_up(QUOTAS)
        self.model.quotas.replace([])
        self._listed_now(QUOTAS)

    def _apply(self, kind: str, event_type: str, obj: dict[str, Any]) -> str | None:
        """Apply one event; return its resourceVersion (bookmarks included)."""
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if event_type == "BOOKMARK":
            self.bookmarks += 1
            return version
        try:
            if kind == "nodes":
                self.model.apply_node(event_type, obj)
            elif kind == QUOTAS:
                self.model.quotas.apply(event_type, obj)
            else:
                self.model.apply_pod(event_type, obj)
            self.events_applied += 1
        except Exception:  # one bad object must not stop the watch
            self.log.exception("could not apply %s event of %s", event_type, kind)
        return version

    async def _relist(self, kind: str) -> str:
        items, version = await self._list(kind)
        if kind == "nodes":
            self.model.replace_nodes(items)
        elif kind == QUOTAS:
            self.model.quotas.replace(items)
        else:
            self.model.replace_pods(items)
        self.relists += 1
        self._listed_now(kind)
        return version

    def _listed_now(self, kind: str) -> None:
        self._listed.add(kind)
        if self._listed.issuperset(self.kinds) and not self._synced.is_set():
            self.model.mark_synced()
            self._synced.set()
        elif self._synced.is_set():
            self.model.mark_synced()

    def _call(self, kind: str) -> Any:
        if kind == "nodes":
            return self.api.list_node
        if kind == QUOTAS:
            if not self.namespace:
                raise ValueError("ResourceQuotas are watched in a namespace: none is set")
            return functools.partial(self.api.list_namespaced_resource_quota, self.namespace)
        return self.api.list_pod_for_all_namespaces

    async def _list(self, kind: str) -> tuple[list[dict[str, Any]], str]:
        items: list[dict[str, Any]] = []
        cont: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": self.page_size}
            if cont:
                kwargs["_continue"] = cont
            resp = await self._call(kind)(
                _preload_content=False, _request_timeout=(self.connect_timeout, 60), **kwargs
            )
            try:
                body = await resp.read()
                if resp.status != 200:
                    raise WatchError(kind, resp.status, body.decode(errors="replace")[:300])
            finally:
                resp.release()
            page = json.loads(body)
            items.extend(page.get("items") or ())
            meta = page.get("metadata") or {}
            cont = meta.get("continue")
            if not cont:
                return items, meta.get("resourceVersion") or ""

    async def _watch(self, kind: str, version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        resp = await self._call(kind)(
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout_seconds,
            _preload_content=False,
            _request_timeout=(self.connect_timeout, self.watch_timeout_seconds + 30),
        )
        try:
            if resp.status == 410:
                raise _Gone()
            if resp.status != 200:
                body = await resp.read()
                raise WatchError(kind, resp.status, body.decode(errors="replace")[:300])
            self.model.watch_up(kind)
            buffer = b""
            async for chunk in resp.content.iter_any():
                buffer += chunk
                if b"\n" not in chunk:
                    continue
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield self._event(kind, line)
            if buffer.strip():
                yield self._event(kind, buffer)
        finally:
            resp.release()

    @staticmethod
    def _event(kind: str, line: bytes) -> tuple[str, dict[str, Any]]:
        event = json.loads(line)
        event_type = event.get("type")
        obj = event.get("object") or {}
        if event_type == "ERROR":
            if obj.get("code") == 410:
                raise _Gone()
            raise WatchError(kind, int(obj.get("code") or 500), str(obj.get("message")))
        return event_type, obj
