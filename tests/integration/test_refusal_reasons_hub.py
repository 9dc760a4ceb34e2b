"""The hub's own spawn metric tells our refusals apart from failures, on a real JupyterHub.

JupyterHub 6 labels ``jupyterhub_server_spawn_duration_seconds`` with ``status`` and
``reason``: a ``SpawnException(reason=...)`` is ``status="failure"`` with that reason, anything
else ``status="error"``. The hub runs on its own simulator with the process kubelet, spawns
each kind of refusal through the REST API, and lets one admitted spawn fail for real: its
pod is a local process on a loopback address that never listens, so the hub gives up
waiting for it. Users keep reading the messages and statuses they always had.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import jupyterhub
import pytest
import requests
from packaging.version import Version
from prometheus_client.parser import text_string_to_metric_families

from esap_spawner.spawn.status import RefusalReason
from tests.harness.hub import HubProcess, hub_on_cluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        Version(jupyterhub.__version__) < Version("6"),
        reason="JupyterHub 5's spawn metric has no reason label",
    ),
]

METRIC = "jupyterhub_server_spawn_duration_seconds_count"
HTTP_TIMEOUT = 15  # seconds the hub waits for the one admitted (never answering) server
NEVER_LISTENS = [sys.executable, "-c", "import time; time.sleep(600)"]

CLUSTER = {"nodes": [{"name": "cpu-1", "allocatable": {"cpu": "8", "memory": "32Gi"}}]}
SMALL = {
    "cpu": {"guarantee": 0.1, "limit": 1},
    "memory": {"guarantee": "128M", "limit": "512M"},
    "image": "quay.io/jupyter/minimal-notebook:2026-01-01",
}


def site(archive: Path) -> dict[str, Any]:
    return {
        "facility": {"name": "Reasons", "description": "tests", "url": "http://127.0.0.1/"},
        "profiles": [
            {"slug": "one", "display_name": "One at a time", "default": True,
             "max_servers": 1, **SMALL, "kubespawner_override": {"cmd": NEVER_LISTENS}},
            {"slug": "huge", "display_name": "More than any node", **SMALL,
             "cpu": {"guarantee": 40, "limit": 40}},
            {"slug": "gpu", "display_name": "GPU group only", "allowed_groups": ["gpu-users"],
             **SMALL},
        ],
        "data": {
            "catalogue": "static",
            "static": {
                "volume": {"hostPath": {"path": str(archive), "type": "Directory"}},
                "mount_path": str(archive),
                "datasets": [{"did": "escape:here", "path": "here"}],
            },
        },
    }  # fmt: skip


@pytest.fixture
def hub(sim_factory: Any, tmp_path: Path) -> Any:
    sim = sim_factory(CLUSTER, kubelet="process", workdir=tmp_path / "pods")
    sim.create_namespace("reasons")
    kubeconfig = sim.write_kubeconfig(tmp_path / "kubeconfig")
    archive = tmp_path / "archive"
    (archive / "here").mkdir(parents=True)
    (archive / "here" / "data.txt").write_text("x")
    config = f"\nc.KubeSpawner.http_timeout = {HTTP_TIMEOUT}\n"
    hub = hub_on_cluster(
        tmp_path, site(archive), namespace="reasons", kubeconfig=kubeconfig, start_timeout=60,
        config=config,
    )  # fmt: skip
    yield hub
    hub.stop()


def spawn_counts(hub: HubProcess) -> dict[tuple[str, str], float]:
    """(status, reason) -> spawns counted by the hub's own histogram."""
    r = requests.get(
        f"{hub.url}/hub/metrics",
        headers={"Authorization": f"token {hub.admin_token}"},
        timeout=10,
    )
    r.raise_for_status()
    return {
        (s.labels["status"], s.labels["reason"]): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
        if s.name == METRIC
    }


def spawn_ends(hub: HubProcess, user: str, options: dict[str, Any]) -> requests.Response:
    """Ask for a server; return the answer once the spawn has ended (refused or failed)."""
    hub.create_user(user)
    answer = hub.api("POST", f"/users/{user}/server", json=options)
    hub.wait_for_server(user, timeout=HTTP_TIMEOUT + 60)
    return answer


def refused(answer: requests.Response, status: int, words: str) -> None:
    # A refusal is decided at once; on a loaded machine the hub may still answer 202 first
    # (slow_spawn_timeout), and the spawn is refused a moment later.
    if answer.status_code != 202:
        assert answer.status_code == status, answer.text
        assert words in answer.json()["message"], answer.text


def test_refusals_carry_their_reason_and_failures_stay_errors(hub: HubProcess) -> None:
    before = spawn_counts(hub)
    for reason in RefusalReason:  # every reason is listed from the start, at zero
        assert before[("failure", reason.value)] == 0, reason
    errors_before = sum(v for (status, _), v in before.items() if status == "error")

    # one admitted spawn holds the profile's only slot, and fails later: nothing answers
    hub.create_user("holder")
    held = hub.api("POST", "/users/holder/server", json={"profile": "one"})
    assert held.status_code in (201, 202), held.text

    refused(spawn_ends(hub, "quota-user", {"profile": "one"}), 409, "is full")
    refused(spawn_ends(hub, "roomless", {"profile": "huge"}), 409, "no node has room")
    refused(spawn_ends(hub, "outsider", {"profile": "gpu"}), 403, "members of gpu-users")
    refused(spawn_ends(hub, "typo", {"profile": "one", "imagee": "x"}), 400, "unknown option")
    hub.create_user("reader", groups=("gpu-users",))
    refused(
        spawn_ends(hub, "reader", {"profile": "gpu", "dataset": ["escape:missing"]}),
        404,
        "escape:missing does not exist",
    )

    hub.wait_for_server("holder", timeout=HTTP_TIMEOUT + 60)
    deadline = time.monotonic() + 30
    after = spawn_counts(hub)
    while time.monotonic() < deadline:  # the failure is counted as the spawn future settles
        after = spawn_counts(hub)
        if sum(v for (status, _), v in after.items() if status == "error") > errors_before:
            break
        time.sleep(0.5)
    counted = {r: after[("failure", r.value)] for r in RefusalReason}
    assert counted == {
        RefusalReason.quota: 1,
        RefusalReason.no_room: 1,
        RefusalReason.not_allowed: 1,
        RefusalReason.invalid_options: 1,
        RefusalReason.staging_refused: 1,
        RefusalReason.staging_limit: 0,  # a static catalogue never stages
    }
    # the server that never answered is an error, not one of our refusals
    assert sum(v for (status, _), v in after.items() if status == "error") == errors_before + 1
