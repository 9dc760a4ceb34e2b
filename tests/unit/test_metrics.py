"""esap_spawner.observe.metrics: names follow the scheme, label values are pre-created, and each
helper updates exactly the series it should (read back from the registry)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from esap_spawner.data.catalogue.base import StagingStatus
from esap_spawner.observe import metrics
from esap_spawner.observe.metrics import (
    SPAWN_BUCKETS,
    CatalogueOperation,
    CatalogueStatus,
    HubMetrics,
    ServiceMetrics,
)
from esap_spawner.spawn.status import Phase, SpawnStatus

NAME = re.compile(r"^esap_[a-z]+(_[a-z]+)*_(seconds|bytes|servers|total)$")
UNIT_SUFFIXES = ("_seconds", "_bytes", "_servers", "_total")


@dataclass
class Avail:
    can_start_now: int | None
    running: int | None


def _family_names(registry: CollectorRegistry) -> set[str]:
    """Exposed names (counters with their _total) of every esap family in the registry."""
    names = set()
    for family in registry.collect():
        if not family.name.startswith("esap_"):
            continue
        names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    assert found is not None, f"no sample {name}{labels}"
    return found


@pytest.fixture
def hub() -> HubMetrics:
    return HubMetrics(CollectorRegistry())


def test_every_name_follows_the_scheme(hub: HubMetrics) -> None:
    names = _family_names(hub.registry) | _family_names(ServiceMetrics().registry)
    assert names, "no metrics found"
    for name in names:
        assert NAME.match(name), name
    required = {
        "esap_spawn_duration_seconds",
        "esap_spawn_phase_duration_seconds",
        "esap_staging_duration_seconds",
        "esap_staging_bytes_total",
        "esap_staging_requests_total",
        "esap_profile_available_servers",
        "esap_profile_running_servers",
        "esap_advertiser_request_duration_seconds",
        "esap_catalogue_request_duration_seconds",
        "esap_cluster_view_age_seconds",
    }
    assert required <= names


def test_spawn_histogram_uses_jupyterhubs_buckets(hub: HubMetrics) -> None:
    assert SPAWN_BUCKETS == (0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 180, 300, 600)
    hub.init_profile_labels(["small"])
    for bound in SPAWN_BUCKETS:
        le = str(float(bound))
        assert value(hub.registry, "esap_spawn_duration_seconds_bucket", profile="small",
                     status="success", le=le) == 0  # fmt: skip


def test_hub_metrics_live_in_the_default_registry() -> None:
    assert metrics.HUB.registry is REGISTRY
    assert REGISTRY.get_sample_value("esap_staging_bytes_total") is not None


def test_every_enum_value_is_pre_created(hub: HubMetrics) -> None:
    hub.init_profile_labels(["small", "gpu"])
    for slug in ("small", "gpu"):
        for status in SpawnStatus:
            assert value(hub.registry, "esap_spawn_duration_seconds_count",
                         profile=slug, status=status.value) == 0  # fmt: skip
        for phase in Phase:
            assert value(hub.registry, "esap_spawn_phase_duration_seconds_count",
                         profile=slug, phase=phase.value) == 0  # fmt: skip
        # unknown until the cluster view sets it (0 would read as "full")
        assert math.isnan(value(hub.registry, "esap_profile_available_servers", profile=slug))
        assert math.isnan(value(hub.registry, "esap_profile_running_servers", profile=slug))
    for status in StagingStatus:
        assert value(hub.registry, "esap_staging_requests_total", status=status.value) == 0
        assert value(hub.registry, "esap_staging_duration_seconds_count", status=status.value) == 0
    service = ServiceMetrics(profiles=["small"], handlers=["profiles"])
    for op in CatalogueOperation:
        for st in CatalogueStatus:
            assert value(service.registry, "esap_catalogue_request_duration_seconds_count",
                         operation=op.value, status=st.value) == 0  # fmt: skip
    assert value(service.registry, "esap_advertiser_request_duration_seconds_count",
                 handler="profiles", code="200") == 0  # fmt: skip


def test_observe_spawn_updates_total_and_phases(hub: HubMetrics) -> None:
    hub.init_profile_labels(["small", "gpu"])
    phases = {Phase.validate: 0.02, Phase.scheduling: 3.0, Phase.image: 0.0, Phase.startup: 4.5}
    hub.observe_spawn("gpu", SpawnStatus.success, 12.0, phases)
    hub.observe_spawn("gpu", "refused", 0.1, {"validate": 0.1})
    reg = hub.registry
    assert value(reg, "esap_spawn_duration_seconds_count", profile="gpu", status="success") == 1
    assert value(reg, "esap_spawn_duration_seconds_sum", profile="gpu", status="success") == 12.0
    # 12 s falls in the 15 s bucket, not the 10 s one
    assert value(reg, "esap_spawn_duration_seconds_bucket", profile="gpu", status="success",
                 le="10.0") == 0  # fmt: skip
    assert value(reg, "esap_spawn_duration_seconds_bucket", profile="gpu", status="success",
                 le="15.0") == 1  # fmt: skip
    assert value(reg, "esap_spawn_duration_seconds_count", profile="gpu", status="refused") == 1
    assert value(reg, "esap_spawn_duration_seconds_count", profile="small", status="success") == 0
    assert value(reg, "esap_spawn_phase_duration_seconds_sum", profile="gpu",
                 phase="scheduling") == 3.0  # fmt: skip
    assert value(reg, "esap_spawn_phase_duration_seconds_count", profile="gpu",
                 phase="validate") == 2  # fmt: skip
    assert value(reg, "esap_spawn_phase_duration_seconds_sum", profile="gpu",
                 phase="validate") == pytest.approx(0.12)  # fmt: skip
    # image observed at zero (image already present) counts; staging was not measured
    assert value(reg, "esap_spawn_phase_duration_seconds_count", profile="gpu",
                 phase="image") == 1  # fmt: skip
    assert value(reg, "esap_spawn_phase_duration_seconds_count", profile="gpu",
                 phase="staging") == 0  # fmt: skip


def test_observe_staging(hub: HubMetrics) -> None:
    hub.observe_staging(StagingStatus.success, 40.0, 2_000_000)
    hub.observe_staging("timeout", 3600.0)
    reg = hub.registry
    assert value(reg, "esap_staging_bytes_total") == 2_000_000
    assert value(reg, "esap_staging_requests_total", status="success") == 1
    assert value(reg, "esap_staging_requests_total", status="timeout") == 1
    assert value(reg, "esap_staging_requests_total", status="failure") == 0
    assert value(reg, "esap_staging_duration_seconds_sum", status="timeout") == 3600.0


def test_bad_inputs_are_refused_with_the_allowed_values(hub: HubMetrics) -> None:
    with pytest.raises(ValueError, match="success, failure, refused, cancelled"):
        hub.observe_spawn("small", "ok", 1.0)
    with pytest.raises(ValueError, match="unknown Phase 'pull'"):
        hub.observe_spawn("small", "success", 1.0, {"pull": 1.0})
    with pytest.raises(ValueError, match="non-negative"):
        hub.observe_spawn("small", "success", -1.0)
    with pytest.raises(ValueError, match="non-negative"):
        hub.observe_staging("success", math.nan)
    # nothing was recorded by the refused calls
    assert hub.registry.get_sample_value(
        "esap_spawn_duration_seconds_count", {"profile": "small", "status": "success"}
    ) in (None, 0)


def test_profile_availability_gauges(hub: HubMetrics) -> None:
    hub.set_profile_availability({"small": Avail(7, 3), "gpu": Avail(None, None)})
    reg = hub.registry
    assert value(reg, "esap_profile_available_servers", profile="small") == 7
    assert value(reg, "esap_profile_running_servers", profile="small") == 3
    assert math.isnan(value(reg, "esap_profile_available_servers", profile="gpu"))
    hub.set_profile_availability({"small": Avail(0, 10)})
    assert value(reg, "esap_profile_available_servers", profile="small") == 0
    assert value(reg, "esap_profile_running_servers", profile="small") == 10


def test_service_metrics_own_registry_and_exposition() -> None:
    ages: list[float | None] = [None]
    one = ServiceMetrics(view_age=lambda: ages[0], profiles=["small"])
    two = ServiceMetrics()
    one.observe_request("profiles", 200, 0.004)
    one.observe_request("locality", 503, 0.2)
    one.observe_catalogue(CatalogueOperation.locality, "unavailable", 5.0)
    one.set_profile_availability({"small": Avail(2, 1)})
    reg = one.registry
    assert value(reg, "esap_advertiser_request_duration_seconds_count",
                 handler="locality", code="503") == 1  # fmt: skip
    assert value(reg, "esap_catalogue_request_duration_seconds_sum",
                 operation="locality", status="unavailable") == 5.0  # fmt: skip
    assert value(reg, "esap_profile_available_servers", profile="small") == 2
    assert math.isnan(value(reg, "esap_cluster_view_age_seconds"))
    ages[0] = 4.5
    assert value(reg, "esap_cluster_view_age_seconds") == 4.5
    # the second app's registry saw none of this
    assert (
        two.registry.get_sample_value(
            "esap_advertiser_request_duration_seconds_count", {"handler": "profiles", "code": "200"}
        )
        is None
    )
    body, content_type = one.exposition()
    assert content_type.startswith("text/plain")
    parsed = {f.name for f in text_string_to_metric_families(body.decode())}
    assert "esap_advertiser_request_duration_seconds" in parsed
    assert "esap_cluster_view_age_seconds" in parsed
    with pytest.raises(ValueError, match="CatalogueOperation"):
        one.observe_catalogue("list", "success", 1.0)


def test_hub_cluster_view_age(hub: HubMetrics) -> None:
    assert math.isnan(value(hub.registry, "esap_cluster_view_age_seconds"))
    ages: list[float | None] = [None]
    hub.watch_cluster_view(lambda: ages[0])
    assert math.isnan(value(hub.registry, "esap_cluster_view_age_seconds"))
    ages[0] = 12.5
    assert value(hub.registry, "esap_cluster_view_age_seconds") == 12.5


def test_hub_profile_gauges_follow_the_cluster_view_at_each_scrape(hub: HubMetrics) -> None:
    hub.init_profile_labels(["small", "gpu"])
    now: dict[str, Avail] = {"small": Avail(3, 1)}
    hub.follow_profile_availability(["small", "gpu"], lambda: now)
    assert value(hub.registry, "esap_profile_available_servers", profile="small") == 3
    assert value(hub.registry, "esap_profile_running_servers", profile="small") == 1
    assert math.isnan(value(hub.registry, "esap_profile_available_servers", profile="gpu"))
    now["small"], now["gpu"] = Avail(0, 4), Avail(None, None)  # the view moved on
    assert value(hub.registry, "esap_profile_available_servers", profile="small") == 0
    assert value(hub.registry, "esap_profile_running_servers", profile="small") == 4
    assert math.isnan(value(hub.registry, "esap_profile_available_servers", profile="gpu"))


def test_the_hub_metrics_record_in_the_default_registry() -> None:
    slug = "helper-test-profile"
    metrics.HUB.init_profile_labels([slug])
    before = REGISTRY.get_sample_value(
        "esap_spawn_duration_seconds_count", {"profile": slug, "status": "failure"}
    )
    assert before == 0
    metrics.HUB.observe_spawn(slug, SpawnStatus.failure, 30.0, {Phase.scheduling: 29.0})
    assert (
        REGISTRY.get_sample_value(
            "esap_spawn_duration_seconds_count", {"profile": slug, "status": "failure"}
        )
        == 1
    )
    staged = REGISTRY.get_sample_value("esap_staging_bytes_total") or 0
    metrics.HUB.observe_staging(StagingStatus.success, 1.0, 10)
    assert REGISTRY.get_sample_value("esap_staging_bytes_total") == staged + 10
    metrics.HUB.set_profile_availability({slug: Avail(1, 2)})
    assert REGISTRY.get_sample_value("esap_profile_running_servers", {"profile": slug}) == 2


# --- the Grafana dashboard (docs/grafana-dashboard.json) ----------------------------------
DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
SELECTOR = re.compile(r"\b(esap_[a-z_]+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r'([a-zA-Z_]+)\s*(?:=~|!~|!=|=)\s*"')
BY = re.compile(r"\bby\s*\(([^)]*)\)")


def _exposed_series() -> dict[str, set[str]]:
    """Every sample name both registries expose -> its label names."""
    hub = HubMetrics(CollectorRegistry())
    hub.init_profile_labels(["small"])
    service = ServiceMetrics(profiles=["small"], handlers=["profiles"])
    found: dict[str, set[str]] = {}
    for registry in (hub.registry, service.registry):
        for family in registry.collect():
            for sample in family.samples:
                found.setdefault(sample.name, set()).update(sample.labels)
    return found


def _queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = []
    for panel in dashboard["panels"]:
        exprs += [t["expr"] for t in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable.get("type") == "query":
            exprs.append(variable["definition"])
    return exprs


def test_dashboard_queries_only_metrics_and_labels_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    series = _exposed_series()
    queries = _queries(dashboard)
    assert len(queries) >= 10
    used: set[str] = set()
    for expr in queries:
        names = [m.group(1) for m in SELECTOR.finditer(expr)]
        assert names, f"no esap metric in {expr!r}"
        labels_here: set[str] = set()
        for match in SELECTOR.finditer(expr):
            name, matchers = match.group(1), match.group(2) or ""
            assert name in series, f"{name} (in {expr!r}) is not exported by metrics.py"
            used.add(name)
            for key in MATCHER.findall(matchers):
                assert key in series[name], f"{name} has no label {key!r} ({expr!r})"
            labels_here |= series[name]
        for group in BY.findall(expr):
            for label in (x.strip() for x in group.split(",")):
                assert label in labels_here, f"'by ({group})' uses unknown {label!r} ({expr!r})"
    # the questions of the issue: spawn percentiles, phases, failures, capacity, staging, age
    for needed in ("esap_spawn_duration_seconds_bucket", "esap_spawn_phase_duration_seconds_sum",
                   "esap_profile_available_servers", "esap_profile_running_servers",
                   "esap_staging_bytes_total", "esap_cluster_view_age_seconds"):  # fmt: skip
        assert needed in used, needed


def test_dashboard_shape() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["PROMETHEUS_DS"]["type"] == "datasource"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert sum(p["type"] == "row" for p in dashboard["panels"]) >= 4
    for panel in dashboard["panels"]:
        assert panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${PROMETHEUS_DS}"
            assert panel["description"]
