"""What a portal reads from the service, in-process: the spawn options' schema for the caller,
and ESAP's fixture entry (the pure parts: tests/unit/test_portal.py)."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.harness.openapi import check_openapi
from tests.harness.service import Service, ServiceFactory

pytestmark = pytest.mark.integration


async def test_options_route_is_the_declaration_for_this_caller(
    service_factory: ServiceFactory,
) -> None:
    service: Service = await service_factory()
    answer = await service.fetch("api/v1/options", token="carol-token")
    assert answer.code == 403  # a token without a catalogue scope
    answer = await service.fetch("api/v1/options", token="alice-token")
    body = check_openapi("GET", "/api/v1/options", answer)
    assert body["additionalProperties"] is False
    assert body["properties"]["profile"]["enum"] == ["small", "gpu"]  # alice is in radio
    root = await service.fetch("api/v1/options", token="portal-token")
    assert json.loads(root.body)["properties"]["profile"]["enum"] == ["small", "gpu"]


async def test_fixture_route(service_factory: ServiceFactory) -> None:
    service: Service = await service_factory()
    answer = await service.fetch("api/v1/esap/fixture?pk=12", token="portal-token")
    (entry,) = check_openapi("GET", "/api/v1/esap/fixture", answer)
    assert entry == {
        "model": "ida.facility",
        "pk": 12,
        "fields": {"name": "Test Hub", "description": entry["fields"]["description"],
                   "url": "https://hub.example.org/services/esap/", "facilitytype": "jupyterhub"},
    }  # fmt: skip
    assert yaml.safe_load(answer.body) == [entry]  # JSON is YAML: loaddata reads either
    for bad in ("0", "-1", "x", "99999999999"):
        refused = await service.fetch(f"api/v1/esap/fixture?pk={bad}", token="portal-token")
        assert check_openapi("GET", "/api/v1/esap/fixture", refused)["error"]["code"] == (
            "invalid_pk"
        )
    assert (await service.fetch("api/v1/esap/fixture")).code == 401
