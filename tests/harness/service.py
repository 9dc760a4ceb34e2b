"""The ``esap`` service under test, two ways, with the site and tokens its tests share.

- in-process (fixtures ``service_factory``, ``service``, ``site_file``, ``token_file``): the
  real tornado app (:func:`esap_spawner.service.app.make_app`) listening on a free port of
  127.0.0.1, over a :class:`~esap_spawner.capacity.model.ClusterModel` fed nodes and pods by
  hand and the static-token strategy;
- :class:`StandaloneService`: ``esap-spawner service --token-file ...`` in a process of its
  own, as a site runs it beside a hub it does not manage (and as the fuzz tests hit it).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from tornado.httpclient import AsyncHTTPClient, HTTPResponse
from tornado.httpserver import HTTPServer

from esap_spawner.capacity.model import ClusterModel
from esap_spawner.service.app import make_app
from esap_spawner.service.auth import StaticTokenAuth
from esap_spawner.site.model import load_site
from esap_spawner.site.profiles import PROFILE_LABEL
from tests.harness.clock import Clock
from tests.harness.cluster_objects import node, pod
from tests.harness.hub import free_port

# -- the site and the tokens the service tests share -----------------------------------------

SMALL_IMAGE = "quay.io/jupyter/scipy-notebook:2026-01-01"

SITE_YAML = f"""
facility:
  name: Test Hub
  description: A hub for tests
  url: https://hub.example.org/
  keywords: [radio, gpu]
profiles:
  - slug: small
    display_name: "Small: 1 CPU, 2 GB"
    description: For notebooks
    cpu: {{guarantee: 1, limit: 2}}
    memory: {{guarantee: 2G, limit: 4G}}
    image: {SMALL_IMAGE}
    max_servers: 5
    hardware_capabilities: []
  - slug: gpu
    display_name: "GPU: 1 A100"
    description: For training
    cpu: {{guarantee: 4, limit: 8}}
    memory: {{guarantee: 16Gi, limit: 32Gi}}
    gpu: {{count: 1, resource: nvidia.com/gpu, model: A100}}
    image: quay.io/jupyter/pytorch-notebook:cuda12-2026-01-01
    node_selector: {{accelerator: a100}}
    allowed_groups: [radio]
    hardware_capabilities: [gpu]
"""

TOKENS = [
    {"token": "portal-token", "name": "portal", "kind": "service", "scopes": ["custom:esap:read"]},
    {
        "token": "alice-token",
        "name": "alice",
        "groups": ["radio"],
        "scopes": ["access:services!service=esap"],
    },
    {"token": "bob-token", "name": "bob", "groups": [], "scopes": ["access:services"]},
    {
        "token": "carol-token",
        "name": "carol",
        "groups": [],
        "scopes": ["read:users:name!user=carol", "read:users!user"],  # the 2nd is malformed
    },
    {
        "token": "root-token",
        "name": "root",
        "admin": True,
        "scopes": ["access:services!service=esap"],
    },
    {"token": "prom-token", "name": "prometheus", "kind": "service", "scopes": ["read:metrics"]},
]


# -- under a hub (tests/harness/hub.py) --------------------------------------------------

PORTAL_TOKEN = "portal-" + "0" * 24
OTHER_SERVICE_TOKEN = "other-" + "1" * 24


def managed_service_config(site_file: Path, port: int) -> str:
    """A hub's configuration for the service it manages (on ``port``, no cluster) and two
    token-only services: ``portal`` (``custom:esap:read``) and ``other`` (no scope)."""
    command = [sys.executable, "-m", "esap_spawner.cli", "service", "--site-file", str(site_file)]
    return f"""
c.JupyterHub.custom_scopes = {{
    "custom:esap:read": {{"description": "Read the ESAP catalogue: every profile and its groups"}},
}}
c.JupyterHub.services.extend([
    {{"name": "esap", "url": "http://127.0.0.1:{port}", "command": {command!r},
      "environment": {{"KUBECONFIG": "{site_file.parent}/no-such-kubeconfig"}},
      "oauth_no_confirm": True}},
    {{"name": "portal", "api_token": {PORTAL_TOKEN!r}}},
    {{"name": "other", "api_token": {OTHER_SERVICE_TOKEN!r}}},
])
c.JupyterHub.load_roles.extend([
    {{"name": "esap-portal", "scopes": ["custom:esap:read"], "services": ["portal"]}},
    {{"name": "user", "scopes": ["self", "access:services!service=esap"]}},
])
"""


# -- in-process ----------------------------------------------------------------------------

PREFIX = "/services/esap/"


class Service:
    """An in-process service: its port, model, clock and state (``ServiceState``)."""

    def __init__(self, port: int, model: ClusterModel, clock: Clock, state: Any) -> None:
        self.port = port
        self.model = model
        self.clock = clock
        self.state = state
        self.client = AsyncHTTPClient()

    async def fetch(
        self,
        path: str,
        *,
        token: str | None = None,
        method: str = "GET",
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> HTTPResponse:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"token {token}"
        if method in ("POST", "PUT", "PATCH") and body is None:
            body = b""
        return await self.client.fetch(
            f"http://127.0.0.1:{self.port}{PREFIX}{path}",
            method=method,
            body=body,
            headers=all_headers,
            raise_error=False,
            allow_nonstandard_methods=True,
        )


@pytest.fixture
def site_file(tmp_path: Path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(SITE_YAML)
    return path


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(TOKENS))
    return path


def server_pod(uid: str, node_name: str, profile: str, *, cpu: str, memory: str) -> dict[str, Any]:
    """A notebook server's pod as the spawner labels it (the product's profile label)."""
    return pod(uid, node_name, cpu, memory, profile=profile, label=PROFILE_LABEL,
               namespace="hub", name=f"jupyter-{uid}")  # fmt: skip


def synced_model(clock: Clock) -> ClusterModel:
    model = ClusterModel(clock=clock)
    model.replace_all(
        [
            node("cpu-1", cpu="8", memory="32G", images=(SMALL_IMAGE,)),
            node("cpu-2", cpu="4", memory="16G"),
            node("gpu-1", cpu="16", memory="128Gi", gpu=2, labels={"accelerator": "a100"}),
        ],
        [server_pod("u1", "cpu-1", "small", cpu="1", memory="2G")],
    )
    return model


ServiceFactory = Callable[..., Any]


@pytest.fixture
async def service_factory(site_file: Path, token_file: Path) -> AsyncIterator[ServiceFactory]:
    servers: list[HTTPServer] = []

    async def make(*, synced: bool = True, **options: Any) -> Service:
        clock = Clock(1_767_225_600.0)  # 2026-01-01T00:00:00Z
        model = synced_model(clock) if synced else ClusterModel(clock=clock)
        options.setdefault("auth", StaticTokenAuth.from_file(token_file))
        app = make_app(
            site=load_site(site_file),
            capacity=model,
            prefix=PREFIX,
            site_file=str(site_file),
            **options,
        )
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.setblocking(False)
        server = HTTPServer(app)
        server.add_sockets([sock])
        servers.append(server)
        return Service(sock.getsockname()[1], model, clock, app.settings["esap"])

    yield make
    for server in servers:
        server.stop()
        await server.close_all_connections()


@pytest.fixture
async def service(service_factory: ServiceFactory) -> Service:
    return await service_factory()


# -- in a process of its own ----------------------------------------------------------------


class StandaloneService:
    """Started on 127.0.0.1 at a free port with ``site_text`` and ``tokens`` written to
    ``workdir``; ``extra`` arguments follow. ``base`` is its URL, ending in ``/``. Without a
    ``kubeconfig`` it points at an absent file (no cluster view)."""

    def __init__(
        self,
        workdir: Path,
        *extra: str,
        site_text: str,
        tokens: dict[str, Any],
        prefix: str = "/esap/",
        kubeconfig: str | None = None,
        timeout: float = 30,
    ) -> None:
        site_file = workdir / "site.yaml"
        site_file.write_text(site_text)
        token_file = workdir / "tokens.json"
        token_file.write_text(json.dumps(tokens))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
        env["KUBECONFIG"] = kubeconfig or str(workdir / "absent")
        command = [sys.executable, "-m", "esap_spawner.cli", "service", "--site-file",
                   str(site_file), "--token-file", str(token_file), "--ip", "127.0.0.1",
                   "--port", str(port), "--prefix", prefix, *extra]  # fmt: skip
        self.log_path = workdir / "service.log"
        self.proc = subprocess.Popen(
            command, env=env, stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT,
            cwd=workdir,  # its default database (sqlite:///esap.sqlite) goes there
        )  # fmt: skip
        self.base = f"http://127.0.0.1:{port}{prefix}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                requests.get(self.base + "health", timeout=2)
                return
            except requests.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    raise AssertionError(self.log_path.read_text()) from None
                time.sleep(0.2)

    def stop(self) -> int:
        """SIGTERM, as a site's process manager stops it; its exit code."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("the service did not stop within 10 s of SIGTERM") from None
