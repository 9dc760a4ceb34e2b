"""ESAPSpawner against plain KubeSpawner: start-to-ready time and API requests per spawn.

Both spawners run in this one process against the same simulator (fake kubelet, the same
delays), alternately, with the same resources and no datasets. The baseline is KubeSpawner
configured by hand with the profile's resources; ESAPSpawner gets them from a site file and
validates the options on the way. Requests are counted at the kubernetes_asyncio REST layer
(every HTTP call either spawner makes, watches included).

Usage: ``python benchmarks/spawn.py [--spawns 20]``. Prints the medians, the ratio and the
requests per spawn. Target (issue 2): ratio <= 1.10, at most one extra request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from jupyterhub.objects import Hub, Server
from kubernetes_asyncio.client import rest
from kubernetes_asyncio.config import kube_config
from traitlets.config import Config

from esap_spawner.dev.sim import KubeletDelays, SimulatorThread

DELAYS = KubeletDelays(pull=0.0, create=0.02, start=0.02, stop=0.02)
CLUSTER = {
    "nodes": [
        {"name": f"node-{i}", "allocatable": {"cpu": "64", "memory": "256Gi"}} for i in range(3)
    ]
}
PROFILE = {
    "slug": "small",
    "display_name": "Small",
    "default": True,
    "cpu": {"guarantee": 0.5, "limit": 2},
    "memory": {"guarantee": "1G", "limit": "4G"},
    "image": "quay.io/jupyter/minimal-notebook:2026-01-01",
}
SITE = {
    "facility": {"name": "Bench", "description": "benchmark", "url": "http://127.0.0.1/"},
    "profiles": [PROFILE],
}

ADMISSION = True  # set from --no-admission
requests_made: Counter[str] = Counter()
_original_request = rest.RESTClientObject.request


async def counting_request(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
    requests_made[method] += 1
    return await _original_request(self, method, url, *args, **kwargs)


class User:
    """The part of a JupyterHub user the spawners read."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.id = 1
        self.groups: list[Any] = []
        self.admin = False
        self.server = Server(ip="127.0.0.1", port=8888)

    @property
    def escaped_name(self) -> str:
        return self.name

    @property
    def url(self) -> str:
        return str(self.server.url)


def make(kind: str, user: str, site_file: Path) -> Any:
    from kubespawner import KubeSpawner

    from esap_spawner.spawn.spawner import ESAPSpawner

    config = Config()
    config.KubeSpawner.namespace = "bench"
    config.KubeSpawner.cmd = ["jupyterhub-singleuser"]
    config.KubeSpawner.start_timeout = 30
    if kind == "kubespawner":
        config.KubeSpawner.image = PROFILE["image"]
        config.KubeSpawner.cpu_guarantee = 0.5
        config.KubeSpawner.cpu_limit = 2.0
        config.KubeSpawner.mem_guarantee = "1G"
        config.KubeSpawner.mem_limit = "4G"
        cls = KubeSpawner
    else:
        config.ESAPSpawner.site_file = str(site_file)
        config.ESAPSpawner.db_url = ""
        config.ESAPSpawner.admission = ADMISSION
        cls = ESAPSpawner
    spawner = cls(
        hub=Hub(ip="127.0.0.1", port=8081),
        user=User(user),
        config=config,
        api_token="token",
        oauth_client_id="client",
    )
    spawner.user_options = {"profile": "small"} if kind == "esap" else {}
    return spawner


async def one_spawn(kind: str, user: str, site_file: Path) -> tuple[float, int]:
    spawner = make(kind, user, site_file)
    before = sum(requests_made.values())
    tic = time.perf_counter()
    await spawner.start()
    elapsed = time.perf_counter() - tic
    made = sum(requests_made.values()) - before
    await spawner.stop(now=True)
    return elapsed, made


async def run(spawns: int, site_file: Path) -> dict[str, dict[str, float]]:
    times: dict[str, list[float]] = {"kubespawner": [], "esap": []}
    counts: dict[str, list[int]] = {"kubespawner": [], "esap": []}
    # warm-up: reflectors start once per namespace and process, for both classes
    for kind in ("kubespawner", "esap"):
        await one_spawn(kind, f"warm-{kind}", site_file)
    for i in range(spawns):
        for kind in ("kubespawner", "esap") if i % 2 == 0 else ("esap", "kubespawner"):
            elapsed, made = await one_spawn(kind, f"{kind}-{i}", site_file)
            times[kind].append(elapsed)
            counts[kind].append(made)
    return {
        kind: {
            "median_s": statistics.median(times[kind]),
            "p90_s": sorted(times[kind])[int(0.9 * (len(times[kind]) - 1))],
            "requests_per_spawn": statistics.median(counts[kind]),
        }
        for kind in times
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spawns", type=int, default=20)
    args = parser.parse_args()
    rest.RESTClientObject.request = counting_request  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        site_file = Path(tmp) / "site.yaml"
        site_file.write_text(yaml.safe_dump(SITE))
        with SimulatorThread(CLUSTER, kubelet="fake", delays=DELAYS) as sim:
            sim.create_namespace("bench")
            kubeconfig = str(sim.write_kubeconfig(Path(tmp) / "kubeconfig"))
            # kubernetes_asyncio reads KUBECONFIG when imported: point both at the simulator
            os.environ["KUBECONFIG"] = kubeconfig
            kube_config.KUBE_CONFIG_DEFAULT_LOCATION = kubeconfig
            results = asyncio.run(run(args.spawns, site_file))
    base, ours = results["kubespawner"], results["esap"]
    print(f"spawns per class: {args.spawns} (alternating), fake kubelet, delays {DELAYS}")
    print(f"{'':14}{'median s':>10}{'p90 s':>10}{'requests/spawn':>16}")
    for kind, row in results.items():
        print(
            f"{kind:14}{row['median_s']:10.3f}{row['p90_s']:10.3f}{row['requests_per_spawn']:16.0f}"
        )
    ratio = ours["median_s"] / base["median_s"]
    extra = ours["requests_per_spawn"] - base["requests_per_spawn"]
    print(f"ratio esap/kubespawner (median start-to-ready): {ratio:.3f} (target <= 1.10)")
    print(f"extra API requests per spawn: {extra:+.0f} (target <= 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
