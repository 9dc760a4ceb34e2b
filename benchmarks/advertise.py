"""Benchmark of the advertising service: ``GET api/v1/profiles`` under 32 concurrent clients.

Run: ``.venv/bin/python benchmarks/advertise.py [--quick]`` (about 3 minutes on 2 cores;
``--quick`` runs 100 and 1,000 nodes only, with shorter windows).

For clusters of 100, 1,000 and 10,000 nodes (10 pods each) and a site of 10 profiles, three
servers answer the same request, each in its own process:

- **bare**: a tornado handler writing a constant body (a real profiles answer captured at
  start, so the bytes on the wire are the same): the ceiling of the HTTP stack;
- **profiles**: the real service (:func:`esap_spawner.service.app.make_app`, static-token
  auth with a portal token, availability asked of the model on every request, ETag) over a real
  :class:`~esap_spawner.capacity.model.ClusterModel` **fed directly** with the cluster's nodes and
  pods (``replace_all``), while a background task applies pod watch events (``--churn``
  per second: server pods bound to random nodes, then deleted) so answers re-examine dirty
  nodes and change as in a live cluster;
- **naive**: what one would write without a model: on every request, list nodes and pods
  from the API server (the project's Kubernetes simulator, ``esap_spawner.dev.sim``, in a
  separate process, serving the same cluster), build the view and answer the same body.
  It uses tornado's ``AsyncHTTPClient`` with its default of 10 connections to the API
  server.

The load generator (this process, on the same 2 cores) keeps 32 persistent HTTP/1.1
connections busy for a window and records each request's latency. bare and profiles run
side by side and are loaded in alternation over ``--rounds`` windows (the machine is
shared, so drift hits both alike); the medians are printed. Requests still in flight when a
window ends are not counted: the naive handler often finishes none at 1,000 nodes and more,
so its single-request latency ("one request alone") is printed too, and its throughput is
bounded by one over it. Printed: requests/s, p50 and p99 per server and size, and the
ratios the issue sets targets for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TOKEN = "bench-portal-token"
PROFILE_LABEL = "esap.escape.eu/profile"
IMAGES = [f"quay.io/jupyter/notebook-{i}:2026-01-01" for i in range(4)]
GPU_EVERY = 10  # one node in ten has 4 GPUs and a taint
CLIENTS = 32


# -- the cluster and the site ----------------------------------------------------------


def site_dict() -> dict[str, Any]:
    """Ten profiles: CPU sizes, high memory, zone-pinned, GPU (tolerating the taint)."""
    gpu_toleration = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    profiles: list[dict[str, Any]] = []
    for i, (cpu, mem) in enumerate([(0.5, "1G"), (1, "2G"), (2, "4G"), (4, "8G"), (8, "16G")]):
        profiles.append(
            {"slug": f"cpu-{cpu}".replace(".", "-"), "display_name": f"{cpu} CPU, {mem}",
             "cpu": {"guarantee": cpu, "limit": cpu * 2}, "memory": {"guarantee": mem},
             "image": IMAGES[i % 2], "max_servers": 500 if i == 4 else None}
        )  # fmt: skip
    profiles += [
        {"slug": "highmem", "display_name": "High memory", "cpu": {"guarantee": 4},
         "memory": {"guarantee": "64Gi"}, "image": IMAGES[2],
         "hardware_capabilities": ["high-mem"]},
        {"slug": "zone-b", "display_name": "Zone b", "cpu": {"guarantee": 2},
         "memory": {"guarantee": "4G"}, "image": IMAGES[0],
         "node_selector": {"topology.kubernetes.io/zone": "zone-b"}},
        {"slug": "gpu-1", "display_name": "1 GPU", "cpu": {"guarantee": 4},
         "memory": {"guarantee": "16G"},
         "gpu": {"count": 1, "resource": "nvidia.com/gpu", "model": "A100"},
         "tolerations": gpu_toleration, "image": IMAGES[3], "hardware_capabilities": ["gpu"]},
        {"slug": "gpu-4", "display_name": "4 GPUs", "cpu": {"guarantee": 16},
         "memory": {"guarantee": "64G"},
         "gpu": {"count": 4, "resource": "nvidia.com/gpu", "model": "A100"},
         "tolerations": gpu_toleration, "image": IMAGES[3], "allowed_groups": ["gpu-power"],
         "hardware_capabilities": ["gpu", "high-mem"]},
        {"slug": "restricted", "display_name": "Restricted", "cpu": {"guarantee": 1},
         "memory": {"guarantee": "2G"}, "allowed_groups": ["staff"], "image": IMAGES[1]},
    ]  # fmt: skip
    return {
        "facility": {"name": "Benchmark Hub", "url": "https://hub.example.org/",
                     "description": "benchmark", "keywords": ["bench"]},
        "profiles": profiles,
    }  # fmt: skip


def fixture(nodes: int, seed: int = 7) -> dict[str, Any]:
    """The cluster as a simulator fixture: ``nodes`` nodes with 10 bound pods each."""
    rng = random.Random(seed)
    slugs = [p["slug"] for p in site_dict()["profiles"]]
    node_list = []
    pod_list = []
    for i in range(nodes):
        name = f"node-{i:05d}"
        gpu = i % GPU_EVERY == 0
        allocatable = {"cpu": "31850m", "memory": "128Gi", "pods": "110"}
        if gpu:
            allocatable["nvidia.com/gpu"] = "4"
        node_list.append(
            {"name": name, "allocatable": allocatable,
             "labels": {"kubernetes.io/hostname": name,
                        "topology.kubernetes.io/zone": f"zone-{'abc'[i % 3]}"},
             "taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}] if gpu else [],
             "images": rng.sample(IMAGES, 2)}
        )  # fmt: skip
        for j in range(10):
            labels = {"app": "jupyterhub"}
            if j < 4:  # some of each node's pods are user servers of a profile
                labels[PROFILE_LABEL] = rng.choice(slugs[:7])
            pod_list.append(
                {"name": f"pod-{i:05d}-{j}", "namespace": "jhub", "node": name, "labels": labels,
                 "requests": {"cpu": f"{rng.choice((250, 500, 1000, 2000))}m",
                              "memory": f"{rng.choice((512, 1024, 2048, 4096))}Mi"}}
            )  # fmt: skip
    return {"namespaces": ["default", "jhub"], "nodes": node_list, "pods": pod_list}


def api_objects(cluster: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Nodes and pods as the API serves them (what a list or watch hands the model)."""
    nodes = []
    for n in cluster["nodes"]:
        nodes.append(
            {"kind": "Node", "metadata": {"name": n["name"], "labels": n["labels"]},
             "spec": {"taints": n["taints"]},
             "status": {"allocatable": n["allocatable"], "capacity": n["allocatable"],
                        "conditions": [{"type": "Ready", "status": "True"}],
                        "images": [{"names": [image]} for image in n["images"]]}}
        )  # fmt: skip
    pods = [pod_object(p, uid=f"uid-{p['name']}") for p in cluster["pods"]]
    return nodes, pods


def pod_object(p: dict[str, Any], *, uid: str, phase: str = "Running") -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": p["name"], "namespace": p["namespace"], "uid": uid,
                     "labels": p["labels"]},
        "spec": {"nodeName": p["node"],
                 "containers": [{"name": "main", "resources": {"requests": p["requests"]}}]},
        "status": {"phase": phase},
    }  # fmt: skip


# -- the servers (each runs in its own process: `advertise.py --serve KIND`) -----------


def listen(app: Any) -> tuple[Any, int]:
    """Serve ``app`` on an ephemeral port of 127.0.0.1, with ``/bench/stats`` added."""
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    instrument(app)
    sockets = bind_sockets(0, address="127.0.0.1")
    server = HTTPServer(app)
    server.add_sockets(sockets)
    return server, int(sockets[0].getsockname()[1])


def instrument(app: Any) -> None:
    """Record each profiles answer's time inside the server (tornado's ``request_time``:
    first byte read to last byte written) and serve, at ``GET /bench/stats``, those times
    and the process's CPU seconds, then forget the times. CPU per answer and server-side
    percentiles do not count the queueing that the shared machine adds to client figures."""
    import tornado.web

    durations: list[float] = []

    def log_function(handler: tornado.web.RequestHandler) -> None:
        if handler.request.path.endswith("/profiles") and handler.get_status() == 200:
            durations.append(handler.request.request_time())

    class Stats(tornado.web.RequestHandler):
        def get(self) -> None:
            self.write({"cpu": time.process_time(), "durations": durations[:]})
            durations.clear()

    app.settings["log_function"] = log_function
    app.add_handlers(r".*", [(r"/bench/stats", Stats)])


def _load_site() -> Any:
    from esap_spawner.site.model import parse_site

    return parse_site(site_dict(), source="benchmark")


def _body_of_model(site: Any, model: Any) -> bytes:
    from esap_spawner.service.views import profiles_body

    availability = model.availability(site.profiles, limited_threshold=2)
    body = profiles_body(site.profiles, availability, as_of=model.as_of, stale=model.stale,
                         root="https://hub.example.org/", with_groups=True)  # fmt: skip
    return json.dumps(body, separators=(",", ":")).encode()


async def serve_profiles(nodes: int, churn: int) -> tuple[Any, int]:
    from esap_spawner.capacity.model import ClusterModel
    from esap_spawner.service.app import make_app
    from esap_spawner.service.auth import StaticTokenAuth

    site = _load_site()
    cluster = fixture(nodes)
    node_objs, pod_objs = api_objects(cluster)
    model = ClusterModel()
    model.replace_all(node_objs, pod_objs)
    del node_objs, pod_objs
    auth = StaticTokenAuth([{"token": TOKEN, "kind": "service", "scopes": ["custom:esap:read"]}])
    app = make_app(site=site, capacity=model, auth=auth, prefix="/services/esap/")

    async def events() -> None:
        # pod churn as watch events: a new server pod bound, later deleted again
        rng = random.Random(1)
        slugs = [p.slug for p in site.profiles][:7]
        live: list[dict[str, Any]] = []
        n = 0
        while True:
            await asyncio.sleep(0.05)
            for _ in range(max(1, churn // 20)):
                if live and (len(live) > 200 or rng.random() < 0.5):
                    model.apply("DELETED", live.pop(rng.randrange(len(live))))
                else:
                    n += 1
                    p = {"name": f"churn-{n}", "namespace": "jhub",
                         "node": f"node-{rng.randrange(nodes):05d}",
                         "labels": {PROFILE_LABEL: rng.choice(slugs)},
                         "requests": {"cpu": "1", "memory": "2Gi"}}  # fmt: skip
                    obj = pod_object(p, uid=f"churn-uid-{n}")
                    model.apply("ADDED", obj)
                    live.append(obj)

    task = asyncio.create_task(events()) if churn else None
    server, port = listen(app)
    return (server, task), port


async def serve_bare(nodes: int) -> tuple[Any, int]:
    import tornado.web

    from esap_spawner.capacity.model import ClusterModel

    site = _load_site()
    node_objs, pod_objs = api_objects(fixture(nodes))
    model = ClusterModel()
    model.replace_all(node_objs, pod_objs)
    constant = _body_of_model(site, model)

    class Bare(tornado.web.RequestHandler):
        def get(self) -> None:
            self.set_header("Content-Type", "application/json")
            self.write(constant)

    app = tornado.web.Application([(r"/services/esap/api/v1/profiles", Bare)])
    return listen(app)


async def serve_naive(sim_url: str) -> tuple[Any, int]:
    import tornado.web
    from tornado.httpclient import AsyncHTTPClient

    from esap_spawner.capacity.model import ClusterModel

    site = _load_site()
    client = AsyncHTTPClient(max_body_size=2**31)  # default max_clients: 10

    class Naive(tornado.web.RequestHandler):
        async def get(self) -> None:
            nodes = await client.fetch(f"{sim_url}/api/v1/nodes", request_timeout=600)
            pods = await client.fetch(f"{sim_url}/api/v1/pods", request_timeout=600)
            model = ClusterModel()
            model.replace_all(json.loads(nodes.body)["items"], json.loads(pods.body)["items"])
            self.set_header("Content-Type", "application/json")
            self.write(_body_of_model(site, model))

    app = tornado.web.Application([(r"/services/esap/api/v1/profiles", Naive)])
    return listen(app)


async def serve_sim(nodes: int) -> tuple[Any, int]:
    from esap_spawner.dev.sim.cluster import cluster_from_dict
    from esap_spawner.dev.sim.simulator import Simulator

    sim = Simulator(cluster_from_dict(fixture(nodes), source="benchmark"))
    await sim.start()
    return sim, int(sim.url.rsplit(":", 1)[1])


def serve_main(args: argparse.Namespace) -> None:
    async def main() -> None:
        if args.serve == "profiles":
            keep, port = await serve_profiles(args.nodes, args.churn)
        elif args.serve == "bare":
            keep, port = await serve_bare(args.nodes)
        elif args.serve == "naive":
            keep, port = await serve_naive(args.sim_url)
        else:
            keep, port = await serve_sim(args.nodes)
        print(f"READY {port}", flush=True)
        await asyncio.Event().wait()
        del keep

    asyncio.run(main())


# -- the load generator ----------------------------------------------------------------


class Child:
    """A server process started with ``--serve``; knows its port once it said READY."""

    def __init__(self, *argv: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *argv], stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            self.stop()
            raise RuntimeError(f"server {argv} did not start: {line!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def one_client(port: int, deadline: float, latencies: list[float], sizes: list[int],
                     start_at: float) -> None:  # fmt: skip
    request = (
        f"GET /services/esap/api/v1/profiles HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: token {TOKEN}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**24)
    try:
        while True:
            now = time.perf_counter()
            if now >= deadline:
                return
            writer.write(request)
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), deadline - now)
            except TimeoutError:
                return  # still in flight at the end of the window: not counted
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
            done = time.perf_counter()
            if now >= start_at:  # after the warm-up
                latencies.append(done - now)
                sizes.append(len(body))
    finally:
        writer.close()


async def load(port: int, seconds: float, warmup: float) -> dict[str, float]:
    """``CLIENTS`` connections busy for ``warmup + seconds``; figures over ``seconds``."""
    latencies: list[float] = []
    sizes: list[int] = []
    start = time.perf_counter()
    start_at = start + warmup
    deadline = start_at + seconds
    await asyncio.gather(
        *(one_client(port, deadline, latencies, sizes, start_at) for _ in range(CLIENTS))
    )
    n = len(latencies)
    if n == 0:
        return {"rps": 0.0, "p50": math.nan, "p99": math.nan, "n": 0, "bytes": 0}
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98] if n > 1 else latencies[0]
    return {"rps": n / seconds, "p50": statistics.median(latencies) * 1000, "p99": p99 * 1000,
            "n": n, "bytes": statistics.median(sizes)}  # fmt: skip


def prime(port: int) -> float:
    """One request alone (imports, first view); returns its latency in ms."""
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/services/esap/api/v1/profiles",
        headers={"Authorization": f"token {TOKEN}"},
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as r:
        r.read()
    return (time.perf_counter() - start) * 1000


def stats(port: int) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/bench/stats", timeout=600) as r:
        result: dict[str, Any] = json.load(r)
    return result


def loaded(port: int, seconds: float, warmup: float) -> dict[str, float]:
    """:func:`load`, plus the server's own view: CPU per answer and handler percentiles."""
    before = stats(port)
    row = asyncio.run(load(port, seconds, warmup))
    after = stats(port)
    times = after["durations"]  # every answer of the round, warm-up included
    row["cpu_us"] = (after["cpu"] - before["cpu"]) / max(len(times), 1) * 1e6
    if len(times) > 1:
        row["srv_p50"] = statistics.median(times) * 1000
        row["srv_p99"] = statistics.quantiles(times, n=100, method="inclusive")[98] * 1000
    else:
        row["srv_p50"] = row["srv_p99"] = math.nan
    return row


def fmt(row: dict[str, float]) -> str:
    spread = f", rounds within {row['spread']:.2f}x" if "spread" in row else ""
    server = ""
    if "cpu_us" in row:
        server = (
            f"\n             in the server: {row['cpu_us']:.0f} us CPU per answer,"
            f" handler p50 {row['srv_p50']:.2f} ms p99 {row['srv_p99']:.2f} ms"
        )
    return (f"{row['rps']:8.1f} req/s  p50 {row['p50']:8.1f} ms  p99 {row['p99']:8.1f} ms"
            f"  ({int(row['n'])} answers of {int(row['bytes'])} B{spread}; one request alone "
            f"{row['alone']:.0f} ms){server}")  # fmt: skip


def check_agreement(sim_url: str, nodes: int) -> bool:
    """The naive path (lists from the simulator) and the fed model give the same figures."""
    import urllib.request

    from esap_spawner.capacity.model import ClusterModel

    site = _load_site()
    with urllib.request.urlopen(f"{sim_url}/api/v1/nodes") as r:
        listed_nodes = json.load(r)["items"]
    with urllib.request.urlopen(f"{sim_url}/api/v1/pods") as r:
        listed_pods = json.load(r)["items"]
    listed = ClusterModel()
    listed.replace_all(listed_nodes, listed_pods)
    fed = ClusterModel()
    fed.replace_all(*api_objects(fixture(nodes)))
    a = listed.availability(site.profiles, limited_threshold=2)
    b = fed.availability(site.profiles, limited_threshold=2)
    return a == b


def model_cost(nodes: int, seconds: float = 1.5) -> tuple[float, float]:
    """p50 and p99 (us) of the model's part of an answer, in this process: availability of
    the 10 profiles with 10 pod events applied between every 50 answers (as the churn)."""
    from esap_spawner.capacity.model import ClusterModel

    site = _load_site()
    model = ClusterModel()
    model.replace_all(*api_objects(fixture(nodes)))
    model.availability(site.profiles, limited_threshold=2)  # the cold pass, as after a list
    rng = random.Random(3)
    live: list[dict[str, Any]] = []
    times: list[float] = []
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        for _ in range(10):
            if live and rng.random() < 0.5:
                model.apply("DELETED", live.pop(rng.randrange(len(live))))
            else:
                n += 1
                node = f"node-{rng.randrange(nodes):05d}"
                p = {"name": f"c{n}", "namespace": "jhub", "node": node,
                     "labels": {PROFILE_LABEL: "cpu-1"},
                     "requests": {"cpu": "1", "memory": "2Gi"}}  # fmt: skip
                live.append(pod_object(p, uid=f"c{n}"))
                model.apply("ADDED", live[-1])
        for _ in range(50):
            t = time.perf_counter()
            model.availability(site.profiles, limited_threshold=2)
            times.append(time.perf_counter() - t)
    p99 = statistics.quantiles(times, n=100, method="inclusive")[98]
    return statistics.median(times) * 1e6, p99 * 1e6


def median_row(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per figure, the median over rounds (the machine is shared: rounds differ)."""
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def measure_pair(nodes: int, churn: int, rounds: int, seconds: float, warmup: float
                 ) -> dict[str, dict[str, float]]:  # fmt: skip
    """bare and profiles, both up, loaded in alternation so drift hits both alike."""
    servers = {kind: Child("--serve", kind, "--nodes", str(nodes), "--churn", str(churn))
               for kind in ("bare", "profiles")}  # fmt: skip
    try:
        alone = {kind: prime(server.port) for kind, server in servers.items()}
        rows: dict[str, list[dict[str, float]]] = {"bare": [], "profiles": []}
        for _ in range(rounds):
            for kind, server in servers.items():
                rows[kind].append(loaded(server.port, seconds, warmup))
    finally:
        for server in servers.values():
            server.stop()
    result = {}
    for kind, kind_rows in rows.items():
        result[kind] = median_row(kind_rows)
        result[kind]["alone"] = alone[kind]
        rps = [r["rps"] for r in kind_rows]
        result[kind]["spread"] = max(rps) / max(min(rps), 1e-9)
    return result


def run(args: argparse.Namespace) -> None:
    sizes = [100, 1000] if args.quick else [100, 1000, 10000]
    rounds = 2 if args.quick else args.rounds
    seconds = 2.0 if args.quick else args.seconds
    warmup = 0.5
    results: dict[int, dict[str, dict[str, float]]] = {}
    print(f"advertise benchmark: {CLIENTS} clients; bare and profiles alternated over {rounds}"
          f" rounds of {seconds:.0f} s (after {warmup} s warm-up), medians shown; naive one"
          f" {seconds * 2:.0f} s window; churn {args.churn} pod events/s;"
          f" {os.cpu_count()} CPUs shared with the load generator")  # fmt: skip
    for nodes in sizes:
        t0 = time.perf_counter()
        sim = Child("--serve", "sim", "--nodes", str(nodes))
        sim_url = f"http://127.0.0.1:{sim.port}"
        try:
            up = time.perf_counter() - t0
            # listing 100,000 pods from the simulator takes about a minute: check up to 1,000
            agree = check_agreement(sim_url, nodes) if nodes <= 1000 else "not checked"
            print(f"\n{nodes} nodes, {nodes * 10} pods (simulator up in {up:.1f} s; "
                  f"naive view == fed model: {agree})")  # fmt: skip
            r = measure_pair(nodes, args.churn, rounds, seconds, warmup)
            naive = Child("--serve", "naive", "--sim-url", sim_url)
            try:
                alone = prime(naive.port)
                r["naive"] = asyncio.run(load(naive.port, seconds * 2, warmup))
                r["naive"]["alone"] = alone
            finally:
                naive.stop()
        finally:
            sim.stop()
        results[nodes] = r
        m50, m99 = model_cost(nodes)
        r["profiles"]["model_p99"] = m99
        print(f"  model part of an answer (availability of 10 profiles, in-process, churning):"
              f" p50 {m50:.0f} us, p99 {m99:.0f} us")  # fmt: skip
        for kind in ("bare", "profiles", "naive"):
            print(f"  {kind:9s}{fmt(r[kind])}")
        naive_rps = r["naive"]["rps"]
        if naive_rps == 0:  # nothing finished in the window: one at a time is its best
            naive_rps = 1000 / r["naive"]["alone"]
            versus = f">= {r['profiles']['rps'] / naive_rps:.0f}x (naive at best 1/alone)"
        else:
            versus = f"{r['profiles']['rps'] / naive_rps:.0f}x"
        print(f"  profiles/bare throughput {r['profiles']['rps'] / r['bare']['rps']:.2f}"
              f" measured, {r['bare']['cpu_us'] / r['profiles']['cpu_us']:.2f} from CPU per"
              f" answer (target >= 0.5); profiles/naive {versus}")  # fmt: skip
    first, last = sizes[0], sizes[-1]
    a, b = results[last]["profiles"], results[first]["profiles"]
    print(
        f"\nprofiles p99 at {last} nodes / at {first} nodes: {a['p99'] / b['p99']:.2f} at the"
        f" clients, {a['srv_p99'] / b['srv_p99']:.2f} in the server (target <= 1.5)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 nodes, short windows")
    parser.add_argument("--seconds", type=float, default=2.5, help="measured window per round")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds")
    parser.add_argument("--churn", type=int, default=200, help="pod watch events per second")
    parser.add_argument(
        "--serve", choices=["bare", "profiles", "naive", "sim"], help=argparse.SUPPRESS
    )
    parser.add_argument("--nodes", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--sim-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_main(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
