"""Admission through a real hub: quota and room are checked before any pod exists.

The hub runs on its own simulator with the fake kubelet (pods become Running, nothing
listens), so fifty spawns cost no real servers: what is measured is how many pods the
spawner creates and what the refused users are told.
"""

from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from esap_spawner.local import simulator_hub_config
from esap_spawner.profiles import PROFILE_LABEL
from tests.harness.hub import HubProcess

pytestmark = pytest.mark.integration

CLUSTER = {
    "nodes": [
        {"name": f"cpu-{i}", "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"}}
        for i in range(3)
    ]
}
SITE = {
    "facility": {"name": "Admission", "description": "tests", "url": "http://127.0.0.1/"},
    "profiles": [
        {
            "slug": "quota",
            "display_name": "Quota of ten",
            "default": True,
            "cpu": {"guarantee": 0.1, "limit": 1},
            "memory": {"guarantee": "128M", "limit": "512M"},
            "image": "quay.io/jupyter/minimal-notebook:2026-01-01",
            "max_servers": 10,
        },
        {
            "slug": "huge",
            "display_name": "More than any node",
            "cpu": {"guarantee": 40, "limit": 40},
            "memory": {"guarantee": "8G", "limit": "8G"},
            "image": "quay.io/jupyter/minimal-notebook:2026-01-01",
        },
    ],
}


@pytest.fixture
def hub(sim_factory: Any, tmp_path: Path) -> Any:
    sim = sim_factory(CLUSTER, kubelet="fake")
    namespace = "admission"
    sim.create_namespace(namespace)
    kubeconfig = sim.write_kubeconfig(tmp_path / "kubeconfig")
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(SITE))
    config = simulator_hub_config(site_file=site_file, namespace=namespace, start_timeout=20)
    # nothing listens in fake pods: fail the HTTP wait quickly
    config += "\nc.KubeSpawner.http_timeout = 3\nc.JupyterHub.concurrent_spawn_limit = 0\n"
    hub = HubProcess(tmp_path / "hub", config, env={"KUBECONFIG": str(kubeconfig)}).start()
    hub.sim = sim
    yield hub
    hub.stop()


def profile_pods(sim: Any, slug: str) -> list[dict[str, Any]]:
    r = requests.get(
        f"{sim.url}/api/v1/namespaces/admission/pods",
        params={"labelSelector": f"{PROFILE_LABEL}={slug}"},
        timeout=10,
    )
    r.raise_for_status()
    return list(r.json()["items"])


def test_profile_that_fits_nowhere_is_refused_at_once(hub: HubProcess) -> None:
    hub.create_user("hugo")
    r = hub.api("POST", "/users/hugo/server", json={"profile": "huge"})
    assert r.status_code == 409, r.text
    message = r.json()["message"]
    assert "cannot start now" in message and "no node has room" in message
    assert profile_pods(hub.sim, "huge") == []  # type: ignore[attr-defined]


def test_fifty_concurrent_spawns_never_exceed_max_servers(hub: HubProcess) -> None:
    names = [f"u{i:02d}-{uuid.uuid4().hex[:4]}" for i in range(50)]
    for name in names:
        hub.create_user(name)

    def spawn(name: str) -> tuple[int, str]:
        r = hub.api("POST", f"/users/{name}/server", json={"profile": "quota"}, timeout=60)
        return r.status_code, r.text

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(spawn, names))

    codes = Counter(code for code, _ in answers)
    assert codes[409] == 40, answers
    assert codes[201] + codes[202] == 10, answers
    for code, text in answers:
        if code == 409:
            assert "profile 'quota' is full" in text
            assert "(max_servers)" in text
    assert len(profile_pods(hub.sim, "quota")) == 10  # type: ignore[attr-defined]
