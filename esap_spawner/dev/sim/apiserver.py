"""The HTTP face of the simulator: core/v1 REST paths, watches as chunked JSON lines, discovery.

Paths served (``{ns}`` a namespace, ``{res}`` one of :data:`~esap_spawner.dev.sim.store.RESOURCES`):

- ``GET /version``, ``/api``, ``/apis``, ``/api/v1``: enough discovery for kubectl
- ``/api/v1/{res}``: list or watch across namespaces; POST for nodes and namespaces
- ``/api/v1/{res}/{name}[/status]``: nodes and namespaces
- ``/api/v1/namespaces/{ns}/{res}``: list, watch (``watch=true|True|1``), POST
- ``/api/v1/namespaces/{ns}/{res}/{name}``: GET, PUT, PATCH (merge, JSON, strategic), DELETE
- ``/api/v1/namespaces/{ns}/{res}/{name}/status``; ``/api/v1/namespaces/{ns}/pods/{name}/log``

Watches with ``allowWatchBookmarks=true`` get a BOOKMARK after each idle minute and
before a ``timeoutSeconds`` end. Every error is a ``Status`` object. Faults (latency,
failing requests) apply to ``/api/v1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tornado.iostream import StreamClosedError
from tornado.web import Application, RequestHandler

from esap_spawner.dev.sim.errors import ApiError
from esap_spawner.dev.sim.faults import Faults
from esap_spawner.dev.sim.patches import PatchError, apply_patch
from esap_spawner.dev.sim.selectors import (
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from esap_spawner.dev.sim.store import RESOURCES, Store
from esap_spawner.dev.sim.tables import TABLE_RESOURCES, table

__all__ = ["make_app"]

log = logging.getLogger("esap_spawner.dev.sim.apiserver")

VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-esap-sim",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.22",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_SHORT = {
    "pods": ["po"],
    "nodes": ["no"],
    "namespaces": ["ns"],
    "events": ["ev"],
    "persistentvolumeclaims": ["pvc"],
    "services": ["svc"],
    "configmaps": ["cm"],
    "serviceaccounts": ["sa"],
    "resourcequotas": ["quota"],
}
_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
_WITH_STATUS = {
    "pods",
    "nodes",
    "namespaces",
    "persistentvolumeclaims",
    "services",
    "resourcequotas",
}
_TRUE = {"true", "True", "1"}
BOOKMARK_SECONDS = 60.0  # an idle watch that allows bookmarks gets one this often

LogLookup = Callable[[str, str], Path | None]


def _resource_list() -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for name, (kind, namespaced) in RESOURCES.items():
        resources.append(
            {
                "name": name,
                "singularName": kind.lower(),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": _VERBS,
                "shortNames": _SHORT.get(name, []),
            }
        )
        if name in _WITH_STATUS:
            resources.append(
                {"name": f"{name}/status", "singularName": "", "namespaced": namespaced,
                 "kind": kind, "verbs": ["get", "patch", "update"]}
            )  # fmt: skip
    resources.append(
        {
            "name": "pods/log",
            "singularName": "",
            "namespaced": True,
            "kind": "Pod",
            "verbs": ["get"],
        }
    )
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1",
            "resources": resources}  # fmt: skip


class _Base(RequestHandler):
    def initialize(self, store: Store, faults: Faults, logs: LogLookup) -> None:
        self.store = store
        self.faults = faults
        self.logs = logs

    def check_xsrf_cookie(self) -> None:  # an API server, not a browser app
        return None

    def send_json(self, body: Any, code: int = 200) -> None:
        self.set_status(code)
        self.set_header("Content-Type", "application/json")
        self.finish(body if isinstance(body, bytes) else json.dumps(body).encode())

    def send_error_status(self, error: ApiError) -> None:
        if error.code == 429:
            self.set_header("Retry-After", "1")
        self.send_json(error.status(), error.code)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = ApiError(status_code, "InternalError", self._reason or "internal error")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(error.status()))


class DiscoveryHandler(_Base):
    def get(self, what: str) -> None:
        host = self.request.host
        bodies: dict[str, Any] = {
            "version": VERSION,
            "api": {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
            },
            "apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
            "api/v1": _resource_list(),
        }
        self.send_json(bodies[what.strip("/")])


class ApiHandler(_Base):
    """Every ``/api/v1/...`` request: parse the path, apply faults, call the store."""

    async def prepare(self) -> None:
        try:
            await self.faults.before_request()
        except ApiError as error:
            self.send_error_status(error)

    def _route(self, path: str) -> tuple[str, str | None, str | None, str | None]:
        """-> (resource, namespace, name, subresource); namespace None = cluster scope."""
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 3 and parts[0] == "namespaces" and parts[2] not in ("status", "finalize"):
            ns, rest = parts[1], parts[2:]
            resource = rest[0]
            self.store.check_resource(resource, ns)
            name = rest[1] if len(rest) > 1 else None
            sub = rest[2] if len(rest) > 2 else None
            if len(rest) > 3:
                raise ApiError.not_found_resource(path)
            return resource, ns, name, sub
        if not parts or len(parts) > 3:
            raise ApiError.not_found_resource(path)
        resource = parts[0]
        self.store.check_resource(resource)
        name = parts[1] if len(parts) > 1 else None
        if name is not None and RESOURCES[resource][1]:
            raise ApiError.not_found_resource(path)
        return resource, None, name, parts[2] if len(parts) > 2 else None

    def _body(self) -> Any:
        try:
            return json.loads(self.request.body or b"null")
        except ValueError as exc:
            raise ApiError.bad_request(f"the request body is not JSON: {exc}") from None

    async def _dispatch(self, method: str, path: str) -> None:
        if self._finished:
            return
        try:
            resource, ns, name, sub = self._route(path)
            await self._serve(method, resource, ns, name, sub)
        except ApiError as error:
            self.send_error_status(error)
        except (SelectorError, PatchError) as error:
            code = getattr(error, "code", 400)
            reason = {400: "BadRequest", 415: "UnsupportedMediaType"}.get(code, "Invalid")
            self.send_error_status(ApiError(code, reason, str(error)))

    async def _serve(
        self, method: str, resource: str, ns: str | None, name: str | None, sub: str | None
    ) -> None:
        store = self.store
        key_ns = ns if ns is not None else ""
        if name is None:
            if method == "GET":
                if self.get_query_argument("watch", "") in _TRUE:
                    await self._watch(resource, ns)
                else:
                    self._list(resource, ns)
                return
            if method == "POST":
                if RESOURCES[resource][1] and ns is None:
                    raise ApiError(405, "MethodNotAllowed", "create needs a namespace")
                self.send_json(store.create(resource, key_ns, self._body()), 201)
                return
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")
        if sub == "log" and resource == "pods" and method == "GET":
            self._pod_log(key_ns, name)
            return
        if sub not in (None, "status"):
            raise ApiError.not_found_resource(f"{resource}/{sub}")
        if method == "GET" and sub is None and self._wants_table(resource):
            self._send_table(resource, [store.get(resource, key_ns, name)])
        elif method == "GET":
            self.send_json(store.entry_json(resource, key_ns, name))
        elif method in ("PUT", "PATCH"):
            old = store.get(resource, key_ns, name)
            if method == "PUT":
                new = self._body()
                if not isinstance(new, dict):
                    raise ApiError.bad_request("the body must be a JSON object")
            else:
                content_type = self.request.headers.get("Content-Type", "")
                new = apply_patch(old, self._body(), content_type)
            if sub == "status":
                new = {**old, "status": new.get("status", {})}
                new["metadata"] = {**old["metadata"], **_rv_only(new)}
            elif resource in _WITH_STATUS:
                new["status"] = old.get("status", {})
            self.send_json(store.update(resource, key_ns, name, new))
        elif method == "DELETE":
            self.send_json(store.delete(resource, key_ns, name, self._grace()))
        else:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")

    def _grace(self) -> int | None:
        raw = self.get_query_argument("gracePeriodSeconds", None)
        body = self._body() if self.request.body else None
        if raw is None and isinstance(body, dict) and body.get("gracePeriodSeconds") is not None:
            raw = str(body["gracePeriodSeconds"])
        if raw is None:
            return None
        try:
            return max(int(raw), 0)
        except ValueError:
            raise ApiError.bad_request(f"invalid gracePeriodSeconds {raw!r}") from None

    def _selectors(self) -> tuple[Any, Any]:
        labels = parse_label_selector(self.get_query_argument("labelSelector", None))
        fields = parse_field_selector(self.get_query_argument("fieldSelector", None))
        return labels, fields

    def _wants_table(self, resource: str) -> bool:
        return resource in TABLE_RESOURCES and "as=Table" in self.request.headers.get("Accept", "")

    def _send_table(self, resource: str, objects: list[dict[str, Any]]) -> None:
        full = self.get_query_argument("includeObject", "") == "Object"
        self.send_json(table(resource, objects, str(self.store.rv), full))

    def _list(self, resource: str, ns: str | None) -> None:
        labels, fields = self._selectors()
        if self._wants_table(resource):
            entries = self.store.entries(resource, ns, labels, fields)
            self._send_table(resource, [e.obj for e in entries])
            return
        items = b",".join(e.json for e in self.store.entries(resource, ns, labels, fields))
        kind = RESOURCES[resource][0] + "List"
        head = json.dumps(
            {"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": str(self.store.rv)}}
        ).encode()
        self.send_json(head[:-1] + b',"items":[' + items + b"]}")

    def _pod_log(self, ns: str, name: str) -> None:
        self.store.get("pods", ns, name)
        path = self.logs(ns, name)
        self.set_header("Content-Type", "text/plain")
        self.finish(path.read_bytes() if path is not None and path.exists() else b"")

    async def _watch(self, resource: str, ns: str | None) -> None:
        labels, fields = self._selectors()
        timeout = self.get_query_argument("timeoutSeconds", None)
        deadline = time.monotonic() + (float(timeout) if timeout else 1800.0)
        self.set_header("Content-Type", "application/json")
        try:
            watcher = self.store.watch(
                resource, ns, labels, fields, self.get_query_argument("resourceVersion", None)
            )
        except ApiError as error:
            if error.code != 410:
                raise
            self.finish(json.dumps({"type": "ERROR", "object": error.status()}) + "\n")
            return
        self._watcher = watcher
        bookmarks = self.get_query_argument("allowWatchBookmarks", "") in _TRUE
        kind = RESOURCES[resource][0]
        try:
            self.flush()
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if bookmarks and watcher.queue.empty():
                        self.write(self._bookmark(kind))
                    break
                wait = min(remaining, BOOKMARK_SECONDS) if bookmarks else remaining
                try:
                    line = await asyncio.wait_for(watcher.queue.get(), wait)
                except TimeoutError:
                    idle = time.monotonic() < deadline  # else the final bookmark follows
                    if idle and bookmarks and watcher.queue.empty():
                        self.write(self._bookmark(kind))
                        await self.flush()
                    continue
                if line is None:
                    break
                lines = [line]
                while not watcher.queue.empty() and len(lines) < 1000:
                    more = watcher.queue.get_nowait()
                    if more is None:
                        watcher.queue.put_nowait(None)
                        break
                    lines.append(more)
                self.write(b"".join(lines))
                await self.flush()
        except StreamClosedError:
            pass
        finally:
            self.store.unwatch(watcher)
        if not self._finished:
            with contextlib.suppress(StreamClosedError):
                self.finish()

    def _bookmark(self, kind: str) -> bytes:
        """A BOOKMARK: every change up to this resourceVersion has been sent (queue empty)."""
        body = {
            "kind": kind,
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(self.store.rv)},
        }
        return json.dumps({"type": "BOOKMARK", "object": body}).encode() + b"\n"

    def on_connection_close(self) -> None:
        watcher = getattr(self, "_watcher", None)
        if watcher is not None:
            self.store.unwatch(watcher)
            watcher.close()

    async def get(self, path: str) -> None:
        await self._dispatch("GET", path)

    async def post(self, path: str) -> None:
        await self._dispatch("POST", path)

    async def put(self, path: str) -> None:
        await self._dispatch("PUT", path)

    async def patch(self, path: str) -> None:
        await self._dispatch("PATCH", path)

    async def delete(self, path: str) -> None:
        await self._dispatch("DELETE", path)


def _rv_only(obj: dict[str, Any]) -> dict[str, Any]:
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return {"resourceVersion": rv} if rv else {}


def make_app(store: Store, faults: Faults, logs: LogLookup) -> Application:
    """The tornado application serving ``store``."""
    args = {"store": store, "faults": faults, "logs": logs}
    return Application(
        [
            (r"/(version|api|apis|api/v1)/?", DiscoveryHandler, args),
            (r"/api/v1/(.+)", ApiHandler, args),
        ],
        log_function=lambda handler: None,
    )
