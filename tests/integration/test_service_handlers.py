"""The advertising service in-process: every route, ETag/304, every error, the OpenAPI shapes.

The app is the real one (:func:`esap_spawner.service.app.make_app`) over a real site file,
a real :class:`~esap_spawner.capacity.model.ClusterModel` fed nodes and pods by hand, and the
static-token strategy that ``esap-spawner service --token-file`` uses. Every answer is
checked against the status codes and schemas that ``openapi.json`` documents.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from tornado.httpclient import HTTPResponse

from esap_spawner.capacity.model import ClusterModel
from esap_spawner.service.auth import StaticTokenAuth
from esap_spawner.service.hub_version import installed_query_style
from tests.harness.openapi import OPENAPI, REGISTRY, check_openapi
from tests.harness.service import PREFIX, SITE_YAML, Service, ServiceFactory, server_pod

pytestmark = pytest.mark.integration


def test_openapi_document_is_valid_openapi_3_1() -> None:
    from openapi_spec_validator import validate

    assert OPENAPI["openapi"].startswith("3.1")
    validate(OPENAPI)  # the OpenAPI 3.1 schema, $refs resolved
    # every component schema is a valid JSON Schema 2020-12 document
    for schema in OPENAPI["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    # every $ref resolves
    refs: list[str] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            if "$ref" in obj:
                refs.append(obj["$ref"])
            for value in obj.values():
                walk(value)
        elif isinstance(obj, list):
            for value in obj:
                walk(value)

    walk(OPENAPI)
    resolver = REGISTRY.resolver("urn:esap-openapi")
    for ref in refs:
        resolver.lookup(f"urn:esap-openapi{ref}")


# -- the app ---------------------------------------------------------------------------


# -- facility --------------------------------------------------------------------------


async def test_facility(service: Service) -> None:
    r = await service.fetch("api/v1/facility", token="alice-token")
    body = check_openapi("GET", "/api/v1/facility", r)
    assert body["name"] == "Test Hub"
    assert body["facilitytype"] == "jupyterhub"
    # what ESAP stores: its Deploy appends v2/git/... and lands on this service
    assert body["url"] == "https://hub.example.org/services/esap/"
    assert body["hub_url"] == "https://hub.example.org/"
    assert body["keywords"] == ["radio", "gpu"]
    assert body["links"]["profiles"] == f"{PREFIX}api/v1/profiles"
    assert body["links"]["profile"] == f"{PREFIX}api/v1/profiles/{{slug}}"
    assert body["links"]["options"] == f"{PREFIX}api/v1/options"
    # the installed JupyterHub's query style (opt-profile= on 6, profile= on 5: make test-min)
    opt = "opt-" if installed_query_style() == "opt" else ""
    assert body["spawn_url_template"] == (
        f"https://hub.example.org/hub/spawn?{opt}profile={{profile}}&{opt}dataset={{did}}"
        f"&{opt}workflow={{workflow}}&{opt}ref={{ref}}&{opt}filepath={{filepath}}"
    )
    assert body["launch_url_template"] == (
        "https://hub.example.org/services/esap/v2/git/{repo}/{ref}?urlpath=lab/tree/{filepath}"
    )
    assert r.headers["Cache-Control"] == "no-cache"
    assert r.headers["Content-Type"].startswith("application/json")


# -- profiles and visibility -----------------------------------------------------------


async def test_portal_sees_every_profile_with_groups(service: Service) -> None:
    r = await service.fetch("api/v1/profiles", token="portal-token")
    body = check_openapi("GET", "/api/v1/profiles", r)
    assert [p["slug"] for p in body["profiles"]] == ["small", "gpu"]
    small, gpu = body["profiles"]
    assert small["allowed_groups"] == []
    assert gpu["allowed_groups"] == ["radio"]
    assert body["stale"] is False
    assert body["as_of"] == "2026-01-01T00:00:00.000Z"
    assert "message" not in body
    opt = "opt-" if installed_query_style() == "opt" else ""
    assert small["spawn_url"] == f"https://hub.example.org/hub/spawn?{opt}profile=small"
    assert small["resources"] == {
        "cpu": {"guarantee": 1.0, "limit": 2.0},
        "memory": {
            "guarantee": {"bytes": 2_000_000_000, "quantity": "2G"},
            "limit": {"bytes": 4_000_000_000, "quantity": "4G"},
        },
        "gpu": {"count": 0, "resource": None, "model": None},
    }
    assert gpu["resources"]["gpu"] == {"count": 1, "resource": "nvidia.com/gpu", "model": "A100"}
    assert gpu["resources"]["memory"]["guarantee"] == {"bytes": 16 * 2**30, "quantity": "16Gi"}
    assert gpu["hardware_capabilities"] == ["gpu"]


async def test_availability_comes_from_the_model(service: Service) -> None:
    r = await service.fetch("api/v1/profiles", token="portal-token")
    small, gpu = json.loads(r.body)["profiles"]
    # small (1 CPU, 2G): cpu-1 has 7 CPU / 30G free -> 7, cpu-2 4, gpu-1 16; quota 5 - 1 = 4
    assert small["availability"] == {
        "status": "available",
        "can_start_now": 4,
        "fast_start": 4,
        "running": 1,
        "max_servers": 5,
        "estimated_start_seconds": None,
    }
    # gpu: only gpu-1 has the label and 2 GPUs -> 2, at most the site's default 2: limited
    assert gpu["availability"]["status"] == "limited"
    assert gpu["availability"]["can_start_now"] == 2
    assert gpu["availability"]["fast_start"] == 0
    assert gpu["availability"]["max_servers"] is None


async def test_user_in_the_group_sees_the_restricted_profile_without_groups(
    service: Service,
) -> None:
    r = await service.fetch("api/v1/profiles", token="alice-token")
    body = check_openapi("GET", "/api/v1/profiles", r)
    assert [p["slug"] for p in body["profiles"]] == ["small", "gpu"]
    assert all("allowed_groups" not in p for p in body["profiles"])


async def test_user_outside_the_group_sees_only_what_they_may_start(service: Service) -> None:
    r = await service.fetch("api/v1/profiles", token="bob-token")
    body = check_openapi("GET", "/api/v1/profiles", r)
    assert [p["slug"] for p in body["profiles"]] == ["small"]
    r = await service.fetch("api/v1/profiles/gpu", token="bob-token")
    error = check_openapi("GET", "/api/v1/profiles/{slug}", r)
    assert r.code == 404
    assert error["error"]["code"] == "unknown_profile"


async def test_admin_user_sees_every_profile(service: Service) -> None:
    portal = await service.fetch("api/v1/profiles", token="portal-token")
    r = await service.fetch("api/v1/profiles", token="root-token")
    body = check_openapi("GET", "/api/v1/profiles", r)
    assert [p["slug"] for p in body["profiles"]] == ["small", "gpu"]
    # the same profiles as the portal's answer, but without the groups (not a cached copy)
    assert all("allowed_groups" not in p for p in body["profiles"])
    assert r.headers["ETag"] != portal.headers["ETag"]


async def test_one_profile(service: Service) -> None:
    r = await service.fetch("api/v1/profiles/gpu", token="portal-token")
    body = check_openapi("GET", "/api/v1/profiles/{slug}", r)
    assert body["profile"]["slug"] == "gpu"
    assert body["profile"]["allowed_groups"] == ["radio"]
    assert body["stale"] is False
    r = await service.fetch("api/v1/profiles/nope", token="portal-token")
    assert check_openapi("GET", "/api/v1/profiles/{slug}", r)["error"]["code"] == "unknown_profile"


async def test_unsynced_model_answers_unknown_and_says_so(service_factory: ServiceFactory) -> None:
    service = await service_factory(synced=False)
    r = await service.fetch("api/v1/profiles", token="portal-token")
    body = check_openapi("GET", "/api/v1/profiles", r)
    assert body["stale"] is True
    assert body["as_of"] is None
    assert "not synced" in body["message"]
    for profile in body["profiles"]:
        assert profile["availability"]["status"] == "unknown"
        assert profile["availability"]["can_start_now"] is None


async def test_no_cluster_note_is_shown(service_factory: ServiceFactory) -> None:
    note = "no Kubernetes configuration found: availability is 'unknown'"
    service = await service_factory(synced=False, cluster_note=note)
    r = await service.fetch("api/v1/profiles/small", token="portal-token")
    body = check_openapi("GET", "/api/v1/profiles/{slug}", r)
    assert body["message"] == note
    r = await service.fetch("health", token="prom-token")
    health = check_openapi("GET", "/health", r)
    assert health["checks"]["cluster"] == {"ok": True, "message": note}


async def test_stale_view_is_reported(service: Service) -> None:
    service.model.watch_down("pods")
    service.clock.now += 120
    r = await service.fetch("api/v1/profiles", token="portal-token")
    body = check_openapi("GET", "/api/v1/profiles", r)
    assert body["stale"] is True
    assert "stale" in body["message"]
    r = await service.fetch("health", token="prom-token")
    health = check_openapi("GET", "/health", r)
    assert r.code == 503
    assert r.headers["Retry-After"] == "30"
    assert health["checks"]["cluster"]["ok"] is False


# -- ETag / 304 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, template",
    [
        ("api/v1/facility", "/api/v1/facility"),
        ("api/v1/profiles", "/api/v1/profiles"),
        ("api/v1/profiles/small", "/api/v1/profiles/{slug}"),
        ("api/v1/openapi.json", "/api/v1/openapi.json"),
        ("health", "/health"),
        ("metrics", "/metrics"),
    ],
)
async def test_etag_and_304(service: Service, path: str, template: str) -> None:
    token = "portal-token"
    r = await service.fetch(path, token=token)
    assert r.code == 200
    etag = r.headers["ETag"]
    r2 = await service.fetch(path, token=token, headers={"If-None-Match": etag})
    if path == "metrics":  # counters move between two scrapes: a new body, a new tag
        assert r2.code == 200
        assert r2.headers["ETag"] != etag
        return
    assert r2.code == 304
    check_openapi("GET", template, r2)
    r3 = await service.fetch(path, token=token, headers={"If-None-Match": '"something-else"'})
    assert r3.code == 200


async def test_etag_changes_when_availability_changes(service: Service) -> None:
    r = await service.fetch("api/v1/profiles", token="portal-token")
    etag = r.headers["ETag"]
    service.clock.now += 5
    service.model.apply("ADDED", server_pod("u2", "cpu-2", "small", cpu="1", memory="2G"))
    r2 = await service.fetch(
        "api/v1/profiles", token="portal-token", headers={"If-None-Match": etag}
    )
    assert r2.code == 200
    body = json.loads(r2.body)
    assert body["profiles"][0]["availability"]["running"] == 2
    assert body["as_of"] == "2026-01-01T00:00:05.000Z"


async def test_different_callers_get_different_etags(service: Service) -> None:
    portal = await service.fetch("api/v1/profiles", token="portal-token")
    bob = await service.fetch("api/v1/profiles", token="bob-token")
    assert portal.headers["ETag"] != bob.headers["ETag"]
    r = await service.fetch(
        "api/v1/profiles", token="bob-token", headers={"If-None-Match": portal.headers["ETag"]}
    )
    assert r.code == 200


@pytest.mark.parametrize("path", ["api/v1/facility", "api/v1/profiles", "api/v1/profiles/small"])
async def test_gzip_for_clients_that_accept_it(service: Service, path: str) -> None:
    url = f"http://127.0.0.1:{service.port}{PREFIX}{path}"
    auth = {"Authorization": "token portal-token"}
    plain = await service.client.fetch(url, headers=auth, decompress_response=False)
    assert "Content-Encoding" not in plain.headers
    assert plain.headers["Vary"] == "Accept-Encoding"
    zipped = await service.client.fetch(
        url, headers={**auth, "Accept-Encoding": "gzip"}, decompress_response=False
    )
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(zipped.body) == plain.body
    assert zipped.headers["ETag"] != plain.headers["ETag"]
    again = await service.client.fetch(
        url,
        headers={**auth, "Accept-Encoding": "gzip", "If-None-Match": zipped.headers["ETag"]},
        decompress_response=False,
        raise_error=False,
    )
    assert again.code == 304 and "Content-Encoding" not in again.headers
    refused = await service.client.fetch(
        url, headers={**auth, "Accept-Encoding": "gzip;q=0"}, decompress_response=False
    )
    assert refused.body == plain.body


class CountingAuth:
    """The token file's strategy, counting how often it is asked."""

    def __init__(self, inner: StaticTokenAuth) -> None:
        self.inner = inner
        self.asked = 0

    async def authenticate(self, token: str) -> Any:
        self.asked += 1
        return await self.inner.authenticate(token)


async def test_a_token_is_checked_once_per_cache_age(
    service_factory: ServiceFactory, token_file: Path
) -> None:
    auth = CountingAuth(StaticTokenAuth.from_file(token_file))
    service = await service_factory(auth=auth)
    for _ in range(3):
        assert (await service.fetch("api/v1/profiles", token="alice-token")).code == 200
    assert auth.asked == 1
    for _ in range(2):  # refusals are not remembered: asked each time
        assert (await service.fetch("api/v1/profiles", token="no-such-token")).code == 401
    assert auth.asked == 3
    # a remembered token still goes through the scope check of each route
    assert (await service.fetch("api/v1/profiles", token="carol-token")).code == 403
    assert (await service.fetch("api/v1/profiles", token="carol-token")).code == 403
    assert auth.asked == 4


# -- auth errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, template",
    [
        ("api/v1/facility", "/api/v1/facility"),
        ("api/v1/profiles", "/api/v1/profiles"),
        ("api/v1/profiles/small", "/api/v1/profiles/{slug}"),
    ],
)
async def test_no_token_is_401(service: Service, path: str, template: str) -> None:
    r = await service.fetch(path)
    body = check_openapi("GET", template, r)
    assert r.code == 401
    assert body["error"]["code"] == "missing_token"
    assert r.headers["WWW-Authenticate"].startswith("token")


async def test_unknown_token_is_401(service: Service) -> None:
    r = await service.fetch("api/v1/profiles", token="no-such-token")
    assert check_openapi("GET", "/api/v1/profiles", r)["error"]["code"] == "invalid_token"
    assert r.code == 401


async def test_malformed_authorization_header_is_401(service: Service) -> None:
    r = await service.fetch("api/v1/profiles", headers={"Authorization": "Basic abc:def"})
    assert r.code == 401
    body = check_openapi("GET", "/api/v1/profiles", r)
    assert "Authorization header" in body["error"]["message"]


async def test_bearer_token_is_accepted(service: Service) -> None:
    r = await service.fetch("api/v1/profiles", headers={"Authorization": "Bearer bob-token"})
    assert r.code == 200


async def test_wrong_scope_is_403(service: Service) -> None:
    for path, template in (
        ("api/v1/profiles", "/api/v1/profiles"),
        ("api/v1/facility", "/api/v1/facility"),
    ):
        r = await service.fetch(path, token="carol-token")
        body = check_openapi("GET", template, r)
        assert r.code == 403
        assert body["error"]["code"] == "insufficient_scope"
        assert "custom:esap:read" in body["error"]["message"]
        assert "access:services!service=esap" in body["error"]["message"]
    r = await service.fetch(
        "api/v1/locality", token="carol-token", method="POST", body=json.dumps({"dids": ["a:b"]})
    )
    assert r.code == 403
    check_openapi("POST", "/api/v1/locality", r)


async def test_anonymous_sees_only_unrestricted_profiles(service_factory: ServiceFactory) -> None:
    service = await service_factory(allow_anonymous=True)
    r = await service.fetch("api/v1/profiles")
    body = check_openapi("GET", "/api/v1/profiles", r)
    assert [p["slug"] for p in body["profiles"]] == ["small"]
    r = await service.fetch("api/v1/profiles/gpu")
    assert r.code == 404
    # a wrong token is still refused when anonymous access is on
    r = await service.fetch("api/v1/profiles", token="no-such-token")
    assert r.code == 401
    # anonymous access does not open the metrics
    r = await service.fetch("metrics")
    assert r.code == 401


async def test_no_auth_strategy_refuses_every_token(service_factory: ServiceFactory) -> None:
    service = await service_factory(auth=None)
    r = await service.fetch("api/v1/profiles", token="portal-token")
    assert r.code == 401
    check_openapi("GET", "/api/v1/profiles", r)


class HubDown:
    """An auth strategy whose hub cannot be reached (what HubTokenAuth raises then)."""

    async def authenticate(self, token: str) -> Any:
        from esap_spawner.service.auth import AuthError

        raise AuthError(503, "hub_unavailable", "the hub could not be reached", retry_after=10)


async def test_hub_unreachable_is_503_with_retry_after(service_factory: ServiceFactory) -> None:
    service = await service_factory(auth=HubDown())
    r = await service.fetch("api/v1/profiles", token="portal-token")
    body = check_openapi("GET", "/api/v1/profiles", r)
    assert r.code == 503
    assert r.headers["Retry-After"] == "10"
    assert body["error"]["code"] == "hub_unavailable"


# -- locality --------------------------------------------------------------------------


async def post_locality(
    service: Service, body: Any, *, raw: bool = False, token: str = "alice-token"
) -> HTTPResponse:
    data = body if raw else json.dumps(body)
    return await service.fetch("api/v1/locality", token=token, method="POST", body=data)


async def test_locality_answers_unknown_until_a_catalogue_exists(service: Service) -> None:
    r = await post_locality(service, {"dids": ["lofar:L123456", "ska:obs-2026-01"]})
    body = check_openapi("POST", "/api/v1/locality", r)
    assert r.code == 200
    assert [x["did"] for x in body["results"]] == ["lofar:L123456", "ska:obs-2026-01"]
    for result in body["results"]:
        assert result["status"] == "unknown"
        assert "catalogue" in result["message"]
        assert result["staging_required"] is None


async def test_locality_uses_a_plugged_catalogue(service_factory: ServiceFactory) -> None:
    from esap_spawner.service.interfaces import CheckResult

    class OneLocal:
        async def locality(self, dids: list[str]) -> list[dict[str, Any]]:
            return [
                {
                    "did": d,
                    "status": "local",
                    "files_total": 2,
                    "files_local": 2,
                    "bytes_total": 10,
                    "bytes_local": 10,
                    "local_rses": ["HUB_LOCAL_DISK"],
                    "staging_required": False,
                    "estimated_staging_seconds": 0,
                }
                for d in dids
            ]

        def health(self) -> CheckResult:
            return CheckResult(False, "rucio unreachable for 40 s")

    service = await service_factory(catalogue=OneLocal())
    r = await post_locality(service, {"dids": ["lofar:L1"]})
    body = check_openapi("POST", "/api/v1/locality", r)
    assert body["results"][0]["status"] == "local"
    r = await service.fetch("health", token="portal-token")
    health = check_openapi("GET", "/health", r)
    assert r.code == 503
    assert health["checks"]["catalogue"] == {"ok": False, "message": "rucio unreachable for 40 s"}


class CountingCatalogue:
    """A catalogue that says every DID is local, counting how often it is asked, and
    keeps what it learned for a minute (as RucioCatalogue does by default)."""

    cache_seconds = 60.0

    def __init__(self) -> None:
        self.asked = 0

    async def locality(self, dids: list[str]) -> list[dict[str, Any]]:
        self.asked += 1
        local = {"status": "local", "files_total": 1, "files_local": 1, "bytes_total": 5,
                 "bytes_local": 5, "local_rses": ["HUB_LOCAL_DISK"], "staging_required": False,
                 "estimated_staging_seconds": 0}  # fmt: skip
        return [{"did": d, **local} for d in dids]

    def health(self) -> Any:
        from esap_spawner.service.interfaces import CheckResult

        return CheckResult(True, "counting")


async def test_a_repeat_locality_question_is_answered_from_the_cache(
    service_factory: ServiceFactory,
) -> None:
    catalogue = CountingCatalogue()
    service = await service_factory(catalogue=catalogue)
    later = [0.0]
    service.state.locality_answers.clock = lambda: later[0]
    question = {"dids": ["lofar:L1", "lofar:L2"]}
    first = await post_locality(service, question)
    check_openapi("POST", "/api/v1/locality", first)
    again = await post_locality(service, question)
    assert again.code == 200 and again.body == first.body  # as_of too: the same answer
    assert catalogue.asked == 1
    # another caller, or another question (even the same DIDs in another order): asked
    await post_locality(service, question, token="portal-token")
    await post_locality(service, {"dids": ["lofar:L2", "lofar:L1"]})
    assert catalogue.asked == 3
    # a refused question is never remembered, and a cached answer is not a licence
    for _ in range(2):
        assert (await post_locality(service, {"dids": ["bad"]})).code == 400
    assert (await post_locality(service, question, token="carol-token")).code == 403
    # past the catalogue's own cache lifetime: asked again
    later[0] = 60.0
    assert (await post_locality(service, question)).code == 200
    assert catalogue.asked == 4


async def test_a_catalogue_without_a_cache_is_asked_every_time(
    service_factory: ServiceFactory,
) -> None:
    catalogue = CountingCatalogue()
    catalogue.cache_seconds = 0.0
    service = await service_factory(catalogue=catalogue)
    for _ in range(2):
        await post_locality(service, {"dids": ["lofar:L1"]})
    assert catalogue.asked == 2


@pytest.mark.parametrize(
    "body, raw, code, words",
    [
        ("{not json", True, "malformed_json", "not valid JSON"),
        ("", True, "malformed_json", "not valid JSON"),
        (b"\xff\xfe", True, "malformed_json", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, True, "malformed_json", "nested too deeply"),
        (["lofar:L1"], False, "invalid_body", "JSON object"),
        ({}, False, "missing_field", "'dids'"),
        ({"dids": "lofar:L1"}, False, "invalid_field", "not str"),
        ({"dids": ["lofar:L1"], "extra": 1}, False, "unknown_field", "extra"),
        ({"dids": ["lofar:L1", 5]}, False, "invalid_did", "dids[1]"),
        ({"dids": ["lofar:L1", "no-colon"]}, False, "invalid_did", "dids[1]"),
        ({"dids": [":name"]}, False, "invalid_did", "dids[0]"),
        ({"dids": ["scope:"]}, False, "invalid_did", "dids[0]"),
    ],
)
async def test_locality_bad_input_is_400(
    service: Service, body: Any, raw: bool, code: str, words: str
) -> None:
    r = await post_locality(service, body, raw=raw)
    answer = check_openapi("POST", "/api/v1/locality", r)
    assert r.code == 400
    assert answer["error"]["code"] == code
    assert words in answer["error"]["message"]


async def test_locality_too_many_dids_is_413(service_factory: ServiceFactory) -> None:
    service = await service_factory(max_dids=3)
    r = await post_locality(service, {"dids": [f"s:d{i}" for i in range(3)]})
    assert r.code == 200
    r = await post_locality(service, {"dids": [f"s:d{i}" for i in range(4)]})
    body = check_openapi("POST", "/api/v1/locality", r)
    assert r.code == 413
    assert body["error"]["code"] == "too_many_dids"
    assert "at most 3" in body["error"]["message"]


async def test_locality_needs_a_token(service: Service) -> None:
    r = await service.fetch("api/v1/locality", method="POST", body=json.dumps({"dids": []}))
    assert r.code == 401
    check_openapi("POST", "/api/v1/locality", r)


# -- 404, 405, 500 ---------------------------------------------------------------------


async def test_unknown_route_is_json_404(service: Service) -> None:
    for path in ("api/v2/profiles", "nothing/here", "api/v1/profiles/a/b"):
        r = await service.fetch(path, token="portal-token")
        assert r.code == 404
        assert json.loads(r.body)["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "method, path, template, allow",
    [
        ("POST", "api/v1/profiles", "/api/v1/profiles", "GET"),
        ("DELETE", "api/v1/profiles/small", "/api/v1/profiles/{slug}", "GET"),
        ("PUT", "api/v1/facility", "/api/v1/facility", "GET"),
        ("GET", "api/v1/locality", "/api/v1/locality", "POST"),
        ("POST", "health", "/health", "GET"),
        ("BREW", "metrics", "/metrics", "GET"),
    ],
)
async def test_wrong_method_is_405(
    service: Service, method: str, path: str, template: str, allow: str
) -> None:
    r = await service.fetch(path, token="portal-token", method=method)
    assert r.code == 405
    assert r.headers["Allow"] == allow  # RFC 9110: a 405 names what the route allows
    body = json.loads(r.body)
    assert body["error"]["code"] == "method_not_allowed"
    assert method in body["error"]["message"]
    documented = OPENAPI["paths"][template]
    assert "405" in next(iter(documented.values()))["responses"]


async def test_unexpected_exception_is_generic_json_500(
    service_factory: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(ClusterModel):
        def availability(self, profiles: Any, *, limited_threshold: int = 2) -> Any:
            raise RuntimeError("secret internal detail")

    service = await service_factory()
    service.model.__class__ = Broken
    r = await service.fetch("api/v1/profiles", token="portal-token")
    assert r.code == 500
    body = check_openapi("GET", "/api/v1/profiles", r)
    assert body == {
        "error": {
            "code": "internal_error",
            "message": "internal error; the service logged the details",
        }
    }
    assert "secret" not in r.body.decode()
    assert any("secret internal detail" in str(rec.exc_info) for rec in caplog.records)


# -- openapi, health, metrics ----------------------------------------------------------


# -- the status page at the prefix ----------------------------------------------------------


async def test_status_page_with_a_token_shows_what_the_api_shows(service: Service) -> None:
    r = await service.fetch("", token="bob-token")
    assert r.code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert r.headers["Cache-Control"] == "no-cache"
    page = r.body.decode()
    assert "<h1>Test Hub</h1>" in page
    assert 'data-profile="small"' in page and 'data-profile="gpu"' not in page
    api = json.loads((await service.fetch("api/v1/profiles", token="bob-token")).body)
    small = api["profiles"][0]["availability"]
    row = page.split('data-profile="small"')[1].split("</tr>")[0]
    assert f'<td class="num">{small["can_start_now"]}' in row
    portal = (await service.fetch("", token="portal-token")).body.decode()
    assert 'data-profile="gpu"' in portal and "groups: radio" in portal


async def test_status_page_refusals_are_html(service_factory: ServiceFactory) -> None:
    service = await service_factory()
    r = await service.fetch("")
    assert r.code == 401 and r.headers["Content-Type"].startswith("text/html")
    assert "browsers cannot sign in" in r.body.decode()
    r = await service.fetch("", token="carol-token")
    assert r.code == 403 and "<h1>403</h1>" in r.body.decode()
    open_service = await service_factory(allow_anonymous=True)
    r = await open_service.fetch("")
    assert r.code == 200 and 'data-profile="gpu"' not in r.body.decode()


async def test_the_prefix_without_its_slash_leads_to_the_page(service: Service) -> None:
    url = f"http://127.0.0.1:{service.port}{PREFIX.rstrip('/')}"
    r = await service.client.fetch(url, follow_redirects=False, raise_error=False)
    assert r.code == 301 and r.headers["Location"] == PREFIX


async def test_openapi_is_served_without_a_token(service: Service) -> None:
    r = await service.fetch("api/v1/openapi.json")
    assert r.code == 200
    assert json.loads(r.body) == OPENAPI


async def test_health_all_ok(service: Service) -> None:
    r = await service.fetch("health", token="portal-token")
    body = check_openapi("GET", "/health", r)
    assert r.code == 200
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"site", "cluster", "catalogue"}
    assert "2 profiles" in body["checks"]["site"]["message"]
    assert body["checks"]["cluster"]["message"] == "cluster view synced and current"


async def test_health_site_file_gone(service: Service, site_file: Path) -> None:
    site_file.unlink()
    r = await service.fetch("health", token="prom-token")
    body = check_openapi("GET", "/health", r)
    assert r.code == 503
    assert body["checks"]["site"]["ok"] is False


async def test_metrics_need_a_token_with_the_right_scope(service: Service) -> None:
    r = await service.fetch("metrics")
    assert r.code == 401
    check_openapi("GET", "/metrics", r)
    r = await service.fetch("metrics", token="bob-token")
    assert r.code == 403
    check_openapi("GET", "/metrics", r)
    await service.fetch("api/v1/profiles", token="portal-token")
    r = await service.fetch("metrics", token="prom-token")
    text = check_openapi("GET", "/metrics", r)
    assert r.code == 200
    assert (
        'esap_advertiser_request_duration_seconds_count{code="200",handler="profiles"} 1.0' in text
    )
    assert "esap_cluster_view_age_seconds 0.0" in text
    assert 'esap_profile_available_servers{profile="small"} 4.0' in text
    assert 'esap_profile_running_servers{profile="small"} 1.0' in text


# -- security review findings (issue 15): health details, anonymous locality, body size ----


class FailingCatalogue:
    """A catalogue whose health names a host and an account, as Rucio's does."""

    remote = False

    async def locality(self, dids: list[str]) -> list[dict[str, Any]]:
        raise AssertionError("not asked")

    def health(self) -> Any:
        from esap_spawner.service.interfaces import CheckResult

        return CheckResult(False, "cannot reach rucio.internal:443 as account esap-secret")


async def test_health_tells_only_operators_the_details(
    service_factory: ServiceFactory, site_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 7: anonymous callers (and users) get the status only; the checks' messages
    (site file path, hosts, accounts) go to the logs and to portal or metrics tokens."""
    caplog.set_level(logging.INFO, logger="esap_spawner.service.handlers")
    service = await service_factory(catalogue=FailingCatalogue())
    for token in (None, "alice-token", "carol-token", "no-such-token"):
        r = await service.fetch("health", token=token)
        assert r.code == 503, token
        assert r.headers["Retry-After"] == "30"
        assert check_openapi("GET", "/health", r) == {"status": "failing"}, token
        for secret in (str(site_file), "rucio.internal", "esap-secret"):
            assert secret not in r.body.decode(), (token, secret)
    for token in ("portal-token", "prom-token"):
        r = await service.fetch("health", token=token)
        body = check_openapi("GET", "/health", r)
        assert body["checks"]["catalogue"]["message"].endswith("as account esap-secret")
        assert str(site_file) in body["checks"]["site"]["message"]
    # the failure is logged once when it starts, not on every probe
    failing = [r.getMessage() for r in caplog.records if "fails" in r.getMessage()]
    assert failing == [
        "health check catalogue fails: cannot reach rucio.internal:443 as account esap-secret"
    ]


async def test_health_stays_public_when_the_hub_cannot_check_a_token(
    service_factory: ServiceFactory,
) -> None:
    service = await service_factory(auth=HubDown())
    r = await service.fetch("health", token="portal-token")
    assert (r.code, check_openapi("GET", "/health", r)) == (200, {"status": "ok"})


async def test_anonymous_access_does_not_open_locality(service_factory: ServiceFactory) -> None:
    """Finding 5: --allow-anonymous opens the profiles, never the catalogue's locality."""
    service = await service_factory(allow_anonymous=True)
    body = json.dumps({"dids": ["lofar:L1"]})
    r = await service.fetch("api/v1/locality", method="POST", body=body)
    assert r.code == 401
    assert check_openapi("POST", "/api/v1/locality", r)["error"]["code"] == "missing_token"
    assert r.headers["WWW-Authenticate"] == 'token realm="esap"'
    assert (await post_locality(service, {"dids": ["lofar:L1"]})).code == 200
    assert (await service.fetch("api/v1/profiles")).code == 200


async def raw_post(port: int, headers: list[str], body: bytes) -> tuple[int, dict[str, Any]]:
    """POST the headers and (part of) a body on a plain socket; the status and JSON of the
    answer the service gives WITHOUT waiting for the rest of the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = [f"POST {PREFIX}api/v1/locality HTTP/1.1", "Host: 127.0.0.1", *headers]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        status_line, *lines = answer.decode().split("\r\n")
        fields = dict(line.split(": ", 1) for line in lines if line)
        data = await asyncio.wait_for(reader.readexactly(int(fields["Content-Length"])), 10)
    finally:
        writer.close()
    return int(status_line.split()[1]), json.loads(data)


async def test_a_body_over_the_limit_is_413_before_it_is_read(
    service_factory: ServiceFactory,
) -> None:
    """Finding 6: the Content-Length alone decides, before the body or the token (the rest
    of the body is discarded as it comes: ``test_service_hub.py`` sends it all through the
    hub's proxy)."""
    service = await service_factory(max_body_size=1000)
    status, body = await raw_post(service.port, ["Content-Length: 100000000"], b"{" * 1000)
    assert (status, body["error"]["code"]) == (413, "payload_too_large")
    assert "at most 1000" in body["error"]["message"]
    token = "Authorization: token portal-token"
    status, body = await raw_post(service.port, [token, "Content-Length: 1001"], b"{")
    assert (status, body["error"]["code"]) == (413, "payload_too_large")
    status, body = await raw_post(service.port, [token, "Transfer-Encoding: chunked"], b"5\r\n")
    assert (status, body["error"]["code"]) == (411, "length_required")
    dids = json.dumps({"dids": ["lofar:L1"]}).encode()
    r = await service.fetch("api/v1/locality", token="portal-token", method="POST", body=dids)
    assert r.code == 200


async def test_metrics_opened(service_factory: ServiceFactory) -> None:
    service = await service_factory(metrics_require_auth=False)
    r = await service.fetch("metrics")
    assert r.code == 200
    assert "esap_advertiser_request_duration_seconds_bucket" in r.body.decode()


# -- auth strategies -------------------------------------------------------------------


async def test_hub_unreachable_through_real_hubauth_is_503(
    service_factory: ServiceFactory,
) -> None:
    from jupyterhub.services.auth import HubAuth

    from esap_spawner.service.auth import HubTokenAuth

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    hub_auth = HubAuth(api_url=f"http://127.0.0.1:{closed}/hub/api", api_token="x" * 32)
    service = await service_factory(auth=HubTokenAuth(hub_auth))
    r = await service.fetch("api/v1/profiles", token="some-token")
    body = check_openapi("GET", "/api/v1/profiles", r)
    assert r.code == 503
    assert r.headers["Retry-After"] == "10"
    assert body["error"]["code"] == "hub_unavailable"


@pytest.mark.parametrize(
    "content, words",
    [
        ("{not json", "cannot read the token file"),
        ('{"token": "a"}', "expected a JSON list"),
        ('[{"name": "x"}]', "entry 0: 'token' must be a non-empty string"),
        ('[{"token": "a"}, {"token": "a"}]', "entry 1: the same token is listed twice"),
        ('[{"token": "a", "scopes": "custom:esap:read"}]', "'scopes' must be a list"),
    ],
)
def test_bad_token_files_are_refused(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=words.replace("[", r"\[")):
        StaticTokenAuth.from_file(path)


def test_token_from_header() -> None:
    from esap_spawner.service.auth import AuthError, token_from_header

    assert token_from_header(None) is None
    assert token_from_header("  ") is None
    assert token_from_header("token abc") == "abc"
    assert token_from_header("Bearer abc") == "abc"
    assert token_from_header("TOKEN abc ") == "abc"
    for bad in ("abc", "Basic abc", "token a b", "token"):
        with pytest.raises(AuthError) as info:
            token_from_header(bad)
        assert info.value.status == 401


def test_caller_from_model_scopes() -> None:
    from esap_spawner.service.auth import caller_from_model

    portal = caller_from_model(
        {"kind": "service", "name": "p", "scopes": ["custom:esap:read"]}, service_name="esap"
    )
    assert portal.kind == "portal"
    user = caller_from_model(
        {"name": "a", "groups": ["g"], "scopes": ["access:services!service=esap"]},
        service_name="esap",
    )
    assert (user.kind, user.groups) == ("user", frozenset({"g"}))
    everything = caller_from_model(
        {"name": "a", "scopes": ["access:services"]}, service_name="esap"
    )
    assert everything.kind == "user"
    other_service = caller_from_model(
        {"name": "a", "scopes": ["access:services!service=other"]}, service_name="esap"
    )
    assert other_service.kind == "other"
    renamed = caller_from_model(
        {"name": "a", "scopes": ["access:services!service=esap2"]}, service_name="esap2"
    )
    assert renamed.kind == "user"


# -- the program and its command line --------------------------------------------------


def test_service_takes_its_place_from_the_hub_environment(
    monkeypatch: pytest.MonkeyPatch, site_file: Path, tmp_path: Path
) -> None:
    from esap_spawner.service.app import ESAPService

    monkeypatch.setenv("JUPYTERHUB_SERVICE_URL", "http://127.0.0.2:10101")
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/services/esap/")
    monkeypatch.setenv("JUPYTERHUB_SERVICE_NAME", "esap")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "a" * 32)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.chdir(tmp_path)  # the default database, sqlite:///esap.sqlite, lands here
    service = ESAPService(site_file=str(site_file))
    assert (service.ip, service.port, service.prefix) == ("127.0.0.2", 10101, "/services/esap/")
    app, watch = service.build()
    state = app.settings["esap"]
    assert watch is False
    assert state.cluster_note is not None and "no Kubernetes configuration" in state.cluster_note
    assert type(state.auth).__name__ == "HubTokenAuth"
    assert state.limited_threshold == 2  # the site file's default
    assert state.max_dids == 1000


def test_kube_config_available(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from esap_spawner.service.app import kube_config_available

    config = tmp_path / "kubeconfig"
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    assert kube_config_available() is False
    config.write_text("apiVersion: v1\n")
    assert kube_config_available(str(config)) is True
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'absent'}:{config}")
    assert kube_config_available() is True


# -- a real catalogue behind the locality route ----------------------------------------


def static_site(tmp_path: Path) -> Any:
    """The test site with a static catalogue over a folder tree in ``tmp_path``."""
    from esap_spawner.site.model import parse_site

    archive = tmp_path / "archive"
    (archive / "lofar" / "L123456").mkdir(parents=True)
    (archive / "lofar" / "L123456" / "a.ms").write_bytes(b"x" * 1000)
    (archive / "lofar" / "L123456" / "b.ms").write_bytes(b"y" * 24)
    text = (
        SITE_YAML
        + f"""
data:
  catalogue: static
  static:
    volume: {{hostPath: {{path: {archive}}}}}
    mount_path: {archive}
    datasets:
      - {{did: "lofar:L123456", path: lofar/L123456}}
      - {{did: "lofar:gone", path: lofar/gone}}
"""
    )
    return parse_site(text, source="static-site")


async def test_locality_from_a_static_catalogue(
    service_factory: ServiceFactory, tmp_path: Path
) -> None:
    from esap_spawner.service.catalogue import CatalogueLocality, locality_backend

    catalogue = locality_backend(static_site(tmp_path))
    assert isinstance(catalogue, CatalogueLocality)
    service = await service_factory(catalogue=catalogue)
    r = await post_locality(
        service, {"dids": ["lofar:L123456", "lofar:nope", "lofar:L123456", "lofar:gone"]}
    )
    body = check_openapi("POST", "/api/v1/locality", r)
    by_did = {x["did"]: x for x in body["results"]}
    assert [x["did"] for x in body["results"]] == ["lofar:L123456", "lofar:nope", "lofar:gone"]
    local = by_did["lofar:L123456"]
    assert (local["status"], local["files_total"], local["bytes_total"]) == ("local", 2, 1024)
    assert local["staging_required"] is False
    assert by_did["lofar:nope"]["status"] == "not_found"
    assert by_did["lofar:gone"]["status"] in ("unknown", "not_found")
    text = await scrape(service)
    assert catalogue_calls(text) == {"success": 1}
    total = 'esap_catalogue_request_duration_seconds_sum{operation="locality",status="success"}'
    sums = [line for line in text.splitlines() if line.startswith(total)]
    assert len(sums) == 1 and 0 < float(sums[0].split()[-1]) < 10


@pytest.mark.parametrize("did", ["..:d", ".:d", "lofar:..", "-x:d"])
async def test_a_did_the_catalogue_would_refuse_is_400_not_500(
    service_factory: ServiceFactory, tmp_path: Path, did: str
) -> None:
    """The body's DIDs are checked with the catalogue's own grammar (they once disagreed:
    the scope '..' passed the handler's check and the catalogue's refusal became a 500)."""
    from esap_spawner.service.catalogue import catalogue_from_site

    service = await service_factory(catalogue=catalogue_from_site(static_site(tmp_path)))
    r = await post_locality(service, {"dids": ["lofar:L123456", did]})
    body = check_openapi("POST", "/api/v1/locality", r)
    assert r.code == 400, body
    assert body["error"]["code"] == "invalid_did"
    assert body["error"]["message"].startswith("dids[1]: ")


async def test_catalogue_that_cannot_answer_is_503(service_factory: ServiceFactory) -> None:
    from esap_spawner.data.catalogue import CatalogueUnavailable
    from esap_spawner.data.catalogue.static import StaticCatalogue
    from esap_spawner.service.catalogue import CatalogueLocality

    class Unreachable(StaticCatalogue):
        async def locality(self, dids: Any) -> Any:
            raise CatalogueUnavailable("rucio.example.org did not answer within 10 s")

    catalogue = CatalogueLocality(Unreachable(root="/nonexistent", mount_path="/archive"))
    service = await service_factory(catalogue=catalogue)
    r = await post_locality(service, {"dids": ["lofar:L1"]})
    body = check_openapi("POST", "/api/v1/locality", r)
    assert r.code == 503
    assert r.headers["Retry-After"] == "30"
    assert body["error"]["code"] == "catalogue_unavailable"
    assert "did not answer" in body["error"]["message"]
    assert catalogue_calls(await scrape(service)) == {"unavailable": 1}


def catalogue_calls(metrics_text: str) -> dict[str, int]:
    """Counts of locality calls by status from a scrape (zero counts left out)."""
    prefix = 'esap_catalogue_request_duration_seconds_count{operation="locality",status="'
    counts = {}
    for line in metrics_text.splitlines():
        if line.startswith(prefix):
            status, value = line[len(prefix) :].split('"} ')
            if float(value):
                counts[status] = int(float(value))
    return counts


async def scrape(service: Service) -> str:
    r = await service.fetch("metrics", token="prom-token")
    assert r.code == 200
    return str(r.body.decode())


async def test_a_catalogue_that_fails_is_timed_as_failure(
    service_factory: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    from esap_spawner.service.interfaces import CheckResult

    class Broken:
        async def locality(self, dids: list[str]) -> list[dict[str, Any]]:
            raise RuntimeError("a bug in the catalogue client")

        def health(self) -> CheckResult:
            return CheckResult(True, "fine")

    service = await service_factory(catalogue=Broken())
    r = await post_locality(service, {"dids": ["lofar:L1"]})
    assert r.code == 500
    assert catalogue_calls(await scrape(service)) == {"failure": 1}


async def test_no_catalogue_is_not_timed(service: Service) -> None:
    r = await post_locality(service, {"dids": ["lofar:L1"]})
    assert r.code == 200
    text = await scrape(service)
    assert catalogue_calls(text) == {}
    # every label value is pre-created, so dashboards see zeros rather than gaps
    assert (
        'esap_catalogue_request_duration_seconds_count{operation="locality",status="success"} 0.0'
        in text
    )


async def test_catalogue_that_cannot_be_built_is_reported(
    service_factory: ServiceFactory, tmp_path: Path
) -> None:
    from esap_spawner.service.catalogue import BrokenCatalogue, locality_backend

    site = static_site(tmp_path)
    broken_data = type(site.data)(catalogue="static", static=None)  # no data.static section
    catalogue = locality_backend(type(site)(facility=site.facility, profiles=site.profiles,
                                               data=broken_data))  # fmt: skip
    assert isinstance(catalogue, BrokenCatalogue)
    service = await service_factory(catalogue=catalogue)
    r = await post_locality(service, {"dids": ["lofar:L1"]})
    body = check_openapi("POST", "/api/v1/locality", r)
    assert body["results"][0]["status"] == "unknown"
    assert "could not be set up" in body["results"][0]["message"]
    r = await service.fetch("health", token="portal-token")
    assert r.code == 503
    assert check_openapi("GET", "/health", r)["checks"]["catalogue"]["ok"] is False


def test_no_catalogue_in_the_site_file_means_none() -> None:
    from esap_spawner.service.catalogue import locality_backend
    from esap_spawner.service.interfaces import NoCatalogue
    from esap_spawner.site.model import parse_site

    assert isinstance(locality_backend(parse_site(SITE_YAML)), NoCatalogue)
