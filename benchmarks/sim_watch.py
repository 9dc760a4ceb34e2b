"""List + watch throughput of the Kubernetes API simulator at 10,000 nodes and 100,000 pods.

    .venv/bin/python benchmarks/sim_watch.py [--nodes 10000] [--pods 100000] [--changes 20000]

The simulator runs in a child process (fake kubelet) with the cluster built in memory
(pods pre-bound and Running, spread over 100 namespaces); this process is the client, so
client parsing does not steal the server's interpreter. It prints:

- the time to load the cluster and the server's RSS,
- the time to list all pods over HTTP (bytes received, and with ``json.loads``; a second
  list reuses each object's cached JSON), one
  namespace (index look-up), and all pods with a label selector,
- events per second delivered to 5 concurrent watchers while the server applies
  ``--changes`` pod updates (each watcher parses every event line with ``json.loads``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import time
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import psutil
from _headline import headline

NAMESPACES = 100


def _serve(conn: Connection, nodes: int, pods: int) -> None:
    """Child process: build the cluster, serve, apply changes when asked."""
    from esap_spawner.dev.sim import KubeletDelays, Simulator, node_manifest

    async def main() -> None:
        sim = Simulator(kubelet="fake", delays=KubeletDelays(0, 0, 0, 0), history=50_000)
        await sim.start()
        store = sim.store
        began = time.perf_counter()
        for n in range(NAMESPACES):
            store.create("namespaces", "", {"metadata": {"name": f"ns-{n}"}})
        for n in range(nodes):
            alloc = {"cpu": "64", "memory": "256Gi", "pods": "110"}
            store.create("nodes", "", node_manifest(f"node-{n:05d}", allocatable=alloc))
        for n in range(pods):
            pod = {
                "metadata": {"name": f"pod-{n:06d}", "labels": {"app": f"a{n % 10}"}},
                "spec": {
                    "nodeName": f"node-{n % nodes:05d}",
                    "containers": [
                        {
                            "name": "main",
                            "image": "busybox:1.36",
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                        }
                    ],
                },
                "status": {
                    "phase": "Running",
                    "podIP": f"127.{128 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}",
                },
            }
            store.create("pods", f"ns-{n % NAMESPACES}", pod)
            if n % 5000 == 0:
                await asyncio.sleep(0)
        load = time.perf_counter() - began
        conn.send({"url": sim.url, "load_seconds": load, "pid": os.getpid()})
        loop = asyncio.get_running_loop()
        while True:
            message = await loop.run_in_executor(None, conn.recv)
            if message == "stop":
                break
            count = int(message)
            began = time.perf_counter()
            for n in range(count):
                ns, name = f"ns-{n % NAMESPACES}", f"pod-{n:06d}"

                def touch(pod: dict[str, Any], value: str = str(n)) -> None:
                    pod["metadata"]["labels"]["bench"] = value

                store.modify("pods", ns, name, touch)
                if n % 500 == 499:
                    await asyncio.sleep(0)  # let the watch handlers write
            conn.send({"apply_seconds": time.perf_counter() - began})
        await sim.stop()

    asyncio.run(main())


async def _timed_get(session: aiohttp.ClientSession, url: str) -> tuple[float, float, int, int]:
    began = time.perf_counter()
    async with session.get(url) as response:
        body = await response.read()
    received = time.perf_counter() - began
    items = len(json.loads(body)["items"])
    parsed = time.perf_counter() - began
    return received, parsed, len(body), items


async def _watch(session: aiohttp.ClientSession, url: str, expected: int, ready: Any) -> float:
    got = 0
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=600)) as response:
        ready.set_result(None) if not ready.done() else None
        async for line in response.content:
            json.loads(line)
            got += 1
            if got >= expected:
                return time.perf_counter()
    raise RuntimeError(f"watch ended after {got} of {expected} events")


async def client(url: str, conn: Connection, server_pid: int, changes: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    server = psutil.Process(server_pid)
    figures["rss_loaded_mb"] = server.memory_info().rss / 2**20
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        received, parsed, size, items = await _timed_get(session, f"{url}/api/v1/pods")
        figures.update(list_all_received_s=received, list_all_parsed_s=parsed,
                       list_all_mb=size / 2**20, list_all_items=items)  # fmt: skip
        received, _, _, _ = await _timed_get(session, f"{url}/api/v1/pods")
        figures["list_all_warm_s"] = received
        received, _, _, items = await _timed_get(session, f"{url}/api/v1/namespaces/ns-7/pods")
        figures.update(list_namespace_s=received, list_namespace_items=items)
        received, _, _, items = await _timed_get(
            session, f"{url}/api/v1/pods?labelSelector=app%3Da3"
        )
        figures.update(list_selector_s=received, list_selector_items=items)

        async with session.get(f"{url}/api/v1/namespaces/default/pods") as response:
            rv = (await response.json())["metadata"]["resourceVersion"]
        watch_url = f"{url}/api/v1/pods?watch=1&resourceVersion={rv}"
        loop = asyncio.get_running_loop()
        readies = [loop.create_future() for _ in range(5)]
        watchers = [asyncio.ensure_future(_watch(session, watch_url, changes, r)) for r in readies]
        await asyncio.gather(*readies)
        await asyncio.sleep(0.5)
        began = time.perf_counter()
        conn.send(str(changes))
        ends = await asyncio.gather(*watchers)
        applied = await loop.run_in_executor(None, conn.recv)
        elapsed = max(ends) - began
        figures.update(
            changes=changes,
            apply_s=applied["apply_seconds"],
            watch_elapsed_s=elapsed,
            events_per_s_total=5 * changes / elapsed,
            events_per_s_per_watcher=changes / elapsed,
        )
    figures["rss_after_mb"] = server.memory_info().rss / 2**20
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=20_000)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_serve, args=(child, args.nodes, args.pods), daemon=True)
    began = time.perf_counter()
    server.start()
    info = parent.recv()
    print(f"cluster: {args.nodes} nodes, {args.pods} pods in {NAMESPACES} namespaces")
    print(f"load (in-process create): {info['load_seconds']:.1f} s "
          f"(start to ready {time.perf_counter() - began:.1f} s)")  # fmt: skip
    try:
        figures = asyncio.run(client(info["url"], parent, info["pid"], args.changes))
    finally:
        parent.send("stop")
        server.join(30)
        if server.is_alive():
            server.kill()
    print(f"server RSS after load: {figures['rss_loaded_mb']:.0f} MB; "
          f"after the watch run: {figures['rss_after_mb']:.0f} MB")  # fmt: skip
    print(f"list all pods: {figures['list_all_received_s']:.2f} s received "
          f"({figures['list_all_mb']:.0f} MB), "
          f"{figures['list_all_parsed_s']:.2f} s with json.loads, "
          f"{figures['list_all_items']} items; again (JSON cached): "
          f"{figures['list_all_warm_s']:.2f} s")  # fmt: skip
    print(f"list one namespace: {figures['list_namespace_s'] * 1000:.0f} ms "
          f"({figures['list_namespace_items']} items)")  # fmt: skip
    print(f"list all with labelSelector app=a3: {figures['list_selector_s']:.2f} s "
          f"({figures['list_selector_items']} items)")  # fmt: skip
    print(f"watch: {figures['changes']} changes applied in {figures['apply_s']:.2f} s; "
          f"5 watchers got all in {figures['watch_elapsed_s']:.2f} s = "
          f"{figures['events_per_s_total']:.0f} events/s delivered "
          f"({figures['events_per_s_per_watcher']:.0f} per watcher)")  # fmt: skip
    headline("sim_watch", "watch events delivered per second (5 watchers, 100,000 pods)",
             f"{figures['events_per_s_total']:,.0f}", "none (a test tool)", None)  # fmt: skip


if __name__ == "__main__":
    main()
