"""Benchmark of the cluster model (esap_spawner.capacity.model): events, memory, fit counts.

Run: ``.venv/bin/python benchmarks/capacity.py [--quick]``. Prints:

- watch events applied per second (pods added, bound, running, deleted and node status
  updates, as JSON dicts; with and without decoding each event's JSON line), target 20,000+;
- model memory per pod (tracemalloc; each pod is decoded from JSON inside the traced
  region and dropped after it is applied, so only what the model keeps is counted),
  target < 1 KiB;
- availability of 10 profiles at 100 / 1,000 / 10,000 nodes (10 pods per node): cold
  (every node examined), warm (nothing changed) and after 100 events (dirty nodes only);
- the cost of building kubernetes_asyncio ``V1Pod`` models versus plain ``json.loads``,
  which is why the watcher keeps raw dicts.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import time
import tracemalloc
from typing import Any

from _headline import headline

from esap_spawner.capacity.model import ClusterModel, ProfileRequirements

LABEL = "esap.example/profile"
IMAGES = [f"quay.io/jupyter/notebook-{i}:2026-01-01" for i in range(10)]


def make_node(i: int) -> dict[str, Any]:
    gpu = i % 10 == 0
    allocatable = {"cpu": "31850m", "memory": "128Gi", "pods": "110", "ephemeral-storage": "400G"}
    if gpu:
        allocatable["nvidia.com/gpu"] = "4"
    return {
        "kind": "Node",
        "metadata": {
            "name": f"node-{i:05d}",
            "uid": f"node-uid-{i}",
            "resourceVersion": str(i),
            "labels": {
                "kubernetes.io/hostname": f"node-{i:05d}",
                "kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": "n2-standard-32",
                "topology.kubernetes.io/zone": f"zone-{i % 3}",
                "hub.jupyter.org/node-purpose": "user" if i % 4 else "core",
            },
        },
        "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}] if gpu else []},
        "status": {
            "allocatable": allocatable,
            "capacity": allocatable,
            "conditions": [
                {"type": t, "status": "False", "reason": "KubeletHasSufficient" + t}
                for t in ("MemoryPressure", "DiskPressure", "PIDPressure")
            ]
            + [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            "images": [
                {"names": [image, image.split(":")[0] + f"@sha256:{j:064x}"], "sizeBytes": 4e9}
                for j, image in enumerate(IMAGES[: 1 + i % 10])
            ],
        },
    }


def make_pod(uid: int, node: str | None, phase: str = "Running") -> dict[str, Any]:
    profile = f"profile-{uid % 10}"
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "notebook",
                "image": IMAGES[uid % 10],
                "env": [{"name": f"VAR_{k}", "value": "x" * 20} for k in range(8)],
                "ports": [{"name": "notebook-port", "containerPort": 8888}],
                "resources": {
                    "requests": {"cpu": "500m", "memory": "2Gi"},
                    "limits": {"cpu": "2", "memory": "4Gi"},
                },
                "volumeMounts": [{"name": "home", "mountPath": "/home/jovyan"}],
            }
        ],
        "initContainers": [{"name": "block-metadata", "resources": {"requests": {"cpu": "100m"}}}],
        "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": f"claim-{uid}"}}],
        "restartPolicy": "OnFailure",
    }
    if node:
        spec["nodeName"] = node
    return {
        "kind": "Pod",
        "metadata": {
            "name": f"jupyter-user-{uid}",
            "namespace": "hub",
            "uid": f"{uid:08x}-1111-2222-3333-444455556666",
            "resourceVersion": str(100000 + uid),
            "labels": {
                "app": "jupyterhub",
                "component": "singleuser-server",
                "hub.jupyter.org/username": f"user-{uid}",
                LABEL: profile,
            },
            "annotations": {"hub.jupyter.org/username": f"user-{uid}"},
        },
        "spec": spec,
        "status": {
            "phase": phase,
            "podIP": "127.128.0.2" if phase == "Running" else None,
            "conditions": [{"type": "Ready", "status": "True" if phase == "Running" else "False"}],
        },
    }


def profiles() -> list[ProfileRequirements]:
    out = []
    for i in range(10):
        gpu = i == 9
        out.append(
            ProfileRequirements.build(
                f"profile-{i}",
                requests={"cpu": f"{1 + i}", "memory": f"{2 * (i + 1)}Gi"}
                | ({"nvidia.com/gpu": 1} if gpu else {}),
                node_selector={"hub.jupyter.org/node-purpose": "user"} if i % 2 else {},
                tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}] if gpu else [],
                image=IMAGES[i],
                max_servers=100 * (i + 1),
            )
        )
    return out


def cluster(n_nodes: int, pods_per_node: int = 10) -> ClusterModel:
    model = ClusterModel(profile_label=LABEL)
    nodes = [make_node(i) for i in range(n_nodes)]
    pods = [make_pod(u, f"node-{u % n_nodes:05d}") for u in range(n_nodes * pods_per_node)]
    model.replace_all(nodes, pods)
    return model


def event_stream(n: int, n_nodes: int, rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    """A spawn-heavy mix: each new pod is ADDED pending, bound, Running, then later DELETED;
    one node status update per ten pod events."""
    events: list[tuple[str, dict[str, Any]]] = []
    live: list[int] = []
    uid = 10_000_000
    while len(events) < n:
        if rng.random() < 0.1:
            events.append(("MODIFIED", make_node(rng.randrange(n_nodes))))
        elif live and (len(live) > 2000 or rng.random() < 0.25):
            gone = live.pop(rng.randrange(len(live)))
            events.append(("DELETED", make_pod(gone, f"node-{gone % n_nodes:05d}")))
        else:
            uid += 1
            node = f"node-{uid % n_nodes:05d}"
            events.append(("ADDED", make_pod(uid, None, "Pending")))
            events.append(("MODIFIED", make_pod(uid, node, "Pending")))
            events.append(("MODIFIED", make_pod(uid, node, "Running")))
            live.append(uid)
    return events[:n]


def bench_events(n: int) -> dict[str, float]:
    rng = random.Random(1)
    model = cluster(1000)
    events = event_stream(n, 1000, rng)
    lines = [json.dumps({"type": t, "object": o}).encode() for t, o in events]
    for req in profiles():  # caches exist, so every event also marks nodes dirty
        model.fit_count(req)
    gc.collect()
    start = time.perf_counter()
    for event_type, obj in events:
        model.apply(event_type, obj)
    dicts = n / (time.perf_counter() - start)
    model = cluster(1000)
    for req in profiles():
        model.fit_count(req)
    start = time.perf_counter()
    for line in lines:
        event = json.loads(line)
        model.apply(event["type"], event["object"])
    decoded = n / (time.perf_counter() - start)
    return {"events_per_s": dicts, "events_per_s_with_json": decoded}


def bench_memory(n_pods: int) -> float:
    model = cluster(1000, 0)
    lines = [json.dumps(make_pod(u, f"node-{u % 1000:05d}")).encode() for u in range(n_pods)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for line in lines:
        obj = json.loads(line)
        model.apply("ADDED", obj)
        del obj
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / n_pods


def _time(fn: Any, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def bench_fit(n_nodes: int) -> dict[str, float]:
    model = cluster(n_nodes)
    reqs = profiles()
    rng = random.Random(2)
    repeat = 5 if n_nodes >= 10_000 else 20

    def cold() -> None:
        model._invalidate_all()  # what a relist does: every node examined again
        model.availability(reqs)

    def after_events() -> None:
        for _ in range(100):
            u = rng.randrange(n_nodes * 10)
            model.apply("MODIFIED", make_pod(u, f"node-{rng.randrange(n_nodes):05d}"))
        model.availability(reqs)

    def apply_only() -> None:
        for _ in range(100):
            u = rng.randrange(n_nodes * 10)
            model.apply("MODIFIED", make_pod(u, f"node-{rng.randrange(n_nodes):05d}"))

    cold_s = _time(cold, repeat)
    warm_s = _time(lambda: model.availability(reqs), repeat)
    events_s = _time(after_events, repeat) - _time(apply_only, repeat)
    return {"cold_ms": cold_s * 1e3, "warm_ms": warm_s * 1e3, "after_100_events_ms": events_s * 1e3}


async def bench_models(n: int) -> dict[str, float]:
    from kubernetes_asyncio.client import ApiClient

    async with ApiClient() as api:
        return _decode_both(api, n)


def _decode_both(api: Any, n: int) -> dict[str, float]:
    lines = [json.dumps(make_pod(u, "node-00001")).encode() for u in range(n)]
    start = time.perf_counter()
    for line in lines:
        json.loads(line)
    raw = (time.perf_counter() - start) / n
    start = time.perf_counter()
    for line in lines:
        api._ApiClient__deserialize(json.loads(line), "V1Pod")  # type: ignore[attr-defined]
    models = (time.perf_counter() - start) / n
    return {"json_us": raw * 1e6, "v1pod_us": models * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (for a smoke test)")
    args = parser.parse_args()
    n_events = 20_000 if args.quick else 200_000
    sizes = [100, 1000] if args.quick else [100, 1000, 10_000]

    ev = bench_events(n_events)
    print(
        f"events applied per second (dicts):          {ev['events_per_s']:>10,.0f}"
        "  (target 20,000+)"
    )
    print(f"events applied per second (with json.loads): {ev['events_per_s_with_json']:>9,.0f}")
    per_pod = bench_memory(10_000 if args.quick else 100_000)
    print(f"model memory per pod:                        {per_pod:>9,.0f} B  (target < 1024 B)")
    print("availability of 10 profiles, 10 pods per node (median ms):")
    print(f"{'nodes':>8} {'cold':>10} {'warm':>10} {'after 100 events':>18}")
    for n in sizes:
        fit = bench_fit(n)
        print(
            f"{n:>8,} {fit['cold_ms']:>10.2f} {fit['warm_ms']:>10.3f} "
            f"{fit['after_100_events_ms']:>18.2f}"
        )
    mod = asyncio.run(bench_models(500 if args.quick else 5000))
    print(
        f"decode one pod: json.loads {mod['json_us']:.0f} us, "
        f"+ V1Pod model {mod['v1pod_us']:.0f} us ({mod['v1pod_us'] / mod['json_us']:.0f}x)"
    )
    rate = ev["events_per_s"]
    headline("capacity", "watch events applied per second", f"{rate:,.0f}", ">= 20,000",
             rate >= 20_000)  # fmt: skip
    headline("capacity", "model memory per pod", f"{per_pod:,.0f} B", "< 1024 B", per_pod < 1024)


if __name__ == "__main__":
    main()
