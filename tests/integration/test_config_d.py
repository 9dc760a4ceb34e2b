"""The jupyterhub_config.d snippets: loaded by traitlets in-process, and by a real hub.

The in-process tests load the snippets the way a plain hub's ``load_subconfig`` does and
check the resulting config; the hub tests start a real JupyterHub (with
configurable-http-proxy) on them and talk to it with the tokens the snippets register.
"""

from __future__ import annotations

import http.server
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from traitlets.config import Config

from tests.harness.snippets import (
    CONFIG_D,
    ENV_KEYS,
    EXAMPLE_SITE,
    EXEC_SNIPPETS_LIKE_Z2JH,
    LOAD_SNIPPETS,
    REPO,
    as_list,
    load_snippets,
)


def roles_by_name(config: Config) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in as_list(config.JupyterHub.load_roles)}


def test_snippets_are_numbered_and_sorted() -> None:
    names = sorted(p.name for p in CONFIG_D.glob("*.py"))
    assert names == [
        "10-esap-spawner.py",
        "15-esap-database.py",
        "20-esap-service.py",
        "30-esap-metrics.py",
    ]


def test_external_service_with_portal_and_prometheus(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("ESAP_SITE_FILE", str(EXAMPLE_SITE))
    clean_env.setenv("ESAP_SERVICE_URL", "http://esap-service:8890")
    clean_env.setenv("ESAP_SERVICE_API_TOKEN", "svc-token")
    clean_env.setenv("ESAP_PORTAL_API_TOKEN", "portal-token")
    clean_env.setenv("ESAP_PORTAL_GROUPS", "esap-admins, ops")
    clean_env.setenv("ESAP_PROMETHEUS_API_TOKEN", "prom-token")
    # what z2jh has set before loading the folder: lists, and a role of the same name
    config = load_snippets(
        tmp_path,
        """
        c.JupyterHub.services = [{"name": "jupyterhub-idle-culler", "command": ["x"]}]
        c.JupyterHub.load_roles = [{"name": "esap-portal", "users": ["alice"]}]
        """,
        loader=EXEC_SNIPPETS_LIKE_Z2JH,
    )
    assert config.JupyterHub.spawner_class == "esap"
    assert config.ESAPSpawner.site_file == str(EXAMPLE_SITE)
    services = {s["name"]: s for s in config.JupyterHub.services}
    assert services["esap"] == {
        "name": "esap",
        "url": "http://esap-service:8890",
        "api_token": "svc-token",
        "oauth_no_confirm": True,  # its status page is part of the hub: no authorize step
    }
    assert services["esap-portal"] == {"name": "esap-portal", "api_token": "portal-token"}
    assert services["prometheus"] == {"name": "prometheus", "api_token": "prom-token"}
    assert "jupyterhub-idle-culler" in services
    roles = roles_by_name(config)
    # merged into the existing role, not defined twice
    assert [r["name"] for r in config.JupyterHub.load_roles].count("esap-portal") == 1
    assert roles["esap-portal"]["scopes"] == ["custom:esap:read"]
    assert roles["esap-portal"]["users"] == ["alice"]
    assert roles["esap-portal"]["groups"] == ["esap-admins", "ops"]
    assert roles["esap-portal"]["services"] == ["esap-portal"]
    assert roles["esap-metrics"]["scopes"] == ["read:metrics"]
    assert roles["esap-metrics"]["services"] == ["prometheus"]
    assert config.JupyterHub.authenticate_prometheus is True
    custom = config.JupyterHub.custom_scopes.get_value({})
    assert set(custom) == {"custom:esap:read"}


def test_managed_service_by_default(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ESAP_SITE_FILE", str(EXAMPLE_SITE))
    clean_env.setenv("ESAP_SERVICE_PORT", "9123")
    clean_env.setenv("ESAP_AUTHENTICATE_PROMETHEUS", "false")
    config = load_snippets(tmp_path)
    (service,) = as_list(config.JupyterHub.services)
    assert service["name"] == "esap"
    assert service["url"] == "http://127.0.0.1:9123"
    assert service["command"][1:] == [
        "-m",
        "esap_spawner.cli",
        "service",
        "--site-file",
        str(EXAMPLE_SITE),
    ]
    assert "api_token" not in service  # the hub generates a managed service's token
    assert service["oauth_no_confirm"] is True
    assert config.JupyterHub.authenticate_prometheus is False
    # no portal token: the role exists (for groups/users), with no service
    assert roles_by_name(config)["esap-portal"]["services"] == []


def test_users_reach_the_service_on_jupyterhub_6_and_5(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    import jupyterhub

    clean_env.setenv("ESAP_SITE_FILE", str(EXAMPLE_SITE))
    config = load_snippets(tmp_path)
    if jupyterhub.version_info >= (6,):
        assert config.JupyterHub.extra_user_scopes.get_value(set()) == {
            "access:services!service=esap"
        }
    # JupyterHub 5 has no extra_user_scopes: the `user` role is extended instead,
    # merged with a `user` role the configuration already has (z2jh's hub.loadRoles)
    clean_env.setattr(jupyterhub, "version_info", (5, 4, 0))
    config = load_snippets(
        tmp_path,
        """c.JupyterHub.load_roles = [{"name": "user", "scopes": ["self", "read:groups"]}]""",
        loader=EXEC_SNIPPETS_LIKE_Z2JH,
    )
    assert roles_by_name(config)["user"]["scopes"] == [
        "self",
        "read:groups",
        "access:services!service=esap",
    ]
    assert "extra_user_scopes" not in config.JupyterHub
    clean_env.setenv("ESAP_USER_ACCESS", "false")
    config = load_snippets(tmp_path)
    assert "user" not in roles_by_name(config)


def test_the_documented_plain_hub_config_loads_the_snippets(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    page = (REPO / "docs" / "jupyterhub-config-d.md").read_text()
    section = page[page.index("## A plain hub") :]
    start = section.index("```python\n") + len("```python\n")
    block = section[start : section.index("\n```", start)]
    assert "load_subconfig(path)" in block
    clean_env.setenv("ESAP_SITE_FILE", str(EXAMPLE_SITE))
    config = load_snippets(tmp_path, loader=block)
    assert config.JupyterHub.spawner_class == "esap"
    assert [s["name"] for s in as_list(config.JupyterHub.services)] == ["esap"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ESAP_SERVICE_MODE": "external"}, "needs ESAP_SERVICE_URL"),
        ({"ESAP_SERVICE_MODE": "sideways"}, "expected auto, managed, external or off"),
        ({"ESAP_USER_ACCESS": "perhaps"}, "ESAP_USER_ACCESS='perhaps'"),
        ({"ESAP_AUTHENTICATE_PROMETHEUS": "2"}, "ESAP_AUTHENTICATE_PROMETHEUS='2'"),
        ({"ESAP_DATABASE_UPGRADE": "maybe"}, "ESAP_DATABASE_UPGRADE='maybe'"),
        ({"ESAP_SITE_FILE": "/nonexistent/site.yaml"}, "cannot"),
    ],
)
def test_bad_environment_stops_loading(
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    message: str,
) -> None:
    clean_env.setenv("ESAP_SITE_FILE", str(EXAMPLE_SITE))
    for key, value in env.items():
        clean_env.setenv(key, value)
    with pytest.raises(SystemExit) as exc:
        load_snippets(tmp_path)
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "FATAL: esap-spawner" in err
    assert message in err


# -- a real hub ------------------------------------------------------------------------


@pytest.fixture
def stand_in_service() -> Iterator[str]:
    """An HTTP server standing in for the external esap service (the hub checks it is up)."""

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.integration
def test_real_hub_runs_the_snippets(
    hub_factory: Any, tmp_path: Path, stand_in_service: str
) -> None:
    portal_token = secrets.token_hex(16)
    prometheus_token = secrets.token_hex(16)
    env = {key: "" for key in ENV_KEYS}
    env.update(
        ESAP_SITE_FILE=str(EXAMPLE_SITE),
        ESAP_SERVICE_URL=stand_in_service,
        ESAP_SERVICE_API_TOKEN=secrets.token_hex(16),
        ESAP_PORTAL_API_TOKEN=portal_token,
        ESAP_PROMETHEUS_API_TOKEN=prometheus_token,
    )
    hub = hub_factory(LOAD_SNIPPETS, env=env)

    services = hub.api("GET", "/services").json()
    assert {"esap", "esap-portal", "prometheus"} <= set(services)
    assert services["esap"]["prefix"] == "/services/esap/"

    # the portal's token carries the custom scope; a user's carries access to the service
    portal = hub.api("GET", "/user", token=portal_token).json()
    assert "custom:esap:read" in portal["scopes"]
    hub.create_user("alice")
    alice = hub.api("GET", "/user", token=hub.user_token("alice")).json()
    assert "access:services!service=esap" in alice["scopes"]
    assert "custom:esap:read" not in alice["scopes"]

    # metrics need read:metrics
    assert requests.get(f"{hub.url}/hub/metrics", timeout=10).status_code == 403
    r = requests.get(
        f"{hub.url}/hub/metrics",
        headers={"Authorization": f"token {prometheus_token}"},
        timeout=10,
    )
    assert r.status_code == 200
    assert "jupyterhub_" in r.text

    log = hub.log_path.read_text()
    assert "esap-spawner: site file" in log


@pytest.mark.integration
def test_real_hub_refuses_a_bad_site_file(hub_factory: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad-site.yaml"
    bad.write_text(
        "facility: {name: x}\nprofiles:\n  - slug: Not A Slug\n  - {slug: ok, colour: red}\n"
    )
    env = {key: "" for key in ENV_KEYS}
    env.update(ESAP_SITE_FILE=str(bad), ESAP_SERVICE_MODE="off")
    with pytest.raises(RuntimeError) as exc:
        hub_factory(LOAD_SNIPPETS, env=env)
    text = str(exc.value)
    assert "FATAL: esap-spawner: the site file" in text
    # every problem, each with its path
    assert "facility" in text and "url" in text
    assert "profiles[0].slug" in text
    assert "colour" in text
