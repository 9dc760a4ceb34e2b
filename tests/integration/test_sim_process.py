"""The process kubelet: pods as local processes on their own loopback address."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio.client import ApiException

from esap_spawner.dev.sim import SimulatorThread
from tests.harness.sim import k8s_api

pytestmark = pytest.mark.integration
PY = sys.executable
POD_IP = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}


@pytest.fixture
async def cluster(sim_factory: Callable[..., SimulatorThread]) -> Any:
    sim = sim_factory({"nodes": [{"name": "n1"}]}, kubelet="process")
    api = k8s_api(sim)
    try:
        yield sim, api
    finally:
        await api.api_client.close()


def pod(name: str, args: list[str], **extra: Any) -> dict[str, Any]:
    container = {"name": "main", "image": "python:3.11-slim", "args": args, "env": [POD_IP]}
    container.update(extra.pop("container", {}))
    return {"metadata": {"name": name}, "spec": {"containers": [container], **extra}}


async def until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")


async def fetch(url: str) -> str | None:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response,
        ):
            return f"{response.status} {await response.text()}"
    except (aiohttp.ClientError, TimeoutError):
        return None


async def running(api: Any, name: str) -> Any:
    found = await api.read_namespaced_pod(name, "default")
    return found if found.status.phase == "Running" else None


async def gone(api: Any, name: str) -> bool:
    try:
        await api.read_namespaced_pod(name, "default")
    except ApiException as exc:
        return exc.status == 404
    return False


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


async def test_http_server_reachable_at_pod_ip_and_stopped_on_delete(cluster: Any) -> None:
    sim, api = cluster
    args = [PY, "-m", "http.server", "--bind", "$(POD_IP)", "8000"]
    await api.create_namespaced_pod("default", pod("web", args))
    web = await until(lambda: running(api, "web"))
    ip = web.status.pod_ip
    assert ip.startswith("127.") and not ip.startswith("127.0.0.")
    assert web.status.container_statuses[0].ready
    assert (await until(lambda: fetch(f"http://{ip}:8000/"))).startswith("200")
    log = await api.read_namespaced_pod_log("web", "default")
    assert "GET / HTTP/1.1" in log
    assert sim.pods_running() == 1

    deleted = await api.delete_namespaced_pod("web", "default", grace_period_seconds=5)
    assert deleted.metadata.deletion_timestamp is not None
    assert await until(lambda: gone(api, "web"))
    assert await fetch(f"http://{ip}:8000/") is None
    assert sim.pods_running() == 0


async def test_two_pods_on_one_port_each_on_its_own_pod_ip(cluster: Any) -> None:
    _, api = cluster
    args = [PY, "-m", "http.server", "--bind", "$(POD_IP)", "8765"]
    for name in ("one", "two"):
        await api.create_namespaced_pod("default", pod(name, args))
    ips = [(await until(lambda n=name: running(api, n))).status.pod_ip for name in ("one", "two")]
    assert ips[0] != ips[1]
    for ip in ips:
        assert (await until(lambda ip=ip: fetch(f"http://{ip}:8765/"))).startswith("200")


async def test_environment_resolution_and_expansion(cluster: Any) -> None:
    sim, api = cluster
    await api.create_namespaced_secret(
        "default", {"metadata": {"name": "creds"}, "stringData": {"token": "s3cret"}}
    )
    script = (
        "import os, pathlib; keys = ['HOME', 'HOSTNAME', 'POD_IP', 'NAME', 'NS', 'GREETING', "
        "'TOKEN', 'PATH']; print({k: os.environ.get(k) for k in keys}); "
        "print('cwd', os.getcwd()); import sys; print('argv', sys.argv[1:])"
    )
    env = [
        POD_IP,
        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "GREETING", "value": "hello $(NAME) at $(POD_IP), $$(NAME) $(UNKNOWN)"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
    ]
    manifest = pod(
        "env",
        ["$(NAME)", "$(NS)"],
        container={"command": [PY, "-c", script], "env": env},
        restartPolicy="Never",
    )
    await api.create_namespaced_pod("default", manifest)

    async def succeeded() -> Any:
        found = await api.read_namespaced_pod("env", "default")
        return found if found.status.phase == "Succeeded" else None

    done = await until(succeeded)
    state = done.status.container_statuses[0].state.terminated
    assert (state.exit_code, state.reason) == (0, "Completed")
    log = await api.read_namespaced_pod_log("env", "default")
    values = eval(log.splitlines()[0])  # the printed dict literal
    ip = done.status.pod_ip
    assert values["HOSTNAME"] == "env"
    assert values["POD_IP"] == ip
    assert (values["NAME"], values["NS"]) == ("env", "default")
    assert values["GREETING"] == f"hello env at {ip}, $(NAME) $(UNKNOWN)"
    assert values["TOKEN"] == "s3cret"
    assert values["PATH"].endswith(os.environ["PATH"])  # the simulator's PATH, passed through
    assert os.path.dirname(PY) in values["PATH"].split(os.pathsep)
    assert values["HOME"].startswith(str(sim.sim.workdir))
    assert f"cwd {values['HOME']}" in log
    assert "argv ['env', 'default']" in log


async def test_init_containers_run_in_order_before_the_main_container(cluster: Any) -> None:
    _, api = cluster
    manifest = pod("data", [PY, "-m", "http.server", "--bind", "$(POD_IP)", "8000"])
    write = "import os; open('data.txt', 'w').write('one ' + os.environ['POD_IP'])"
    manifest["spec"]["initContainers"] = [
        {"name": "fetch", "image": "busybox:1", "env": [POD_IP], "command": [PY, "-c", write]},
        {"name": "check", "image": "busybox:1",
         "command": [PY, "-c", "import sys; sys.exit(0 if open('data.txt').read() else 1)"]},
    ]  # fmt: skip
    await api.create_namespaced_pod("default", manifest)
    ready = await until(lambda: running(api, "data"))
    inits = ready.status.init_container_statuses
    assert [(s.name, s.state.terminated.exit_code) for s in inits] == [("fetch", 0), ("check", 0)]
    body = await until(lambda: fetch(f"http://{ready.status.pod_ip}:8000/data.txt"))
    assert body == f"200 one {ready.status.pod_ip}"


async def test_failing_init_container_leaves_pod_in_init_error(cluster: Any) -> None:
    _, api = cluster
    manifest = pod("broken", [PY, "-c", "open('main-ran', 'w')"])
    manifest["spec"]["initContainers"] = [
        {"name": "setup", "image": "busybox:1", "command": [PY, "-c", "import sys; sys.exit(7)"]}
    ]
    await api.create_namespaced_pod("default", manifest)

    async def init_failed() -> Any:
        found = await api.read_namespaced_pod("broken", "default")
        statuses = found.status.init_container_statuses or []
        return found if statuses and statuses[0].state.terminated else None

    broken = await until(init_failed)
    terminated = broken.status.init_container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (7, "Error")
    assert broken.status.phase == "Pending"
    assert not broken.status.container_statuses
    events = await api.list_namespaced_event(
        "default", field_selector="involvedObject.name=broken,type=Warning"
    )
    assert [e.message for e in events.items] == ["Error: init container setup exited with code 7"]


async def test_sigkill_after_grace_for_a_process_ignoring_sigterm(cluster: Any) -> None:
    _, api = cluster
    stubborn = (
        "import signal, time, os; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print(os.getpid(), flush=True); time.sleep(600)"
    )
    await api.create_namespaced_pod("default", pod("stubborn", [PY, "-c", stubborn]))
    await until(lambda: running(api, "stubborn"))
    log = await until(lambda: api.read_namespaced_pod_log("stubborn", "default"))
    pid = int(log.split()[0])
    began = time.monotonic()
    await api.delete_namespaced_pod("stubborn", "default", grace_period_seconds=1)
    await asyncio.sleep(0.5)
    assert alive(pid)  # SIGTERM ignored, still inside the grace period
    assert await until(lambda: gone(api, "stubborn"))
    assert time.monotonic() - began >= 1
    assert not alive(pid)


async def test_stopping_the_simulator_leaves_no_process(
    sim_factory: Callable[..., SimulatorThread],
) -> None:
    sim = sim_factory({"nodes": [{"name": "n1"}]}, kubelet="process")
    api = k8s_api(sim)
    try:
        sleeper = [PY, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(600)"]
        await api.create_namespaced_pod("default", pod("sleeper", sleeper))
        await until(lambda: running(api, "sleeper"))
        log = await until(lambda: api.read_namespaced_pod_log("sleeper", "default"))
        pid = int(log.split()[0])
        assert alive(pid)
    finally:
        await api.api_client.close()
    workdir = sim.sim.workdir if sim.sim else None
    sim.stop()
    assert not alive(pid)
    assert workdir is not None and not workdir.exists()
