"""The capacity model against the real kube-scheduler, on generated clusters (clusters.py).

For each seed: a cluster of kwok nodes, foreign pods placed by the real scheduler, maybe a
ResourceQuota in the hub's namespace, a site's profiles and some servers already running. Then,
profile after profile, the model is fed the API server's lists (as the hub's watcher feeds it)
and asked how many servers fit (``N``) and how many of those on nodes that hold the profile's
image (``F``, behind ``fast_start``). The real control plane then decides:

- ``F`` pods built by ESAPSpawner, kept to the nodes that list the image in ``status.images``
  (a required node affinity on their names), are all bound; one more is not (it stays Pending
  with a FailedScheduling event, or quota admission refuses it). That one is deleted again.
- ``N`` pods of the profile in all (``F`` of them already there) are all bound, and pod
  ``N + 1`` is not.
- ``can_start_now`` is ``N`` capped by what ``max_servers`` leaves, ``fast_start`` is ``F``
  capped by ``can_start_now``.

The pods stay: the next profile is judged on a cluster that holds them. Any difference is a
mismatch, reported with the seed: ``ESAP_DIFF_SEEDS=<seed> make test-k8s`` (or pytest on this
file) replays it. By default each run draws ``ESAP_DIFF_CLUSTERS`` (24) fresh seeds.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from jupyterhub.objects import Hub
from kubernetes_asyncio.client import ApiClient
from traitlets.config import Config

from esap_spawner.capacity.model import ClusterModel
from esap_spawner.dev.sim.cluster import node_manifest
from esap_spawner.site.model import load_site
from esap_spawner.site.quantity import parse_quantity
from esap_spawner.spawn.spawner import ESAPSpawner
from tests.harness.kube import kubeconfig_in_use, start_control_plane
from tests.harness.spawner import MockUser
from tests.k8s.clusters import FOREIGN_NAMESPACES, Scenario, scenario
from tools.kube.control_plane import ControlPlane
from tools.kube.http import HTTPError


def _seeds() -> list[int]:
    given = os.environ.get("ESAP_DIFF_SEEDS")
    if given:
        return [int(s) for s in given.replace(",", " ").split()]
    count = int(os.environ.get("ESAP_DIFF_CLUSTERS", "24"))
    return random.Random().sample(range(1, 10**6), count)


SEEDS = _seeds()


class Cluster:
    """One scenario set up on the control plane, with its namespaces and nodes."""

    def __init__(self, plane: ControlPlane, sc: Scenario, tmp_path: Path) -> None:
        self.plane = plane
        self.api = plane.api
        self.sc = sc
        self.hub = f"hub-{sc.seed}"
        self.namespaces = [self.hub, *(f"{ns}-{sc.seed}" for ns in FOREIGN_NAMESPACES)]
        site = {
            "facility": {"name": "Differential", "description": "", "url": "http://127.0.0.1/"},
            "profiles": sc.profiles,
        }
        self.site_file = tmp_path / "site.yaml"
        self.site_file.write_text(yaml.safe_dump(site))
        self.site = load_site(self.site_file)
        self.made = 0

    # -- set-up and clean-up ----------------------------------------------------------

    def set_up(self) -> None:
        for ns in self.namespaces:
            self.plane.create_namespace(ns)
        self.plane.register([node_manifest(**node) for node in self.sc.nodes])
        if self.sc.quota is not None:
            path = f"/api/v1/namespaces/{self.hub}/resourcequotas"
            self.api.post(path, {"metadata": {"name": "hub"}, "spec": {"hard": self.sc.quota}})
            wait(lambda: self._quota().get("status", {}).get("hard"), "the quota's status")
        for pod in self.sc.foreign_pods:
            ns = f"{pod['metadata']['namespace']}-{self.sc.seed}"
            self.api.post(f"/api/v1/namespaces/{ns}/pods", {**pod, "metadata": {
                **pod["metadata"], "namespace": ns}})  # fmt: skip
        wait(self._all_settled, "the foreign pods to be placed or refused")

    def tear_down(self) -> None:
        for ns in self.namespaces:
            self.api.request("DELETE", f"/api/v1/namespaces/{ns}/pods?gracePeriodSeconds=0")
        wait(lambda: not any(self._pods(ns) for ns in self.namespaces), "the pods to go")
        for node in self.sc.nodes:
            self.api.request("DELETE", f"/api/v1/nodes/{node['name']}")
        for ns in self.namespaces:
            self.api.request("DELETE", f"/api/v1/namespaces/{ns}")

    def _quota(self) -> dict[str, Any]:
        result: dict[str, Any] = self.api.get(f"/api/v1/namespaces/{self.hub}/resourcequotas/hub")
        return result

    def _pods(self, ns: str, selector: str = "") -> list[dict[str, Any]]:
        query = f"?labelSelector={selector}" if selector else ""
        items: list[dict[str, Any]] = self.api.get(f"/api/v1/namespaces/{ns}/pods{query}")["items"]
        return items

    def _all_settled(self) -> bool:
        return all(settled(p) is not None for ns in self.namespaces for p in self._pods(ns))

    # -- what the model says ------------------------------------------------------------

    def model(self) -> ClusterModel:
        """A model fed the API server's current lists, as the hub's watcher feeds it."""
        model = ClusterModel()
        pods = [p for ns in self.namespaces for p in self._pods(ns)]
        model.replace_all(self.api.get("/api/v1/nodes")["items"], pods)
        model.quotas.replace(self.api.get(f"/api/v1/namespaces/{self.hub}/resourcequotas")["items"])
        return model

    # -- servers built by the spawner ---------------------------------------------------

    async def server_pod(self, slug: str, only_on: list[str] | None = None) -> dict[str, Any]:
        """A pod exactly as ESAPSpawner builds it for a user of profile ``slug``; with
        ``only_on``, it may run on those nodes only."""
        self.made += 1
        config = Config()
        config.ESAPSpawner.site_file = str(self.site_file)
        config.KubeSpawner.namespace = self.hub
        config.ESAPSpawner.admission = False  # the model is what is judged here
        config.ESAPSpawner.db_url = ""
        spawner = ESAPSpawner(
            hub=Hub(ip="127.0.0.1", port=8081),
            user=MockUser(f"{slug}-{self.made}"),
            config=config,
            api_token="token",
            oauth_client_id="client",
        )
        spawner.user_options = {"profile": slug}
        await spawner.load_user_options()
        pod: dict[str, Any] = ApiClient().sanitize_for_serialization(
            await spawner.get_pod_manifest()
        )
        if only_on is not None:  # one term per node: a node field selector takes one value
            terms = [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [name]}]}
                for name in only_on
            ]
            pod["spec"]["affinity"] = {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
                }
            }
        return pod

    async def start(self, slug: str, count: int, only_on: list[str] | None = None) -> list[str]:
        """Create ``count`` servers; returns the names of those the API server accepted
        (quota admission may refuse some: their places hold the refusal message)."""
        outcomes = []
        for _ in range(count):
            pod = await self.server_pod(slug, only_on)
            try:
                self.api.post(f"/api/v1/namespaces/{self.hub}/pods", pod)
                outcomes.append(pod["metadata"]["name"])
            except HTTPError as refused:
                if refused.status != 403:
                    raise
                outcomes.append(f"refused: {refused}")
        return outcomes

    def outcome(self, name: str, timeout: float = 30) -> str:
        """``bound``, or ``pending: <why>`` once the scheduler gave up on the pod (with its
        FailedScheduling event), or the refusal text."""
        if name.startswith("refused: "):
            return name
        path = f"/api/v1/namespaces/{self.hub}/pods/{name}"
        state = wait(lambda: settled(self.api.get(path)), f"pod {name} to be placed", timeout)
        if state == "bound":
            return state
        events = f"/api/v1/namespaces/{self.hub}/events?fieldSelector=involvedObject.name={name}"
        event = wait(
            lambda: [e for e in self.api.get(events)["items"] if e["reason"] == "FailedScheduling"],
            f"the FailedScheduling event of {name}",
        )
        return f"pending: {event[0]['message']}"

    def delete(self, name: str) -> None:
        self.api.request("DELETE", f"/api/v1/namespaces/{self.hub}/pods/{name}")
        wait(lambda: not self._exists(name), f"pod {name} to go")
        if self.sc.quota is not None:  # quota is given back by the controller, a moment later
            wait(self._quota_caught_up, "the quota to count the deletion")

    def _exists(self, name: str) -> bool:
        return self.api.answers(f"/api/v1/namespaces/{self.hub}/pods/{name}")

    def _quota_caught_up(self) -> bool:
        used = self._quota()["status"].get("used", {})
        pods = [p for p in self._pods(self.hub) if p["status"].get("phase") not in TERMINAL]
        return all(parse_quantity(q) == quota_usage(pods, key) for key, q in used.items())


TERMINAL = ("Succeeded", "Failed")


def quota_usage(pods: list[dict[str, Any]], key: str) -> Decimal:
    """What ``pods`` use of a quota's ``key`` (``pods``, ``requests.cpu``, ``limits.memory``,
    ``cpu``...), summed over their containers (none of these pods has init containers)."""
    if key in ("pods", "count/pods"):
        return Decimal(len(pods))
    kind, _, resource = key.partition(".") if key.startswith(("requests.", "limits.")) else (
        "requests", ".", key)  # fmt: skip
    total = Decimal(0)
    for pod in pods:
        for container in pod["spec"]["containers"]:
            value = (container.get("resources") or {}).get(kind, {}).get(resource)
            total += parse_quantity(value) if value is not None else 0
    return total


def summary(outcomes: list[str]) -> str:
    """``3 bound, 2 pending: 0/4 nodes are available: ...`` for a list of outcomes."""
    counts = Counter(o[:160] for o in outcomes)
    return "; ".join(f"{n} {o}" for o, n in counts.most_common()) or "none"


def settled(pod: dict[str, Any]) -> str | None:
    """``bound`` when the pod has a node, ``pending`` once the scheduler found none, else None."""
    if pod["spec"].get("nodeName"):
        return "bound"
    for condition in pod.get("status", {}).get("conditions", []):
        if condition["type"] == "PodScheduled" and condition["status"] == "False":
            return "pending"
    return None


def wait(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane of this module's own: every node on it belongs to the scenario."""
    plane = start_control_plane()
    kubeconfig = plane.write_kubeconfig(tmp_path_factory.mktemp("differential") / "kubeconfig")
    try:
        with kubeconfig_in_use(kubeconfig):  # ESAPSpawner (KubeSpawner) needs one to exist
            yield plane
    finally:
        plane.stop()


async def judge(cluster: Cluster, slug: str) -> list[str]:
    """Mismatches between the model and the real control plane for one profile."""
    profile = next(p for p in cluster.site.profiles if p.slug == slug)
    model = cluster.model()
    count, fast = model.fit_count(profile)
    availability = model.availability([profile])[slug]
    found = []
    left = None if profile.max_servers is None else profile.max_servers - model.running(slug)
    can = count if left is None else max(0, min(count, left))
    if (availability.can_start_now, availability.fast_start) != (can, min(fast, can)):
        found.append(f"{slug}: availability {availability} but fit {count}, fast {fast}")

    image_nodes = [
        n["name"] for n in cluster.sc.nodes if profile.image and profile.image in n["images"]
    ]
    if image_nodes:
        fast_ones = await cluster.start(slug, fast, only_on=image_nodes)
        outcomes = [cluster.outcome(name) for name in fast_ones]
        if any(o != "bound" for o in outcomes):
            found.append(f"{slug}: model says {fast} fit on {image_nodes}: {summary(outcomes)}")
        (extra,) = await cluster.start(slug, 1, only_on=image_nodes)
        if cluster.outcome(extra) == "bound":
            found.append(f"{slug}: model says {fast} fit on {image_nodes}; one more was bound")
        if not extra.startswith("refused: "):
            cluster.delete(extra)
    elif fast:
        found.append(f"{slug}: fast {fast} but no node lists the image {profile.image}")
        fast = 0

    others = await cluster.start(slug, count - fast)
    outcomes = [cluster.outcome(name) for name in others]
    if any(o != "bound" for o in outcomes):
        found.append(f"{slug}: model says {count} fit: {summary(outcomes)}")
    (extra,) = await cluster.start(slug, 1)
    last = cluster.outcome(extra)
    if last == "bound":
        found.append(f"{slug}: model says {count} fit; pod {count + 1} was bound too")
    return found


@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed-{s}" for s in SEEDS])
async def test_the_model_counts_what_the_scheduler_binds(
    plane: ControlPlane, tmp_path: Path, seed: int
) -> None:
    sc = scenario(seed)
    cluster = Cluster(plane, sc, tmp_path)
    cluster.set_up()
    try:
        for slug, running in sc.running.items():
            for name in await cluster.start(slug, running):
                cluster.outcome(name)
        mismatches = []
        for profile in sc.profiles:
            mismatches += await judge(cluster, profile["slug"])
        assert not mismatches, (
            f"{sc.describe()}\n" + "\n".join(mismatches) + f"\nreplay: ESAP_DIFF_SEEDS={seed}"
        )
    finally:
        cluster.tear_down()
