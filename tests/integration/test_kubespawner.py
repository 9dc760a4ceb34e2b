"""The real, unmodified KubeSpawner on both Kubernetes backends (tests/harness/kube.py).

On the simulator (process kubelet) the pod's command really runs, on its own loopback address;
on the real control plane (kwok nodes) the real API server validates every object, the real
scheduler places the pod, the real garbage collector removes what the pod owned and a
provisioner binds the claim, but no process runs. Checks of a running process are made where
processes run.

KubeSpawner is built the way its own tests build it (a ``Hub`` and a mock user, no hub
process). Each test works in its own namespace (``kube_namespace``), which also stops the
class-level reflectors afterwards. Bind address: the pod runs with
``c.KubeSpawner.ip = "$(POD_IP)"`` and a downward-API ``POD_IP`` env var, the
Kubernetes-faithful way to make a local process listen on its own pod IP.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any
from unittest.mock import Mock

import pytest
from jupyterhub.objects import Hub, Server
from kubernetes_asyncio.client import ApiException
from kubespawner import KubeSpawner
from traitlets.config import Config

from tests.harness.kube import Backend
from tests.harness.polling import http_status, wait_for

pytestmark = pytest.mark.integration

SERVE = [sys.executable, "-m", "http.server", "--bind", "$(POD_IP)", "8888"]


class MockUser(Mock):
    """The part of a JupyterHub user a spawner reads."""

    name = "alice"
    server = Server()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        for key, value in kwargs.items():
            setattr(self, key, value)

    @property
    def escaped_name(self) -> str:
        return self.name

    @property
    def url(self) -> str:
        return self.server.url


def make_spawner(namespace: str, user: str = "alice", **traits: Any) -> KubeSpawner:
    config = Config()
    config.KubeSpawner.namespace = namespace
    config.KubeSpawner.image = "python:3.11-slim"
    config.KubeSpawner.cmd = SERVE
    config.KubeSpawner.ip = "$(POD_IP)"
    config.KubeSpawner.environment = {
        "POD_IP": {"valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    }
    config.KubeSpawner.start_timeout = 30
    config.KubeSpawner.k8s_api_request_timeout = 3
    for name, value in traits.items():
        setattr(config.KubeSpawner, name, value)
    return KubeSpawner(
        hub=Hub(), user=MockUser(name=user), config=config, api_token="abc123",
        oauth_client_id="unused",
    )  # fmt: skip


async def _claim_bound(api: Any, name: str, ns: str) -> bool:
    claim = await api.read_namespaced_persistent_volume_claim(name, ns)
    return bool(claim.status.phase == "Bound")


async def _gone(read: Any, *args: Any) -> bool:
    try:
        await read(*args)
    except ApiException as exc:
        return exc.status == 404
    return False


async def test_start_with_pvc_and_service_poll_progress_stop(
    kube: Backend, kube_namespace: str
) -> None:
    ns = kube_namespace
    spawner = make_spawner(
        ns, storage_pvc_ensure=True, storage_capacity="1Gi", services_enabled=True
    )
    api = kube.api()
    try:
        assert isinstance(await spawner.poll(), int)  # no pod yet
        url = await spawner.start()
        assert url == f"http://{spawner.dns_name}:8888"

        pod = await api.read_namespaced_pod(spawner.pod_name, ns)
        assert pod.status.phase == "Running"
        assert await spawner.poll() is None
        if kube.runs_processes:
            assert pod.status.pod_ip.startswith("127.")
            # the process really listens on its pod IP ($(POD_IP) expanded in args)
            assert (
                await wait_for(
                    lambda: http_status(f"http://{pod.status.pod_ip}:8888/"),
                    what="the pod's server",
                )
                == 200
            )

        # the pod was scheduled only once its claim was bound (the real scheduler insists)
        assert await _claim_bound(api, spawner.pvc_name, ns)
        service = await api.read_namespaced_service(spawner.pod_name, ns)
        assert service.metadata.owner_references[0].uid == pod.metadata.uid

        messages = [event["message"] async for event in spawner.progress()]
        text = "\n".join(messages)
        assert f"Successfully assigned {ns}/{spawner.pod_name}" in text
        assert "[Normal] Started " in text  # the kubelet's (or the node agent's) start
        if kube.runs_processes:
            assert 'Pulling image "python:3.11-slim"' in text
            assert "Started container notebook" in text

        await spawner.stop()
        with pytest.raises(ApiException) as gone:
            await api.read_namespaced_pod(spawner.pod_name, ns)
        assert gone.value.status == 404

        await wait_for(
            lambda: _gone(api.read_namespaced_service, spawner.pod_name, ns),
            what="the service to be garbage-collected",
        )
        assert await spawner.poll() == 1
        if kube.runs_processes:
            assert await http_status(f"http://{pod.status.pod_ip}:8888/") is None
        # the claim outlives the pod; delete_forever removes it
        await api.read_namespaced_persistent_volume_claim(spawner.pvc_name, ns)
        await spawner.delete_forever()
        await wait_for(
            lambda: _gone(api.read_namespaced_persistent_volume_claim, spawner.pvc_name, ns),
            what="the claim to be deleted",
        )
    finally:
        await api.api_client.close()


async def test_restart_over_a_stale_pod(kube: Backend, kube_namespace: str) -> None:
    ns = kube_namespace
    spawner = make_spawner(ns, user="bob")
    api = kube.api()
    try:
        stale = await api.create_namespaced_pod(
            ns,
            {
                "metadata": {"name": spawner.pod_name},
                "spec": {
                    "containers": [
                        {"name": "notebook", "image": "python:3.11-slim",
                         "command": [sys.executable, "-c", "import time; time.sleep(600)"]}
                    ]
                },
            },
        )  # fmt: skip
        await wait_for(
            lambda: _phase(api, ns, spawner.pod_name, "Running"), what="the stale pod to run"
        )
        await spawner.start()  # 409 -> deletes the stale pod, waits, creates its own
        pod = await api.read_namespaced_pod(spawner.pod_name, ns)
        assert pod.metadata.uid != stale.metadata.uid
        assert pod.status.phase == "Running"
        assert await spawner.poll() is None
        await spawner.stop()
    finally:
        await api.api_client.close()


async def _phase(api: Any, ns: str, name: str, phase: str) -> bool:
    try:
        pod = await api.read_namespaced_pod(name, ns)
    except ApiException:
        return False
    return bool(pod.status.phase == phase)


async def test_exit_code_is_seen_by_poll(sim: Any, sim_namespace: str) -> None:
    """Process kubelet only: on kwok nodes no process runs, so none exits."""
    spawner = make_spawner(
        sim_namespace,
        user="carol",
        cmd=[sys.executable, "-c", "import sys, time; time.sleep(2); sys.exit(3)"],
    )
    await spawner.start()
    assert await spawner.poll() is None

    async def exited() -> int | None:
        status = await spawner.poll()
        return None if status is None else status + 1000  # 0 would read as "not yet"

    assert await wait_for(exited, what="poll() to report the exit") == 1003
    # KubeSpawner deletes a stopped pod (delete_stopped_pods), which removes it for good
    await spawner.stop()


async def test_unschedulable_pod_stays_pending_with_failed_scheduling(
    kube: Backend, kube_namespace: str
) -> None:
    ns = kube_namespace
    spawner = make_spawner(ns, user="dave", cpu_guarantee=100, start_timeout=60)
    api = kube.api()
    start = asyncio.ensure_future(spawner.start())
    try:
        # kube-scheduler appends its preemption findings after this sentence; the simulator
        # does not (docs/simulator.md)
        expected = (
            "0/3 nodes are available: 1 node(s) had untolerated taint(s), 2 Insufficient cpu."
        )

        async def failed_scheduling() -> list[Any]:
            events = await api.list_namespaced_event(
                ns, field_selector="involvedObject.kind=Pod,reason=FailedScheduling"
            )
            return events.items

        events = await wait_for(failed_scheduling, what="a FailedScheduling event")
        assert events[0].message.startswith(expected)
        assert events[0].type == "Warning"
        assert events[0].involved_object.name == spawner.pod_name
        pod = await api.read_namespaced_pod(spawner.pod_name, ns)
        assert pod.status.phase == "Pending"
        assert pod.spec.node_name is None
        await asyncio.sleep(0.5)
        assert await spawner.poll() is None  # Pending reads as "still starting"
        assert not start.done()
        progress = [event["message"] async for event in _progress_until(spawner, expected)]
        assert any(expected in message for message in progress)
    finally:
        start.cancel()
        await asyncio.gather(start, return_exceptions=True)
        await spawner.stop(now=True)
        await api.api_client.close()


async def _progress_until(spawner: KubeSpawner, text: str) -> Any:
    async for event in spawner.progress():
        yield event
        if text in event.get("message", ""):
            return
