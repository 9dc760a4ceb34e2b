"""The query style the service publishes follows the running hub's version, asked over HTTP.

A small HTTP server stands in for the hub's API root (``GET /hub/api/`` answers
``{"version": ...}`` without a token, as JupyterHub's does); the real hub is asked in
tests/integration/test_launch_hub.py, whose JupyterHub 6 gets ``opt-`` links.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import tornado.web
from tornado.httpserver import HTTPServer

from esap_spawner.service.hub_version import installed_query_style, running_hub_query_style

pytestmark = pytest.mark.integration


class Root(tornado.web.RequestHandler):
    def initialize(self, body: bytes) -> None:
        self.body = body

    def get(self) -> None:
        self.finish(self.body)


@pytest.fixture
async def hub_api() -> AsyncIterator[Callable[[bytes], str]]:
    servers: list[HTTPServer] = []

    def serve(body: bytes) -> str:
        app = tornado.web.Application([(r"/hub/api/", Root, {"body": body})])
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        server = HTTPServer(app)
        server.add_sockets([sock])
        servers.append(server)
        return f"http://127.0.0.1:{sock.getsockname()[1]}/hub/api"

    yield serve
    for server in servers:
        server.stop()


@pytest.mark.parametrize(("version", "style"), [("5.2.1", "plain"), ("6.1.1", "opt")])
async def test_style_of_the_running_hub(hub_api: Any, version: str, style: str) -> None:
    url = hub_api(json.dumps({"version": version}).encode())
    assert await running_hub_query_style(url) == style


async def test_a_hub_that_does_not_answer_leaves_the_installed_style(hub_api: Any) -> None:
    assert await running_hub_query_style(hub_api(b"<html>")) == installed_query_style()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/hub/api"
    assert await running_hub_query_style(closed, timeout=2) == installed_query_style()
