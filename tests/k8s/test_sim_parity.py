"""The simulator held to the real API server: one scripted scenario on both, answers compared.

The scenario does what KubeSpawner and esap-spawner do with the API (create/get/list with label
and field selectors, merge/JSON/strategic-merge patches, watch from a resourceVersion, delete
with ownerReference garbage collection, namespace deletion, Status errors for 404/409/422,
events, a pod through scheduling to Running and deletion), on the session simulator and on the
session control plane, which have the same nodes. Each answer is reduced to the fields those
two read (names, labels, annotations, owners, resources, phase, readiness, the Status error's
reason, code and details...), with values that differ by nature masked (uids, versions,
times, pod IPs).

Every difference left is in :data:`ACCEPTED`, and each of those is explained in
docs/simulator.md: a difference that appears and is not accepted fails, and so does an
accepted one that no longer appears (the list stays true).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from tests.harness.kube import Backend, real_backend, sim_backend
from tools.kube.control_plane import ControlPlane

DOC = Path(__file__).resolve().parents[2] / "docs" / "simulator.md"
SLEEPER = ["python3", "-c", "import time; time.sleep(600)"]
# step/field -> why it does not matter (the same words are in docs/simulator.md)
ACCEPTED: dict[str, str] = {}

Answer = dict[str, Any]


class Client:
    """JSON over HTTP to one backend, as a plain client sees it."""

    def __init__(self, backend: Backend) -> None:
        self.base = backend.url
        self.options = backend.requests_options()
        self.real = backend.name == "real"

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        headers = dict(self.options.get("headers", {}))
        if "content_type" in kwargs:
            headers["Content-Type"] = kwargs.pop("content_type")
        options = {k: v for k, v in self.options.items() if k != "headers"}
        answer = requests.request(
            method, self.base + path, json=body, headers=headers, timeout=30, **options, **kwargs
        )
        try:
            return answer.status_code, answer.json()
        except ValueError:
            return answer.status_code, answer.text

    def watch(self, path: str, version: str, seconds: int) -> list[tuple[str, Any]]:
        """Every event of a watch from ``version`` until the server ends it."""
        options = {k: v for k, v in self.options.items() if k != "headers"}
        answer = requests.get(
            self.base + path,
            params={"watch": "true", "resourceVersion": version, "timeoutSeconds": seconds},
            headers=self.options.get("headers", {}), stream=True, timeout=seconds + 30, **options,
        )  # fmt: skip
        return [(e["type"], e["object"]) for e in map(json.loads, answer.iter_lines()) if e]


# -- reducing answers to what the clients read ----------------------------------------------


def meta(obj: Answer) -> Answer:
    m = obj.get("metadata") or {}
    return {
        "name": m.get("name"),
        "namespace": m.get("namespace"),
        "labels": m.get("labels") or {},
        "annotations": {k: v for k, v in (m.get("annotations") or {}).items()
                        if not k.startswith("kubectl.kubernetes.io/")},
        "ownerReferences": [{"kind": o["kind"], "name": o["name"]}
                            for o in m.get("ownerReferences") or []],
        "has uid, resourceVersion, creationTimestamp": all(
            m.get(k) for k in ("uid", "resourceVersion", "creationTimestamp")),
        "deleting": "deletionTimestamp" in m,
    }  # fmt: skip


def pod_view(obj: Answer) -> Answer:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    containers = [
        {"name": c["name"], "image": c.get("image"), "resources": c.get("resources") or {}}
        for c in spec.get("containers") or []
    ]
    ready = {c["type"]: c["status"] for c in status.get("conditions") or []}.get("Ready")
    return {
        **meta(obj),
        "containers": containers,
        "schedulerName": spec.get("schedulerName"),
        "node": "<node>" if spec.get("nodeName") else None,
        "phase": status.get("phase"),
        "podIP": bool(status.get("podIP")),
        "Ready condition": ready,
        "containerStatuses": [
            {"name": c["name"], "ready": c.get("ready"), "state": sorted(c.get("state") or {})}
            for c in status.get("containerStatuses") or []
        ],
    }


def status_view(answer: Any) -> Answer:
    """A Status error as clients read it (reason, code, details' kind/name/causes' fields)."""
    details = answer.get("details") or {}
    return {
        "kind": answer.get("kind"),
        "status": answer.get("status"),
        "reason": answer.get("reason"),
        "code": answer.get("code"),
        "details": {"name": details.get("name"), "kind": details.get("kind"),
                    "fields": sorted({c.get("field") for c in details.get("causes") or []})},
    }  # fmt: skip


def names(answer: Answer) -> list[str]:
    return sorted(item["metadata"]["name"] for item in answer["items"])


def until(check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return result


# -- the scenario ------------------------------------------------------------------------------


def pod(name: str, **spec: Any) -> Answer:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name, "tier": "web"}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36", "command": SLEEPER,
                                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}],
                 **spec},
    }  # fmt: skip


def scenario(api: Client, ns: str) -> dict[str, Any]:
    """Run the scenario in a fresh namespace ``ns``; ``{step: what was seen}``."""
    seen: dict[str, Any] = {}
    base = f"/api/v1/namespaces/{ns}"
    code, _ = api.call("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
    seen["create namespace"] = code
    if api.real:  # ServiceAccount admission refuses pods until the account exists
        until(lambda: api.call("GET", f"{base}/serviceaccounts/default")[0] == 200)

    # create, get, list with selectors (pods nobody schedules: no controller touches them)
    for name, labels in (("a", {"app": "a", "tier": "web"}), ("b", {"app": "b"})):
        body = pod(name, schedulerName="nobody")
        body["metadata"]["labels"] = labels
        code, created = api.call("POST", f"{base}/pods", body)
        seen[f"create pod {name}"] = (code, pod_view(created))
    seen["get pod a"] = pod_view(api.call("GET", f"{base}/pods/a")[1])
    for selector in ("app=a", "app!=a", "app in (a,b)", "tier", "!tier", "app notin (a)"):
        code, listed = api.call("GET", f"{base}/pods", params={"labelSelector": selector})
        seen[f"list labelSelector {selector}"] = (code, names(listed))
    for selector in ("metadata.name=a", "metadata.name!=a", "status.phase=Pending",
                     "spec.nodeName=", "spec.schedulerName=nobody"):  # fmt: skip
        code, listed = api.call("GET", f"{base}/pods", params={"fieldSelector": selector})
        seen[f"list fieldSelector {selector}"] = (code, names(listed) if code == 200 else listed)

    # patches of the three kinds
    merge = {"metadata": {"labels": {"tier": None, "extra": "1"}, "annotations": {"x": "1"}}}
    seen["merge patch"] = pod_view(
        api.call("PATCH", f"{base}/pods/a", merge, content_type="application/merge-patch+json")[1]
    )
    json_patch = [
        {"op": "add", "path": "/metadata/annotations/y", "value": "2"},
        {"op": "remove", "path": "/metadata/labels/extra"},
    ]
    seen["JSON patch"] = pod_view(
        api.call("PATCH", f"{base}/pods/a", json_patch, content_type="application/json-patch+json")[
            1
        ]
    )
    strategic = {"spec": {"containers": [{"name": "main", "image": "busybox:1.37"}]}}
    seen["strategic merge patch"] = pod_view(api.call(
        "PATCH", f"{base}/pods/a", strategic,
        content_type="application/strategic-merge-patch+json")[1])  # fmt: skip

    # watch from a resourceVersion: what happened since, in order
    version = api.call("GET", f"{base}/pods")[1]["metadata"]["resourceVersion"]
    api.call("POST", f"{base}/pods", pod("c", schedulerName="nobody"))
    api.call("PATCH", f"{base}/pods/c", {"metadata": {"labels": {"seen": "yes"}}},
             content_type="application/merge-patch+json")  # fmt: skip
    api.call("DELETE", f"{base}/pods/c")
    events = api.watch(f"{base}/pods", version, 2)
    seen["watch from a resourceVersion"] = [
        (
            kind,
            obj["metadata"]["name"],
            "deletionTimestamp" in obj["metadata"],
            obj["metadata"].get("labels", {}).get("seen"),
            (obj.get("metadata") or {}).get("deletionGracePeriodSeconds"),
        )
        for kind, obj in events
    ]

    # Status errors
    seen["404"] = status_view(api.call("GET", f"{base}/pods/missing")[1])
    seen["409"] = status_view(api.call("POST", f"{base}/pods", pod("a"))[1])
    invalid = {"metadata": {"name": "bad"}, "spec": {"containers": []}}
    seen["422"] = status_view(api.call("POST", f"{base}/pods", invalid)[1])
    seen["404 namespace"] = status_view(api.call("GET", "/api/v1/namespaces/none-such/pods/x")[1])

    # ownerReference garbage collection (background deletion of the owner)
    code, owner = api.call("POST", f"{base}/configmaps", {"metadata": {"name": "owner"}})
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                 "uid": owner["metadata"]["uid"]}  # fmt: skip
    child = {"metadata": {"name": "child", "ownerReferences": [reference]}, "data": {"k": "v"}}
    code, made = api.call("POST", f"{base}/configmaps", child)
    seen["create owned ConfigMap"] = (code, meta(made), made.get("data"))
    api.call("DELETE", f"{base}/configmaps/owner")
    until(lambda: api.call("GET", f"{base}/configmaps/child")[0] == 404)
    seen["owned ConfigMap collected"] = True

    # a pod through the scheduler to Running, then deleted; its events
    code, _ = api.call("POST", f"{base}/pods", pod("run", nodeSelector={"node-type": "cpu"}))
    running = until(lambda: (p := api.call("GET", f"{base}/pods/run")[1])["status"].get("phase")
                    == "Running" and all(c.get("ready") for c in p["status"].get(
                        "containerStatuses", [{}])) and p)  # fmt: skip
    seen["running pod"] = pod_view(running)
    code, events_list = api.call(
        "GET", f"{base}/events", params={"fieldSelector": "involvedObject.kind=Pod,"
                                         "involvedObject.name=run"})  # fmt: skip
    seen["events of the pod"] = sorted(
        {(e["type"], e["reason"], e["involvedObject"]["kind"], bool(e.get("lastTimestamp")
          or e.get("eventTime"))) for e in events_list["items"]} & {
            ("Normal", "Scheduled", "Pod", True), ("Normal", "Started", "Pod", True)})  # fmt: skip
    version = running["metadata"]["resourceVersion"]
    api.call("DELETE", f"{base}/pods/run", {"gracePeriodSeconds": 1})
    until(lambda: api.call("GET", f"{base}/pods/run")[0] == 404)
    deletion = api.watch(f"{base}/pods", version, 2)
    seen["running pod deleted"] = [
        (kind, obj["metadata"].get("deletionGracePeriodSeconds"),
         sorted(k for c in obj["status"].get("containerStatuses", []) for k in c["state"]))
        for kind, obj in deletion
    ]  # fmt: skip

    # namespace deletion takes its contents
    code, answer = api.call("DELETE", f"/api/v1/namespaces/{ns}")
    seen["delete namespace"] = (code, (answer.get("status") or {}).get("phase"))
    until(lambda: api.call("GET", f"/api/v1/namespaces/{ns}")[0] == 404, timeout=120)
    seen["namespace gone"] = api.call("GET", f"{base}/pods/a")[0]
    return seen


def differences(sim: dict[str, Any], real: dict[str, Any]) -> dict[str, str]:
    found = {}
    for step in real:
        if sim.get(step) != real[step]:
            found[step] = f"simulator: {sim.get(step)!r}\n    real:      {real[step]!r}"
    return found


def test_the_simulator_answers_as_the_real_server(
    sim: Any, control_plane: ControlPlane, tmp_path: Path
) -> None:
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "kubeconfig")
    real = scenario(Client(real_backend(control_plane, kubeconfig)), "parity")
    simulated = scenario(Client(sim_backend(sim)), "parity")
    found = differences(simulated, real)
    unexpected = {k: v for k, v in found.items() if k not in ACCEPTED}
    assert not unexpected, "\n".join(f"{k}:\n    {v}" for k, v in unexpected.items())
    assert set(ACCEPTED) == set(found), (
        f"accepted but no longer different: {set(ACCEPTED) - set(found)}"
    )
    text = DOC.read_text()
    for step in ACCEPTED:
        assert re.search(re.escape(step), text), f"docs/simulator.md does not explain {step!r}"
