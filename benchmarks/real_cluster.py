"""The hub's cluster view on a real control plane and on the simulator, side by side.

    .venv/bin/python benchmarks/real_cluster.py [--nodes 1000] [--pods 10000]
        [--changes 5000] [--churn 200] [--requests 400]

Needs the control plane's binaries (``tools/build-kube``). For each backend, in the same run:
the real control plane (``tools.kube.control_plane``: etcd, kube-apiserver, scheduler,
controller manager, kwok nodes) and the simulator (``esap_spawner.dev.sim``, fake kubelet, in a
process of its own), the same cluster is made through the API: ``--nodes`` nodes, then
``--pods`` pods bound to them (``nodeName``) that the node agent moves to Running. Then:

- **sync**: a ClusterWatcher (the hub's list+watch edge) with its ClusterModel starts in this
  process; the time until both lists are applied, and the process's RSS growth (the view's
  memory: the model plus the watcher's buffers);
- **events/s**: ``--changes`` label patches sent to the API server as fast as it takes them;
  the rate at which the watcher applied their events (first patch to last event applied);
- **profiles under churn**: ``esap-spawner service`` (its own watcher) on the backend while
  ``--churn`` pod events per second arrive (label patches at that rate); ``--requests``
  sequential ``GET api/v1/profiles`` with a portal token: latency p50 and p99, and the age
  of the view the answers report.

The server side is reported too: the API server and etcd RSS against the simulator's. Figures
are printed per backend and as real/simulator ratios, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from esap_spawner.capacity.model import ClusterModel  # noqa: E402
from esap_spawner.capacity.watch import ClusterWatcher, api_client_from_environment  # noqa: E402
from esap_spawner.dev.sim.cluster import node_manifest  # noqa: E402
from tests.harness.service import TOKENS, StandaloneService  # noqa: E402
from tools.kube.control_plane import ControlPlane, default_binaries  # noqa: E402

NAMESPACE = "bench"
SITE = """
facility: {name: Bench, description: benchmark, url: "http://127.0.0.1/"}
profiles:
  - {slug: small, cpu: {guarantee: 0.5, limit: 2}, memory: {guarantee: 1G, limit: 4G},
     image: "quay.io/jupyter/scipy-notebook:2026-01-01"}
  - {slug: large, cpu: {guarantee: 8, limit: 16}, memory: {guarantee: 32G, limit: 64G},
     image: "quay.io/jupyter/scipy-notebook:2026-01-01"}
"""


@dataclass
class Endpoint:
    """How a client reaches one backend's API server."""

    url: str
    kubeconfig: Path
    ssl: Any = None  # an SSLContext with the admin's client certificate, or None (simulator)
    headers: dict[str, str] = field(default_factory=dict)
    server_pids: list[int] = field(default_factory=list)


def pods_of(count: int, nodes: int) -> list[dict[str, Any]]:
    return [
        {
            "metadata": {"name": f"p{n:06d}", "labels": {"app": f"a{n % 10}"}},
            "spec": {
                "nodeName": f"n{n % nodes:05d}",
                "containers": [
                    {
                        "name": "c",
                        "image": "busybox:1.36",
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                    }
                ],
            },
        }
        for n in range(count)
    ]


def label_patches(label: str, count: int, pods: int, start: int = 0) -> list[tuple[str, Any]]:
    """``count`` merge patches setting ``label`` on the pods in turn, from pod ``start``."""
    return [
        (f"/api/v1/namespaces/{NAMESPACE}/pods/p{(start + n) % pods:06d}",
         {"metadata": {"labels": {label: str(start + n)}}})
        for n in range(count)
    ]  # fmt: skip


async def send_all(
    end: Endpoint,
    method: str,
    requests: list[tuple[str, Any]],
    *,
    rate: float = 0,
    concurrency: int = 32,
    content_type: str = "application/json",
    done: list[int] | None = None,
) -> float:
    """Send every ``(path, body)``; at most ``rate`` a second when given; ``done[0]`` counts
    the answered requests. Seconds taken."""
    connector = aiohttp.TCPConnector(limit=concurrency, ssl=end.ssl if end.ssl else False)
    headers = {**end.headers, "Content-Type": content_type}
    queue = list(reversed(requests))
    began = time.perf_counter()
    sent = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while queue:
            path, body = queue.pop()
            if rate:
                sent += 1
                await asyncio.sleep(max(0.0, began + sent / rate - time.perf_counter()))
            async with session.request(method, end.url + path, data=json.dumps(body),
                                       headers=headers) as answer:  # fmt: skip
                if answer.status >= 300:
                    raise RuntimeError(f"{method} {path}: {answer.status} {await answer.text()}")
            if done is not None:
                done[0] += 1

    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return time.perf_counter() - began


async def populate(end: Endpoint, nodes: int, pods: int) -> float:
    """Nodes, the namespace and bound pods through the API; seconds until all run."""
    began = time.perf_counter()
    alloc = {"cpu": "64", "memory": "256Gi", "pods": "110"}
    node_objects = [node_manifest(f"n{n:05d}", allocatable=alloc) for n in range(nodes)]
    await send_all(end, "POST", [("/api/v1/nodes", node) for node in node_objects])
    await send_all(end, "POST", [("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})])
    path = f"/api/v1/namespaces/{NAMESPACE}/pods"
    await send_all(end, "POST", [(path, pod) for pod in pods_of(pods, nodes)])
    pending = f"{end.url}{path}?fieldSelector=status.phase%21%3DRunning&limit=1"
    async with aiohttp.ClientSession(headers=end.headers) as session:
        while True:  # until no pod is left that is not Running
            async with session.get(pending, ssl=end.ssl or False) as answer:
                if not (await answer.json())["items"]:
                    break
            await asyncio.sleep(1)
    return time.perf_counter() - began


async def view_figures(end: Endpoint, changes: int) -> dict[str, float]:
    """Sync time, memory and events/s of a ClusterWatcher in this process."""
    gc.collect()
    before = psutil.Process().memory_info().rss
    api = await api_client_from_environment(str(end.kubeconfig))
    model = ClusterModel()
    watcher = ClusterWatcher(model=model, api_client=api)
    began = time.perf_counter()
    await watcher.start()
    assert await watcher.wait_synced(600)
    figures = {"sync_s": time.perf_counter() - began}
    gc.collect()
    figures["view_mb"] = (psutil.Process().memory_info().rss - before) / 2**20
    applied = watcher.events_applied
    patches = label_patches("bench", changes, changes)
    began = time.perf_counter()
    sending = asyncio.ensure_future(
        send_all(end, "PATCH", patches, content_type="application/merge-patch+json")
    )
    while watcher.events_applied - applied < changes:
        await asyncio.sleep(0.01)
    figures["events_per_s"] = changes / (time.perf_counter() - began)
    figures["patches_per_s"] = changes / await sending
    figures["burst_events_per_s"] = await burst(end, model, changes)
    await watcher.stop()
    await api.close()
    return figures


async def burst(end: Endpoint, model: ClusterModel, changes: int) -> float:
    """Events/s a watch from an old version delivers and the model applies (the work of the
    watcher catching up), once ``changes`` patches were made."""
    async with aiohttp.ClientSession(headers=end.headers) as session:
        url = f"{end.url}/api/v1/namespaces/{NAMESPACE}/pods?limit=1"
        async with session.get(url, ssl=end.ssl or False) as answer:
            version = (await answer.json())["metadata"]["resourceVersion"]
        patches = label_patches("burst", changes, changes)
        await send_all(end, "PATCH", patches, content_type="application/merge-patch+json")
        url = f"{end.url}/api/v1/pods?watch=true&resourceVersion={version}"
        applied = 0
        began = time.perf_counter()
        async with session.get(url, ssl=end.ssl or False) as answer:
            async for line in answer.content:
                event = json.loads(line)
                model.apply(event["type"], event["object"])
                applied += 1
                if applied >= changes:
                    break
        return changes / (time.perf_counter() - began)


async def churn_forever(end: Endpoint, per_second: float, pods: int, sent: list[int]) -> None:
    """Pod events at ``per_second`` (at most): a second's worth of label patches at a time,
    paced; ``sent[0]`` counts the patches the server took."""
    n = 0
    while True:
        batch = label_patches("churn", int(per_second), pods, start=n)
        n += len(batch)
        await send_all(end, "PATCH", batch, rate=per_second, concurrency=8,
                       content_type="application/merge-patch+json", done=sent)  # fmt: skip


async def profiles_figures(
    end: Endpoint, churn: float, requests: int, pods: int
) -> dict[str, float]:
    """``GET api/v1/profiles`` latency of the service under ``churn`` pod events/s."""
    with tempfile.TemporaryDirectory() as folder:
        service = StandaloneService(Path(folder), "--db-url=", site_text=SITE, tokens=TOKENS,
                                    kubeconfig=str(end.kubeconfig), timeout=120)  # fmt: skip
        sent = [0]
        churning = asyncio.ensure_future(churn_forever(end, churn, pods, sent))
        try:
            url = service.base + "api/v1/profiles"
            headers = {"Authorization": "token portal-token"}
            latencies, ages = [], []
            async with aiohttp.ClientSession(headers=headers) as session:
                while True:  # until the service's view is synced
                    async with session.get(url) as answer:
                        body = await answer.json()
                    if body["profiles"][0]["availability"]["status"] != "unknown":
                        break
                    await asyncio.sleep(0.5)
                await asyncio.sleep(3)  # churn running
                first, began_all = sent[0], time.perf_counter()
                for _ in range(requests):
                    began = time.perf_counter()
                    async with session.get(url) as answer:
                        body = await answer.json()
                    latencies.append(time.perf_counter() - began)
                    ages.append(time.time() - body_time(body))
                churned = (sent[0] - first) / (time.perf_counter() - began_all)
        finally:
            churning.cancel()
            service.stop()
    latencies.sort()
    return {
        "profiles_p50_ms": 1000 * statistics.median(latencies),
        "profiles_p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "view_age_p50_s": statistics.median(ages),
        "churn_per_s": churned,
    }


def body_time(body: dict[str, Any]) -> float:
    """The answer's ``as_of`` (an ISO time) in seconds since the epoch."""
    from datetime import datetime

    return datetime.fromisoformat(body["as_of"].replace("Z", "+00:00")).timestamp()


def server_mb(end: Endpoint) -> float:
    return sum(psutil.Process(pid).memory_info().rss for pid in end.server_pids) / 2**20


async def measure(end: Endpoint, args: argparse.Namespace) -> dict[str, float]:
    figures = {"populate_s": await populate(end, args.nodes, args.pods)}
    figures.update(await view_figures(end, args.changes))
    figures.update(await profiles_figures(end, args.churn, args.requests, args.pods))
    figures["server_mb"] = server_mb(end)
    return figures


def real_endpoint(plane: ControlPlane, folder: Path) -> Endpoint:
    pids = [c.process.pid for name, c in plane.components.items()
            if name in ("kube-apiserver", "etcd") and c.process is not None]  # fmt: skip
    return Endpoint(plane.api_url, plane.write_kubeconfig(folder / "real.kubeconfig"),
                    ssl=plane.api.context, server_pids=pids)  # fmt: skip


def _serve_simulator(conn: Connection, folder: str) -> None:
    """Child process: a simulator with the fake kubelet, until told to stop."""
    from esap_spawner.dev.sim import KubeletDelays, Simulator

    async def main() -> None:
        sim = Simulator(kubelet="fake", delays=KubeletDelays(0, 0, 0, 0), history=50_000)
        await sim.start()
        path = Path(folder) / "sim.kubeconfig"
        path.write_text(yaml.safe_dump(sim.kubeconfig()))
        conn.send({"url": sim.url, "kubeconfig": str(path), "pid": os.getpid()})
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await sim.stop()

    asyncio.run(main())


def report(real: dict[str, float], sim: dict[str, float]) -> None:
    rows = [
        ("make the cluster (API, until Running)", "populate_s", "s"),
        ("hub view: list+sync", "sync_s", "s"),
        ("hub view: memory (RSS growth)", "view_mb", "MB"),
        ("API server: label patches taken (32 at a time)", "patches_per_s", "/s"),
        ("hub view: their events applied (sustained)", "events_per_s", "/s"),
        ("hub view: events applied catching up (burst)", "burst_events_per_s", "/s"),
        ("pod events/s during the GETs (churn reached)", "churn_per_s", "/s"),
        ("GET api/v1/profiles p50 under churn", "profiles_p50_ms", "ms"),
        ("GET api/v1/profiles p99 under churn", "profiles_p99_ms", "ms"),
        ("view age in the answers (p50)", "view_age_p50_s", "s"),
        ("server RSS (apiserver+etcd / simulator)", "server_mb", "MB"),
    ]
    print("| measure | real control plane | simulator | real/sim |\n|---|---|---|---|")
    for label, key, unit in rows:
        ratio = real[key] / sim[key] if sim[key] else float("nan")
        print(f"| {label} | {real[key]:.2f} {unit} | {sim[key]:.2f} {unit} | {ratio:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=5000)
    parser.add_argument("--churn", type=float, default=200)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    if args.changes > args.pods:
        parser.error("--changes patches one pod each: at most --pods")
    print(f"cluster: {args.nodes} nodes, {args.pods} pods; {args.changes} changes; "
          f"churn {args.churn:.0f} pod events/s; {args.requests} GET api/v1/profiles")  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        plane = ControlPlane(default_binaries()).start()
        try:
            real = asyncio.run(measure(real_endpoint(plane, Path(folder)), args))
        finally:
            plane.stop()
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        server = ctx.Process(target=_serve_simulator, args=(child, folder), daemon=True)
        server.start()
        info = parent.recv()
        end = Endpoint(
            info["url"],
            Path(info["kubeconfig"]),
            headers={"Authorization": "Bearer esap-sim"},
            server_pids=[info["pid"]],
        )
        try:
            sim = asyncio.run(measure(end, args))
        finally:
            parent.send("stop")
            server.join(30)
    print(json.dumps({"real": real, "simulator": sim}, indent=1))
    report(real, sim)


if __name__ == "__main__":
    main()
