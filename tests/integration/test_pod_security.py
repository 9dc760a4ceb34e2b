"""Pods built by the real ESAPSpawner are locked down, and no user option loosens them.

The spawner is fed as JupyterHub feeds it (``user_options``, ``load_user_options``,
``get_pod_manifest``; ``admission=False``, ``db_url=""``), as in
``test_spawner_manifest.py``. Its site has a static data catalogue over a real folder, so a
spawn with a dataset and a workflow gets the storage volume, the datasets folder, the links
and checkout init containers: every container of every pod is checked.

Checked on each manifest: no service-account token, non-root, no privilege escalation,
every capability dropped and none added, seccomp ``RuntimeDefault``, no host namespaces,
no privileged container, init containers as argv (never a shell), and every data mount of
the notebook read-only. Then every pod field a user might try to set (image, resources,
volumes, env, securityContext, ...) is sent through ``user_options`` (the REST JSON shape),
the form and the deep-link query: each is refused with a 400 naming it.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from jupyterhub.objects import Hub
from kubernetes_asyncio.client import ApiClient
from tornado import web
from traitlets.config import Config

from esap_spawner.spawn.spawner import ESAPSpawner
from tests.harness.hub import HUB_SITE
from tests.harness.kube import Backend
from tests.harness.spawner import MockUser

pytestmark = pytest.mark.integration

DATASET = "lofar:L123456"
WORKFLOW = "https://git.example.org/esap/notebooks.git"
MOUNT_ROOT = "/home/jovyan/datasets"
NFS = {"nfs": {"server": "nfs.example.org", "path": "/archive"}}


@pytest.fixture
def site_file(tmp_path: Path) -> Path:
    archive = tmp_path / "archive"
    (archive / "L123456").mkdir(parents=True)
    (archive / "L123456" / "a.fits").write_bytes(b"x" * 10)
    (archive / "L123456" / "b.fits").write_bytes(b"y" * 20)
    site = dict(HUB_SITE)
    site["data"] = {
        "catalogue": "static",
        "mount_root": MOUNT_ROOT,
        "static": {
            "volume": NFS,
            "mount_path": str(archive),
            "datasets": [{"did": DATASET, "path": "L123456"}],
        },
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site))
    return path


def make_spawner(
    site_file: Path, namespace: str, options: dict[str, Any], user: MockUser | None = None
) -> ESAPSpawner:
    config = Config()
    config.ESAPSpawner.site_file = str(site_file)
    config.KubeSpawner.namespace = namespace
    config.ESAPSpawner.admission = False
    config.ESAPSpawner.db_url = ""
    spawner = ESAPSpawner(
        hub=Hub(ip="127.0.0.1", port=8081),
        user=user or MockUser("ada"),
        config=config,
        api_token="token",
        oauth_client_id="client",
    )
    spawner.user_options = options
    return spawner


async def manifest(site_file: Path, namespace: str, options: dict[str, Any]) -> dict[str, Any]:
    spawner = make_spawner(site_file, namespace, options)
    await spawner.load_user_options()
    pod: dict[str, Any] = ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest())
    return pod


def check_container(container: dict[str, Any], pod: dict[str, Any]) -> None:
    name = container["name"]
    ctx = container.get("securityContext") or {}
    pod_ctx = pod["spec"].get("securityContext") or {}

    def setting(key: str) -> Any:
        return ctx.get(key, pod_ctx.get(key))

    assert setting("runAsNonRoot") is True, name
    assert setting("runAsUser") != 0, name
    assert ctx.get("allowPrivilegeEscalation") is False, name
    assert ctx.get("privileged") in (None, False), name
    assert ctx.get("capabilities", {}).get("drop") == ["ALL"], name
    assert not ctx.get("capabilities", {}).get("add"), name
    assert (setting("seccompProfile") or {}).get("type") == "RuntimeDefault", name
    command = [*container.get("command", []), *container.get("args", [])]
    assert command[:1] not in (["sh"], ["bash"], ["/bin/sh"], ["/bin/bash"]), name
    assert "-c" not in command[:2], name


def check_pod(pod: dict[str, Any]) -> None:
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(key), key
    for container in [*spec["containers"], *(spec.get("initContainers") or [])]:
        check_container(container, pod)


def volume_sources(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod["spec"].get("volumes") or []}


async def created(kube: Backend, namespace: str, pod: dict[str, Any], level: str) -> Any:
    """``pod`` as the API server stores it, created in ``namespace`` under the Pod Security
    Standard ``level`` (enforced by the real API server's admission; the simulator ignores
    the label: docs/simulator.md); with the objects it names (the datalinks ConfigMap)."""
    api = kube.api()
    try:
        label = {"pod-security.kubernetes.io/enforce": level}
        await api.patch_namespace(namespace, {"metadata": {"labels": label}})
        stored = await api.create_namespaced_pod(namespace, pod)
        for volume in pod["spec"].get("volumes") or []:
            if "configMap" in volume:
                await api.read_namespaced_config_map(volume["configMap"]["name"], namespace)
        return api.api_client.sanitize_for_serialization(stored)
    finally:
        await api.api_client.close()


async def test_a_plain_pod_is_locked_down(
    kube: Backend, kube_namespace: str, site_file: Path
) -> None:
    pod = await manifest(site_file, kube_namespace, {"profile": "small"})
    check_pod(pod)
    assert pod["spec"].get("initContainers") in (None, [])
    # the strictest Pod Security Standard admits it, and what is stored stays locked down
    check_pod(await created(kube, kube_namespace, pod, "restricted"))


async def test_a_pod_with_data_and_workflow_is_locked_down(
    kube: Backend, kube_namespace: str, site_file: Path
) -> None:
    options = {"profile": "medium", "dataset": [DATASET], "workflow": WORKFLOW,
               "ref": "main", "filepath": "intro.ipynb"}  # fmt: skip
    pod = await manifest(site_file, kube_namespace, options)
    check_pod(pod)
    # the API server validates the init containers, volumes and ConfigMap; "baseline" is the
    # strictest level an NFS volume (the site's storage) passes
    check_pod(await created(kube, kube_namespace, pod, "baseline"))
    spec = pod["spec"]
    inits = {c["name"]: c for c in spec["initContainers"]}
    assert set(inits) == {"esap-datalinks", "esap-checkout"}

    # the storage volume is the site's NFS source, and the notebook sees all data read-only
    sources = volume_sources(pod)
    storage = [name for name, v in sources.items() if v.get("nfs") == NFS["nfs"]]
    assert storage, sources
    notebook = spec["containers"][0]
    data_mounts = [
        m for m in notebook["volumeMounts"]
        if m["name"] in storage or m["mountPath"].startswith(MOUNT_ROOT)
    ]  # fmt: skip
    assert {m["mountPath"] for m in data_mounts} >= {MOUNT_ROOT}
    assert len(data_mounts) >= 2, notebook["volumeMounts"]
    assert all(m.get("readOnly") is True for m in data_mounts), data_mounts
    # the links container reads storage and its program read-only; it writes only the links
    for m in inits["esap-datalinks"]["volumeMounts"]:
        assert m.get("readOnly") is True or m["mountPath"] == MOUNT_ROOT, m
        if m["name"] in storage:
            assert m["readOnly"] is True
    # of the static volume, only the dataset asked for (security review finding 3)
    archive = str(site_file.parent / "archive")
    for container in (notebook, inits["esap-datalinks"]):
        assert [m for m in container["volumeMounts"] if m["name"] in storage] == [
            {"name": storage[0], "mountPath": f"{archive}/L123456", "subPath": "L123456",
             "readOnly": True}
        ], container["name"]  # fmt: skip
    # the checkout never mounts the data; URL and ref are single argv items, not shell words
    assert not {m["name"] for m in inits["esap-checkout"]["volumeMounts"]} & set(storage)
    command = inits["esap-checkout"]["command"]
    assert f"--url={WORKFLOW}" in command and "--ref=main" in command
    # the init containers run the notebook's image, never one the user names
    assert {c["image"] for c in inits.values()} == {notebook["image"]}


async def test_a_workflow_named_like_the_datasets_folder_goes_elsewhere(
    sim: Any, sim_namespace: str, site_file: Path
) -> None:
    """Finding 11: a repository called ``datasets`` was checked out where the datasets are
    mounted (two volumes on one path). It goes to ``~/datasets-workflow``, JupyterLab opens
    it there, and the spawn page says why."""
    workflow = "https://git.example.org/esap/datasets.git"
    options = {"profile": "small", "dataset": [DATASET], "workflow": workflow,
               "filepath": "intro.ipynb"}  # fmt: skip
    spawner = make_spawner(site_file, sim_namespace, options)
    await spawner.load_user_options()
    pod = ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest())
    notebook = pod["spec"]["containers"][0]
    paths = [m["mountPath"] for m in notebook["volumeMounts"]]
    assert len(paths) == len(set(paths)), paths
    assert {MOUNT_ROOT, "/home/jovyan/datasets-workflow"} <= set(paths)
    checkout = next(c for c in pod["spec"]["initContainers"] if c["name"] == "esap-checkout")
    assert "--dest=/home/jovyan/datasets-workflow" in checkout["command"]
    env = {e["name"]: e.get("value") for e in notebook["env"]}
    assert env["JUPYTERHUB_DEFAULT_URL"] == "/lab/tree/datasets-workflow/intro.ipynb"
    said = [m["message"] for m in spawner._esap_messages or []]
    assert (
        "The workflow is checked out into /home/jovyan/datasets-workflow: "
        "/home/jovyan/datasets is where this hub mounts data"
    ) in said


async def test_refused_options_leave_no_trace(
    sim: Any, sim_namespace: str, site_file: Path
) -> None:
    """A spawner that refused hostile options builds the same pod as a clean one."""
    baseline = await manifest(site_file, sim_namespace, {"profile": "small"})
    spawner = make_spawner(site_file, sim_namespace, {"profile": "small", "image": "evil:1"})
    with pytest.raises(web.HTTPError):
        await spawner.load_user_options()
    spawner.user_options = {"profile": "small"}
    await spawner.load_user_options()
    pod = ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest())
    assert pod["spec"] == baseline["spec"]  # the token is in a Secret of the same name


# Pod fields, KubeSpawner trait names and KubeSpawner's own profile-option keys.
HOSTILE_OPTIONS: dict[str, Any] = {
    "image": "evil/root:latest",
    "cpu_limit": 64,
    "mem_limit": "1T",
    "cpu_guarantee": 64,
    "extra_resource_limits": {"nvidia.com/gpu": 8},
    "resources": {"limits": {"cpu": "64"}},
    "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
    "volume_mounts": [{"name": "root", "mountPath": "/host"}],
    "env": [{"name": "LD_PRELOAD", "value": "/tmp/x.so"}],
    "environment": {"LD_PRELOAD": "/tmp/x.so"},
    "securityContext": {"privileged": True, "runAsUser": 0},
    "container_security_context": {"privileged": True},
    "pod_security_context": {"runAsUser": 0},
    "uid": 0,
    "privileged": True,
    "allow_privilege_escalation": True,
    "service_account": "default",
    "automount_service_account_token": True,
    "node_selector": {"kubernetes.io/hostname": "gpu-1"},
    "tolerations": [{"operator": "Exists"}],
    "init_containers": [{"name": "x", "image": "busybox", "command": ["sh", "-c", "id"]}],
    "extra_containers": [{"name": "x", "image": "busybox"}],
    "extra_pod_config": {"hostNetwork": True},
    "kubespawner_override": {"image": "evil:1"},
    "profile_list": [],
    "cmd": ["sh", "-c", "id"],
    "args": ["--allow-root"],
    "profile-option-image": "evil:1",
    "profile-option-image--unlisted-choice": "evil:1",
}


@pytest.mark.parametrize("key", sorted(HOSTILE_OPTIONS))
async def test_no_user_option_reaches_the_pod(
    sim: Any, sim_namespace: str, site_file: Path, key: str
) -> None:
    value = HOSTILE_OPTIONS[key]
    # the REST API's JSON body, stored as user_options
    spawner = make_spawner(site_file, sim_namespace, {"profile": "small", key: value})
    with pytest.raises(web.HTTPError) as refused:
        await spawner.load_user_options()
    assert refused.value.status_code == 400
    assert key[:40] in str(refused.value.log_message)
    # the spawn form and a deep link's query string
    text = value if isinstance(value, str) else str(value)
    for shape in (spawner.options_from_form, spawner.options_from_query):
        with pytest.raises(web.HTTPError) as refused:
            shaped = shape({"profile": ["small"], key: [text]})
            if inspect.isawaitable(shaped):  # options_from_query is a coroutine
                await shaped
        assert refused.value.status_code == 400
        assert key[:40] in str(refused.value.log_message)


@pytest.mark.parametrize(
    "options",
    [
        {"profile": "small", "dataset": ["lofar:../../etc"]},
        {"profile": "small", "workflow": "file:///etc"},
        {"profile": "small", "workflow": WORKFLOW, "ref": "--upload-pack=touch /tmp/x"},
        {"profile": "small", "workflow": WORKFLOW, "filepath": "../../../etc/passwd"},
        {"profile": "gpu"},
    ],
)
async def test_allowed_keys_with_hostile_values_are_refused(
    sim: Any, sim_namespace: str, site_file: Path, options: dict[str, Any]
) -> None:
    spawner = make_spawner(site_file, sim_namespace, options)
    with pytest.raises(web.HTTPError) as refused:
        await spawner.load_user_options()
    assert refused.value.status_code in (400, 403)


async def test_no_rucio_secret_reaches_the_pod(
    sim: Any, sim_namespace: str, tmp_path: Path
) -> None:
    """The site's Rucio password stays with the hub: not in the pod, not in its ConfigMap."""
    secret = "s3cret-rucio-password-" + "9" * 16
    password_file = tmp_path / "rucio-password"
    password_file.write_text(secret)
    site = dict(HUB_SITE)
    site["data"] = {
        "catalogue": "rucio",
        "rucio": {
            "host": "https://rucio.example.org",
            "account": "esap",
            "auth_type": "userpass",
            "username": "esap",
            "password_file": str(password_file),
            "local_rses": [{"name": "HUB_DISK", "pfn_prefix": "/data/rucio/",
                            "mount_path": "/rucio/hub", "volume": NFS}],
            "staging": {"destination_rse": "HUB_DISK"},
        },
    }  # fmt: skip
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(site))
    pod = await manifest(site_file, sim_namespace, {"profile": "small", "workflow": WORKFLOW})
    check_pod(pod)
    r = requests.get(
        f"{sim.url}/api/v1/namespaces/{sim_namespace}/configmaps/jupyter-ada-datalinks", timeout=10
    )
    assert r.status_code == 200, r.text  # the workflow's ConfigMap exists: it is checked too
    for text in (json.dumps(pod), r.text):
        assert secret not in text
        assert str(password_file) not in text
