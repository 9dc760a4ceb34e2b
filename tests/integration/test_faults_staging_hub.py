"""The hub restarts while a spawn is staging its dataset (real hub, real Rucio, simulator).

The spawn asks for a remote dataset; Rucio gets a rule; one file of three arrives; the hub
is stopped (SIGTERM) or killed (SIGKILL) and started again on the same database. JupyterHub
does not carry a pending spawn over a restart, so the user spawns again: the rule made
before the restart is reused (never a second), staging finishes, the server starts, and
the records tell what happened (a killed hub cannot write the cut spawn's row: its staging
row stays in flight and the next spawn takes it up).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from esap_spawner.observe.db import Database
from tests.harness.hub import HubProcess, hub_on_cluster
from tests.harness.rucio_server import (
    LOCAL_RSE,
    REMOTE_RSE,
    RucioServer,
    alice_rules,
    make_files,
    rucio_site,
)
from tests.harness.sim import TINY_SERVER, fresh_namespace

pytestmark = pytest.mark.integration


def wait(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


@pytest.fixture
def hub(sim: Any, rucio_server: RucioServer, tmp_path: Any) -> Iterator[HubProcess]:
    namespace = fresh_namespace(sim, "fstg")
    config = f"""
c.KubeSpawner.cmd = [{sys.executable!r}, "-c", {TINY_SERVER!r}]
c.KubeSpawner.args = []
c.JupyterHub.cleanup_servers = False
c.ESAPSpawner.staging_poll_interval = 0.1
c.ESAPSpawner.staging_poll_max = 0.5
c.ESAPSpawner.staging_pod_margin = 10
"""
    site = rucio_site(rucio_server, tmp_path, "alice")
    hub = hub_on_cluster(
        tmp_path, site, namespace=namespace, start_timeout=90, config=config, start=False
    )
    try:
        yield hub.start()
    finally:
        hub.stop()
        requests.delete(f"{sim.url}/api/v1/namespaces/{namespace}", timeout=10)


@pytest.mark.parametrize("how", ["stopped", "killed"])
def test_hub_restart_during_staging(hub: HubProcess, rucio_server: RucioServer, how: str) -> None:
    scope = rucio_server.new_scope("hrs")
    files = make_files(scope, "f", 3, 50_000)
    rucio_server.upload_dataset(scope, "set", files, REMOTE_RSE)
    did = f"{scope}:set"
    options = {"profile": "small", "dataset": [did]}
    db = Database(f"sqlite:///{hub.workdir}/esap.sqlite")
    started = time.time()
    hub.create_user("hana")
    r = hub.api("POST", "/users/hana/server", json=options)
    assert r.status_code == 202, r.text  # pending: staging takes a while
    (rule,) = wait(lambda: alice_rules(rucio_server, scope, "set"), "the rule")
    rucio_server.complete_transfer(LOCAL_RSE, files[:1])

    def one_file_recorded() -> bool:
        db.ensure_schema()
        return any(s.files_done == 1 for s in db.staging_between(started - 1))

    wait(one_file_recorded, "1/3 files in the staging row")

    if how == "stopped":
        hub.stop()
        # the hub cancels the pending spawn as it stops: both records say so
        (cut,) = db.spawns_between(started - 1)
        assert (cut.outcome, cut.failure_reason) == (
            "cancelled",
            "cancelled before the server was ready",
        )
        assert cut.validate_seconds is not None and cut.pod_name is None
        (first,) = db.staging_between(started - 1)
        assert (first.outcome, first.rule_id, first.files_done) == ("cancelled", rule["id"], 1)
        assert first.reason == "the spawn was cancelled" and first.finished_at is not None
    else:
        assert hub.proc is not None
        os.killpg(hub.proc.pid, signal.SIGKILL)  # the hub and its proxy, at once
        hub.proc.wait(10)
        # nothing could be closed: no spawn row, the staging row still in flight
        assert db.spawns_between(started - 1) == []
        (first,) = db.staging_in_flight()
        assert (first.rule_id, first.files_done, first.outcome) == (rule["id"], 1, None)

    hub.start()
    assert hub.api("GET", "/users/hana").json()["servers"] == {}  # a pending spawn is not resumed
    r = hub.api("POST", "/users/hana/server", json=options)  # so the user spawns again
    assert r.status_code == 202, r.text
    if how == "stopped":  # a new request, for the same rule
        wait(lambda: len(db.staging_between(started - 1)) == 2, "the second staging row")
    else:  # the request left in flight is taken up again
        wait(lambda: db.staging_in_flight()[0].updated_at > first.updated_at, "the row resumed")
    rucio_server.complete_transfer(LOCAL_RSE, files[1:])
    server = hub.wait_for_server("hana", timeout=90)["servers"][""]
    assert server["ready"], hub.log_tail()
    (staged,) = server["state"]["esap_staging"]["dids"]
    assert staged["request"]["rule_id"] == rule["id"] and staged["request"]["reused"] is True
    assert [x["id"] for x in alice_rules(rucio_server, scope, "set")] == [rule["id"]]

    expected: list[tuple[str, str | None]] = [("success", None)]
    if how == "stopped":
        expected.insert(0, ("cancelled", "cancelled before the server was ready"))
    rows = wait(
        lambda: (found := db.spawns_between(started - 1)) and len(found) == len(expected) and found,
        "the spawn rows",
    )
    assert [(x.outcome, x.failure_reason) for x in rows] == expected
    assert rows[-1].staging_seconds is not None and rows[-1].datasets == 1
    staging = db.staging_between(started - 1)
    assert len(staging) == (2 if how == "stopped" else 1)
    assert staging[0].id == first.id
    last = staging[-1]
    assert (last.outcome, last.rule_id, last.files_done, last.files_total) == (
        "success",
        rule["id"],
        3,
        3,
    )
    assert db.staging_in_flight() == []
