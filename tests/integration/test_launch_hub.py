"""ESAP's Deploy link through a real hub: login, the confirmation form, a server with the workflow.

A real JupyterHub (configurable-http-proxy, DummyAuthenticator) runs ESAPSpawner on the
simulator (process kubelet: the pod's init containers and server are local processes) and
the ``esap`` service as a managed service, configured by the same ``jupyterhub_config.d``
snippets an administrator loads. The workflow is the demo's git repository, served over
https with its own certificate (trusted through ``GIT_SSL_CAINFO``, as a site's CA would
be). The Deploy URL is built exactly as ESAP's code builds it (its f-string and
``quote_plus``, replicated here), from the ``url`` the facility route advertises.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlsplit

import pytest
import requests
import yaml

from esap_spawner.dev import demo_git
from esap_spawner.spawn.objects import workflow_folder
from tests.harness.esap import esap_deploy
from tests.harness.hub import (
    HUB_SITE,
    PASSWORD,
    HubProcess,
    free_port,
    hub_on_cluster,
    query_keys,
)
from tests.harness.sim import fresh_namespace
from tests.harness.snippets import LOAD_SNIPPETS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PORTAL_TOKEN = "portal-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def git(tmp_path_factory: pytest.TempPathFactory) -> Iterator[demo_git.GitServer]:
    server = demo_git.start(tmp_path_factory.mktemp("git"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hub(sim: Any, git: demo_git.GitServer, tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir = tmp_path_factory.mktemp("launch-hub")
    site = {**HUB_SITE, "workflows": {"allowed_hosts": ["127.0.0.1"]}}
    config = (
        f"c.ESAPSpawner.checkout_env = {{'GIT_SSL_CAINFO': {str(git.ca_file)!r}}}\n"
        + f"c.ESAPSpawner.db_url = ''\n{LOAD_SNIPPETS}\n"
    )
    env = {
        "ESAP_SITE_FILE": str(workdir / "site.yaml"),
        "ESAP_SERVICE_PORT": str(free_port()),
        "ESAP_PORTAL_API_TOKEN": PORTAL_TOKEN,
        "GIT_SSL_CAINFO": str(git.ca_file),
    }
    namespace = fresh_namespace(sim, "launch")
    hub = hub_on_cluster(workdir, site, namespace=namespace, config=config, env=env, start=False)
    # the facility's public URL is the hub's, known once its port is chosen
    site["facility"] = {**HUB_SITE["facility"], "url": f"{hub.url}/"}
    workdir.joinpath("site.yaml").write_text(yaml.safe_dump(site))
    hub.start()
    try:
        wait_for_service(hub)
        yield hub
    finally:
        hub.stop()


def wait_for_service(hub: HubProcess, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = requests.get(f"{hub.url}/services/esap/health", timeout=5)
        if r.headers.get("Content-Type", "").startswith("application/json"):
            return
        time.sleep(0.3)
    raise TimeoutError(f"the esap service did not answer:\n{hub.log_tail()}")


def pods_of(sim: Any, hub: Any, user: str) -> list[dict[str, Any]]:
    r = requests.get(f"{sim.url}/api/v1/namespaces/{hub.namespace}/pods", timeout=10)
    return [
        p
        for p in r.json()["items"]
        if p["metadata"].get("annotations", {}).get("hub.jupyter.org/username") == user
    ]


def no_server(hub: HubProcess, sim: Any, user: str) -> None:
    model = hub.api("GET", f"/users/{user}").json()
    assert model["servers"] == {} and model.get("pending") is None, model
    assert pods_of(sim, hub, user) == []


def deploy_url(hub: HubProcess, git: demo_git.GitServer, ref: str = "HEAD") -> str:
    facility = requests.get(
        f"{hub.url}/services/esap/api/v1/facility",
        headers={"Authorization": f"token {PORTAL_TOKEN}"},
        timeout=20,
    ).json()
    assert facility["url"] == f"{hub.url}/services/esap/"  # what ESAP stores
    return esap_deploy(facility["url"], git.workflow, ref, demo_git.NOTEBOOK_PATH)


def test_esap_deploy_goes_through_login_and_confirmation_to_a_server(
    hub: HubProcess, git: demo_git.GitServer, sim: Any
) -> None:
    user = "deployer"
    browser = requests.Session()
    # ESAP sends the browser to the Deploy URL: the service, then the hub's login
    page = browser.get(deploy_url(hub, git), timeout=30)
    assert urlsplit(page.url).path == "/hub/login", page.url
    nxt = parse_qs(urlsplit(page.url).query)["next"][0]
    assert nxt.startswith("/hub/spawn?")
    # HEAD, looked up; in the running hub's query style (opt-ref from JupyterHub 6)
    assert parse_qs(urlsplit(nxt).query)[query_keys(hub.version)["ref"]] == ["main"]
    xsrf = browser.cookies.get("_xsrf", path="/hub/")
    page = browser.post(
        page.url, data={"username": user, "password": PASSWORD, "_xsrf": xsrf}, timeout=30
    )
    # after the login: the prefilled form with the summary, and nothing started
    assert page.status_code == 200, page.text[:500]
    assert urlsplit(page.url).path == "/hub/spawn"
    assert 'id="esap-confirm"' in page.text
    assert '<dd id="esap-confirm-ref">main</dd>' in page.text
    assert f"<code>{git.workflow}</code>" in page.text
    assert demo_git.NOTEBOOK_PATH in page.text
    assert "spawn-error-msg" not in page.text
    assert page.text.count('type="submit"') == 1
    no_server(hub, sim, user)

    # Start: the form's POST, with the fields as the browser sends them
    fields = dict(
        re.findall(r'<input id="esap-(\w+)" name="\w+" type="\w+" value="([^"]*)"', page.text)
    )
    assert fields["workflow"] == git.workflow and fields["ref"] == "main"
    xsrf = browser.cookies.get("_xsrf", path="/hub/")
    started = browser.post(
        page.url,
        data={"profile": "small", "dataset": "", **fields, "_xsrf": xsrf},
        timeout=60,
    )
    assert started.status_code == 200, started.text[:500]
    model = hub.wait_for_server(user, timeout=90)
    assert model["servers"][""]["ready"], hub.log_tail()

    # the workflow is checked out at main: the pod's own server reads the notebook
    token = hub.user_token(user)
    folder = workflow_folder(git.workflow)
    notebook = requests.get(
        f"{hub.url}/user/{user}/api/contents/{folder}/{demo_git.NOTEBOOK_PATH}",
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert notebook.status_code == 200, notebook.text[:300]
    assert "Crab nebula" in notebook.text
    (pod,) = pods_of(sim, hub, user)
    checkout = next(c for c in pod["spec"]["initContainers"] if c["name"] == "esap-checkout")
    argv = " ".join([*checkout.get("command", []), *checkout.get("args", [])])
    assert argv.endswith("--ref=main"), argv
    r = hub.api("DELETE", f"/users/{user}/server")
    assert r.status_code in (202, 204)
    hub.wait_for_server(user)


@pytest.mark.parametrize(
    "link",
    [
        "hub/spawn?opt-workflow={repo}&opt-filepath=notebooks/crab.ipynb",
        "hub/spawn?workflow={repo}",  # the older style
        "hub/spawn?opt-profile=small&opt-dataset=lofar:L1",
        "services/esap/v2/git/{quoted}/HEAD?urlpath=lab",
    ],
)
def test_a_link_with_a_workflow_never_starts_a_server_without_the_post(
    hub: HubProcess, git: demo_git.GitServer, sim: Any, link: str
) -> None:
    user = f"u{uuid.uuid4().hex[:8]}"
    hub.create_user(user)
    browser = hub.login(user)
    url = f"{hub.url}/" + link.format(
        repo=quote_plus(git.workflow), quoted=quote_plus(git.workflow)
    )
    for _ in range(3):  # followed again and again, as a page that reloads would
        page = browser.get(url, timeout=30)
        assert page.status_code == 200, page.text[:300]
        assert 'id="esap-confirm"' in page.text
    no_server(hub, sim, user)


@pytest.mark.parametrize(
    ("tail", "status", "fragment"),
    [
        (f"v2/git/{quote_plus('http://127.0.0.1/r.git')}/HEAD", 400, "https URL"),
        (f"v2/git/{quote_plus('https://github.com/a/b')}/HEAD", 403, "does not start workflows"),
        ("v2/git/{quoted}/--upload-pack=x?urlpath=lab", 400, "must not start with"),
        ("v2/git/{quoted}/main?urlpath=lab/tree/../../etc/passwd", 400, "'..'"),
        ("v2/git/{missing}/HEAD", 404, "no public git repository"),
    ],
)
def test_bad_deploy_links_get_a_readable_page(
    hub: HubProcess, git: demo_git.GitServer, tail: str, status: int, fragment: str
) -> None:
    tail = tail.format(
        quoted=quote_plus(git.workflow), missing=quote_plus(f"{git.url}/no-such-repo.git")
    )
    page = requests.get(
        f"{hub.url}/services/esap/{tail}", headers={"Accept": "text/html"}, timeout=30
    )
    assert page.status_code == status, page.text[:300]
    assert "This launch link cannot be used" in page.text
    assert fragment in page.text.replace("&#39;", "'")
