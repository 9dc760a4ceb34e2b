"""ESAPSpawner inside a real JupyterHub, spawning on the simulator through the real KubeSpawner.

One hub for the module (a hub start costs seconds); each test uses its own users so their
servers never meet. The simulator runs a process kubelet, so a ready server is a real
jupyterhub-singleuser answering through the real configurable-http-proxy.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from esap_spawner.site.quantity import parse_quantity
from tests.harness.hub import HUB_SITE, HubProcess, hub_on_cluster, stop_server, user_pods
from tests.harness.sim import fresh_namespace

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hub(sim: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    namespace = fresh_namespace(sim, "hub")
    hub = hub_on_cluster(tmp_path_factory.mktemp("hub"), HUB_SITE, namespace=namespace)
    hub.create_user("gina", groups=("gpu-users",))
    yield hub
    hub.stop()


def test_rest_spawn_with_profile_gets_its_resources(hub: HubProcess, sim: Any) -> None:
    hub.create_user("ada")
    r = hub.api(
        "POST",
        "/users/ada/server",
        json={"profile": "medium", "dataset": ["lofar:L123456"]},
    )
    assert r.status_code in (201, 202), r.text
    model = hub.wait_for_server("ada")
    assert model["servers"][""]["ready"], model

    (pod,) = user_pods(sim, hub, "ada")
    container = pod["spec"]["containers"][0]
    assert container["image"] == "quay.io/jupyter/scipy-notebook:2026-01-01"
    resources = container["resources"]
    assert parse_quantity(resources["requests"]["cpu"]) == 1
    assert parse_quantity(resources["limits"]["cpu"]) == 2
    assert parse_quantity(resources["requests"]["memory"]) == 10**9
    assert parse_quantity(resources["limits"]["memory"]) == 2 * 10**9
    labels = pod["metadata"]["labels"]
    assert labels["esap.escape.eu/profile"] == "medium"
    recorded = json.loads(pod["metadata"]["annotations"]["esap.escape.eu/options"])
    assert recorded["profile"] == "medium"
    assert recorded["dataset"] == ["lofar:L123456"]

    # safe defaults: no service-account token, non-root, no privilege escalation
    assert pod["spec"]["automountServiceAccountToken"] is False
    ctx = container["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]

    # the server really answers through the proxy
    token = hub.user_token("ada")
    api = requests.get(
        f"{hub.url}/user/ada/api/status", headers={"Authorization": f"token {token}"}, timeout=20
    )
    assert api.status_code == 200, api.text
    stop_server(hub, "ada")
    assert user_pods(sim, hub, "ada") == []


def test_no_pod_carries_a_hub_token(hub: HubProcess, sim: Any) -> None:
    """Security review finding 1: listing every pod, as the advertising service does, finds
    no user's hub token; the servers, which need theirs to answer through the hub, read it
    from their Secrets."""
    namespace = hub.namespace  # type: ignore[attr-defined]
    names = [f"t{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for name in names:
        hub.create_user(name)
        r = hub.api("POST", f"/users/{name}/server", json={"profile": "small"})
        assert r.status_code in (201, 202), r.text
    tokens, secrets = [], []
    for name in names:
        assert hub.wait_for_server(name)["servers"][""]["ready"]
        status = requests.get(
            f"{hub.url}/user/{name}/api/status",
            headers={"Authorization": f"token {hub.user_token(name)}"},
            timeout=20,
        )
        assert status.status_code == 200, status.text
        (pod,) = user_pods(sim, hub, name)
        secrets.append(f"{pod['metadata']['name']}-token")
        secret = sim.call(sim.store.find, "secrets", namespace, secrets[-1])
        tokens.append(base64.b64decode(secret["data"]["token"]).decode())
    every_pod = requests.get(f"{sim.url}/api/v1/pods", timeout=10).json()
    assert len(every_pod["items"]) >= len(names)
    text = json.dumps(every_pod)
    for token in tokens:
        assert len(token) >= 32 and token not in text
    for name in names:
        stop_server(hub, name)
    for secret_name in secrets:
        assert sim.call(sim.store.find, "secrets", namespace, secret_name) is None


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"profile": "gpu"}, 403, "gpu-users"),
        ({"profile": "nope"}, 400, "nope"),
        ({"profile": "small", "image": "evil/image:1"}, 400, "image"),
        ({"profile": "small", "dataset": ["not a did"]}, 400, "not a did"),
        ({"profile": "small", "workflow": "http://git.example.org/x.git"}, 400, "https"),
        (
            {"profile": "small", "workflow": "https://git.example.org/x.git", "filepath": "../x"},
            400,
            "..",
        ),
    ],
)
def test_rest_refusals_leave_no_pod(
    hub: HubProcess, sim: Any, body: dict[str, Any], status: int, fragment: str
) -> None:
    name = f"r{uuid.uuid4().hex[:8]}"
    hub.create_user(name)
    r = hub.api("POST", f"/users/{name}/server", json=body)
    assert r.status_code == status, r.text
    assert fragment in r.json()["message"]
    assert user_pods(sim, hub, name) == []
    assert hub.api("GET", f"/users/{name}").json()["servers"] == {}


def test_group_member_may_use_restricted_profile(hub: HubProcess, sim: Any) -> None:
    r = hub.api("POST", "/users/gina/server", json={"profile": "gpu"})
    # the simulator's cluster has a GPU node: the pod is created with the GPU limit
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server("gina")
    (pod,) = user_pods(sim, hub, "gina")
    assert (
        parse_quantity(pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) == 1
    )
    stop_server(hub, "gina")


def test_form_lists_only_usable_profiles_and_shows_refusals(hub: HubProcess, sim: Any) -> None:
    hub.create_user("fred")
    browser = hub.login("fred")
    page = browser.get(f"{hub.url}/hub/spawn", timeout=20)
    assert page.status_code == 200
    assert 'value="small"' in page.text and 'value="medium"' in page.text
    assert 'value="gpu"' not in page.text

    # a deep link to an unknown profile is refused on the form, naming what exists
    page = browser.get(f"{hub.url}/hub/spawn?profile=nope&dataset=a:b", timeout=20)
    assert page.status_code == hub.form_refusal_status(400)
    assert "no profile &#39;nope&#39;" in page.text or "no profile 'nope'" in page.text
    assert user_pods(sim, hub, "fred") == []

    # a refused deep link leaves its choices preselected on the form to correct
    page = browser.get(f"{hub.url}/hub/spawn?profile=medium&dataset=lofar:x/y", timeout=20)
    assert page.status_code == hub.form_refusal_status(400)
    assert re.search(r'value="medium"\s+checked', page.text)
    assert "lofar:x/y</textarea>" in page.text
    assert user_pods(sim, hub, "fred") == []

    # a link to a profile fred may not use is refused with the reason, and no pod
    page = browser.get(f"{hub.url}/hub/spawn?profile=gpu", timeout=20)
    assert page.status_code == hub.form_refusal_status(403)
    assert "gpu-users" in page.text
    assert user_pods(sim, hub, "fred") == []

    # the form post with a malformed DID is refused on the form itself
    xsrf = browser.cookies.get("_xsrf", path="/hub/")
    page = browser.post(
        f"{hub.url}/hub/spawn",
        data={"profile": "small", "dataset": "lofar:L1\nscope:na/me", "_xsrf": xsrf},
        timeout=20,
    )
    assert page.status_code == hub.form_refusal_status(400)
    assert "na/me" in page.text
    assert user_pods(sim, hub, "fred") == []


def test_query_link_with_a_dataset_asks_first(hub: HubProcess, sim: Any) -> None:
    """A link with a dataset opens the prefilled form with the summary; only the form's
    POST (the Start button) starts the server. A profile-only link starts at once."""
    hub.create_user("quinn")
    browser = hub.login("quinn")
    r = browser.get(f"{hub.url}/hub/spawn?opt-profile=small&opt-dataset=lofar:L1", timeout=30)
    assert r.status_code == 200
    assert 'id="esap-confirm"' in r.text and "<code>lofar:L1</code>" in r.text
    assert "lofar:L1</textarea>" in r.text
    assert "Error" not in r.text.split('id="esap-confirm"')[0].split("<form")[-1]
    assert hub.api("GET", "/users/quinn").json()["servers"] == {}
    assert user_pods(sim, hub, "quinn") == []
    xsrf = browser.cookies.get("_xsrf", path="/hub/")
    r = browser.post(
        f"{hub.url}/hub/spawn",
        data={"profile": "small", "dataset": "lofar:L1", "_xsrf": xsrf},
        timeout=30,
    )
    assert r.status_code == 200
    hub.wait_for_server("quinn")
    (pod,) = user_pods(sim, hub, "quinn")
    assert pod["metadata"]["labels"]["esap.escape.eu/profile"] == "small"
    stop_server(hub, "quinn")
