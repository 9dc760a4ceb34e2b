"""``Simulator``: the API server, scheduler and kubelet together; ``SimulatorThread`` runs
one on its own event loop in a background thread (for tests and hubs in other loops).

>>> sim = Simulator(cluster="cluster.yaml", kubelet="process")   # doctest: +SKIP
>>> await sim.start()                                             # doctest: +SKIP
>>> sim.write_kubeconfig("kubeconfig.yaml"); sim.url              # doctest: +SKIP
>>> sim.faults.fail_next(2, 503)                                  # doctest: +SKIP
>>> await sim.stop()                                              # doctest: +SKIP

A stopped simulator leaves no process behind and removes its work folder (pod roots, logs,
claims' folders) unless it was given one; in a folder it was given it removes the pods' roots
and keeps logs and claims' folders (``pods/``, ``pvcs/``). It never removes what a hostPath
or a ``volume_paths`` entry points at.

In process mode each pod's files live in a root folder of its own (``home`` is the image's
home directory there, ``/home/jovyan`` by default); ``volume_paths`` maps volume types the
process kubelet cannot emulate (NFS, CSI, ...) to local folders, by the volume's name or, for
NFS, by ``"<server>:<path>"``::

    Simulator(kubelet="process", volume_paths={"nfs.example.org:/archive": "/srv/archive"})

See :mod:`esap_spawner.dev.sim.volumes` and :mod:`esap_spawner.dev.sim.podroot` (path translation).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from esap_spawner.dev.sim.apiserver import make_app
from esap_spawner.dev.sim.cluster import Cluster, cluster_from_dict, load_cluster, node_manifest
from esap_spawner.dev.sim.errors import ApiError
from esap_spawner.dev.sim.faults import Faults
from esap_spawner.dev.sim.kubelet import Kubelet, KubeletDelays
from esap_spawner.dev.sim.podroot import DEFAULT_HOME
from esap_spawner.dev.sim.processes import IPAllocator
from esap_spawner.dev.sim.scheduler import Scheduler
from esap_spawner.dev.sim.store import Store

__all__ = ["Simulator", "SimulatorThread"]

log = logging.getLogger("esap_spawner.dev.sim")
T = TypeVar("T")


def _as_cluster(cluster: Cluster | str | Path | dict[str, Any] | None) -> Cluster:
    if cluster is None:
        return Cluster()
    if isinstance(cluster, Cluster):
        return cluster
    if isinstance(cluster, dict):
        return cluster_from_dict(cluster)
    return load_cluster(cluster)


class Simulator:
    """A simulated Kubernetes cluster served over HTTP on this event loop."""

    def __init__(
        self,
        cluster: Cluster | str | Path | dict[str, Any] | None = None,
        *,
        kubelet: str = "fake",
        delays: KubeletDelays | None = None,
        history: int = 10_000,
        workdir: str | Path | None = None,
        home: str = DEFAULT_HOME,
        volume_paths: Mapping[str, str | Path] | None = None,
    ) -> None:
        self.ips = IPAllocator(kubelet)  # refuses a kubelet other than fake or process
        if not home.startswith("/") or home.rstrip("/") == "":
            raise ValueError(f"home must be an absolute path below /, not {home!r}")
        self.cluster = _as_cluster(cluster)
        self.kubelet_mode = kubelet
        self.delays = delays or KubeletDelays()
        self.store = Store(history=history)
        self.faults = Faults(self.store)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="esap-sim-"))
        self.home = home.rstrip("/")
        self.volume_paths = {k: str(v) for k, v in (volume_paths or {}).items()}
        self.url = ""
        self.kubelet: Kubelet | None = None
        self.scheduler: Scheduler | None = None
        self._server: HTTPServer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Load the cluster, start the control loops and serve; returns the URL."""
        self.faults.loop = asyncio.get_running_loop()
        self.scheduler = Scheduler(self.store)
        self.kubelet = Kubelet(
            self.store,
            mode=self.kubelet_mode,
            delays=self.delays,
            workdir=self.workdir,
            ips=self.ips,
            home=self.home,
            volume_paths=self.volume_paths,
        )
        for name in self.cluster.namespaces:
            self.store.create("namespaces", "", {"metadata": {"name": name}})
        for node in self.cluster.nodes:
            self.store.create("nodes", "", node)
        for pod in self.cluster.pods:
            self.store.create("pods", pod["metadata"].get("namespace", "default"), pod)
        self._tasks.append(asyncio.ensure_future(self.scheduler.run()))
        self.scheduler.schedule_pending()
        app = make_app(self.store, self.faults, self.kubelet.log_path)
        sockets = bind_sockets(port, address=host)
        self._server = HTTPServer(app, idle_connection_timeout=3600)
        self._server.add_sockets(sockets)
        bound = sockets[0].getsockname()
        self.url = f"http://{host}:{bound[1]}"
        log.info(
            "Kubernetes API simulator serving at %s (kubelet: %s)", self.url, self.kubelet_mode
        )
        return self.url

    async def stop(self) -> None:
        """Stop serving, end watches, stop every pod process, clean up the work folder."""
        if self._server is not None:
            self._server.stop()
        self.store.close_watches()
        if self.kubelet is not None:
            await self.kubelet.shutdown()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.close_all_connections(), 5)
            self._server = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kubeconfig(self, namespace: str = "default") -> dict[str, Any]:
        """A kubeconfig (as a dict) pointing at this simulator."""
        if not self.url:
            raise RuntimeError("the simulator is not started: no URL for a kubeconfig yet")
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "esap-sim", "cluster": {"server": self.url}}],
            "users": [{"name": "esap-sim", "user": {"token": "esap-sim"}}],
            "contexts": [
                {
                    "name": "esap-sim",
                    "context": {"cluster": "esap-sim", "user": "esap-sim", "namespace": namespace},
                }
            ],
            "current-context": "esap-sim",
            "preferences": {},
        }

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """Write a kubeconfig for this simulator to ``path``; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.kubeconfig(namespace), sort_keys=False))
        return path

    # Conveniences that go straight to the store (call them on the simulator's loop, or
    # through SimulatorThread which forwards them there).

    def create_namespace(self, name: str) -> dict[str, Any]:
        try:
            return self.store.create("namespaces", "", {"metadata": {"name": name}})
        except ApiError as error:
            if error.code == 409:
                return self.store.get("namespaces", "", name)
            raise

    def add_node(self, name: str, **kwargs: Any) -> dict[str, Any]:
        """Create a node (see :func:`~esap_spawner.dev.sim.cluster.node_manifest` for kwargs)."""
        return self.store.create("nodes", "", node_manifest(name, **kwargs))

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.store.find("pods", namespace, name)

    def pods_running(self) -> int:
        """How many pods have a live local process (process mode)."""
        if self.kubelet is None:
            return 0
        return sum(
            1 for run in self.kubelet.runs.values() for p in run.processes if p.returncode is None
        )


class SimulatorThread:
    """A :class:`Simulator` on its own event loop in a daemon thread.

    ``start()`` blocks until it serves; ``stop()`` blocks until it is gone with its
    processes. ``url``, ``faults``, ``write_kubeconfig`` work as on the simulator; other
    simulator methods run on its loop through :meth:`call`.
    """

    def __init__(self, *args: Any, host: str = "127.0.0.1", port: int = 0, **kwargs: Any):
        self._args, self._kwargs = args, kwargs
        self._host, self._port = host, port
        self.loop: asyncio.AbstractEventLoop | None = None
        self.sim: Simulator | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 30) -> SimulatorThread:
        self._thread = threading.Thread(target=self._main, name="esap-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the simulator did not start in time")
        if self._error is not None:
            raise RuntimeError(f"the simulator failed to start: {self._error}") from self._error
        return self

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        try:
            self.sim = Simulator(*self._args, **self._kwargs)
            loop.run_until_complete(self.sim.start(self._host, self._port))
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self.sim.stop())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    def stop(self, timeout: float = 60) -> None:
        if self.loop is not None and self._thread is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the simulator's loop and return its result."""
        if self.loop is None:
            raise RuntimeError("the simulator thread is not started")

        async def call() -> T:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout=30)

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def _simulator(self) -> Simulator:
        if self.sim is None:
            raise RuntimeError("the simulator thread is not started")
        return self.sim

    @property
    def url(self) -> str:
        return self._simulator.url

    @property
    def faults(self) -> Faults:
        return self._simulator.faults

    @property
    def store(self) -> Store:
        """The store (read it only through :meth:`call` while the simulator runs)."""
        return self._simulator.store

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        return self._simulator.write_kubeconfig(path, namespace)

    def create_namespace(self, name: str) -> dict[str, Any]:
        return self.call(self._simulator.create_namespace, name)

    def add_node(self, name: str, **kwargs: Any) -> dict[str, Any]:
        return self.call(self._simulator.add_node, name, **kwargs)

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.call(self._simulator.pod, namespace, name)

    def pods_running(self) -> int:
        return self.call(self._simulator.pods_running)
