"""The proxy and ``.netrc`` look-ups of the Kubernetes API client, done once
(:mod:`esap_spawner.capacity.api_lookups`), on kubernetes_asyncio's real client and, where
requests are made, the project's Kubernetes simulator on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient, Configuration

from esap_spawner.capacity.api_lookups import environment_applies, look_up_once
from esap_spawner.capacity.watch import api_client_from_environment
from tests.harness.sim import k8s_api

PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No proxy variables, and a ``.netrc`` path that does not exist."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-such-netrc"))
    yield


def client_for(host: str, **settings: Any) -> ApiClient:
    configuration = Configuration(host=host)
    for name, value in settings.items():
        setattr(configuration, name, value)
    return ApiClient(configuration)


async def test_nothing_in_the_environment_stops_the_look_ups() -> None:
    api = client_for("https://10.96.0.1:443")
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
    api = client_for("https://10.96.0.1:443")
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
    api = client_for("https://10.96.0.1:443", proxy="http://proxy.example:3128")
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
    sim_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the change is for: before it each request ran two look-ups on the executor's
    threads; after it none, and the request is answered as before."""
    sim = sim_factory({"nodes": [{"name": "n1", "allocatable": {"cpu": "4"}}]}, kubelet="fake")
    loop = asyncio.get_running_loop()
    hops: list[Any] = []
    run_in_executor = loop.run_in_executor

    def counted(executor: Any, func: Any, *args: Any) -> Any:
        hops.append(func)
        return run_in_executor(executor, func, *args)

    monkeypatch.setattr(loop, "run_in_executor", counted)
    api = k8s_api(sim)
    try:

        async def nodes() -> list[str]:
            return [n.metadata.name for n in (await api.list_node()).items]

        assert await nodes() == ["n1"]
        before = len(hops)
        if before == 0:  # an aiohttp older than kubernetes_asyncio's newest allows
            pytest.skip("this aiohttp makes no look-up on the executor: nothing to save")
        assert look_up_once(api.api_client) is True
        assert await nodes() == ["n1"]
        assert len(hops) == before
    finally:
        await api.api_client.close()


async def test_the_services_client_is_made_without_the_look_ups(
    sim_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """The advertising service's watch client (:func:`api_client_from_environment`)."""
    sim = sim_factory({"nodes": []}, kubelet="fake")
    kubeconfig = sim.write_kubeconfig(tmp_path / "kubeconfig.yaml")
    api = await api_client_from_environment(str(kubeconfig))
    try:
        assert api.configuration.host == sim.url
        assert api.rest_client.pool_manager.trust_env is False
    finally:
        await api.close()
