"""The proxy and ``.netrc`` look-ups of the Kubernetes API client, done once
(:mod:`esap_spawner.capacity.api_lookups`), on kubernetes_asyncio's real client and a real
HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web
from kubernetes_asyncio.client import ApiClient, Configuration, VersionApi

from esap_spawner.capacity.api_lookups import environment_applies, look_up_once

PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No proxy variables, and a ``.netrc`` path that does not exist."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-such-netrc"))
    yield


async def client_for(host: str, **settings: Any) -> ApiClient:
    configuration = Configuration(host=host)
    for name, value in settings.items():
        setattr(configuration, name, value)
    return ApiClient(configuration)


class Version(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"major": "1", "minor": "35"}))


@pytest.fixture
async def api_server() -> AsyncIterator[str]:
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/version/?", Version)]))
    server.add_sockets(sockets)
    yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    server.stop()
    await server.close_all_connections()


async def test_nothing_in_the_environment_stops_the_look_ups() -> None:
    api = await client_for("https://10.96.0.1:443")
    try:
        assert api.rest_client.pool_manager.trust_env is True  # kubernetes_asyncio's default
        assert look_up_once(api) is True
        assert api.rest_client.pool_manager.trust_env is False
        assert look_up_once(api) is False  # already stopped: nothing more to do
    finally:
        await api.close()


@pytest.mark.parametrize(
    ("variables", "applies"),
    [
        ({"HTTPS_PROXY": "http://proxy.example:3128"}, True),
        ({"https_proxy": "http://proxy.example:3128"}, True),
        ({"HTTPS_PROXY": "http://proxy.example:3128", "NO_PROXY": "10.96.0.1"}, False),
        ({"HTTPS_PROXY": "http://proxy.example:3128", "NO_PROXY": "*"}, False),
        ({"HTTP_PROXY": "http://proxy.example:3128"}, False),  # the API is https
    ],
)
async def test_a_proxy_for_the_api_server_keeps_the_look_ups(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], applies: bool
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert environment_applies("https://10.96.0.1:443") is applies
    api = await client_for("https://10.96.0.1:443")
    try:
        assert look_up_once(api) is (not applies)
        assert api.rest_client.pool_manager.trust_env is applies
    finally:
        await api.close()


@pytest.mark.parametrize(
    ("text", "applies"),
    [
        ("machine 10.96.0.1 login hub password secret\n", True),
        ("machine other.example login hub password secret\n", False),
        ("default login hub password secret\n", True),  # a default entry matches any host
        ("machine\n", True),  # cannot be parsed: aiohttp may still read something, keep it
    ],
)
async def test_a_netrc_entry_for_the_api_server_keeps_the_look_ups(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, applies: bool
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text(text)
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert environment_applies("https://10.96.0.1:443") is applies


async def test_an_explicit_proxy_keeps_the_session_as_it_is() -> None:
    api = await client_for("https://10.96.0.1:443", proxy="http://proxy.example:3128")
    try:
        assert look_up_once(api) is False
        assert api.rest_client.pool_manager.trust_env is True
    finally:
        await api.close()


async def test_a_client_without_aiohttps_session_is_left_alone() -> None:
    class Other:
        rest_client = None

    assert look_up_once(Other()) is False


async def test_requests_then_take_no_thread_hop(
    api_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the change is for: before it each request ran two look-ups on the executor's
    threads; after it none, and the request is answered as before."""
    loop = asyncio.get_running_loop()
    hops: list[Any] = []
    run_in_executor = loop.run_in_executor

    def counted(executor: Any, func: Any, *args: Any) -> Any:
        hops.append(func)
        return run_in_executor(executor, func, *args)

    monkeypatch.setattr(loop, "run_in_executor", counted)
    api = await client_for(api_server)
    try:

        async def version() -> Any:
            answer = await VersionApi(api).get_code(_preload_content=False)
            try:
                return json.loads(await answer.read())
            finally:
                answer.release()

        assert (await version())["minor"] == "35"
        before = len(hops)
        if before == 0:  # an aiohttp older than kubernetes_asyncio's newest allows
            pytest.skip("this aiohttp makes no look-up on the executor: nothing to save")
        assert look_up_once(api) is True
        assert (await version())["minor"] == "35"
        assert len(hops) == before
    finally:
        await api.close()


async def test_the_services_client_is_made_without_the_look_ups(
    api_server: str, tmp_path: Path
) -> None:
    """The advertising service's watch client (:func:`api_client_from_environment`)."""
    from esap_spawner.capacity.watch import api_client_from_environment

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": api_server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    api = await api_client_from_environment(str(kubeconfig))
    try:
        assert api.configuration.host == api_server
        assert api.rest_client.pool_manager.trust_env is False
    finally:
        await api.close()
