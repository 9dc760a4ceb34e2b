"""The whole path in a real JupyterHub: a REST spawn asking for a dataset that must be staged.

Real hub + configurable-http-proxy, real ESAPSpawner/KubeSpawner, the session simulator with
its process kubelet (which lays out the pod's volumes in a pod root and runs the datalinks
init container with the host's python3), and a real Rucio server whose transfer the test
completes file by file. The user then reads the dataset through their own notebook server's
contents API: ``~/datasets/<scope>/<name>/<file>``.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.hub import HubProcess, hub_on_cluster
from tests.harness.rucio_server import (
    LOCAL_RSE,
    REMOTE_RSE,
    RucioServer,
    alice_rules,
    make_files,
    rucio_site,
)
from tests.harness.sim import fresh_namespace

pytestmark = pytest.mark.integration

MAX_FILES = 10  # data.rucio.staging.max_files of the module's hub


@pytest.fixture(scope="module")
def hub(
    sim: Any, rucio_server: RucioServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HubProcess]:
    workdir = tmp_path_factory.mktemp("staging-hub")
    config = """
c.ESAPSpawner.staging_poll_interval = 0.1
c.ESAPSpawner.staging_poll_max = 0.5
c.ESAPSpawner.staging_pod_margin = 10
"""
    site = rucio_site(rucio_server, workdir, "alice")
    site["data"]["rucio"]["staging"]["max_files"] = MAX_FILES
    namespace = fresh_namespace(sim, "stg")
    hub = hub_on_cluster(workdir, site, namespace=namespace, start_timeout=90, config=config)
    yield hub
    hub.stop()


class ProgressReader:
    """The hub's progress event stream for one user, read in a thread."""

    def __init__(self, hub: HubProcess, name: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._read, args=(hub, name), daemon=True)
        self.thread.start()

    def _read(self, hub: HubProcess, name: str) -> None:
        with hub.api("GET", f"/users/{name}/server/progress", stream=True, timeout=120) as r:
            for raw in r.iter_lines():
                line = raw.decode() if isinstance(raw, bytes) else str(raw)
                if line.startswith("data:"):
                    self.events.append(json.loads(line[5:]))

    def messages(self) -> list[str]:
        return [str(e.get("message", "")) for e in list(self.events)]

    def wait_for(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in m for m in self.messages()):
                return
            time.sleep(0.05)
        raise AssertionError(f"no progress message with {text!r}: {self.messages()}")


def wait(check: Any, what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_rest_spawn_stages_and_mounts_the_dataset(
    hub: HubProcess, sim: Any, rucio_server: RucioServer
) -> None:
    scope = rucio_server.new_scope("hub")
    files = make_files(scope, "crab", 3, 200_000)
    rucio_server.upload_dataset(scope, "crab-2020", files, REMOTE_RSE)
    did = f"{scope}:crab-2020"
    hub.create_user("dora")
    r = hub.api("POST", "/users/dora/server", json={"profile": "small", "dataset": [did]})
    assert r.status_code == 202, r.text  # pending: staging takes a while
    progress = ProgressReader(hub, "dora")

    wait(lambda: alice_rules(rucio_server, scope, "crab-2020"), "the rule")
    progress.wait_for("0/3 files")
    for i, f in enumerate(files, start=1):
        rucio_server.complete_transfer(LOCAL_RSE, [f])
        progress.wait_for(f"{i}/3 files")
    model = hub.wait_for_server("dora", timeout=90)
    assert model["servers"][""]["ready"], hub.log_tail()
    progress.thread.join(timeout=10)

    texts = progress.messages()
    staging = [t for t in texts if t.startswith("Staging")]
    counts = [int(m.group(1)) for t in staging if (m := re.search(r": (\d+)/3 files", t))]
    assert counts == sorted(counts) and {0, 1, 2, 3} <= set(counts), texts
    first_pod_event = next(i for i, e in enumerate(progress.events) if "raw_event" in e)
    assert all(not t.startswith("Staging") for t in texts[first_pod_event:])  # staging first
    assert len(alice_rules(rucio_server, scope, "crab-2020")) == 1

    # the pod: init container ran, the ConfigMap is owned by the pod
    namespace = hub.namespace
    pods = requests.get(f"{sim.url}/api/v1/namespaces/{namespace}/pods", timeout=10).json()
    (pod,) = [
        p
        for p in pods["items"]
        if p["metadata"].get("annotations", {}).get("hub.jupyter.org/username") == "dora"
    ]
    (init_status,) = pod["status"]["initContainerStatuses"]
    assert init_status["state"]["terminated"]["exitCode"] == 0
    cm = requests.get(
        f"{sim.url}/api/v1/namespaces/{namespace}/configmaps/{pod['metadata']['name']}-datalinks",
        timeout=10,
    ).json()
    assert cm["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]

    # the user reads the data in their own server: ~/datasets/<scope>/<name>/<file>
    token = hub.user_token("dora")
    contents = f"{hub.url}/user/dora/api/contents/datasets"
    headers = {"Authorization": f"token {token}"}
    manifest = requests.get(f"{contents}/manifest.json?content=1", headers=headers, timeout=30)
    assert manifest.status_code == 200, manifest.text
    listed = json.loads(manifest.json()["content"])["datasets"][did]
    assert listed["files_total"] == 3 and listed["bytes_total"] == 600_000
    for f in files:
        r = requests.get(
            f"{contents}/{scope}/crab-2020/{f.name}?content=1&format=base64",
            headers=headers,
            timeout=30,
        )
        assert r.status_code == 200, r.text
        assert base64.b64decode(r.json()["content"]) == f.content

    # the staging is measured: /hub/metrics has the staging request, its bytes and the
    # spawn's staging phase (the spawn's own record is written as it settles)
    def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = requests.get(
            f"{hub.url}/hub/metrics",
            headers={"Authorization": f"token {hub.admin_token}"},
            timeout=10,
        ).text
        return {
            (x.name, frozenset(x.labels.items())): x.value
            for family in text_string_to_metric_families(text)
            for x in family.samples
        }

    staging_phase = (
        "esap_spawn_phase_duration_seconds_count",
        frozenset({("profile", "small"), ("phase", "staging")}),
    )
    found = wait(lambda: (m := scrape()).get(staging_phase) and m, "the staged spawn's metrics")
    assert found[("esap_staging_requests_total", frozenset({("status", "success")}))] == 1
    assert found[("esap_staging_bytes_total", frozenset())] == 600_000

    r = hub.api("DELETE", "/users/dora/server")
    assert r.status_code in (202, 204), r.text
    hub.wait_for_server("dora")
    wait(
        lambda: (
            requests.get(
                f"{sim.url}/api/v1/namespaces/{namespace}/configmaps/"
                f"{pod['metadata']['name']}-datalinks",
                timeout=10,
            ).status_code
            == 404
        ),
        "the ConfigMap to go with the pod",
    )


def test_missing_dataset_refused_through_the_hub(hub: HubProcess) -> None:
    hub.create_user("nils")
    r = hub.api(
        "POST", "/users/nils/server", json={"profile": "small", "dataset": ["nope:nothing"]}
    )
    if r.status_code == 202:  # the refusal came after the hub's slow_spawn_timeout
        hub.wait_for_server("nils")
        r = hub.api("GET", "/users/nils")
        assert "" not in r.json().get("servers", {})
    else:
        assert r.status_code == 404, r.text
        assert "dataset nope:nothing does not exist in the data catalogue" in r.text


def test_a_dataset_over_the_staging_limit_is_refused_in_the_answer_and_on_the_page(
    hub: HubProcess, sim: Any, rucio_server: RucioServer
) -> None:
    """Security review finding 2: more files than the site lets one server stage is refused
    right after the first resolve, in the REST answer and on the spawn page, and no rule
    (nor anything else) is made."""
    scope = rucio_server.new_scope("big")
    rucio_server.upload_dataset(scope, "big", make_files(scope, "f", MAX_FILES + 1, 8), REMOTE_RSE)
    did = f"{scope}:big"
    words = f"need {MAX_FILES + 1} files"
    hub.create_user("olga")
    r = hub.api("POST", "/users/olga/server", json={"profile": "small", "dataset": [did]})
    if r.status_code == 202:  # the refusal came after the hub's slow_spawn_timeout
        hub.wait_for_server("olga")
        assert "" not in hub.api("GET", "/users/olga").json().get("servers", {})
    else:
        assert r.status_code == 413, r.text
        assert words in r.json()["message"] and f"at most {MAX_FILES:,} files" in r.text

    browser = hub.login("olga")
    browser.get(f"{hub.url}/hub/spawn", timeout=30)  # the form first, as in a browser
    xsrf = browser.cookies.get("_xsrf", path="/hub/")
    page = browser.post(
        f"{hub.url}/hub/spawn", data={"profile": "small", "dataset": did, "_xsrf": xsrf},
        timeout=60,
    )  # fmt: skip
    if "spawn-pending" in page.url:  # refused after slow_spawn_timeout: on the progress page
        progress = ProgressReader(hub, "olga")
        progress.thread.join(timeout=60)
        assert any(words in m for m in progress.messages()), progress.messages()
    else:
        assert page.status_code == hub.form_refusal_status(413), page.text[:500]
        assert words in page.text
    assert alice_rules(rucio_server, scope, "big") == []
    namespace = hub.namespace  # type: ignore[attr-defined]
    for kind in ("pods", "configmaps", "secrets"):
        listed = requests.get(f"{sim.url}/api/v1/namespaces/{namespace}/{kind}", timeout=10)
        assert not [o for o in listed.json()["items"] if "olga" in o["metadata"]["name"]]
