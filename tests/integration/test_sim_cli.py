"""`esap-spawner sim` runs standalone: serves, writes a kubeconfig, stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client

pytestmark = pytest.mark.integration

CLUSTER = """
nodes:
  - name: cpu-1
    labels: {node-type: cpu}
    allocatable: {cpu: "8", memory: 32Gi}
  - name: gpu-1
    allocatable: {cpu: "16", memory: 64Gi, nvidia.com/gpu: "2"}
    taints: [{key: nvidia.com/gpu, value: present, effect: NoSchedule}]
pods:
  - {name: busy, node: cpu-1, requests: {cpu: "6"}}
"""


def start_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "esap_spawner.cli", "sim", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_file(path: Path, process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(
                f"the simulator exited: {process.stdout and process.stdout.read()}"
            )
        if time.monotonic() > deadline:
            raise AssertionError("no kubeconfig written")
        time.sleep(0.1)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


async def test_cli_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(CLUSTER)
    kubeconfig = tmp_path / "kubeconfig.yaml"
    process = start_cli(
        "--cluster", str(cluster), "--kubeconfig", str(kubeconfig), "--kubelet", "process",
        "--pull-seconds", "0.05",
    )  # fmt: skip
    try:
        wait_for_file(kubeconfig, process)
        server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        assert server.startswith("http://127.0.0.1:")
        configuration = client.Configuration(host=server)
        async with client.ApiClient(configuration) as api_client:
            api = client.CoreV1Api(api_client)
            nodes = await api.list_node()
            assert sorted(n.metadata.name for n in nodes.items) == ["cpu-1", "gpu-1"]
            script = "import os, time; print(os.getpid(), flush=True); time.sleep(600)"
            container = {
                "name": "main",
                "image": "python:3",
                "command": [sys.executable, "-c", script],
            }
            pod = {"metadata": {"name": "sleeper"}, "spec": {"containers": [container]}}
            await api.create_namespaced_pod("default", pod)
            pid = None
            for _ in range(100):
                log = await api.read_namespaced_pod_log("sleeper", "default")
                if log.strip():
                    pid = int(log.split()[0])
                    break
                await asyncio.sleep(0.1)
            assert pid is not None and alive(pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        output = process.stdout.read() if process.stdout else ""
        assert f"serving at {server}" in output
        assert not alive(pid)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_refuses_a_bad_cluster_file(tmp_path: Path) -> None:
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("nodes:\n  - {name: n1, cores: 4}\n")
    process = start_cli("--cluster", str(cluster), "--kubeconfig", str(tmp_path / "kc"))
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "nodes[0]: unknown keys ['cores']" in out
    assert not (tmp_path / "kc").exists()


def test_cli_help_lists_the_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "esap_spawner.cli", "sim", "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0
    for option in ("--cluster", "--kubeconfig", "--port", "--kubelet"):
        assert option in done.stdout


async def test_pod_processes_die_with_a_killed_simulator(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig.yaml"
    process = start_cli("--kubeconfig", str(kubeconfig), "--kubelet", "process")
    try:
        wait_for_file(kubeconfig, process)
        server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        async with client.ApiClient(client.Configuration(host=server)) as api_client:
            api = client.CoreV1Api(api_client)
            await api.create_node({"metadata": {"name": "n1"}})
            script = "import os, time; print(os.getpid(), flush=True); time.sleep(600)"
            container = {
                "name": "main",
                "image": "python:3",
                "command": [sys.executable, "-c", script],
            }
            await api.create_namespaced_pod(
                "default", {"metadata": {"name": "orphan"}, "spec": {"containers": [container]}}
            )
            pid = None
            for _ in range(100):
                log = await api.read_namespaced_pod_log("orphan", "default")
                if log.strip():
                    pid = int(log.split()[0])
                    break
                await asyncio.sleep(0.1)
        assert pid is not None and alive(pid)
        process.kill()  # no chance to clean up
        process.wait(timeout=30)
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not alive(pid)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
