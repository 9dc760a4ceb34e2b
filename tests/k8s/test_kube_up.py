"""tools/kube-up as people and scripts use it: a kubeconfig that works the moment it exists,
nodes from a file and from ``kubectl create``, and a stop that leaves nothing behind."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.kube import cannot_run
from tools.kube.certs import Pair
from tools.kube.control_plane import (
    COMPONENTS,
    NODE_IP,
    POD_RANGE,
    ControlPlane,
    default_binaries,
)
from tools.kube.http import Client

REPO = Path(__file__).resolve().parents[2]
KUBE_UP = REPO / "tools" / "kube-up"
KUBECTL = Path(sys.executable).parent / "kubectl"
NODES_FILE = {
    "namespaces": ["jhub"],
    "nodes": [
        {"name": "file-cpu", "labels": {"node-type": "cpu"},
         "allocatable": {"cpu": "4", "memory": "8Gi"}},
        {"name": "file-gpu", "allocatable": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"},
         "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
    ],
}  # fmt: skip
CREATED_NODE = """
apiVersion: v1
kind: Node
metadata: {name: created-later, labels: {node-type: late}}
status:
  allocatable: {cpu: "2", memory: 4Gi, pods: "10"}
"""


def children(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux /proc)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError):
                kids = {int(k) for k in (task / "children").read_text().split()}
                todo.extend(kids - found)
                found |= kids
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def client_from(kubeconfig: Path, folder: Path) -> Client:
    """A client with the kubeconfig's own credentials (its inline PEM data)."""
    config = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    user = config["users"][0]["user"]
    files = {}
    for key in ("certificate-authority-data", "client-certificate-data", "client-key-data"):
        files[key] = folder / key
        files[key].write_bytes(base64.b64decode(user.get(key) or cluster[key]))
    return Client(
        cluster["server"],
        ca=Pair(files["certificate-authority-data"], files["certificate-authority-data"]),
        identity=Pair(files["client-certificate-data"], files["client-key-data"]),
    )


@pytest.fixture(scope="module")
def binaries() -> Path:
    folder = default_binaries()
    if not all((folder / name).exists() for name in COMPONENTS):
        cannot_run(f"the control plane's binaries are not built in {folder} (tools/build-kube)")
    return folder


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(kubeconfig), *args],
        input=stdin, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def node_ready(kubeconfig: Path, name: str) -> bool:
    node = yaml.safe_load(kubectl(kubeconfig, "get", "node", name, "-o", "yaml"))
    conditions = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
    lifecycle = [t for t in node["spec"].get("taints", []) if t["key"].startswith("node.k")]
    return conditions.get("Ready") == "True" and not lifecycle


@pytest.mark.parametrize(
    "stop", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name
)
def test_kube_up_serves_then_stops_leaving_nothing(
    binaries: Path, tmp_path: Path, stop: signal.Signals
) -> None:
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text(yaml.safe_dump(NODES_FILE))
    out = tmp_path / "kubeconfig"
    log = (tmp_path / "kube-up.log").open("w+")
    process = subprocess.Popen(
        [str(KUBE_UP), "--kubeconfig", str(out), "--nodes", str(nodes), "--bin", str(binaries)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait(lambda: out.exists() or process.poll() is not None, "the kubeconfig", 120)
        assert process.poll() is None, Path(log.name).read_text()
        # the kubeconfig works the moment it exists: the API server is ready
        api = client_from(out, tmp_path)
        assert api.get("/readyz") == "ok"
        assert api.get("/version")["gitVersion"] == "v1.36.3"
        below = children(process.pid)
        assert len(below) >= len(COMPONENTS), below
        folder = Path(re.search(r"logs in (\S+);", wait(lambda: Path(log.name).read_text(),
                                                        "the banner"))[1])  # fmt: skip
        assert folder.is_dir()

        # the file's nodes and namespaces, and a node created later, are all Ready
        assert node_ready(out, "file-cpu") and node_ready(out, "file-gpu")
        kubectl(out, "get", "namespace", "jhub")
        kubectl(out, "create", "-f", "-", stdin=CREATED_NODE)
        wait(lambda: node_ready(out, "created-later"), "the node created later to be Ready")
        kubectl(out, "run", "on-late", "--image=busybox:1.36", "--restart=Never",
                "--overrides", '{"spec": {"nodeSelector": {"node-type": "late"}}}')  # fmt: skip
        wait(
            lambda: (
                kubectl(out, "get", "pod", "on-late", "-o", "jsonpath={.status.phase}") == "Running"
            ),
            "the pod on the late node to run",
        )
        # kwok hands out loopback addresses only: a hub connecting to the pod reaches this machine
        ips = kubectl(
            out, "get", "pod", "on-late", "-o", "jsonpath={.status.podIP} {.status.hostIP}"
        )
        pod_ip, host_ip = ips.split()
        assert ipaddress.ip_address(pod_ip) in ipaddress.ip_network(POD_RANGE), ips
        assert host_ip == NODE_IP and ipaddress.ip_address(host_ip).is_loopback, ips

        process.send_signal(stop)
        process.wait(60)
        # every component is gone, even when kube-up itself was killed (PDEATHSIG)
        wait(lambda: not any(alive(pid) for pid in below), "the components to exit", 30)
        if stop == signal.SIGKILL:
            assert process.returncode == -signal.SIGKILL
            assert folder.exists()  # nothing runs after a SIGKILL: only the folder stays
            shutil.rmtree(folder)
        else:
            assert process.returncode == 0, Path(log.name).read_text()
            assert not folder.exists()
            assert not out.exists()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def test_kube_up_refuses_bad_arguments_before_starting(binaries: Path, tmp_path: Path) -> None:
    existing = tmp_path / "kubeconfig"
    existing.write_text("mine")
    done = subprocess.run(
        [str(KUBE_UP), "--kubeconfig", str(existing), "--bin", str(binaries)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"{existing} exists" in done.stderr
    assert existing.read_text() == "mine"

    bad = tmp_path / "nodes.yaml"
    bad.write_text(yaml.safe_dump({"nodes": [{"name": "n", "cpu": 4}]}))
    done = subprocess.run(
        [str(KUBE_UP), "--kubeconfig", str(tmp_path / "new"), "--nodes", str(bad)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert "nodes[0]: unknown keys ['cpu']" in done.stderr
    assert not (tmp_path / "new").exists()

    done = subprocess.run(
        [str(KUBE_UP), "--kubeconfig", str(tmp_path / "new"), "--bin", str(tmp_path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1
    assert "missing binaries" in done.stderr and "tools/build-kube" in done.stderr


def test_the_node_agent_renews_node_leases(control_plane: ControlPlane) -> None:
    """Nodes stay Ready because kwok renews their Leases, as kubelets do."""

    def renewed_at(node: str) -> datetime:
        lease = control_plane.api.get(
            f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"
        )
        return datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00"))

    first = renewed_at("cpu-1")
    wait(lambda: renewed_at("cpu-1") > first, "a lease renewal", 30)
    assert control_plane.node_ready("cpu-1")
