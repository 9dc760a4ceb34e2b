"""JupyterHub configuration for running ESAPSpawner on the local Kubernetes simulator.

The demo and the integration tests both run a real hub whose spawner talks to
:mod:`esap_spawner.dev.sim` with a *process* kubelet: each pod's command runs as a local
process on its own loopback address. What that needs, beyond a production config, is
written down once here:

- the single-user server is this environment's ``jupyterhub-singleuser``;
- it listens on the pod IP, taken from the downward API (``POD_IP``) as on a real
  cluster, because every pod shares the host's port space here;
- ``--allow-root``: local processes run as whoever runs the demo, which may be root;
- the hub is reached on 127.0.0.1, not a cluster DNS name.

:func:`local_hub_config` and :func:`find_proxy` are the rest of a hub on this machine
(ports, state folder, DummyAuthenticator, configurable-http-proxy), shared by the demo and
the test harness.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


class ProxyNotFound(FileNotFoundError):
    """configurable-http-proxy is not installed where a local hub can find it."""


def find_proxy() -> str:
    """configurable-http-proxy from ``node_modules`` (here or the checkout's, where ``npm ci``
    installs the version ``package-lock.json`` pins), else from PATH."""
    candidates = [
        Path.cwd() / "node_modules" / ".bin" / "configurable-http-proxy",
        Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "configurable-http-proxy",
    ]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    found = shutil.which("configurable-http-proxy")
    if found is None:
        raise ProxyNotFound(
            "configurable-http-proxy is not installed: in a checkout, `npm ci` (or `make demo`, "
            "`make test`) installs it into node_modules; elsewhere put it on PATH with "
            "`npm install --global configurable-http-proxy` (Node.js 20 or newer)"
        )
    return found


def local_hub_config(
    *,
    workdir: str | Path,
    port: int,
    hub_port: int,
    proxy_api_port: int,
    password: str,
    proxy: str,
) -> str:
    """Config text for a hub on 127.0.0.1 whose state lives in ``workdir``.

    DummyAuthenticator (any user name, one password; ``admin`` is an admin), the proxy
    started by the hub, servers stopped with the hub.
    """
    return f"""c = get_config()  # noqa
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.JupyterHub.db_url = "sqlite:///{workdir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{workdir}/jupyterhub_cookie_secret"
c.JupyterHub.pid_file = "{workdir}/jupyterhub.pid"
c.JupyterHub.cleanup_servers = True
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {password!r}
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {{"admin"}}
"""


def singleuser_command() -> str:
    """``jupyterhub-singleuser`` of the running Python environment."""
    return str(Path(sys.executable).with_name("jupyterhub-singleuser"))


def simulator_hub_config(
    *,
    site_file: str | Path,
    namespace: str,
    start_timeout: int = 60,
    http_timeout: int = 30,
) -> str:
    """Python config text (``jupyterhub_config.py``) for ESAPSpawner on the simulator.

    The hub process must have ``KUBECONFIG`` pointing at the simulator.
    """
    return f"""
c.JupyterHub.spawner_class = "esap"
c.ESAPSpawner.site_file = {str(site_file)!r}
c.KubeSpawner.namespace = {namespace!r}
c.KubeSpawner.cmd = [{singleuser_command()!r}]
c.KubeSpawner.args = ["--allow-root"]
c.KubeSpawner.ip = "$(POD_IP)"
c.KubeSpawner.environment = {{
    "POD_IP": {{"valueFrom": {{"fieldRef": {{"fieldPath": "status.podIP"}}}}}},
}}
c.KubeSpawner.start_timeout = {start_timeout}
c.KubeSpawner.http_timeout = {http_timeout}
c.KubeSpawner.poll_interval = 5
c.JupyterHub.hub_connect_ip = "127.0.0.1"
"""
