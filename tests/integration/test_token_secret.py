"""The user's hub token never appears in a pod spec (security review finding 1).

ESAPSpawner keeps ``JUPYTERHUB_API_TOKEN`` in a per-server Secret the pod owns and reads
through ``valueFrom.secretKeyRef``; init containers get no ``JUPYTERHUB_*`` variable.
Every test runs on both Kubernetes backends (``tests/harness/kube.py``): the simulator,
whose process kubelet really runs the server (which proves the token reaches it through the
Secret), and the real control plane (the k8s tier), whose API server validates every
object, whose RBAC decides what the advertising service's ServiceAccount may read, and whose
garbage collector removes what a deleted pod owned.

A spawn here is the real ESAPSpawner driven as JupyterHub drives it (``start``/``stop``), with
a dataset from a static catalogue and a workflow from the demo's https git server, so the pod
has both init containers, a ConfigMap and the token Secret.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from jupyterhub.objects import Hub
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiException
from tornado import web
from traitlets.config import Config

from esap_spawner.capacity.api_lookups import environment_applies
from esap_spawner.dev import demo_git
from esap_spawner.spawn.spawner import ESAPSpawner
from tests.harness.hub import HUB_SITE
from tests.harness.kube import Backend
from tests.harness.polling import http_status, wait_for
from tests.harness.spawner import MockUser

pytestmark = pytest.mark.integration

DATASET = "lofar:L1"
# The server: answers the SHA-256 of the token it was given (never the token itself).
TOKEN_ECHO = """
import hashlib, http.server, os
seen = hashlib.sha256(os.environ["JUPYTERHUB_API_TOKEN"].encode()).hexdigest().encode()
class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(seen)))
        self.end_headers()
        self.wfile.write(seen)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((os.environ["POD_IP"], 8888), Echo).serve_forever()
"""


@pytest.fixture(scope="module")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[demo_git.GitServer]:
    server = demo_git.start(tmp_path_factory.mktemp("git"))
    yield server
    server.stop()


@pytest.fixture
def site_file(tmp_path: Path) -> Path:
    archive = tmp_path / "archive"
    (archive / "lofar" / "L1").mkdir(parents=True)
    (archive / "lofar" / "L1" / "a.fits").write_text("AAA")
    site = dict(HUB_SITE)
    site["data"] = {
        "catalogue": "static",
        "mount_root": "/home/jovyan/datasets",
        "static": {
            "volume": {"hostPath": {"path": str(archive), "type": "Directory"}},
            "mount_path": str(archive),
            "datasets": [{"did": DATASET, "path": "lofar/L1"}],
        },
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site))
    return path


def make_spawner(
    site_file: Path, namespace: str, git: demo_git.GitServer, user: str = "ada", **traits: Any
) -> ESAPSpawner:
    config = Config()
    config.ESAPSpawner.site_file = str(site_file)
    config.KubeSpawner.namespace = namespace
    config.ESAPSpawner.admission = False
    config.ESAPSpawner.db_url = ""
    config.ESAPSpawner.checkout_env = {"GIT_SSL_CAINFO": str(git.ca_file)}
    config.KubeSpawner.cmd = [sys.executable, "-c", TOKEN_ECHO]
    config.KubeSpawner.ip = "$(POD_IP)"
    config.KubeSpawner.port = 8888
    config.KubeSpawner.environment = {
        "POD_IP": {"valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    }
    config.KubeSpawner.start_timeout = 30
    config.KubeSpawner.k8s_api_request_timeout = 3
    for name, value in traits.items():
        setattr(config.ESAPSpawner, name, value)
    spawner = ESAPSpawner(
        hub=Hub(ip="127.0.0.1", port=8081),
        user=MockUser(user),
        config=config,
        api_token=f"hub-token-{secrets.token_hex(16)}",
        oauth_client_id="client",
    )
    spawner.user_options = {"profile": "small", "dataset": [DATASET], "workflow": git.workflow}
    return spawner


@pytest.fixture
async def api(kube: Backend) -> AsyncIterator[client.CoreV1Api]:
    core = kube.api()
    yield core
    await core.api_client.close()


async def objects_of(api: client.CoreV1Api, namespace: str) -> dict[str, Any]:
    """The namespace's Secrets and ConfigMaps by name, as plain data."""
    found = {}
    for listed in (
        await api.list_namespaced_secret(namespace),
        await api.list_namespaced_config_map(namespace),
    ):
        for item in api.api_client.sanitize_for_serialization(listed)["items"]:
            if item["metadata"]["name"] != "kube-root-ca.crt":  # the real server's own
                found[item["metadata"]["name"]] = item
    return found


@contextlib.asynccontextmanager
async def as_the_service(kube: Backend, api: client.CoreV1Api) -> AsyncIterator[client.CoreV1Api]:
    """A client acting as the advertising service: on the real control plane its
    ServiceAccount with exactly the chart's ClusterRole (nodes and pods: list, watch)
    and a token from the TokenRequest API (all removed after); the simulator has no RBAC."""
    if kube.name == "sim":
        service = kube.api()
        try:
            yield service
        finally:
            await service.api_client.close()
        return
    from tests.harness.helm import render

    (role,) = [v for (kind, _), v in render().items() if kind == "ClusterRole"]
    name = f"esap-service-{secrets.token_hex(3)}"
    rbac = client.RbacAuthorizationV1Api(api.api_client)
    await api.create_namespaced_service_account("default", {"metadata": {"name": name}})
    await rbac.create_cluster_role({"metadata": {"name": name}, "rules": role["rules"]})
    await rbac.create_cluster_role_binding(
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "default"}],
        }
    )  # fmt: skip
    try:
        issued = await api.create_namespaced_service_account_token(
            name, "default", {"spec": {"expirationSeconds": 600}}
        )
        configuration = client.Configuration(host=kube.url)
        configuration.ssl_ca_cert = kube.configuration.ssl_ca_cert
        configuration.api_key = {"BearerToken": f"Bearer {issued.status.token}"}
        service = client.CoreV1Api(client.ApiClient(configuration))
        try:
            yield service
        finally:
            await service.api_client.close()
    finally:
        await rbac.delete_cluster_role_binding(name)
        await rbac.delete_cluster_role(name)
        await api.delete_namespaced_service_account(name, "default")


async def test_no_pod_shows_a_token_and_the_server_gets_it(
    kube: Backend, kube_namespace: str, api: client.CoreV1Api, site_file: Path,
    git_server: demo_git.GitServer,
) -> None:  # fmt: skip
    spawners = [
        make_spawner(site_file, kube_namespace, git_server, user=name) for name in ("ada", "bo")
    ]
    for spawner in spawners:
        await spawner.start()
    # their requests went without aiohttp's per-request look-ups, unless a proxy applies
    client_of_hub = spawners[0].api.api_client
    looks_up = environment_applies(str(client_of_hub.configuration.host))
    assert client_of_hub.rest_client.pool_manager.trust_env is looks_up

    # as the advertising service (which lists every pod): no token anywhere in any pod
    async with as_the_service(kube, api) as service:
        pods = service.api_client.sanitize_for_serialization(
            await service.list_pod_for_all_namespaces()
        )
        assert {p["metadata"]["name"] for p in pods["items"]} >= {s.pod_name for s in spawners}
        text = json.dumps(pods)
        for spawner in spawners:
            assert spawner.api_token not in text
        if kube.name == "real":  # and it may not read the Secrets
            with pytest.raises(ApiException) as refused:
                await service.list_namespaced_secret(kube_namespace)
            assert refused.value.status == 403

    found = await objects_of(api, kube_namespace)
    for spawner in spawners:
        pod = api.api_client.sanitize_for_serialization(
            await api.read_namespaced_pod(spawner.pod_name, kube_namespace)
        )
        # the notebook reads the token from its Secret, owned by the pod
        notebook = pod["spec"]["containers"][0]
        env = {e["name"]: e for e in notebook["env"]}
        for var in ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN"):
            assert env[var] == {
                "name": var,
                "valueFrom": {"secretKeyRef": {"name": f"{spawner.pod_name}-token",
                                               "key": "token"}},
            }  # fmt: skip
        secret = found[f"{spawner.pod_name}-token"]
        assert [o["uid"] for o in secret["metadata"]["ownerReferences"]] == [pod["metadata"]["uid"]]
        config_map = found[f"{spawner.pod_name}-datalinks"]
        assert config_map["metadata"]["ownerReferences"] == secret["metadata"]["ownerReferences"]
        # init containers (the links, and the checkout that talks to the workflow's host)
        # get no JUPYTERHUB_* variable
        inits = pod["spec"]["initContainers"]
        assert [c["name"] for c in inits] == ["esap-datalinks", "esap-checkout"]
        for init in inits:
            assert not [e for e in init.get("env") or [] if e["name"].startswith("JUPYTERHUB_")]
        if kube.runs_processes:  # the server really got its own token, through the Secret
            digest = hashlib.sha256(spawner.api_token.encode()).hexdigest()
            url = f"http://{pod['status']['podIP']}:8888/"
            assert await wait_for(lambda url=url: http_status(url), what="the server") == 200
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                assert await response.text() == digest

    # stop removes the Secret and the ConfigMap at once
    for spawner in spawners:
        await spawner.stop()
    assert await objects_of(api, kube_namespace) == {}


async def test_a_secret_left_by_an_earlier_start_is_replaced(
    kube: Backend, kube_namespace: str, api: client.CoreV1Api, site_file: Path,
    git_server: demo_git.GitServer,
) -> None:  # fmt: skip
    """A hub that died mid-start leaves the Secret with an old token: the next start of that
    server replaces it, and its pod gets the new token."""
    spawner = make_spawner(site_file, kube_namespace, git_server)
    stale = {"apiVersion": "v1", "kind": "Secret",
             "metadata": {"name": f"{spawner.pod_name}-token"},
             "stringData": {"token": "an-old-token"}}  # fmt: skip
    await api.create_namespaced_secret(kube_namespace, stale)
    await spawner.start()
    secret = await api.read_namespaced_secret(f"{spawner.pod_name}-token", kube_namespace)
    token = base64.b64decode(secret.data["token"]).decode()
    assert token == spawner.api_token != "an-old-token"
    assert [o.name for o in secret.metadata.owner_references] == [spawner.pod_name]
    await spawner.stop()


async def test_deleting_the_pod_deletes_its_secret(
    kube: Backend, kube_namespace: str, api: client.CoreV1Api, site_file: Path,
    git_server: demo_git.GitServer,
) -> None:  # fmt: skip
    """Garbage collection: the pod owns them, whoever deletes it."""
    spawner = make_spawner(site_file, kube_namespace, git_server)
    await spawner.start()
    assert set(await objects_of(api, kube_namespace)) == {
        f"{spawner.pod_name}-token", f"{spawner.pod_name}-datalinks",
    }  # fmt: skip
    await api.delete_namespaced_pod(spawner.pod_name, kube_namespace, grace_period_seconds=0)

    async def collected() -> bool:
        return await objects_of(api, kube_namespace) == {}

    await wait_for(collected, timeout=30, what="the pod's Secret and ConfigMap to be collected")


async def test_a_pod_the_api_refuses_leaves_no_secret(
    kube: Backend, kube_namespace: str, api: client.CoreV1Api, site_file: Path,
    git_server: demo_git.GitServer,
) -> None:  # fmt: skip
    spawner = make_spawner(
        site_file, kube_namespace, git_server, extra_labels={"not a label!": "x"}
    )
    with pytest.raises(web.HTTPError) as refused:
        await spawner.start()
    assert "the Kubernetes API answered 422" in refused.value.log_message
    assert await objects_of(api, kube_namespace) == {}
    assert (await api.list_namespaced_pod(kube_namespace)).items == []


async def test_a_secret_that_cannot_be_owned_fails_the_spawn_and_leaves_nothing(
    kube: Backend, kube_namespace: str, api: client.CoreV1Api, site_file: Path,
    git_server: demo_git.GitServer,
) -> None:  # fmt: skip
    """The Secret vanishes between its creation and the pod's (an administrator's
    modify_pod_hook deletes it): making the pod its owner fails, so the spawn fails, and
    neither the pod nor anything it would have owned is left."""

    async def delete_the_secret(spawner: ESAPSpawner, pod: Any) -> Any:
        await spawner.api.delete_namespaced_secret(f"{spawner.pod_name}-token", kube_namespace)
        return pod

    spawner = make_spawner(site_file, kube_namespace, git_server)
    spawner.modify_pod_hook = delete_the_secret
    with pytest.raises(web.HTTPError) as failed:
        await spawner.start()
    assert f'secrets "{spawner.pod_name}-token" not found' in failed.value.log_message

    async def nothing_left() -> bool:
        pods = (await api.list_namespaced_pod(kube_namespace)).items
        return not pods and await objects_of(api, kube_namespace) == {}

    await wait_for(nothing_left, timeout=30, what="the pod and its objects to be gone")


async def test_an_administrators_hook_runs_after_the_pod_owns_its_objects(
    kube: Backend, kube_namespace: str, api: client.CoreV1Api, site_file: Path,
    git_server: demo_git.GitServer,
) -> None:  # fmt: skip
    seen: list[Any] = []

    async def theirs(spawner: ESAPSpawner, pod: dict[str, Any]) -> None:
        secret = await spawner.api.read_namespaced_secret(
            f"{spawner.pod_name}-token", kube_namespace
        )
        seen.append(secret.metadata.owner_references[0].uid == pod["metadata"]["uid"])

    spawner = make_spawner(site_file, kube_namespace, git_server, after_pod_created_hook=theirs)
    await spawner.start()
    assert seen == [True]
    await spawner.stop()
    await asyncio.sleep(0)
    assert await objects_of(api, kube_namespace) == {}
