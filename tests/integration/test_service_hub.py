"""The advertising service run by a real JupyterHub as the managed service ``esap``.

The hub starts ``python -m esap_spawner.cli service --site-file ...``; every call goes
through the hub's proxy at ``/services/esap/...`` with real hub tokens: a portal service
holding ``custom:esap:read``, a user in the group that may use the GPU profile, a user
outside it, no token, and tokens without the needed scope. Every answer is checked
against the OpenAPI document.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.harness.openapi import answer, check_openapi
from tests.harness.service import (
    OTHER_SERVICE_TOKEN,
    PORTAL_TOKEN,
    SITE_YAML,
    StandaloneService,
    managed_service_config,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.harness.hub import HubProcess, free_port

    workdir = tmp_path_factory.mktemp("esap-service-hub")
    site_file = workdir / "site.yaml"
    site_file.write_text(SITE_YAML)
    hub = HubProcess(workdir / "hub", managed_service_config(site_file, free_port()))
    hub.start()
    try:
        hub.create_user("alice", groups=("radio",))
        hub.create_user("bob")
        deadline = time.monotonic() + 30
        while True:
            r = requests.get(f"{hub.url}/services/esap/health", timeout=5)
            if r.headers.get("Content-Type", "").startswith("application/json"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the esap service did not answer:\n{hub.log_tail()}")
            time.sleep(0.3)
        yield hub
    finally:
        hub.stop()


def get(hub: Any, path: str, token: str | None = None, **headers: str) -> requests.Response:
    if token is not None:
        headers["Authorization"] = f"token {token}"
    return requests.get(f"{hub.url}/services/esap/{path}", headers=headers, timeout=30)


def slugs(r: requests.Response) -> list[str]:
    body = check_openapi("GET", "/api/v1/profiles", answer(r))
    return [p["slug"] for p in body["profiles"]]


def test_portal_token_sees_every_profile_with_groups(hub: Any) -> None:
    r = get(hub, "api/v1/profiles", PORTAL_TOKEN)
    assert r.status_code == 200, r.text
    assert slugs(r) == ["small", "gpu"]
    profiles = r.json()["profiles"]
    assert profiles[1]["allowed_groups"] == ["radio"]
    # no cluster configured for this hub: availability is unknown, and the answer says so
    assert profiles[0]["availability"]["status"] == "unknown"
    assert "no Kubernetes configuration" in r.json()["message"]


def test_user_in_the_group_sees_the_gpu_profile(hub: Any) -> None:
    token = hub.user_token("alice")
    r = get(hub, "api/v1/profiles", token)
    assert r.status_code == 200, r.text
    assert slugs(r) == ["small", "gpu"]
    assert all("allowed_groups" not in p for p in r.json()["profiles"])
    r = get(hub, "api/v1/profiles/gpu", token)
    assert check_openapi("GET", "/api/v1/profiles/{slug}", answer(r))["profile"]["slug"] == "gpu"


def test_user_outside_the_group_does_not(hub: Any) -> None:
    token = hub.user_token("bob")
    r = get(hub, "api/v1/profiles", token)
    assert slugs(r) == ["small"]
    r = get(hub, "api/v1/profiles/gpu", token)
    assert r.status_code == 404
    check_openapi("GET", "/api/v1/profiles/{slug}", answer(r))


def test_no_token_is_401(hub: Any) -> None:
    r = get(hub, "api/v1/profiles")
    assert r.status_code == 401
    assert check_openapi("GET", "/api/v1/profiles", answer(r))["error"]["code"] == "missing_token"


def test_unknown_token_is_401(hub: Any) -> None:
    r = get(hub, "api/v1/profiles", "not-a-token-the-hub-knows")
    assert r.status_code == 401
    assert check_openapi("GET", "/api/v1/profiles", answer(r))["error"]["code"] == "invalid_token"


def test_tokens_without_the_scope_are_403(hub: Any) -> None:
    narrow = hub.user_token("bob", scopes=["read:users:name!user=bob"])
    for token in (narrow, OTHER_SERVICE_TOKEN):
        r = get(hub, "api/v1/profiles", token)
        assert r.status_code == 403, r.text
        body = check_openapi("GET", "/api/v1/profiles", answer(r))
        assert body["error"]["code"] == "insufficient_scope"


def test_facility_locality_and_etag_through_the_proxy(hub: Any) -> None:
    r = get(hub, "api/v1/facility", PORTAL_TOKEN)
    body = check_openapi("GET", "/api/v1/facility", answer(r))
    assert body["links"]["profiles"] == "/services/esap/api/v1/profiles"
    r2 = get(hub, "api/v1/facility", PORTAL_TOKEN, **{"If-None-Match": r.headers["ETag"]})
    assert r2.status_code == 304
    r = requests.post(
        f"{hub.url}/services/esap/api/v1/locality",
        headers={"Authorization": f"token {PORTAL_TOKEN}"},
        data=json.dumps({"dids": ["lofar:L123456"]}),
        timeout=30,
    )
    body = check_openapi("POST", "/api/v1/locality", answer(r))
    assert body["results"][0]["status"] == "unknown"
    r = requests.post(
        f"{hub.url}/services/esap/api/v1/locality",
        headers={"Authorization": f"token {PORTAL_TOKEN}"},
        data=json.dumps({"dids": ["not a did"]}),
        timeout=30,
    )
    assert r.status_code == 400
    assert check_openapi("POST", "/api/v1/locality", answer(r))["error"]["code"] == "invalid_did"


@pytest.mark.parametrize("token", [PORTAL_TOKEN, None])
def test_a_large_body_is_413_through_the_proxy(hub: Any, token: str | None) -> None:
    """Refused from its Content-Length, before it is read or the token checked, and the
    answer still reaches the caller through the hub's proxy."""
    headers = {"Authorization": f"token {token}"} if token else {}
    for _ in range(3):
        r = requests.post(
            f"{hub.url}/services/esap/api/v1/locality",
            headers=headers,
            data=b"{" * 5_000_000,
            timeout=60,
        )
        body = check_openapi("POST", "/api/v1/locality", answer(r))
        assert (r.status_code, body["error"]["code"]) == (413, "payload_too_large")


def test_status_page_signs_browsers_in_through_the_hub(hub: Any) -> None:
    """A logged-in user opens the page from the hub's Services menu: the service sends the
    browser through the hub's OAuth and back, then shows what that user may start."""
    alice = hub.login("alice")
    home = alice.get(f"{hub.url}/hub/home", timeout=30)
    assert 'href="/services/esap/"' in home.text  # the Services menu entry
    r = alice.get(f"{hub.url}/services/esap/", timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert [h.status_code for h in r.history] == [302, 302, 302]  # authorize, callback, page
    assert "signed in as <strong>alice</strong>" in r.text
    assert 'data-profile="small"' in r.text and 'data-profile="gpu"' in r.text
    again = alice.get(f"{hub.url}/services/esap/", timeout=30)
    assert again.status_code == 200 and not again.history  # the service's cookie now
    bob = hub.login("bob").get(f"{hub.url}/services/esap/", timeout=30)
    assert "signed in as <strong>bob</strong>" in bob.text
    assert 'data-profile="gpu"' not in bob.text
    # no hub session: sent to the hub's login
    anonymous = requests.get(f"{hub.url}/services/esap/", timeout=30)
    assert anonymous.url.startswith(f"{hub.url}/hub/login")


def test_health_and_openapi_are_public(hub: Any) -> None:
    r = get(hub, "health")
    assert check_openapi("GET", "/health", answer(r)) == {"status": "ok"}
    r = get(hub, "health", token=PORTAL_TOKEN)  # the checks' details are an operator's
    body = check_openapi("GET", "/health", answer(r))
    assert body["checks"]["cluster"]["ok"] is True
    r = get(hub, "api/v1/openapi.json")
    assert r.status_code == 200
    assert r.json()["openapi"].startswith("3.1")


# -- the same program without a hub: `esap-spawner service --token-file` --------------


class Standalone(StandaloneService):
    """``esap-spawner service --token-file ...`` in a process of its own, with this module's
    site file and the unit tests' tokens."""

    def __init__(
        self,
        tmp_path: Path,
        *extra: str,
        kubeconfig: str | None = None,
        site_text: str = SITE_YAML,
    ) -> None:
        from tests.harness.service import TOKENS

        super().__init__(
            tmp_path, *extra, site_text=site_text, tokens=TOKENS, kubeconfig=kubeconfig
        )

    def get(self, path: str, token: str | None = "portal-token") -> requests.Response:
        headers = {"Authorization": f"token {token}"} if token else {}
        return requests.get(self.base + path, headers=headers, timeout=5)


def test_standalone_service_with_a_token_file(tmp_path: Path) -> None:
    service = Standalone(tmp_path, "--allow-anonymous")
    try:
        assert service.get("health").status_code == 200
        assert slugs(service.get("api/v1/profiles")) == ["small", "gpu"]
        anonymous = service.get("api/v1/profiles", token=None)
        assert slugs(anonymous) == ["small"]
        assert "no Kubernetes configuration" in anonymous.json()["message"]
    finally:
        assert service.stop() == 0
    assert "stopping" in service.log_path.read_text()


def test_standalone_service_watches_the_cluster(tmp_path: Path, sim_factory: Any) -> None:
    """With a kubeconfig, the service's ClusterWatcher feeds the answers: live figures."""
    from esap_spawner.dev.sim.cluster import pod_manifest
    from esap_spawner.site.profiles import PROFILE_LABEL

    cluster = {
        "nodes": [
            {"name": "cpu-1", "allocatable": {"cpu": "8", "memory": "32G"}},
            {"name": "gpu-1", "labels": {"accelerator": "a100"},
             "allocatable": {"cpu": "16", "memory": "128Gi", "nvidia.com/gpu": "2"}},
        ]
    }  # fmt: skip
    sim = sim_factory(cluster, kubelet="fake")
    kubeconfig = sim.write_kubeconfig(tmp_path / "kubeconfig.yaml")
    service = Standalone(tmp_path, kubeconfig=str(kubeconfig))

    def availability(slug: str) -> dict[str, Any]:
        r = service.get(f"api/v1/profiles/{slug}")
        body = check_openapi("GET", "/api/v1/profiles/{slug}", answer(r))
        return dict(body["profile"]["availability"], stale=body["stale"])

    def wait_for(slug: str, **expected: Any) -> dict[str, Any]:
        deadline = time.monotonic() + 15
        while True:
            got = availability(slug)
            if all(got[k] == v for k, v in expected.items()):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{slug}: {got} never matched {expected}")
            time.sleep(0.2)

    try:
        # small (1 CPU, 2G, at most 5): 8 fit on cpu-1, 16 on gpu-1; the quota says 5
        wait_for("small", status="available", can_start_now=5, running=0, stale=False)
        wait_for("gpu", status="limited", can_start_now=2, running=0)
        for i in range(3):
            pod = pod_manifest(f"jupyter-u{i}", node="cpu-1", labels={PROFILE_LABEL: "small"},
                               requests={"cpu": "1", "memory": "2G"})  # fmt: skip
            sim.call(sim.store.create, "pods", "default", pod)
        # at most the site's limited_threshold (2) can start now: limited
        wait_for("small", status="limited", can_start_now=2, running=3)
        assert service.get("health").json()["checks"]["cluster"]["ok"] is True
        sim.call(sim.store.remove, "pods", "default", "jupyter-u0")
        wait_for("small", status="available", can_start_now=3, running=2)
    finally:
        assert service.stop() == 0
    assert "cluster view synced" in service.log_path.read_text()


def test_broken_kubeconfig_is_reported_not_fatal(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_text("this: [is not a kubeconfig\n")
    service = Standalone(tmp_path, kubeconfig=str(kubeconfig))
    try:
        r = service.get("health")
        health = check_openapi("GET", "/health", answer(r))
        assert r.status_code == 503
        assert health["checks"]["cluster"]["ok"] is False
        assert "could not be loaded" in health["checks"]["cluster"]["message"]
        body = check_openapi("GET", "/api/v1/profiles", answer(service.get("api/v1/profiles")))
        assert {p["availability"]["status"] for p in body["profiles"]} == {"unknown"}
    finally:
        assert service.stop() == 0


def test_bad_site_file_exits_with_the_problems(tmp_path: Path) -> None:
    import subprocess

    site_file = tmp_path / "site.yaml"
    site_file.write_text("facility: {name: x}\nprofiles: []\n")
    result = subprocess.run(
        [sys.executable, "-m", "esap_spawner.cli", "service", "--site-file", str(site_file)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "esap-spawner service:" in result.stderr
    assert "url" in result.stderr


def test_standalone_service_locality_from_a_real_rucio(tmp_path: Path, rucio_server: Any) -> None:
    """data.catalogue: rucio in the site file -> locality answered by a real Rucio server."""
    from tests.harness.rucio_server import ALICE_PASSWORD, LOCAL_RSE, REMOTE_RSE, make_files

    scope = rucio_server.new_scope("svc")
    rucio_server.upload_dataset(scope, "here", make_files(scope, "h", 2, 100), LOCAL_RSE)
    rucio_server.upload_dataset(scope, "away", make_files(scope, "a", 3, 50), REMOTE_RSE)
    password = tmp_path / "rucio-password"
    password.write_text(ALICE_PASSWORD)
    site_text = (
        SITE_YAML
        + f"""
data:
  catalogue: rucio
  rucio:
    host: {rucio_server.url}
    account: alice
    auth_type: userpass
    username: alice
    password_file: {password}
    local_rses:
      - name: {LOCAL_RSE}
        pfn_prefix: {rucio_server.pfn_prefix(LOCAL_RSE)}
        mount_path: /rucio/hub-local
        volume: {{persistentVolumeClaim: {{claimName: rucio-hub-local}}}}
    staging:
      destination_rse: {LOCAL_RSE}
"""
    )
    service = Standalone(tmp_path, site_text=site_text)
    try:
        r = requests.post(
            service.base + "api/v1/locality",
            headers={"Authorization": "token alice-token"},
            data=json.dumps({"dids": [f"{scope}:here", f"{scope}:away", f"{scope}:missing"]}),
            timeout=60,
        )
        body = check_openapi("POST", "/api/v1/locality", answer(r))
        got = {x["did"].split(":")[1]: x for x in body["results"]}
        assert (got["here"]["status"], got["here"]["files_local"], got["here"]["bytes_local"]) == (
            "local", 2, 200,
        )  # fmt: skip
        assert got["here"]["local_rses"] == [LOCAL_RSE]
        assert got["away"]["status"] == "remote"
        assert got["away"]["staging_required"] is True
        assert got["missing"]["status"] == "not_found"
        health = check_openapi("GET", "/health", answer(service.get("health")))
        assert health["checks"]["catalogue"]["ok"] is True
    finally:
        assert service.stop() == 0
