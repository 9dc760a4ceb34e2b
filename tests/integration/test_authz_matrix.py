"""Who may do what, through a REAL JupyterHub and its proxy: the authorization matrix.

One hub for the module runs ESAPSpawner on the session simulator and the ``esap`` service as
a managed service (as ``test_service_hub.py`` sets it up), with real hub tokens:

=============  ==============================================================================
caller         token
=============  ==============================================================================
none           no ``Authorization`` header
bad token      a token the hub does not know
user           alice's own token; alice is in ``gpu-users`` (the group of profile ``gpu``)
other user     bob's own token; bob is in no group
portal         the service ``portal``, role with ``custom:esap:read``
no scope       bob's token restricted to ``read:users:name!user=bob``
admin          the admin user's own token
=============  ==============================================================================

Every service route is called by every caller at ``/services/esap/...``; the status and what
is visible (profile slugs, ``allowed_groups`` shown or not) are compared with the expected
matrix, and the matrix rendered as a Markdown table must be the one in ``docs/security.md``
(``ESAP_REGENERATE_DOCS=1`` rewrites it there). Then the spawner side: alice cannot start,
stop or read bob's server nor reach it through the proxy, and a user outside ``gpu-users``
cannot spawn ``gpu`` by REST, by the form or by a deep link.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.harness.hub import (
    HUB_SITE,
    HubProcess,
    free_port,
    hub_on_cluster,
    stop_server,
    user_pods,
)
from tests.harness.openapi import answer, check_openapi
from tests.harness.service import OTHER_SERVICE_TOKEN, PORTAL_TOKEN, managed_service_config
from tests.harness.sim import fresh_namespace

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
START, END = "<!-- authz-matrix:start -->", "<!-- authz-matrix:end -->"

CALLERS = ["none", "bad token", "user", "other user", "portal", "no scope", "admin"]
ROUTES = [
    ("GET", "api/v1/facility", "/api/v1/facility"),
    ("GET", "api/v1/profiles", "/api/v1/profiles"),
    ("GET", "api/v1/profiles/small", "/api/v1/profiles/{slug}"),
    ("GET", "api/v1/profiles/gpu", "/api/v1/profiles/{slug}"),
    ("POST", "api/v1/locality", "/api/v1/locality"),
    ("GET", "health", "/health"),
    ("GET", "metrics", "/metrics"),
    ("GET", "api/v1/openapi.json", "/api/v1/openapi.json"),
]
ALL = "small, medium, gpu"
OPEN = "small, medium"

# (route, caller) -> expected cell: the status, then what the caller sees.
EXPECTED: dict[str, dict[str, str]] = {
    "GET api/v1/facility": {
        "none": "401", "bad token": "401", "user": "200", "other user": "200",
        "portal": "200", "no scope": "403", "admin": "200",
    },
    "GET api/v1/profiles": {
        "none": "401", "bad token": "401", "user": f"200: {ALL}", "other user": f"200: {OPEN}",
        "portal": f"200: {ALL} +groups", "no scope": "403", "admin": f"200: {ALL}",
    },
    "GET api/v1/profiles/small": {
        "none": "401", "bad token": "401", "user": "200", "other user": "200",
        "portal": "200 +groups", "no scope": "403", "admin": "200",
    },
    "GET api/v1/profiles/gpu": {
        "none": "401", "bad token": "401", "user": "200", "other user": "404",
        "portal": "200 +groups", "no scope": "403", "admin": "200",
    },
    "POST api/v1/locality": {
        "none": "401", "bad token": "401", "user": "200", "other user": "200",
        "portal": "200", "no scope": "403", "admin": "200",
    },
    "GET health": dict.fromkeys(CALLERS, "200"),
    "GET metrics": {
        "none": "401", "bad token": "401", "user": "403", "other user": "403",
        "portal": "200", "no scope": "403", "admin": "200",
    },
    "GET api/v1/openapi.json": dict.fromkeys(CALLERS, "200"),
}  # fmt: skip


@pytest.fixture(scope="module")
def hub(sim: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    workdir = tmp_path_factory.mktemp("authz-hub")
    service = managed_service_config(workdir / "site.yaml", free_port())
    namespace = fresh_namespace(sim, "authz")
    hub = hub_on_cluster(workdir, HUB_SITE, namespace=namespace, config=service)
    try:
        hub.create_user("alice", groups=("gpu-users",))
        hub.create_user("bob")
        hub.create_user("admin")
        wait_for_service(hub)
        yield hub
    finally:
        hub.stop()


def wait_for_service(hub: HubProcess) -> None:
    import time

    deadline = time.monotonic() + 30
    while True:
        r = requests.get(f"{hub.url}/services/esap/health", timeout=5)
        if r.headers.get("Content-Type", "").startswith("application/json"):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the esap service did not answer:\n{hub.log_tail()}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def tokens(hub: HubProcess) -> dict[str, str | None]:
    return {
        "none": None,
        "bad token": "not-a-token-the-hub-knows",
        "user": hub.user_token("alice"),
        "other user": hub.user_token("bob"),
        "portal": PORTAL_TOKEN,
        "no scope": hub.user_token("bob", scopes=["read:users:name!user=bob"]),
        "admin": hub.user_token("admin"),
    }


def call(hub: HubProcess, method: str, path: str, token: str | None) -> requests.Response:
    headers = {"Authorization": f"token {token}"} if token else {}
    body = json.dumps({"dids": ["lofar:L123456"]}) if method == "POST" else None
    return requests.request(
        method, f"{hub.url}/services/esap/{path}", headers=headers, data=body, timeout=30
    )


def cell(r: requests.Response, method: str, template: str, path: str) -> str:
    """The status and what is visible, checked against the OpenAPI document on the way."""
    body = check_openapi(method, template, answer(r))
    if r.status_code != 200 or not path.startswith("api/v1/profiles"):
        return str(r.status_code)
    profiles = body["profiles"] if "profiles" in body else [body["profile"]]
    groups = " +groups" if any("allowed_groups" in p for p in profiles) else ""
    if "profiles" in body:
        return f"200: {', '.join(p['slug'] for p in profiles)}{groups}"
    return f"200{groups}"


def render(matrix: dict[str, dict[str, str]]) -> str:
    lines = [
        "| route | " + " | ".join(CALLERS) + " |",
        "|---|" + "---|" * len(CALLERS),
    ]
    for route, row in matrix.items():
        lines.append(f"| `{route}` | " + " | ".join(row[c] for c in CALLERS) + " |")
    return "\n".join(lines)


def test_service_authorization_matrix(hub: HubProcess, tokens: dict[str, str | None]) -> None:
    observed: dict[str, dict[str, str]] = {}
    for method, path, template in ROUTES:
        row = observed.setdefault(f"{method} {path}", {})
        for caller in CALLERS:
            row[caller] = cell(call(hub, method, path, tokens[caller]), method, template, path)
    table = render(observed)
    print("\n" + table)
    assert observed == EXPECTED, "\n" + table
    text = DOC.read_text()
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    documented = f"{START}\n{table}\n{END}"
    if os.environ.get("ESAP_REGENERATE_DOCS"):
        DOC.write_text(before + documented + after)
    assert documented in DOC.read_text(), "docs/security.md: the matrix table is out of date"


def test_other_services_token_is_refused(hub: HubProcess) -> None:
    """A hub service without the custom scope is a valid token but sees nothing."""
    r = call(hub, "GET", "api/v1/profiles", OTHER_SERVICE_TOKEN)
    assert r.status_code == 403
    assert check_openapi("GET", "/api/v1/profiles", answer(r))["error"]["code"] == (
        "insufficient_scope"
    )


# -- the spawner side: another user's server, a restricted profile ------------------------


def test_a_user_cannot_touch_another_users_server(
    hub: HubProcess, sim: Any, tokens: dict[str, str | None]
) -> None:
    alice = tokens["user"]
    r = hub.api("POST", "/users/bob/server", json={"profile": "small"})
    assert r.status_code in (201, 202), r.text
    assert hub.wait_for_server("bob")["servers"][""]["ready"]
    try:
        (pod,) = user_pods(sim, hub, "bob")
        uid = pod["metadata"]["uid"]
        # read, start, stop bob's server with alice's own token: refused, nothing changes
        assert hub.api("GET", "/users/bob", token=alice).status_code in (403, 404)
        r = hub.api("POST", "/users/bob/servers/extra", token=alice, json={"profile": "small"})
        assert r.status_code in (403, 404), r.text
        assert hub.api("DELETE", "/users/bob/server", token=alice).status_code in (403, 404)
        r = hub.api("POST", "/users/bob/tokens", token=alice, json={"note": "steal"})
        assert r.status_code in (403, 404), r.text
        # bob's notebook server, through the proxy, with alice's token: refused
        r = requests.get(
            f"{hub.url}/user/bob/api/contents",
            headers={"Authorization": f"token {alice}"},
            timeout=20,
            allow_redirects=False,
        )
        assert r.status_code == 403, r.text  # bob's single-user server asks the hub
        assert [p["metadata"]["uid"] for p in user_pods(sim, hub, "bob")] == [uid]
        assert hub.api("GET", "/users/bob").json()["servers"][""]["ready"]
        # bob's own token does reach it, and the admin's reads his model
        r = requests.get(
            f"{hub.url}/user/bob/api/status",
            headers={"Authorization": f"token {tokens['other user']}"},
            timeout=20,
        )
        assert r.status_code == 200, r.text
        assert hub.api("GET", "/users/bob", token=tokens["admin"]).status_code == 200
    finally:
        stop_server(hub, "bob")


def test_a_restricted_profile_cannot_be_spawned_by_an_outsider(hub: HubProcess, sim: Any) -> None:
    hub.create_user("carol")
    token = hub.user_token("carol")
    # REST, with carol's own token
    r = hub.api("POST", "/users/carol/server", token=token, json={"profile": "gpu"})
    assert r.status_code == 403, r.text
    assert "gpu-users" in r.json()["message"]
    # ... and a named server
    r = hub.api("POST", "/users/carol/servers/x", token=token, json={"profile": "gpu"})
    assert r.status_code in (400, 403), r.text
    browser = hub.login("carol")
    # the form does not offer it; posting it anyway is refused
    page = browser.get(f"{hub.url}/hub/spawn", timeout=20)
    assert page.status_code == 200
    assert 'value="small"' in page.text and 'value="gpu"' not in page.text
    xsrf = browser.cookies.get("_xsrf", path="/hub/")
    page = browser.post(f"{hub.url}/hub/spawn", data={"profile": "gpu", "_xsrf": xsrf}, timeout=20)
    assert page.status_code == hub.form_refusal_status(403), page.text[:500]
    assert "gpu-users" in page.text
    # a deep link naming it
    page = browser.get(f"{hub.url}/hub/spawn?profile=gpu&dataset=lofar:L1", timeout=20)
    assert page.status_code == hub.form_refusal_status(403)
    assert "gpu-users" in page.text
    assert user_pods(sim, hub, "carol") == []
    assert hub.api("GET", "/users/carol").json()["servers"] == {}


def test_user_options_cannot_name_another_user(hub: HubProcess, sim: Any) -> None:
    """Options are closed: a body naming a user, namespace or pod name is refused."""
    hub.create_user("dave")
    token = hub.user_token("dave")
    for extra in ({"user": "bob"}, {"namespace": "kube-system"}, {"pod_name": "jupyter-bob"}):
        r = hub.api("POST", "/users/dave/server", token=token, json={"profile": "small", **extra})
        assert r.status_code == 400, r.text
        assert re.search(r"unknown option", r.json()["message"])
    assert user_pods(sim, hub, "dave") == []


# REST bodies for POST /hub/api/users/{name}/server, as raw bytes: refused, no pod.
HOSTILE_BODIES = [
    b'"small"',
    b"42",
    b'{"profile": {"$ne": null}}',
    b'{"profile": ["small", "gpu"]}',
    b'{"profile": "small\\u0000"}',
    b'{"profile": "gpu\\u200b"}',
    b'{"profile": "small", "dataset": "' + b"x" * 1_000_000 + b'"}',
    b'{"profile": "small", "dataset": [' + b", ".join(b'"a:b%d"' % i for i in range(200)) + b"]}",
    b'{"profile": "small", "workflow": "https://git.example.org/a.git;reboot"}',
    b'{"profile": ' + b"[" * 5000 + b"]" * 5000 + b"}",
]


@pytest.mark.parametrize("body", HOSTILE_BODIES, ids=lambda b: repr(b[:30]))
def test_hostile_rest_bodies_are_refused_without_a_pod(
    hub: HubProcess, sim: Any, body: bytes
) -> None:
    name = f"h{uuid.uuid4().hex[:8]}"
    hub.create_user(name)
    r = hub.api("POST", f"/users/{name}/server", token=hub.user_token(name), data=body)
    assert r.status_code in (400, 403), r.text[:500]
    assert user_pods(sim, hub, name) == []
    assert hub.api("GET", f"/users/{name}").json()["servers"] == {}


@pytest.mark.parametrize(
    "body", [b"[]", b"null", b'{"profile": "small", "dataset": [' + b'"a:b", ' * 5000 + b'"a:b"]}']
)
def test_empty_or_repetitive_bodies_spawn_the_plain_default(
    hub: HubProcess, sim: Any, body: bytes
) -> None:
    """JupyterHub reads an empty JSON value as "no options": the default profile, nothing
    else; a DID repeated 5,001 times is one DID."""
    name = f"e{uuid.uuid4().hex[:8]}"
    hub.create_user(name)
    r = hub.api("POST", f"/users/{name}/server", token=hub.user_token(name), data=body)
    assert r.status_code in (201, 202), r.text[:500]
    try:
        hub.wait_for_server(name)
        (pod,) = user_pods(sim, hub, name)
        assert pod["metadata"]["labels"]["esap.escape.eu/profile"] == "small"
        assert pod["spec"]["containers"][0]["image"] == HUB_SITE["profiles"][0]["image"]
        options = json.loads(pod["metadata"]["annotations"]["esap.escape.eu/options"])
        assert options["dataset"] in ([], ["a:b"])
    finally:
        stop_server(hub, name)


XSS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "</textarea><svg onload=alert(1)>",
]


@pytest.mark.parametrize("field", ["dataset", "workflow", "ref", "filepath", "profile"])
def test_a_deep_link_cannot_inject_markup(hub: HubProcess, sim: Any, field: str) -> None:
    """A refused deep link's values are shown back on the form (and in the message): escaped.

    A bad DID makes every link here refused, so each value is echoed on the form."""
    name = f"x{uuid.uuid4().hex[:8]}"
    hub.create_user(name)
    browser = hub.login(name)
    for payload in XSS:
        params = {"profile": "small", "workflow": "https://git.example.org/a.git",
                  "dataset": "not a did", field: payload}  # fmt: skip
        page = browser.get(f"{hub.url}/hub/spawn", params=params, timeout=20)
        assert page.status_code == hub.form_refusal_status(400), page.text[:300]
        for raw in (payload, "<script>alert", "<img src=x", "<svg onload"):
            assert raw not in page.text, (field, raw)
        assert "&lt;" in page.text, (field, "the value is not shown back, escaped")
    assert user_pods(sim, hub, name) == []
