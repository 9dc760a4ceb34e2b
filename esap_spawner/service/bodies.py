"""Request bodies with a bound: refused from their ``Content-Length``, before they are read.

Tornado buffers a whole request body (up to its ``max_body_size``, 100 MB by default)
before a handler sees the request, so a caller could make the service hold 100 MB before
its token is even looked at. :class:`BoundedBody` streams the body in instead and decides
from the headers, before any of it is read:

- a ``Content-Length`` above the service's ``max_body_size`` (1 MiB by default) is a 413
  ``payload_too_large``; a chunked body (no length to judge) is a 411 ``length_required``;
- the refusal is sent at once, complete (with its own ``Content-Length``), while what the
  caller still sends is discarded as it arrives, never kept: closing the connection
  instead would make a proxy that is still forwarding the body (the hub's
  configurable-http-proxy) lose the answer and show its own 503. A caller that goes on
  sending more than :data:`DISCARD_FACTOR` times the limit is cut off;
- a body within the limit is kept in memory (``self.body``) for the handler's method.

The server itself listens with the same ``max_body_size``
(:meth:`esap_spawner.service.app.ESAPService.serve`), so no other route buffers more.
"""

from __future__ import annotations

import json
from typing import Any

from tornado import web
from tornado.http1connection import HTTP1Connection

__all__ = ["DISCARD_FACTOR", "BoundedBody", "error_json", "implemented_methods"]

#: After a refusal, this many times ``max_body_size`` is discarded before the connection
#: is closed.
DISCARD_FACTOR = 16


def error_json(code: str, message: str) -> bytes:
    """The service's error document: ``{"error": {"code": ..., "message": ...}}``."""
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def implemented_methods(handler: type[web.RequestHandler]) -> list[str]:
    """The HTTP methods a handler class implements itself (a 405's ``Allow`` header)."""
    base = web.RequestHandler
    return [
        m
        for m in handler.SUPPORTED_METHODS
        if getattr(handler, m.lower(), None) is not getattr(base, m.lower(), None)
    ]


@web.stream_request_body
class BoundedBody(web.RequestHandler):
    """A handler mixin (first in the bases) for routes that take a body, read from
    ``self.body`` by the handler's method, which returns at once when ``self.refused``.
    The limit is ``max_body_size`` in the application's settings."""

    refused = False

    def prepare(self) -> Any:
        self._chunks: list[bytes] = []
        self._discarded = 0
        result = super().prepare()
        if self.request.method in implemented_methods(type(self)):  # else a 405 comes first
            refusal = self.body_refusal()
            if refusal is not None:
                self.refuse_now(*refusal)
        return result

    @property
    def connection(self) -> HTTP1Connection:
        """The request's HTTP/1.1 connection (tornado's server speaks nothing else)."""
        connection = self.request.connection
        assert isinstance(connection, HTTP1Connection)
        return connection

    @property
    def body_limit(self) -> int:
        return int(self.settings["max_body_size"])

    def body_refusal(self) -> tuple[int, str, str] | None:
        """(status, code, message) when the headers alone refuse the body, else None."""
        headers = self.request.headers
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            return 411, "length_required", "send the body with a Content-Length, not chunked"
        length = headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.body_limit:
            return (
                413,
                "payload_too_large",
                f"the body is {int(length)} bytes; at most {self.body_limit} are accepted",
            )
        return None

    def refuse_now(self, status: int, code: str, message: str) -> None:
        """Send the refusal whole now; the body that follows is discarded."""
        self.refused = True
        length = self.request.headers.get("Content-Length", "")
        if length.isdigit():  # else tornado would stop reading it with a bare 400
            self.connection.set_max_body_size(int(length))
        data = error_json(code, message)
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Content-Length", str(len(data)))
        self.write(data)
        self.flush()

    def data_received(self, chunk: bytes) -> None:
        if not self.refused:
            self._chunks.append(chunk)
            return
        self._discarded += len(chunk)
        if self._discarded > DISCARD_FACTOR * self.body_limit:
            self.connection.close()

    @property
    def body(self) -> bytes:
        """The whole body (at most ``max_body_size`` bytes)."""
        return b"".join(self._chunks)
