"""HTTP handlers of the advertising service (routes under the service prefix).

=========================  ===========================================================
``GET api/v1/facility``    the facility (ESAP fields, links, spawn deep-link template)
``GET api/v1/profiles``    visible profiles with live availability, ``as_of``, ``stale``
``GET api/v1/profiles/X``  one profile; 404 when unknown or not visible to the caller
``POST api/v1/locality``   ``{"dids": [...]}`` -> one locality result per DID
``GET api/v1/openapi.json`` the OpenAPI 3.1 document (public)
``GET health``             named checks (public); 503 + Retry-After when one fails
``GET metrics``            Prometheus text; needs a token unless opened
=========================  ===========================================================

Every answer is JSON (metrics excepted) with ``Cache-Control: no-cache``; every 200 GET
carries an ``ETag`` computed from its body, and a matching ``If-None-Match`` gets 304
(tornado's ``RequestHandler.finish`` does both). Errors are
``{"error": {"code": ..., "message": ...}}``; anything unexpected is logged and becomes a
500 with a generic message. No handler waits for Kubernetes: answers come from the cached
cluster view.

The facility and profiles routes write answers prepared when the cluster view changes
(:mod:`esap_spawner.service.answers`), gzip-compressed for clients that accept it; a
request authenticates (recent tokens from :class:`~esap_spawner.service.auth.CallerCache`),
picks its audience and writes bytes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from http import HTTPStatus
from importlib import resources
from typing import Any

from tornado import web

from esap_spawner.data.did import DidError, parse_did
from esap_spawner.observe.metrics import CatalogueOperation, CatalogueStatus
from esap_spawner.service.answers import Prepared, accepts_gzip
from esap_spawner.service.auth import (
    ANONYMOUS,
    METRICS_SCOPE,
    PORTAL_SCOPE,
    AuthError,
    Caller,
    check_catalogue_access,
    may_operate,
    token_from_header,
)
from esap_spawner.service.bodies import BoundedBody, error_json, implemented_methods
from esap_spawner.service.interfaces import CheckResult, LocalityUnavailable
from esap_spawner.service.state import ServiceState
from esap_spawner.service.views import iso_utc

__all__ = ["ApiError", "load_openapi", "routes"]

log = logging.getLogger(__name__)

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    411: "length_required",
    413: "payload_too_large",
    503: "unavailable",
}


def load_openapi() -> dict[str, Any]:
    """The OpenAPI document shipped in this package."""
    text = resources.files(__package__).joinpath("openapi.json").read_text()
    doc: dict[str, Any] = json.loads(text)
    return doc


class ApiError(web.HTTPError):
    """A refusal the caller should read: status, a stable ``code`` and a sentence."""

    def __init__(
        self, status: int, code: str, message: str, *, retry_after: int | None = None
    ) -> None:
        super().__init__(status, log_message=message.replace("%", "%%"))
        self.code = code
        self.message = message
        self.retry_after = retry_after


class BaseHandler(web.RequestHandler):
    """JSON answers and errors, auth, and per-route metrics."""

    route = "other"
    #: whether ``--allow-anonymous`` opens this route to callers without a token
    anonymous_allowed = True

    @functools.cached_property
    def state(self) -> ServiceState:
        state: ServiceState = self.settings["esap"]
        return state

    def set_default_headers(self) -> None:
        # constant values: stored without set_header's per-call check of the value
        self._headers["Content-Type"] = "application/json; charset=utf-8"
        self._headers["Cache-Control"] = "no-cache"

    def on_finish(self) -> None:
        # tornado's clock (wall time, so never below 0): from the request's start to finish()
        seconds = max(0.0, self.request.request_time())
        self.state.metrics.observe_request(self.route, self.get_status(), seconds)

    def write_json(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(body, separators=(",", ":")))

    def write_prepared(self, answer: Prepared) -> None:
        """Write a prepared answer (gzip when the client accepts it) with its own ETag, or
        304 when ``If-None-Match`` names that tag (tornado computes no tag of its own then)."""
        asked = self.request.headers
        zipped = "Accept-Encoding" in asked and accepts_gzip(asked["Accept-Encoding"])
        # a hex digest and a constant: stored without set_header's check of the value
        self._headers["Etag"] = answer.gzip_etag if zipped else answer.etag
        self._headers["Vary"] = "Accept-Encoding"
        if "If-None-Match" in asked and self.check_etag_header():
            self.set_status(304)
            self.finish()
        elif zipped:
            self.set_header("Content-Encoding", "gzip")
            self.finish(answer.gzip)
        else:
            self.finish(answer.body)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            code, message = exc.code, exc.message
            if exc.retry_after is not None:
                self.set_header("Retry-After", str(exc.retry_after))
        elif status_code >= 500 and status_code != 503:
            # tornado has logged the exception with its traceback; tell the caller nothing
            code, message = "internal_error", "internal error; the service logged the details"
        else:
            code = _STATUS_CODES.get(status_code, "error")
            try:
                message = HTTPStatus(status_code).phrase
            except ValueError:
                message = "error"
            if status_code == 405:
                message = f"method {self.request.method} is not allowed on this route"
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        if status_code == 401:
            self.set_header("WWW-Authenticate", 'token realm="esap"')
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(error_json(code, message))

    @classmethod
    def allowed_methods(cls) -> list[str]:
        """The HTTP methods this route implements (a 405's ``Allow`` header, RFC 9110)."""
        return implemented_methods(cls)

    async def authenticate(self, *, catalogue: bool = True) -> Caller:
        """The caller of this request; raises :class:`ApiError` 401/403/503.

        ``catalogue``: the route shows the catalogue, so the caller needs a catalogue
        scope (or anonymous access must be on, for routes that it opens); else only the
        token's validity is checked.
        """
        state = self.state
        header = self.request.headers.get("Authorization")
        # a header seen recently: its caller, without parsing it or asking anyone
        caller = state.callers.get(header) if header else None
        try:
            if caller is None:
                caller = await self._authenticate_anew(header, catalogue=catalogue)
            if catalogue and caller.kind == "other":
                check_catalogue_access(caller, service_name=state.service_name)
        except AuthError as exc:
            raise ApiError(exc.status, exc.code, exc.message, retry_after=exc.retry_after) from exc
        return caller

    async def _authenticate_anew(self, header: str | None, *, catalogue: bool) -> Caller:
        """The caller of an ``Authorization`` header not seen recently (or of none)."""
        state = self.state
        token = token_from_header(header)
        if token is None or header is None:
            if state.allow_anonymous and catalogue and self.anonymous_allowed:
                return ANONYMOUS
            raise AuthError(
                401,
                "missing_token",
                "send a JupyterHub API token: 'Authorization: token <api-token>'",
            )
        if state.auth is None:
            raise AuthError(401, "invalid_token", "this service accepts no tokens")
        caller = await state.auth.authenticate(token)
        state.callers.put(header, caller)
        return caller


class NotFoundHandler(BaseHandler):
    """Any path outside the routes, any method: a JSON 404."""

    def prepare(self) -> None:
        super().prepare()
        raise ApiError(404, "not_found", f"no such route: {self.request.path}")


class FacilityHandler(BaseHandler):
    route = "facility"

    async def get(self) -> None:
        await self.authenticate()
        self.write_prepared(self.state.facility)


class ProfilesHandler(BaseHandler):
    route = "profiles"

    async def get(self) -> None:
        caller = await self.authenticate()
        answers = self.state.answers
        self.write_prepared(answers.listing(answers.audience(caller)))


class ProfileHandler(BaseHandler):
    route = "profile"

    async def get(self, slug: str) -> None:
        caller = await self.authenticate()
        answers = self.state.answers
        answer = answers.single(answers.audience(caller), slug)
        if answer is None:
            raise ApiError(404, "unknown_profile", f"no profile {slug!r} that this caller may see")
        self.write_prepared(answer)


class LocalityHandler(BoundedBody, BaseHandler):
    """``POST api/v1/locality``: a body above ``max_body_size`` is refused from its
    ``Content-Length`` (:mod:`.bodies`); anonymous access never opens this route (it asks
    the catalogue with the site's account)."""

    route = "locality"
    anonymous_allowed = False

    async def post(self) -> None:
        if self.refused:
            return  # answered already, from the headers
        caller = await self.authenticate()
        # the same question from the same caller within the catalogue's cache lifetime:
        # the same answer (as_of included), without parsing, the catalogue or JSON work
        key = hashlib.sha256(f"{caller.kind}:{caller.name}\n".encode() + self.body).digest()
        answer = self.state.locality_answers.get(key)
        if answer is None:
            answer = await self.answer(self.parse_body())
            self.state.locality_answers.put(key, answer)
        self.finish(answer)

    async def answer(self, dids: list[str]) -> bytes:
        """The answer to a question about ``dids``, from the catalogue (timed)."""
        catalogue = self.state.catalogue
        status = CatalogueStatus.failure  # anything unexpected: a 500, logged by tornado
        started = time.perf_counter()
        try:
            results = await catalogue.locality(dids)
            status = CatalogueStatus.success
        except LocalityUnavailable as exc:
            status = CatalogueStatus.unavailable
            raise ApiError(503, "catalogue_unavailable", str(exc), retry_after=30) from exc
        finally:
            if getattr(catalogue, "remote", True):  # no catalogue configured: nothing to time
                self.state.metrics.observe_catalogue(
                    CatalogueOperation.locality, status, time.perf_counter() - started
                )
        body = {"as_of": iso_utc(time.time()), "results": results}
        return json.dumps(body, separators=(",", ":")).encode()

    def parse_body(self) -> list[str]:
        state = self.state
        try:
            body = json.loads(self.body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from exc
        except RecursionError as exc:  # nested deeper than the parser's stack allows
            raise ApiError(
                400, "malformed_json", "the body is not valid JSON: nested too deeply"
            ) from exc
        if not isinstance(body, dict):
            raise ApiError(
                400, "invalid_body", 'the body must be a JSON object: {"dids": ["scope:name"]}'
            )
        unknown = sorted(set(body) - {"dids"})
        if unknown:
            raise ApiError(400, "unknown_field", f"unknown field(s) in the body: {unknown}")
        if "dids" not in body:
            raise ApiError(400, "missing_field", "the body needs 'dids': a list of 'scope:name'")
        dids = body["dids"]
        if not isinstance(dids, list):
            raise ApiError(
                400,
                "invalid_field",
                f"'dids' must be a list of 'scope:name' strings, not {type(dids).__name__}",
            )
        max_dids = int(state.max_dids or 0)
        if len(dids) > max_dids:
            raise ApiError(
                413,
                "too_many_dids",
                f"{len(dids)} DIDs in one request; at most {max_dids} are accepted",
            )
        for i, did in enumerate(dids):
            try:
                parse_did(did)  # the one grammar: a DID accepted here, the spawner accepts
            except DidError as exc:
                raise ApiError(400, "invalid_did", f"dids[{i}]: {exc}") from None
        return list(dict.fromkeys(dids))  # one result per distinct DID, first position wins


class OpenAPIHandler(BaseHandler):
    route = "openapi"

    def get(self) -> None:
        self.write_json(self.settings["esap_openapi"])


class HealthHandler(BaseHandler):
    """Named checks; 200 when all pass, else 503 with Retry-After (for readiness probes)."""

    route = "health"

    async def get(self) -> None:
        checks = {
            "site": self.site_check(),
            "cluster": self.cluster_check(),
            "catalogue": self.state.catalogue.health(),
        }
        self.log_changes(checks)
        ok = all(c.ok for c in checks.values())
        body: dict[str, Any] = {"status": "ok" if ok else "failing"}
        if await self.may_see_details():
            body["checks"] = {n: {"ok": c.ok, "message": c.message} for n, c in checks.items()}
        if not ok:
            self.set_header("Retry-After", "30")
        self.write_json(body, 200 if ok else 503)

    async def may_see_details(self) -> bool:
        """Whether the caller may read the checks' messages, which name files, hosts and
        accounts: a token with an operator's scope. Anyone else (no token, another token,
        one the hub cannot check now) gets the status alone: health stays public."""
        if not self.request.headers.get("Authorization"):
            return False
        try:
            caller = await self.authenticate(catalogue=False)
        except ApiError:
            return False
        return may_operate(caller)

    def log_changes(self, checks: Mapping[str, CheckResult]) -> None:
        """Log each check that turned failing (with its message) or passing again."""
        seen = self.state.checks_seen
        for name, check in checks.items():
            if seen.get(name) == check.ok:
                continue
            if check.ok:
                if name in seen:
                    log.info("health check %s passes again: %s", name, check.message)
            else:
                log.warning("health check %s fails: %s", name, check.message)
            seen[name] = check.ok

    def site_check(self) -> CheckResult:
        state = self.state
        count = len(state.profiles)
        if state.site_file is None:
            return CheckResult(True, f"{count} profiles (site given in-process)")
        try:
            mtime = os.stat(state.site_file).st_mtime
        except OSError as exc:
            return CheckResult(
                False,
                f"site file {state.site_file} unreadable ({exc.strerror}); "
                "serving the copy loaded at start",
            )
        if state.site_mtime is not None and mtime != state.site_mtime:
            return CheckResult(
                True, f"{count} profiles; {state.site_file} changed since start: restart to apply"
            )
        return CheckResult(True, f"{count} profiles from {state.site_file}")

    def cluster_check(self) -> CheckResult:
        state = self.state
        capacity = state.capacity
        if state.cluster_note:
            return CheckResult(state.cluster_ok, state.cluster_note)
        if not capacity.synced:
            return CheckResult(False, "cluster view not synced yet: availability is 'unknown'")
        age = capacity.view_age_seconds() or 0.0
        if capacity.stale:
            return CheckResult(False, f"cluster view stale: watches down for {age:.0f} s")
        if age > 0:
            return CheckResult(True, f"cluster view synced; a watch reconnecting for {age:.0f} s")
        return CheckResult(True, "cluster view synced and current")


class MetricsHandler(BaseHandler):
    route = "metrics"

    async def get(self) -> None:
        state = self.state
        if state.metrics_require_auth:
            caller = await self.authenticate(catalogue=False)
            if not may_operate(caller):
                raise ApiError(
                    403,
                    "insufficient_scope",
                    f"metrics need a token with {PORTAL_SCOPE!r} or {METRICS_SCOPE!r}",
                )
        state.metrics.set_profile_availability(
            state.capacity.availability(state.profiles, limited_threshold=state.limited_threshold)
        )
        body, content_type = state.metrics.exposition()
        self.set_header("Content-Type", content_type)
        self.finish(body)


def routes(prefix: str) -> list[tuple[str, type[BaseHandler]]]:
    """URL patterns under ``prefix`` (which starts and ends with '/')."""
    api = prefix + "api/v1/"
    return [  # the most asked first: tornado tries the patterns in order
        (api + "profiles", ProfilesHandler),
        (api + "facility", FacilityHandler),
        (api + r"profiles/([^/]+)", ProfileHandler),
        (api + "locality", LocalityHandler),
        (api + "openapi.json", OpenAPIHandler),
        (prefix + "health", HealthHandler),
        (prefix + "metrics", MetricsHandler),
    ]
