"""The Kubernetes backends tests run on: the simulator, and a real control plane (tools/kube-up).

- ``control_plane`` (session): ONE real control plane (etcd, kube-apiserver, kube-scheduler,
  kube-controller-manager, kwok) from ``tools/kube``, with the simulator's session cluster
  (:data:`tests.harness.sim.SESSION_CLUSTER`) registered as kwok nodes. When it cannot start
  (binaries not built, a component failing) the test is skipped with the reason, and under
  ``CI=true`` it fails instead: CI never passes a tier it did not run.
- ``kube`` (session, parametrized ``sim`` / ``real``): a :class:`Backend`, the one thing a test
  needs to run on either. The ``real`` parameter carries the ``k8s`` mark: the k8s tier runs
  it (``pytest -m k8s``), the other tiers leave it out (``addopts`` in pyproject.toml).
- ``kube_namespace`` (function): a fresh namespace on the current backend (on the real one,
  once its ``default`` ServiceAccount exists, which pod admission needs), deleted after;
  KubeSpawner's reflectors are stopped after each test. For the test's duration
  ``KUBECONFIG`` (and KubeSpawner's once-per-process config) point at the backend; the
  simulator's are back after, so tests of the session simulator can follow in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import pytest
import requests
from kubernetes_asyncio import client
from kubernetes_asyncio.config import kube_config

from esap_spawner.dev.sim.cluster import cluster_from_dict
from tests.harness.sim import SESSION_CLUSTER, _stop_reflectors
from tools.kube.control_plane import ControlPlane, ControlPlaneError, default_binaries


def cannot_run(reason: str) -> NoReturn:
    """Skip, or fail under CI=true: a tier that did not run must not pass there."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the real control plane is required under CI=true: {reason}")
    pytest.skip(reason)


def start_control_plane(**options: Any) -> ControlPlane:
    """A started control plane (no nodes; ``options`` as :class:`ControlPlane` takes them),
    or a skip/failure saying why there is none."""
    try:
        return ControlPlane(default_binaries(), **options).start()
    except ControlPlaneError as error:
        cannot_run(f"the real control plane does not start: {error}")


@dataclass
class Backend:
    """One Kubernetes API to run a test on."""

    name: str  # "sim" or "real"
    url: str
    kubeconfig: Path
    configuration: client.Configuration
    runs_processes: bool  # pods run their command as local processes (the process kubelet)

    def api(self) -> client.CoreV1Api:
        """A CoreV1Api on its own ApiClient (close ``api.api_client`` after)."""
        return client.CoreV1Api(client.ApiClient(self.configuration))

    def requests_options(self) -> dict[str, Any]:
        """Keyword arguments that let ``requests`` talk to this API server."""
        c = self.configuration
        if self.name == "sim":
            return {"headers": {"Authorization": c.api_key["authorization"]}}
        return {"cert": (c.cert_file, c.key_file), "verify": c.ssl_ca_cert}

    def create_namespace(self, name: str, timeout: float = 30) -> None:
        """Create namespace ``name``; on the real server, wait for its ``default``
        ServiceAccount, without which ServiceAccount admission refuses every pod."""
        http = self.requests_options()
        created = requests.post(
            f"{self.url}/api/v1/namespaces", json={"metadata": {"name": name}}, timeout=10, **http
        )
        assert created.status_code == 201, created.text
        deadline = time.monotonic() + timeout
        account = f"{self.url}/api/v1/namespaces/{name}/serviceaccounts/default"
        while self.name == "real" and requests.get(account, timeout=10, **http).status_code != 200:
            assert time.monotonic() < deadline, f"no default ServiceAccount in {name}"
            time.sleep(0.1)

    def delete_namespace(self, name: str) -> None:
        requests.delete(
            f"{self.url}/api/v1/namespaces/{name}", timeout=10, **self.requests_options()
        )


def sim_backend(sim: Any) -> Backend:
    configuration = client.Configuration(host=sim.url)
    configuration.api_key = {"authorization": "Bearer esap-sim"}
    kubeconfig = Path(os.environ["KUBECONFIG"])  # the sim fixture wrote and exported it
    return Backend("sim", sim.url, kubeconfig, configuration, runs_processes=True)


def real_backend(plane: ControlPlane, kubeconfig: Path) -> Backend:
    configuration = client.Configuration(host=plane.api_url)
    configuration.ssl_ca_cert = str(plane.ca.cert)
    configuration.cert_file = str(plane.admin.cert)
    configuration.key_file = str(plane.admin.key)
    return Backend("real", plane.api_url, kubeconfig, configuration, runs_processes=False)


@contextlib.contextmanager
def kubeconfig_in_use(path: Path) -> Iterator[None]:
    """Point KUBECONFIG, kubernetes_asyncio's default and KubeSpawner's cached config at
    ``path``; put the previous ones back after."""
    from kubespawner.clients import load_config

    previous = os.environ.get("KUBECONFIG")
    previous_default = kube_config.KUBE_CONFIG_DEFAULT_LOCATION
    os.environ["KUBECONFIG"] = str(path)
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(path)
    if previous != str(path):
        load_config.cache_clear()  # KubeSpawner loads the kubeconfig once per process
    try:
        yield
    finally:
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = previous_default
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        if previous != str(path):
            load_config.cache_clear()


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The session's real control plane, with the session cluster's nodes."""
    plane = start_control_plane()
    try:
        cluster = cluster_from_dict(SESSION_CLUSTER)
        plane.register(cluster.nodes)
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session", params=["sim", pytest.param("real", marks=pytest.mark.k8s)])
def kube(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The backend under test: the session simulator, or the session control plane."""
    if request.param == "sim":
        yield sim_backend(request.getfixturevalue("sim"))
        return
    plane: ControlPlane = request.getfixturevalue("control_plane")
    kubeconfig = plane.write_kubeconfig(tmp_path_factory.mktemp("real") / "kubeconfig")
    yield real_backend(plane, kubeconfig)


@pytest.fixture
async def kube_namespace(kube: Backend) -> AsyncIterator[str]:
    """A fresh namespace on the backend, whose kubeconfig is the process's for the test;
    KubeSpawner's reflectors stopped after."""
    name = f"t-{secrets.token_hex(4)}"
    with kubeconfig_in_use(kube.kubeconfig):
        kube.create_namespace(name)
        try:
            yield name
        finally:
            await _stop_reflectors()
            kube.delete_namespace(name)


async def create_many(
    plane: ControlPlane, path: str, objects: Iterable[dict[str, Any]], *, concurrency: int = 32
) -> int:
    """POST every object to ``path`` on the control plane, ``concurrency`` at a time, over
    kept-alive connections (TLS once per connection): thousands of pods in seconds."""
    connector = aiohttp.TCPConnector(limit=concurrency, ssl=plane.api.context)
    queue = list(objects)
    created = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal created
        while queue:
            body = queue.pop()
            async with session.post(plane.api_url + path, json=body) as answer:
                if answer.status != 201:
                    raise RuntimeError(f"POST {path}: {answer.status} {await answer.text()}")
                created += 1

    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return created
