"""JupyterHub configuration for running ESAPSpawner on the local Kubernetes simulator.

The demo and the integration tests both run a real hub whose spawner talks to
:mod:`esap_spawner.sim` with a *process* kubelet: each pod's command runs as a local
process on its own loopback address. What that needs, beyond a production config, is
written down once here:

- the single-user server is this environment's ``jupyterhub-singleuser``;
- it listens on the pod IP, taken from the downward API (``POD_IP``) as on a real
  cluster, because every pod shares the host's port space here;
- ``--allow-root``: local processes run as whoever runs the demo, which may be root;
- the hub is reached on 127.0.0.1, not a cluster DNS name.
"""

from __future__ import annotations

import sys
from pathlib import Path


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
