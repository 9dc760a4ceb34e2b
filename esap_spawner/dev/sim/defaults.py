"""Fields the API server and its controllers fill in on create, per resource.

Pods start Pending with Kubernetes' spec defaults; claims are bound at once (the simulator has
no storage provisioner to wait for); services get a cluster IP; namespaces are Active; nodes
get a Ready condition and allocatable/capacity from each other when only one is given.
"""

from __future__ import annotations

import base64
import itertools
from typing import Any

from esap_spawner.dev.sim.clock import now_rfc3339

__all__ = ["apply_defaults", "default_pod_spec", "normalize"]

_cluster_ips = itertools.count(10)


def _pull_policy(image: str) -> str:
    tag = image.rsplit("/", 1)[-1]
    if "@" in tag:
        return "IfNotPresent"
    return "Always" if ":" not in tag or tag.endswith(":latest") else "IfNotPresent"


def _qos_class(spec: dict[str, Any]) -> str:
    containers = spec.get("containers") or []
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(name) is not None
        and (r.get("requests") or {}).get(name, (r.get("limits") or {})[name])
        == (r.get("limits") or {})[name]
        for r in resources
        for name in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"


def default_pod_spec(spec: dict[str, Any]) -> None:
    """The API server's defaults for a pod spec (in place)."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("enableServiceLinks", True)
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        container.setdefault("imagePullPolicy", _pull_policy(container.get("image", "")))
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})


def _pod(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    default_pod_spec(spec)
    status = obj.setdefault("status", {})
    status.setdefault("phase", "Pending")
    status["qosClass"] = _qos_class(spec)


def _claim(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("volumeMode", "Filesystem")
    spec.setdefault("volumeName", f"pvc-{obj['metadata']['uid']}")
    requested = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
    obj["status"] = {
        "phase": "Bound",
        "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
        "capacity": {"storage": requested},
    }


def _service(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    if spec.get("clusterIP") != "None":
        n = next(_cluster_ips)
        spec["clusterIP"] = f"10.96.{(n // 250) % 250}.{n % 250 + 1}"
        spec["clusterIPs"] = [spec["clusterIP"]]
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    obj.setdefault("status", {"loadBalancer": {}})


def _namespace(obj: dict[str, Any]) -> None:
    labels = obj["metadata"].setdefault("labels", {})
    labels.setdefault("kubernetes.io/metadata.name", obj["metadata"]["name"])
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj["status"] = {"phase": "Active"}


def _node(obj: dict[str, Any]) -> None:
    name = obj["metadata"]["name"]
    labels = obj["metadata"].setdefault("labels", {})
    labels.setdefault("kubernetes.io/hostname", name)
    labels.setdefault("kubernetes.io/os", "linux")
    obj.setdefault("spec", {})
    status = obj.setdefault("status", {})
    if "allocatable" in status or "capacity" in status:
        status.setdefault("allocatable", dict(status.get("capacity") or {}))
        status.setdefault("capacity", dict(status.get("allocatable") or {}))
    else:
        status["allocatable"] = {"cpu": "4", "memory": "16Gi", "pods": "110"}
        status["capacity"] = dict(status["allocatable"])
    status.setdefault("images", [])
    if not status.get("conditions"):
        now = now_rfc3339()
        status["conditions"] = [
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }
        ]
    info = {
        "architecture": "amd64",
        "bootID": obj["metadata"]["uid"],
        "containerRuntimeVersion": "sim://1.0",
        "kernelVersion": "6.1.0",
        "kubeProxyVersion": "v1.31.0-esap-sim",
        "kubeletVersion": "v1.31.0-esap-sim",
        "machineID": obj["metadata"]["uid"].replace("-", ""),
        "operatingSystem": "linux",
        "osImage": "esap-spawner simulator",
        "systemUUID": obj["metadata"]["uid"],
    }
    status["nodeInfo"] = {**info, **(status.get("nodeInfo") or {})}
    status.setdefault("addresses", [{"type": "Hostname", "address": name}])


def _event(obj: dict[str, Any]) -> None:
    obj.setdefault("count", 1)
    obj.setdefault("type", "Normal")


def _secret(obj: dict[str, Any]) -> None:
    obj.setdefault("type", "Opaque")
    normalize("secrets", obj)


def normalize(resource: str, obj: dict[str, Any]) -> None:
    """What the API server rewrites on every write: a secret's stringData goes into data."""
    if resource == "secrets" and obj.get("stringData"):
        data = obj.setdefault("data", {}) or {}
        for key, value in obj.pop("stringData").items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data


_DEFAULTS = {
    "pods": _pod,
    "persistentvolumeclaims": _claim,
    "services": _service,
    "namespaces": _namespace,
    "nodes": _node,
    "events": _event,
    "secrets": _secret,
}


def apply_defaults(resource: str, obj: dict[str, Any], store: Any = None) -> None:
    """Fill in what the API server would on create (in place, on a fresh copy)."""
    fill = _DEFAULTS.get(resource)
    if fill is not None:
        fill(obj)
