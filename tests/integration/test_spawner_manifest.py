"""The pod ESAPSpawner builds, compared with golden JSON.

The spawner is the real class, fed the way JupyterHub feeds it (user options, then
``load_user_options`` and ``get_pod_manifest``); it needs a kubeconfig to construct, which
the session simulator provides, and the API to create the pod's token Secret (in the
namespace ``golden``, made for the test).

Regenerate the golden files after an intended change with
``ESAP_REGENERATE_GOLDEN=1 pytest tests/integration/test_spawner_manifest.py`` and review
the diff.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jupyterhub
import kubespawner
import pytest
import yaml
from jupyterhub.objects import Hub
from kubernetes_asyncio.client import ApiClient
from tornado import web
from traitlets.config import Config

from esap_spawner.spawn.spawner import ESAPSpawner
from tests.harness.hub import HUB_SITE
from tests.harness.spawner import MockUser

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).parent.parent / "data" / "golden"
VOLATILE_ENV = {"JUPYTERHUB_OAUTH_SCOPES"}
INSTALLED_VERSIONS = {
    "hub.jupyter.org/jupyterhub-version": jupyterhub.__version__,
    "hub.jupyter.org/kubespawner-version": kubespawner.__version__,
}


def make_spawner(tmp_path: Path, user: MockUser, options: object) -> ESAPSpawner:
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(HUB_SITE))
    config = Config()
    config.ESAPSpawner.site_file = str(site_file)
    config.KubeSpawner.namespace = "golden"
    config.ESAPSpawner.admission = False  # pure manifest: no cluster view in this process
    config.ESAPSpawner.db_url = ""
    spawner = ESAPSpawner(
        hub=Hub(ip="127.0.0.1", port=8081),
        user=user,
        config=config,
        api_token="token",
        oauth_client_id="client",
    )
    spawner.user_options = options
    return spawner


def scrub(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod without what changes from run to run or with the installed versions."""
    annotations = pod["metadata"]["annotations"]
    for key, installed in INSTALLED_VERSIONS.items():
        assert annotations[key] == installed, key  # KubeSpawner stamps the versions running
        annotations[key] = "<installed>"
    for container in pod["spec"]["containers"]:
        for env in container.get("env", []):
            if env["name"] in VOLATILE_ENV and "value" in env:
                env["value"] = "<scrubbed>"
    return pod


@pytest.fixture
def golden_namespace(sim: Any) -> Iterator[str]:
    sim.create_namespace("golden")
    try:
        yield "golden"
    finally:
        sim.call(sim.store.delete, "namespaces", "", "golden")


@pytest.mark.parametrize(
    ("user", "options", "golden"),
    [
        (MockUser("ada"), {"profile": "medium", "dataset": "lofar:L1"}, "pod-medium.json"),
        (MockUser("gina", ("gpu-users",)), {"profile": "gpu"}, "pod-gpu.json"),
    ],
)
async def test_pod_manifest_matches_golden(
    golden_namespace: str, tmp_path: Path, user: MockUser, options: dict[str, Any], golden: str
) -> None:
    spawner = make_spawner(tmp_path, user, options)
    await spawner.load_user_options()
    pod = scrub(ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest()))
    path = GOLDEN / golden
    if os.environ.get("ESAP_REGENERATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(pod, indent=2, sort_keys=True) + "\n")
    assert pod == json.loads(path.read_text())


async def test_user_options_cannot_reach_the_pod(sim: Any, tmp_path: Path) -> None:
    spawner = make_spawner(
        tmp_path,
        MockUser("mallory"),
        {"profile": "small", "image": "evil:1", "volumes": [{"hostPath": {"path": "/"}}]},
    )
    with pytest.raises(web.HTTPError) as refused:
        await spawner.load_user_options()
    assert refused.value.status_code == 400
    assert "image" in refused.value.log_message


@pytest.mark.parametrize("body", ["small", 42, ["small"], True])
async def test_options_that_are_not_an_object_are_refused(
    sim: Any, tmp_path: Path, body: object
) -> None:
    """JupyterHub 5 hands the spawner a REST body as it came (JupyterHub 6 refuses one that
    is not an object itself): the spawner is built and refuses it, a 400 and never a 500."""
    spawner = make_spawner(tmp_path, MockUser("oscar"), body)
    with pytest.raises(web.HTTPError) as refused:
        await spawner.load_user_options()
    assert refused.value.status_code == 400
    assert "options must be a JSON object" in refused.value.log_message


@pytest.mark.parametrize("body", [[], None, ""])
async def test_empty_options_of_any_type_take_the_default_profile(
    sim: Any, tmp_path: Path, body: object
) -> None:
    """An empty JSON value is "no options", as JupyterHub 6 reads it: the default profile."""
    spawner = make_spawner(tmp_path, MockUser("olive"), body)
    await spawner.load_user_options()
    assert spawner.user_options == {"profile": "small", "dataset": []}


async def test_admin_sees_restricted_profiles(sim: Any, tmp_path: Path) -> None:
    spawner = make_spawner(tmp_path, MockUser("root", admin=True), {"profile": "gpu"})
    await spawner.load_user_options()
    assert spawner.image == "quay.io/jupyter/pytorch-notebook:2026-01-01"
    form = spawner.render_options_form()
    assert 'value="gpu"' in form
    other = make_spawner(tmp_path, MockUser("fred"), {"profile": "small"})
    assert 'value="gpu"' not in other.render_options_form()
