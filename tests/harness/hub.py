"""A real JupyterHub process (with configurable-http-proxy from npm) for integration tests.

``HubProcess`` writes a ``jupyterhub_config.py`` into a work directory, starts
``python -m jupyterhub`` with it, waits until the proxy routes ``/hub/login``, and offers
small helpers to call the REST API with the admin service token, mint user tokens and
log in like a browser (cookies + ``_xsrf``). Test-specific configuration is appended as
Python text, so each test says exactly what its hub runs with.

The ``hub_factory`` fixture starts hubs and stops them at the end of the test. Hubs
spawning on the simulator inherit ``KUBECONFIG`` from the test process environment.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import yaml
from packaging.version import Version

from esap_spawner.dev.local import find_proxy, local_hub_config, simulator_hub_config
from esap_spawner.service.hub_version import query_style_for
from esap_spawner.spawn.options import query_string_keys

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "esap-test-password"

# The site the hub tests spawn with: small (the default), medium, and gpu for the group
# gpu-users.
HUB_SITE: dict[str, Any] = {
    "facility": {
        "name": "Test Hub",
        "description": "integration tests",
        "url": "http://127.0.0.1/",
    },
    "profiles": [
        {
            "slug": "small",
            "display_name": "Small",
            "default": True,
            "cpu": {"guarantee": 0.25, "limit": 1},
            "memory": {"guarantee": "256M", "limit": "1G"},
            "image": "quay.io/jupyter/minimal-notebook:2026-01-01",
        },
        {
            "slug": "medium",
            "display_name": "Medium",
            "cpu": {"guarantee": 1, "limit": 2},
            "memory": {"guarantee": "1G", "limit": "2G"},
            "image": "quay.io/jupyter/scipy-notebook:2026-01-01",
        },
        {
            "slug": "gpu",
            "display_name": "GPU",
            "cpu": {"guarantee": 1, "limit": 4},
            "memory": {"guarantee": "2G", "limit": "8G"},
            "gpu": {"count": 1, "resource": "nvidia.com/gpu"},
            "image": "quay.io/jupyter/pytorch-notebook:2026-01-01",
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "allowed_groups": ["gpu-users"],
        },
    ],
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


TEST_CONFIG = """
c.JupyterHub.services = [{{"name": "test-admin", "api_token": {admin_token!r}}}]
c.JupyterHub.load_roles = [{{"name": "admin", "services": ["test-admin"]}}]
c.JupyterHub.log_level = "DEBUG"
"""


def running_version(url: str) -> Version:
    """The JupyterHub version of the hub at ``url`` (``GET /hub/api/``, no token needed)."""
    r = requests.get(f"{url}/hub/api/", timeout=10)
    r.raise_for_status()
    return Version(r.json()["version"])


def query_keys(version: Version) -> dict[str, str]:
    """Each spawn option's query argument as JupyterHub ``version`` reads it on
    ``/hub/spawn`` (``opt-profile`` from JupyterHub 6, ``profile`` before)."""
    return query_string_keys(query_style_for(str(version)))


class HubProcess:
    """One JupyterHub process and the way to talk to it."""

    def __init__(self, workdir: Path, config: str = "", *, env: dict[str, str] | None = None):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.hub_port = free_port()
        self.proxy_api_port = free_port()
        self.admin_token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "jupyterhub_config.py"
        self.log_path = workdir / "jupyterhub.log"
        self.extra_config = textwrap.dedent(config)
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.namespace: str | None = None  # where its spawner creates pods, when it spawns
        self.site_file: Path | None = None

    def write_config(self) -> None:
        base = local_hub_config(
            workdir=self.workdir,
            port=self.port,
            hub_port=self.hub_port,
            proxy_api_port=self.proxy_api_port,
            password=PASSWORD,
            proxy=find_proxy(),
        ) + TEST_CONFIG.format(admin_token=self.admin_token)
        self.config_path.write_text(base + "\n" + self.extra_config)

    def start(self, timeout: float = 45) -> HubProcess:
        self.write_config()
        env = {**os.environ, **self.env}
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(self.config_path)],
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"JupyterHub exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/hub/login", timeout=2).status_code == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"JupyterHub did not answer within {timeout} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        # the proxy is the hub's child in its own session; make sure nothing lingers
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # -- what this JupyterHub does ---------------------------------------------------

    @functools.cached_property
    def version(self) -> Version:
        """The running hub's JupyterHub version (its API root answers it without a token)."""
        return running_version(self.url)

    def form_refusal_status(self, status: int) -> int:
        """What this hub answers when a spawn form post or deep link is refused with
        ``status``: that status from JupyterHub 5.4; before, 200 (the form again, with the
        message)."""
        return status if self.version >= Version("5.4") else 200

    # -- REST API -------------------------------------------------------------------

    def api(
        self, method: str, path: str, *, token: str | None = None, **kwargs: Any
    ) -> requests.Response:
        headers = kwargs.pop("headers", {})
        headers["Authorization"] = f"token {token or self.admin_token}"
        kwargs.setdefault("timeout", 30)
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers, **kwargs)

    def create_user(self, name: str, *, groups: tuple[str, ...] = ()) -> None:
        r = self.api("POST", f"/users/{name}")
        if r.status_code not in (201, 409):
            raise RuntimeError(f"creating user {name}: {r.status_code} {r.text}")
        for group in groups:
            r = self.api("POST", f"/groups/{group}")
            if r.status_code not in (201, 409):
                raise RuntimeError(f"creating group {group}: {r.status_code} {r.text}")
            r = self.api("POST", f"/groups/{group}/users", json={"users": [name]})
            r.raise_for_status()

    def user_token(self, name: str, *, scopes: list[str] | None = None) -> str:
        body: dict[str, Any] = {"note": "test"}
        if scopes is not None:
            body["scopes"] = scopes
        r = self.api("POST", f"/users/{name}/tokens", json=body)
        r.raise_for_status()
        return str(r.json()["token"])

    def wait_for_server(self, name: str, *, timeout: float = 60) -> dict[str, Any]:
        """Wait until the user's default server is ready or no longer pending."""
        deadline = time.monotonic() + timeout
        model: dict[str, Any] = {}
        while time.monotonic() < deadline:
            model = self.api("GET", f"/users/{name}").json()
            server = model.get("servers", {}).get("")
            if server and server.get("ready"):
                return model
            if not server:  # the spawn failed or the server was stopped
                return model
            time.sleep(0.3)
        raise TimeoutError(f"server of {name} not ready after {timeout} s: {model}")

    # -- browser-like session -------------------------------------------------------

    def login(
        self, name: str, password: str = PASSWORD, *, next_url: str | None = None
    ) -> requests.Session:
        """A session logged in as ``name``. ``next_url``: where the hub would send the
        browser next (then the hub does not look at the user's server at all)."""
        session = requests.Session()
        r = session.get(f"{self.url}/hub/login", timeout=10)
        r.raise_for_status()
        xsrf = session.cookies.get("_xsrf", path="/hub/")
        query = f"?next={quote(next_url, safe='')}" if next_url else ""
        r = session.post(
            f"{self.url}/hub/login{query}",
            data={"username": name, "password": password, "_xsrf": xsrf},
            timeout=30,
            allow_redirects=False,
        )
        if r.status_code != 302:
            raise RuntimeError(f"login of {name} failed: {r.status_code} {r.text[:300]}")
        return session


@pytest.fixture
def hub_factory(tmp_path: Path) -> Iterator[Any]:
    """Start real hubs for one test: ``hub_factory(config_text, env=...)``; stopped after."""
    hubs: list[HubProcess] = []

    def make(config: str = "", *, env: dict[str, str] | None = None, name: str = "hub"):
        hub = HubProcess(tmp_path / name, config, env=env)
        hubs.append(hub)
        return hub.start()

    yield make
    for hub in hubs:
        hub.stop()


# -- a hub spawning on a cluster (the simulator, or a real control plane) -------------------


def hub_on_cluster(
    workdir: Path,
    site: dict[str, Any],
    *,
    namespace: str,
    kubeconfig: Path | None = None,
    start_timeout: float = 40,
    config: str = "",
    env: dict[str, str] | None = None,
    start: bool = True,
) -> HubProcess:
    """A hub whose ESAPSpawner spawns into ``namespace`` (which exists) of the cluster
    ``kubeconfig`` names (default: ``KUBECONFIG``, the session simulator's): ``site`` written
    to ``workdir/site.yaml`` (``hub.site_file``), the simulator hub configuration
    (:func:`esap_spawner.dev.local.simulator_hub_config`) with ``config`` appended. Started
    unless ``start`` is false (to rewrite the site with the hub's URL first); the caller
    stops it."""
    workdir.mkdir(parents=True, exist_ok=True)
    site_file = workdir / "site.yaml"
    site_file.write_text(yaml.safe_dump(site))
    text = simulator_hub_config(
        site_file=site_file, namespace=namespace, start_timeout=start_timeout
    )
    env = dict(env or {})
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    hub = HubProcess(workdir / "hub", text + config, env=env)
    hub.namespace, hub.site_file = namespace, site_file
    return hub.start() if start else hub


def pods(sim: Any, namespace: str) -> list[dict[str, Any]]:
    r = requests.get(f"{sim.url}/api/v1/namespaces/{namespace}/pods", timeout=10)
    r.raise_for_status()
    return list(r.json()["items"])


def user_pods(sim: Any, hub: HubProcess, name: str) -> list[dict[str, Any]]:
    """The pods of user ``name`` in the hub's namespace (a hub from :func:`hub_on_cluster`)."""
    assert hub.namespace, "the hub spawns in no namespace known to the test"
    return [
        p
        for p in pods(sim, hub.namespace)
        if p["metadata"].get("annotations", {}).get("hub.jupyter.org/username") == name
    ]


def stop_server(hub: HubProcess, name: str) -> None:
    r = hub.api("DELETE", f"/users/{name}/server")
    assert r.status_code in (202, 204), r.text
    hub.wait_for_server(name)
