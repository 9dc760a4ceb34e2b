"""Pytest fixtures for the Kubernetes API simulator (``esap_spawner.dev.sim``).

- ``sim`` (session): ONE :class:`~esap_spawner.dev.sim.SimulatorThread` for the whole run, with
  the process kubelet and :data:`SESSION_CLUSTER`; ``KUBECONFIG`` points at it for the rest
  of the run (and for hub processes started by tests, which inherit the environment), and
  kubernetes_asyncio's default kubeconfig path too (it reads KUBECONFIG at import time).
  KubeSpawner loads the first kubeconfig it sees once per process and keeps its reflectors as
  class-level singletons per namespace, so every KubeSpawner test must use the session
  simulator, isolate itself with its own namespace (``sim_namespace``), and stop the
  reflectors afterwards (``sim_namespace`` does: ``KubeSpawner._stop_all_reflectors()``).
- ``sim_namespace`` (function): a fresh namespace in the session simulator, deleted after.
- ``sim_factory`` (function): start private simulators (``sim_factory(kubelet="fake", ...)``
  takes :class:`~esap_spawner.dev.sim.Simulator`'s arguments); all stopped after the test.
- ``k8s_api(sim)``: a kubernetes_asyncio ``CoreV1Api`` bound to one simulator through its
  own ``Configuration``. Never call ``config.load_kube_config()`` without
  ``client_configuration=`` in tests: it would repoint the process-wide default that
  KubeSpawner uses.
"""

from __future__ import annotations

import os
import secrets
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.config import kube_config

from esap_spawner.dev.sim import KubeletDelays, SimulatorThread

# A pod's whole program where a test only needs the hub to get an HTTP answer at the server's
# address (many real notebook servers would not fit a small machine): any GET on $POD_IP, at
# the port of JUPYTERHUB_SERVICE_URL (8888 by default), answers 200.
TINY_SERVER = """
import http.server, os, urllib.parse
port = urllib.parse.urlsplit(os.environ.get("JUPYTERHUB_SERVICE_URL", "")).port or 8888
class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"tiny": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((os.environ["POD_IP"], port), Answer).serve_forever()
"""

# The session cluster: two CPU nodes and one tainted GPU node.
SESSION_CLUSTER: dict[str, Any] = {
    "nodes": [
        {"name": "cpu-1", "labels": {"node-type": "cpu"},
         "allocatable": {"cpu": "8", "memory": "32Gi"}},
        {"name": "cpu-2", "labels": {"node-type": "cpu"},
         "allocatable": {"cpu": "8", "memory": "32Gi"}},
        {"name": "gpu-1", "labels": {"node-type": "gpu", "accelerator": "nvidia-a100"},
         "allocatable": {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "2"},
         "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
    ]
}  # fmt: skip
TEST_DELAYS = KubeletDelays(pull=0.1, create=0.02, start=0.02, stop=0.02, restart_backoff=10.0)


def k8s_api(sim: Any) -> client.CoreV1Api:
    """A CoreV1Api talking to ``sim`` (a Simulator or SimulatorThread); close its api_client."""
    configuration = client.Configuration(host=sim.url)
    configuration.api_key = {"authorization": "Bearer esap-sim"}
    return client.CoreV1Api(client.ApiClient(configuration))


@pytest.fixture(scope="session")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorThread]:
    """The session's simulator (process kubelet); sets KUBECONFIG for the whole run."""
    thread = SimulatorThread(SESSION_CLUSTER, kubelet="process", delays=TEST_DELAYS).start()
    kubeconfig = thread.write_kubeconfig(tmp_path_factory.mktemp("sim") / "kubeconfig.yaml")
    previous = os.environ.get("KUBECONFIG")
    previous_default = kube_config.KUBE_CONFIG_DEFAULT_LOCATION
    os.environ["KUBECONFIG"] = str(kubeconfig)
    # kubernetes_asyncio reads KUBECONFIG once, at import time: point its default there too.
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(kubeconfig)
    try:
        yield thread
    finally:
        thread.stop()
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = previous_default
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous


async def _stop_reflectors() -> None:
    spawner_module = sys.modules.get("kubespawner.spawner")
    if spawner_module is not None:
        await spawner_module.KubeSpawner._stop_all_reflectors()


@pytest.fixture
async def sim_namespace(sim: SimulatorThread) -> Any:
    """A fresh namespace in the session simulator; KubeSpawner reflectors stopped after."""
    name = f"t-{secrets.token_hex(4)}"
    sim.create_namespace(name)
    try:
        yield name
    finally:
        await _stop_reflectors()
        if sim.call(sim.store.find, "namespaces", "", name) is not None:
            sim.call(sim.store.delete, "namespaces", "", name)


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., SimulatorThread]]:
    """Start private simulators for one test; each is stopped (with its processes) after."""
    started: list[SimulatorThread] = []

    def start(*args: Any, **kwargs: Any) -> SimulatorThread:
        kwargs.setdefault("delays", TEST_DELAYS)
        thread = SimulatorThread(*args, **kwargs).start()
        started.append(thread)
        return thread

    try:
        yield start
    finally:
        for thread in started:
            thread.stop()


def fresh_namespace(sim: Any, prefix: str) -> str:
    """A new namespace ``<prefix>-<6 hex digits>`` on ``sim``: tests sharing the session
    simulator never see each other's pods."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    sim.create_namespace(name)
    return name
