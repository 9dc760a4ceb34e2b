"""The hub-side metrics appear on a real JupyterHub's /hub/metrics, next to JupyterHub's own.

The hub's configuration records through ``metrics.HUB`` exactly as the spawner does (the hub
context's default, in prometheus_client's default registry); the test scrapes /hub/metrics
over HTTP and reads the series back with Prometheus' text parser.
"""

from __future__ import annotations

import math

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

CONFIG = """
from esap_spawner.observe import metrics
from esap_spawner.spawn.status import Phase, SpawnStatus

class _Avail:
    def __init__(self, can_start_now, running):
        self.can_start_now, self.running = can_start_now, running

metrics.HUB.init_profile_labels(["small", "gpu"])
metrics.HUB.observe_spawn("gpu", SpawnStatus.success, 42.0,
                          {Phase.scheduling: 7.5, Phase.image: 30.0})
metrics.HUB.observe_spawn("small", "refused", 0.2, {"validate": 0.2})
metrics.HUB.observe_staging("success", 40.0, 2_000_000)
metrics.HUB.set_profile_availability({"small": _Avail(5, 1), "gpu": _Avail(0, 2)})
"""


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, frozenset(s.labels.items()))] = s.value
    return found


def get(found: dict, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in found, f"{name}{labels} not on /hub/metrics"
    return float(found[key])


def test_spawner_metrics_are_served_by_the_hub(hub_factory) -> None:
    hub = hub_factory(CONFIG)
    anonymous = requests.get(f"{hub.url}/hub/metrics", timeout=10)
    assert anonymous.status_code == 403  # JupyterHub's authenticate_prometheus default
    response = requests.get(
        f"{hub.url}/hub/metrics",
        headers={"Authorization": f"token {hub.admin_token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text[:300]
    found = samples(response.text)
    # JupyterHub's own metrics and ours share the registry
    assert any(name.startswith("jupyterhub_") for name, _ in found)
    assert get(found, "esap_spawn_duration_seconds_count", profile="gpu", status="success") == 1
    assert get(found, "esap_spawn_duration_seconds_sum", profile="gpu", status="success") == 42.0
    assert get(found, "esap_spawn_duration_seconds_count", profile="small", status="refused") == 1
    # pre-created, still zero
    assert get(found, "esap_spawn_duration_seconds_count", profile="small", status="failure") == 0
    assert get(found, "esap_spawn_phase_duration_seconds_count", profile="gpu",
               phase="staging") == 0  # fmt: skip
    assert get(found, "esap_spawn_phase_duration_seconds_sum", profile="gpu",
               phase="image") == 30.0  # fmt: skip
    assert get(found, "esap_staging_bytes_total") == 2_000_000
    assert get(found, "esap_staging_requests_total", status="success") == 1
    assert get(found, "esap_staging_requests_total", status="timeout") == 0
    assert get(found, "esap_profile_available_servers", profile="gpu") == 0
    assert get(found, "esap_profile_running_servers", profile="small") == 1
    assert not math.isnan(get(found, "esap_profile_available_servers", profile="small"))
