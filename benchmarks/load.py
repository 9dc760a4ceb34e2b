"""Load: 200 users spawning within a minute through a real hub with quotas, then the
advertising API under 200 concurrent clients for 60 s.

Set-up: a private Kubernetes simulator with the process kubelet (every server is a local
process on its own loopback address: a tiny HTTP server, :data:`TINY_SERVER`, since the hub
only needs an HTTP answer and 100 notebook servers do not fit a small machine), a real
JupyterHub (with configurable-http-proxy) running ESAPSpawner, and the managed ``esap``
service. Two profiles: ``quota`` (``max_servers`` 50) and ``open`` (no limit); the cluster
has room for both. JupyterHub's own ``concurrent_spawn_limit`` stays at its default (100).

Spawns: ``--users`` users (150 on ``quota``, the rest on ``open``) each POST a spawn through
the REST API, arrivals spread evenly over ``--window`` seconds; then the run waits until no
spawn is pending. Checked (the script exits 1 when one fails):

- never more than 50 ``quota`` pods at once (a watch on the API server sees every pod);
- no server lost: the hub's ready servers are exactly the Running server pods, per profile;
- every spawn that reached the spawner has one row in the esap database, and every row that
  is not a success has a reason; every refused POST has a message.

Latency is the spawner's own measure (request to ready, from the rows). Then ``--clients``
aiohttp clients (keep-alive) call ``GET /services/esap/api/v1/profiles`` through the hub's
proxy with a portal token for ``--seconds``; errors (anything but 200, or a wrong answer)
must be 0.

Usage: ``python benchmarks/load.py [--users 200] [--window 45] [--clients 200]
[--seconds 60]``. Prints the figures; about 3-4 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _headline import headline  # noqa: E402

from esap_spawner.dev.local import simulator_hub_config  # noqa: E402
from esap_spawner.dev.sim import KubeletDelays, SimulatorThread  # noqa: E402
from esap_spawner.observe.db import Database  # noqa: E402
from esap_spawner.site.profiles import PROFILE_LABEL  # noqa: E402
from tests.harness.hub import HubProcess, free_port  # noqa: E402
from tests.harness.sim import TINY_SERVER  # noqa: E402

NAMESPACE = "load"
QUOTA = 50
PORTAL_TOKEN = "portal-" + "b" * 24
DELAYS = KubeletDelays(pull=0.5, create=0.05, start=0.05, stop=0.05, restart_backoff=10.0)

CLUSTER = {
    "namespaces": [NAMESPACE],
    "nodes": [
        {"name": f"cpu-{i}", "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"}}
        for i in range(4)
    ],
}


def profile(slug: str, max_servers: int | None) -> dict[str, Any]:
    return {
        "slug": slug,
        "display_name": slug,
        "cpu": {"guarantee": 1, "limit": 1},
        "memory": {"guarantee": "1G", "limit": "1G"},
        "image": "quay.io/jupyter/minimal-notebook:2026-01-01",
        "max_servers": max_servers,
    }


SITE = {
    "facility": {"name": "Load", "description": "load benchmark", "url": "http://127.0.0.1/"},
    "profiles": [profile("quota", QUOTA), profile("open", None)],
}


def hub_config(site_file: Path, kubeconfig: Path) -> str:
    service = [sys.executable, "-m", "esap_spawner.cli", "service", "--site-file", str(site_file)]
    config = simulator_hub_config(
        site_file=site_file, namespace=NAMESPACE, start_timeout=120, http_timeout=60
    )
    return (
        config
        + f"""
c.KubeSpawner.cmd = [{sys.executable!r}, "-c", {TINY_SERVER!r}]
c.KubeSpawner.args = []
c.JupyterHub.log_level = "INFO"
c.JupyterHub.custom_scopes = {{"custom:esap:read": {{"description": "the whole catalogue"}}}}
c.JupyterHub.services.extend([
    {{"name": "esap", "url": "http://127.0.0.1:{free_port()}", "command": {service!r},
      "environment": {{"KUBECONFIG": {str(kubeconfig)!r}}}}},
    {{"name": "portal", "api_token": {PORTAL_TOKEN!r}}},
])
c.JupyterHub.load_roles.append(
    {{"name": "esap-portal", "scopes": ["custom:esap:read"], "services": ["portal"]}}
)
"""
    )


class PodWatch:
    """Every server pod the API server reports, from one watch stream: the most at once.

    The stream ends when the simulator stops (closing it from here while the reader thread
    waits on it would block)."""

    def __init__(self, url: str) -> None:
        self.live: dict[str, set[str]] = {}
        self.most: Counter[str] = Counter()
        self.response = requests.get(
            f"{url}/api/v1/namespaces/{NAMESPACE}/pods",
            params={"watch": "1", "labelSelector": PROFILE_LABEL},
            stream=True,
            timeout=(5, 900),
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(requests.RequestException, ValueError, AttributeError):
            for line in self.response.iter_lines():
                event = json.loads(line)
                meta = event["object"]["metadata"]
                slug = meta["labels"][PROFILE_LABEL]
                live = self.live.setdefault(slug, set())
                if event["type"] == "ADDED":
                    live.add(meta["name"])
                elif event["type"] == "DELETED":
                    live.discard(meta["name"])
                self.most[slug] = max(self.most[slug], len(live))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def spawn_load(hub: HubProcess, sim: SimulatorThread, args: argparse.Namespace) -> list[str]:
    """Run the spawn storm; print its figures; return what went wrong."""
    problems: list[str] = []
    users = [(f"user{i:03d}", "quota" if i % 4 else "open") for i in range(args.users)]
    users = sorted(users, key=lambda u: u[1] != "quota")  # interleave below
    quota_users = [u for u in users if u[1] == "quota"]
    open_users = [u for u in users if u[1] == "open"]
    users = []
    while quota_users or open_users:
        users += quota_users[:3] + open_users[:1]
        quota_users, open_users = quota_users[3:], open_users[1:]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda u: hub.create_user(u[0]), users))
    watch = PodWatch(sim.url)
    started = time.time()
    answers: dict[str, tuple[int, str]] = {}
    gap = args.window / max(1, len(users))

    def spawn(index: int) -> None:
        name, slug = users[index]
        delay = started + index * gap - time.time()
        if delay > 0:
            time.sleep(delay)
        r = hub.api("POST", f"/users/{name}/server", json={"profile": slug}, timeout=120)
        answers[name] = (r.status_code, r.text)

    with ThreadPoolExecutor(64) as pool:
        list(pool.map(spawn, range(len(users))))
    issued = time.time() - started

    def active() -> list[dict[str, Any]]:
        r = hub.api("GET", "/users?state=active&limit=200")
        return [u for u in r.json() if u.get("servers", {}).get("")]

    deadline = time.monotonic() + 300
    while any(u["servers"][""]["pending"] for u in active()) and time.monotonic() < deadline:
        time.sleep(1)
    settled = time.time() - started

    codes = Counter(code for code, _ in answers.values())
    slug_of = dict(users)
    for name, (code, text) in answers.items():
        if code not in (201, 202):
            message = ""
            with contextlib.suppress(ValueError):
                message = json.loads(text).get("message", "")
            if not message:
                problems.append(f"{name}: {code} without a message: {text[:200]}")
    refused_by = Counter(
        (slug_of[n], code, json.loads(text).get("message", "")[:60])
        for n, (code, text) in answers.items()
        if code not in (201, 202)
    )

    # the hub's ready servers against the Running pods, per profile
    servers: dict[str, set[str]] = {"quota": set(), "open": set()}
    for user in active():
        server = user["servers"][""]
        if not server["ready"]:
            problems.append(f"{user['name']}: server still pending after the run")
            continue
        servers[server["user_options"]["profile"]].add(server["state"]["pod_name"])
    found = sim.call(sim.store.objects, "pods", NAMESPACE)
    pods: dict[str, set[str]] = {"quota": set(), "open": set()}
    for pod in found:
        slug = pod["metadata"]["labels"].get(PROFILE_LABEL)
        if slug and pod["status"].get("phase") == "Running":
            pods[slug].add(pod["metadata"]["name"])
    for slug in servers:
        if servers[slug] != pods[slug]:
            problems.append(
                f"{slug}: servers without pods {sorted(servers[slug] - pods[slug])}, "
                f"pods without servers {sorted(pods[slug] - servers[slug])}"
            )
    if watch.most["quota"] > QUOTA:
        problems.append(f"quota exceeded: {watch.most['quota']} quota pods at once")

    # the records: one row per spawn that reached the spawner, every non-success with a reason
    db = Database(f"sqlite:///{hub.workdir}/esap.sqlite")
    reached = sum(1 for code, _ in answers.values() if code != 429)
    rows = db.spawns_between(started - 1)
    deadline = time.monotonic() + 60
    while len(rows) < reached and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = db.spawns_between(started - 1)
    outcomes = Counter((r.profile, r.outcome) for r in rows)
    if len(rows) != reached:
        problems.append(f"{len(rows)} spawn rows for {reached} spawns that reached the spawner")
    for r in rows:
        if r.outcome != "success" and not r.failure_reason:
            problems.append(f"row {r.id}: {r.outcome} without a reason")
    reasons = Counter(
        (r.profile, r.outcome, (r.failure_reason or "")[:60])
        for r in rows
        if r.outcome != "success"
    )
    success = [r.duration_seconds for r in rows if r.outcome == "success"]
    refused = [r.duration_seconds for r in rows if r.outcome == "refused"]

    print(f"\n== spawns: {len(users)} users, POSTs issued over {issued:.1f} s, "
          f"all settled after {settled:.1f} s")  # fmt: skip
    print(f"   POST answers: {dict(sorted(codes.items()))}")
    for (slug, code, message), count in sorted(refused_by.items()):
        print(f"   refused at once: {count} x {slug} {code} {message!r}")
    print(f"   rows: {dict(sorted(outcomes.items()))}")
    for (slug, outcome, reason), count in sorted(reasons.items()):
        print(f"   {count} x {slug} {outcome}: {reason!r}")
    print(f"   running: quota {len(servers['quota'])} (max {QUOTA}, most pods at once "
          f"{watch.most['quota']}), open {len(servers['open'])}; hub servers == Running pods: "
          f"{all(servers[s] == pods[s] for s in servers)}")  # fmt: skip
    print(f"   spawn latency (request to ready, spawner's rows): "
          f"p50 {percentile(success, 50):.2f} s, p99 {percentile(success, 99):.2f} s, "
          f"max {max(success, default=0):.2f} s over {len(success)}")  # fmt: skip
    print(f"   refusal latency: p50 {percentile(refused, 50):.3f} s, "
          f"p99 {percentile(refused, 99):.3f} s over {len(refused)}")  # fmt: skip
    return problems


async def api_load(hub: HubProcess, args: argparse.Namespace, running: int) -> list[str]:
    """``--clients`` keep-alive clients on api/v1/profiles for ``--seconds``."""
    problems: list[str] = []
    url = f"{hub.url}/services/esap/api/v1/profiles"
    headers = {"Authorization": f"token {PORTAL_TOKEN}"}
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(limit=args.clients)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async with session.get(url, headers=headers) as r:
            body = await r.json()
        figures = {p["slug"]: p["availability"]["running"] for p in body["profiles"]}
        if sum(figures.values()) != running:
            problems.append(f"the service says {figures}, the hub runs {running} servers")
        end = time.monotonic() + args.seconds

        async def client() -> None:
            while time.monotonic() < end:
                began = time.monotonic()
                try:
                    async with session.get(url, headers=headers) as r:
                        data = await r.read()
                        if r.status != 200:
                            errors[f"HTTP {r.status}"] += 1
                            continue
                        if not data.startswith(b"{") or b'"profiles"' not in data:
                            errors["wrong body"] += 1
                            continue
                except (aiohttp.ClientError, TimeoutError) as e:
                    errors[type(e).__name__] += 1
                    continue
                latencies.append(time.monotonic() - began)

        began = time.monotonic()
        await asyncio.gather(*(client() for _ in range(args.clients)))
        elapsed = time.monotonic() - began
    if errors:
        problems.append(f"API errors: {dict(errors)}")
    print(f"\n== advertising API: {args.clients} clients, {elapsed:.0f} s, through the hub's proxy")
    print(f"   answers {len(latencies)}, errors {sum(errors.values())} {dict(errors)}")
    print(f"   throughput {len(latencies) / elapsed:.0f} req/s; latency "
          f"p50 {1000 * percentile(latencies, 50):.0f} ms, "
          f"p99 {1000 * percentile(latencies, 99):.0f} ms, "
          f"mean {1000 * statistics.fmean(latencies or [0]):.0f} ms")  # fmt: skip
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--window", type=float, default=45.0, help="seconds to issue spawns")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="esap-load-") as tmp:
        workdir = Path(tmp)
        sim = SimulatorThread(CLUSTER, kubelet="process", delays=DELAYS).start()
        hub = None
        try:
            kubeconfig = sim.write_kubeconfig(workdir / "kubeconfig")
            site_file = workdir / "site.yaml"
            site_file.write_text(yaml.safe_dump(SITE))
            hub = HubProcess(
                workdir / "hub",
                hub_config(site_file, kubeconfig),
                env={"KUBECONFIG": str(kubeconfig)},
            ).start(timeout=90)
            problems = spawn_load(hub, sim, args)
            running = len(hub.api("GET", "/users?state=ready&limit=200").json())
            problems += asyncio.run(api_load(hub, args, running))
        finally:
            if hub is not None:
                hub.stop()
            sim.stop()
    print()
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("OK: no quota exceeded, no server lost, every failure with a reason, no API error"
          if not problems else f"{len(problems)} problems")  # fmt: skip
    headline("load", f"{args.users} spawns and {args.clients} API clients through a real hub:"
             " problems (quota exceeded, server lost, failure without reason, API error)",
             str(len(problems)), "0", not problems)  # fmt: skip
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
