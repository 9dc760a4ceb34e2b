"""Metrics after real spawns: the hub's /hub/metrics and the service's metrics route.

A real hub with ESAPSpawner on the session simulator (process kubelet) and the `esap`
service run by the hub: one spawn succeeds (a real jupyterhub-singleuser), one is refused
because the profile is at its `max_servers`; then both metrics endpoints are scraped and
the series read back with Prometheus' own parser, and the spawn history rows checked.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from esap_spawner.observe.db import Database
from tests.harness.hub import hub_on_cluster
from tests.harness.sim import fresh_namespace
from tests.harness.snippets import LOAD_SNIPPETS

pytestmark = pytest.mark.integration

SITE = {
    "facility": {"name": "Metrics", "description": "tests", "url": "http://127.0.0.1/"},
    "profiles": [
        {
            "slug": "solo",
            "display_name": "One at a time",
            "default": True,
            "cpu": {"guarantee": 0.1, "limit": 1},
            "memory": {"guarantee": "128M", "limit": "1G"},
            "image": "quay.io/jupyter/minimal-notebook:2026-01-01",
            "max_servers": 1,
        },
    ],
}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in found, f"{name}{labels} is not exported"
    return found[key]


def test_spawn_metrics_and_history_match_what_happened(sim: Any, tmp_path: Path) -> None:
    portal = secrets.token_hex(16)
    env = {
        "ESAP_SITE_FILE": str(tmp_path / "site.yaml"),
        "ESAP_SERVICE_PORT": str(_free_port()),
        "ESAP_PORTAL_API_TOKEN": portal,
    }
    namespace = fresh_namespace(sim, "metrics")
    hub = hub_on_cluster(tmp_path, SITE, namespace=namespace, config=LOAD_SNIPPETS, env=env)
    try:
        hub.create_user("first")
        hub.create_user("second")
        started = time.time()
        r = hub.api("POST", "/users/first/server", json={"profile": "solo"})
        assert r.status_code in (201, 202), r.text
        assert hub.wait_for_server("first")["servers"][""]["ready"]
        r = hub.api("POST", "/users/second/server", json={"profile": "solo"})
        assert r.status_code == 409, r.text

        db = Database(f"sqlite:///{hub.workdir}/esap.sqlite")
        deadline = time.monotonic() + 20
        records = db.spawns_between(started - 1)
        while len(records) < 2 and time.monotonic() < deadline:
            time.sleep(0.3)
            records = db.spawns_between(started - 1)
        by_outcome = {r.outcome: r for r in records}
        assert sorted(by_outcome) == ["refused", "success"], records
        success = by_outcome["success"]
        assert success.profile == "solo" and success.pod_name
        assert success.scheduling_seconds is not None and success.startup_seconds is not None
        assert "is full: 1 of 1" in (by_outcome["refused"].failure_reason or "")

        hub_metrics = requests.get(
            f"{hub.url}/hub/metrics",
            headers={"Authorization": f"token {hub.admin_token}"},
            timeout=10,
        )
        assert hub_metrics.status_code == 200
        found = samples(hub_metrics.text)
        count = "esap_spawn_duration_seconds_count"
        assert value(found, count, profile="solo", status="success") == 1
        assert value(found, count, profile="solo", status="refused") == 1
        assert value(found, count, profile="solo", status="failure") == 0  # pre-created
        total = value(found, "esap_spawn_duration_seconds_sum", profile="solo", status="success")
        assert total == pytest.approx(success.duration_seconds, abs=0.5)
        phase_count = "esap_spawn_phase_duration_seconds_count"
        assert value(found, phase_count, profile="solo", phase="scheduling") >= 1
        assert value(found, phase_count, profile="solo", phase="startup") >= 1

        api = f"{hub.url}/services/esap"
        headers = {"Authorization": f"token {portal}"}
        deadline = time.monotonic() + 30
        profiles = requests.get(f"{api}/api/v1/profiles", headers=headers, timeout=10).json()
        while profiles.get("stale", True) and time.monotonic() < deadline:
            time.sleep(0.5)
            profiles = requests.get(f"{api}/api/v1/profiles", headers=headers, timeout=10).json()
        (solo,) = profiles["profiles"]
        assert solo["availability"]["running"] == 1
        assert solo["availability"]["can_start_now"] == 0
        assert solo["availability"]["status"] == "full"
        service_metrics = requests.get(f"{api}/metrics", headers=headers, timeout=10)
        assert service_metrics.status_code == 200, service_metrics.text[:200]
        found = samples(service_metrics.text)
        served = value(
            found, "esap_advertiser_request_duration_seconds_count", handler="profiles", code="200"
        )
        assert served >= 1
        assert value(found, "esap_profile_running_servers", profile="solo") == 1
        assert value(found, "esap_profile_available_servers", profile="solo") == 0
    finally:
        hub.stop()


def _free_port() -> int:
    from tests.harness.hub import free_port

    return free_port()
