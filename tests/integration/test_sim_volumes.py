"""Volumes in the process kubelet: a root folder per pod, mounts in it, translated paths."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiException

from esap_spawner.dev.sim import SimulatorThread
from esap_spawner.dev.sim.podroot import PodRoot
from tests.harness.sim import TEST_DELAYS, k8s_api

pytestmark = pytest.mark.integration
PY = sys.executable
NS = "default"

# The init container: writes into the shared emptyDir and the claim, links into the hostPath.
INIT = r"""
import os, sys
shared, link_dir, target, work = sys.argv[1:5]
plan = sys.argv[5].split("=", 1)[1]
open(os.path.join(shared, "written.txt"), "w").write("init saw " + open(plan).read())
os.makedirs(link_dir, exist_ok=True)
os.symlink(os.path.relpath(target, link_dir), os.path.join(link_dir, "file.txt"))
count = os.path.join(work, "count")
n = int(open(count).read()) if os.path.exists(count) else 0
open(count, "w").write(str(n + 1))
"""

# The main container: reads everything through the pod paths it was given, prints JSON.
MAIN = r"""
import json, os, stat, sys
link = "/home/jovyan/datasets/scope/name/file.txt"
paths = dict(arg.split("=", 1) for arg in sys.argv[1:] if "=" in arg)
def read(p):
    return open(p).read()
out = {
    "home": os.environ["HOME"], "cwd": os.getcwd(), "argv": sys.argv[1:],
    "written": read(os.environ["WRITTEN"]),
    "linked": read(paths["--link"]), "link_text": os.readlink(paths["--link"]),
    "plan": read(paths["--plan"]),
    "plan_mode": oct(stat.S_IMODE(os.stat(paths["--plan"]).st_mode)),
    "config_files": sorted(os.listdir(os.path.dirname(os.path.dirname(paths["--plan"])))),
    "token": read(paths["--token"]), "labels": read(paths["--labels"]),
    "pod_name": read(paths["--pod-name"]), "count": read(paths["--count"]),
    "host_readonly": read(paths["--host"]),
    "untranslated": os.environ["UNTRANSLATED"], "listing": os.environ["LISTING"],
}
print("OUT", json.dumps(out), flush=True)  # not bare JSON: the client would parse it
"""


def data_pod(name: str, host: Path, *, claim: str = "work") -> dict[str, Any]:
    shared = {"name": "shared", "mountPath": "/home/jovyan/datasets"}
    storage = {"name": "storage", "mountPath": "/rucio/hub-local", "readOnly": True}
    work = {"name": "work", "mountPath": "/home/jovyan/work"}
    config = {"name": "config", "mountPath": "/opt/esap", "readOnly": True}
    init = {
        "name": "links",
        "image": "python:3",
        "command": [PY, "-c", INIT],
        "args": [
            "/home/jovyan/datasets",
            "/home/jovyan/datasets/scope/name",
            "/rucio/hub-local/data/file.txt",
            "/home/jovyan/work",
            "--plan=/opt/esap/conf/plan.json",
        ],
        "volumeMounts": [shared, storage, work, config],
    }
    main = {
        "name": "notebook",
        "image": "python:3",
        "command": [PY, "-c", MAIN],
        "args": [
            "--link=/home/jovyan/datasets/scope/name/file.txt",
            "--plan=/opt/esap/conf/plan.json",
            "--token=/etc/creds/token",
            "--labels=/etc/podinfo/labels",
            "--pod-name=/etc/podinfo/name",
            "--count=/home/jovyan/work/count",
            "--host=/rucio/hub-local/data/file.txt",
            "/usr/lib/not-a-mount",
        ],
        "env": [
            {"name": "WRITTEN", "value": "/home/jovyan/datasets/written.txt"},
            {"name": "UNTRANSLATED", "value": "/srv/elsewhere"},
            {"name": "LISTING", "value": "/home/jovyan/a:/usr/b"},
        ],
        "volumeMounts": [
            dict(shared, readOnly=True),
            storage,
            work,
            config,
            {"name": "creds", "mountPath": "/etc/creds", "readOnly": True},
            {"name": "podinfo", "mountPath": "/etc/podinfo"},
        ],
    }
    downward = [
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
    ]
    return {
        "metadata": {"name": name, "labels": {"app": "esap", "user": "ada"}},
        "spec": {
            "restartPolicy": "Never",
            "initContainers": [init],
            "containers": [main],
            "volumes": [
                {"name": "shared", "emptyDir": {}},
                {"name": "storage", "hostPath": {"path": str(host), "type": "Directory"}},
                {"name": "work", "persistentVolumeClaim": {"claimName": claim}},
                {
                    "name": "config",
                    "configMap": {
                        "name": "plan",
                        "defaultMode": 0o444,
                        "items": [{"key": "plan.json", "path": "conf/plan.json"}],
                    },
                },
                {"name": "creds", "secret": {"secretName": "creds"}},
                {"name": "podinfo", "downwardAPI": {"items": downward}},
            ],
        },
    }


@pytest.fixture
def host(tmp_path: Path) -> Path:
    folder = tmp_path / "host-storage"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "file.txt").write_text("replica bytes")
    return folder


@pytest.fixture
async def cluster(sim_factory: Callable[..., SimulatorThread], tmp_path: Path) -> Any:
    archive = tmp_path / "nfs-archive"
    (archive / "sub").mkdir(parents=True)
    (archive / "sub" / "f.txt").write_text("from the mapped export")
    sim = sim_factory(
        {"nodes": [{"name": "n1"}]},
        kubelet="process",
        delays=dataclasses.replace(TEST_DELAYS, mount_retry=0.1),
        volume_paths={"nfs.example.org:/archive": str(archive)},
    )
    api = k8s_api(sim)
    try:
        yield sim, api
    finally:
        await api.api_client.close()


async def until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")


async def phase(api: Any, name: str, wanted: str) -> Any:
    found = await api.read_namespaced_pod(name, NS)
    return found if found.status.phase == wanted else None


async def gone(api: Any, name: str) -> bool:
    try:
        await api.read_namespaced_pod(name, NS)
    except ApiException as exc:
        return exc.status == 404
    return False


async def warnings(api: Any, name: str) -> list[str]:
    events = await api.list_namespaced_event(
        NS, field_selector=f"involvedObject.name={name},type=Warning"
    )
    return [f"{e.reason}: {e.message}" for e in events.items]


async def make_objects(api: Any) -> None:
    await api.create_namespaced_config_map(
        NS, {"metadata": {"name": "plan"}, "data": {"plan.json": '{"v": 1}', "other": "x"}}
    )
    token = base64.b64encode(b"s3cret\n").decode()
    await api.create_namespaced_secret(
        NS, {"metadata": {"name": "creds"}, "data": {"token": token}}
    )
    claim = {
        "metadata": {"name": "work"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    await api.create_namespaced_persistent_volume_claim(NS, claim)


async def run_to_end(api: Any, manifest: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    await api.create_namespaced_pod(NS, manifest)
    name = manifest["metadata"]["name"]
    done = await until(lambda: phase(api, name, "Succeeded"))
    log = await api.read_namespaced_pod_log(name, NS)
    return done, json.loads(log.strip().splitlines()[-1].removeprefix("OUT "))


async def test_volumes_seen_through_translated_paths_and_cleaned_up(
    cluster: Any, host: Path
) -> None:
    sim, api = cluster
    await make_objects(api)
    _, out = await run_to_end(api, data_pod("first", host))

    home = Path(out["home"])
    root = Path(str(home)[: -len("/home/jovyan")])
    workdir = sim.sim.workdir.resolve()
    assert str(home).endswith("/home/jovyan") and root.is_relative_to(workdir)
    assert out["cwd"] == str(home)
    # the init container's files, through the shared emptyDir
    assert out["written"] == 'init saw {"v": 1}'
    # its relative link into the hostPath mount resolves from the main container
    assert out["link_text"] == "../../../../../rucio/hub-local/data/file.txt"
    assert out["linked"] == "replica bytes" == out["host_readonly"]
    # ConfigMap items and defaultMode, Secret, downward API, claim
    assert (out["plan"], out["plan_mode"], out["config_files"]) == ('{"v": 1}', "0o444", ["conf"])
    assert out["token"] == "s3cret\n"
    assert out["labels"] == 'app="esap"\nuser="ada"\n'
    assert out["pod_name"] == "first"
    assert out["count"] == "1"
    # what is translated and what is not
    assert out["argv"][0] == f"--link={root}/home/jovyan/datasets/scope/name/file.txt"
    assert out["argv"][-1] == "/usr/lib/not-a-mount"
    assert out["untranslated"] == "/srv/elsewhere"
    assert out["listing"] == f"{root}/home/jovyan/a:/usr/b"
    assert (root / "rucio" / "hub-local").is_symlink()
    assert (root / "home" / "jovyan" / "datasets").is_dir()  # a real folder: links resolve

    await api.delete_namespaced_pod("first", NS)
    await until(lambda: gone(api, "first"))
    await until(lambda: asyncio.sleep(0, not root.exists()))
    assert (host / "data" / "file.txt").read_text() == "replica bytes"  # never followed
    assert sorted(p.name for p in host.rglob("*")) == ["data", "file.txt"]
    claim_folder = workdir / "pvcs" / NS / "work"
    assert (claim_folder / "count").read_text() == "1"

    # the claim outlives the pod: a second pod counts on
    _, second = await run_to_end(api, data_pod("second", host))
    assert second["count"] == "2"
    await api.delete_namespaced_pod("second", NS)
    await until(lambda: gone(api, "second"))
    await api.delete_namespaced_persistent_volume_claim("work", NS)
    await until(lambda: asyncio.sleep(0, not claim_folder.exists()))
    assert host.exists()


async def test_missing_objects_fail_the_mount_until_they_exist(
    cluster: Any, host: Path, tmp_path: Path
) -> None:
    _, api = cluster
    marker = tmp_path / "started"
    manifest = data_pod("waiting", host)
    manifest["spec"]["initContainers"][0]["args"].append(str(marker))
    manifest["spec"]["initContainers"][0]["command"][2] += "\nopen(sys.argv[6], 'w').close()\n"
    await api.create_namespaced_pod(NS, manifest)

    async def failed_mount() -> list[str]:
        return [w for w in await warnings(api, "waiting") if w.startswith("FailedMount")]

    (message,) = await until(failed_mount)
    assert message == 'FailedMount: MountVolume.SetUp failed for volume "work" : ' + (
        'persistentvolumeclaim "work" not found'
    )
    await asyncio.sleep(0.5)
    pending = await api.read_namespaced_pod("waiting", NS)
    assert pending.status.phase == "Pending" and not marker.exists()
    assert pending.status.container_statuses[0].state.waiting.reason == "ContainerCreating"
    await make_objects(api)
    _, out = await run_to_end_existing(api, "waiting")
    assert marker.exists() and out["count"] == "1"
    assert len(await failed_mount()) == 1  # reported once, not at every retry


async def run_to_end_existing(api: Any, name: str) -> tuple[Any, dict[str, Any]]:
    done = await until(lambda: phase(api, name, "Succeeded"))
    log = await api.read_namespaced_pod_log(name, NS)
    return done, json.loads(log.strip().splitlines()[-1].removeprefix("OUT "))


def simple_pod(name: str, volume: dict[str, Any], *args: str) -> dict[str, Any]:
    """A pod printing the files named by ``args`` (pod paths, translated in argv)."""
    script = "import sys; print(''.join(open(p).read() for p in sys.argv[1:]))"
    container = {
        "name": "main",
        "image": "python:3",
        "command": [PY, "-c", script, *args],
        "volumeMounts": [{"name": "v", "mountPath": "/mnt/v", "readOnly": True}],
    }
    return {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [container],
            "volumes": [{"name": "v", **volume}],
        },
    }


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        (
            {"configMap": {"name": "absent"}},
            'configmap "absent" not found',
        ),
        (
            {"secret": {"secretName": "absent"}},
            'secret "absent" not found',
        ),
        (
            {"hostPath": {"path": "/nonexistent/esap-sim-test", "type": "Directory"}},
            "hostPath type check failed: /nonexistent/esap-sim-test is not a Directory",
        ),
        (
            {"csi": {"driver": "example.csi.k8s.io"}},
            "volume type csi is not emulated by the process kubelet (map it to a local folder "
            "with Simulator(volume_paths={'v': FOLDER}))",
        ),
    ],
    ids=["configmap", "secret", "hostpath", "csi"],
)
async def test_a_volume_that_cannot_be_mounted_keeps_the_pod_from_starting(
    cluster: Any, volume: dict[str, Any], message: str
) -> None:
    sim, api = cluster
    await api.create_namespaced_pod(NS, simple_pod("broken", volume))
    (event,) = await until(lambda: warnings(api, "broken"))
    assert event == f'FailedMount: MountVolume.SetUp failed for volume "v" : {message}'
    await asyncio.sleep(0.3)
    pod = await api.read_namespaced_pod("broken", NS)
    assert pod.status.phase == "Pending"
    assert sim.pods_running() == 0
    assert await api.read_namespaced_pod_log("broken", NS) == ""
    roots = sim.sim.workdir / "pods" / NS
    # a failed attempt leaves no root (seen from this thread, between attempts)
    await until(lambda: asyncio.sleep(0, not list(roots.glob("broken-*/root"))))
    await api.delete_namespaced_pod("broken", NS)
    await until(lambda: gone(api, "broken"))


async def test_nfs_mapped_to_a_local_folder_and_nested_host_mounts_refused(
    cluster: Any, tmp_path: Path
) -> None:
    _, api = cluster
    nfs = {"nfs": {"server": "nfs.example.org", "path": "/archive/sub"}}
    await api.create_namespaced_pod(NS, simple_pod("nfs", nfs, "/mnt/v/f.txt"))
    await until(lambda: phase(api, "nfs", "Succeeded"))
    assert (await api.read_namespaced_pod_log("nfs", NS)).strip() == "from the mapped export"

    host = tmp_path / "host-home"
    host.mkdir()
    nested = simple_pod("nested", {"hostPath": {"path": str(host)}})
    nested["spec"]["volumes"].append({"name": "inner", "emptyDir": {}})
    nested["spec"]["containers"][0]["volumeMounts"].append(
        {"name": "inner", "mountPath": "/mnt/v/inner"}
    )
    await api.create_namespaced_pod(NS, nested)
    (event,) = await until(lambda: warnings(api, "nested"))
    assert "is nested in a host path volume" in event
    assert list(host.iterdir()) == []  # nothing written into the host folder


def test_translation_rule() -> None:
    root = PodRoot(Path("/r"), "/home/jovyan", ("/opt/esap", "/rucio/hub-local"))
    assert root.translate("/home/jovyan") == "/r/home/jovyan"
    assert root.translate("/home/jovyan/datasets/manifest.json") == (
        "/r/home/jovyan/datasets/manifest.json"
    )
    assert root.translate("--ServerApp.root_dir=/home/jovyan") == (
        "--ServerApp.root_dir=/r/home/jovyan"
    )
    assert root.translate("-p=/opt/esap/plan.json") == "-p=/r/opt/esap/plan.json"
    for kept in ("/home/jovyanx", "/opt/esapx/a", "/usr/bin/python3", "jovyan", "a=/opt/esap",
                 "--x=relative", "/rucio", "print('/home/jovyan')"):  # fmt: skip
        assert root.translate(kept) == kept
    node = {"PATH": "/home/jovyan/bin:/usr/bin"}
    env = root.environment(
        {"PATH": "/home/jovyan/bin:/usr/bin", "HOME": "/home/jovyan", "P": "/opt/esap:/usr/x"},
        node,
    )
    assert env == {
        "PATH": "/home/jovyan/bin:/usr/bin",  # inherited from the node: never translated
        "HOME": "/r/home/jovyan",
        "P": "/r/opt/esap:/usr/x",
    }


# -- the pod parts ESAPSpawner adds (esap_spawner.spawn.objects), run for real -----------------
NOTEBOOK = r"""
import json, os
path = os.environ.get("ESAP_DATASETS")
manifest = json.load(open(path)) if path else {"datasets": {}}
for did, entry in sorted(manifest["datasets"].items()):
    for f in entry["files"]:
        # the manifest holds pod paths; open them relative to where $ESAP_DATASETS is, as a
        # notebook must when its runtime shows the datasets folder somewhere else
        local = os.path.join(
            os.path.dirname(path), os.path.relpath(f["path"], manifest["mount_root"])
        )
        print("FILE", did, f["name"], os.readlink(local), open(local).read())
home = os.environ["HOME"]
for name in sorted(os.listdir(home)):
    print("HOME", name, sorted(os.listdir(os.path.join(home, name))))
# what the pod sees of the storage: all of /archive, from a path it holds (translated)
archive = os.path.dirname(os.path.dirname(os.environ["ARCHIVE"]))
if os.path.exists(archive):
    seen = [os.path.relpath(os.path.join(d, f), archive) for d, _, fs in os.walk(archive,
            followlinks=True) for f in fs]
    print("FILE archive", sorted(seen))
"""


def esap_pod(
    tmp_path: Path,
    *,
    datasets: bool,
    workflow: str | None,
    checkout_env: dict[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A pod with the real datasets/checkout init containers and their ConfigMap."""
    from esap_spawner.site.model import LocalRSE
    from esap_spawner.spawn import objects
    from esap_spawner.spawn.plan import narrow_to_datasets

    archive = tmp_path / "archive"
    (archive / "lofar" / "L1" / "sub").mkdir(parents=True)
    (archive / "lofar" / "L1" / "a.fits").write_text("AAA")
    (archive / "lofar" / "L1" / "sub" / "b.fits").write_text("BBB")
    (archive / "lofar" / "L2").mkdir()  # another dataset, not asked for
    (archive / "lofar" / "L2" / "c.fits").write_text("CCC")
    storage = LocalRSE(
        "static", "/archive/", "/archive", {"hostPath": {"path": str(archive), "type": "Directory"}}
    )
    files = [
        {"name": n, "bytes": 3, "rse": "static", "path": f"/archive/lofar/L1/{n}"}
        for n in ("a.fits", "sub/b.fits")
    ]
    plan = {
        "version": 1,
        "mount_root": "/home/jovyan/datasets",
        "allowed_roots": ["/archive"],
        "rses": ["static"],
        "datasets": {"lofar:L1": {"files": files, "bytes_total": 6}},
    }
    plan = narrow_to_datasets(plan, [storage], ["static"])  # as for a static catalogue
    data = objects.pod_data(
        pod_name="nb",
        image="python:3",
        uid=1000,
        plan=plan if datasets else None,
        storage=[storage],
        workflow=workflow,
        ref=None,
        home="/home/jovyan",
        home_volume=None,
        reserved=["/home/jovyan/datasets", "/archive"],
        checkout_env=checkout_env,
    )
    notebook = {
        "name": "notebook",
        "image": "python:3",
        "command": [PY, "-c", NOTEBOOK],
        "volumeMounts": data.mounts,
        "env": [
            *({"name": k, "value": v} for k, v in data.env.items()),
            {"name": "ARCHIVE", "value": "/archive/lofar/L1"},
        ],
    }
    pod = {
        "metadata": {"name": "nb"},
        "spec": {
            "restartPolicy": "Never",
            "initContainers": data.init_containers,
            "containers": [notebook],
            "volumes": data.volumes,
        },
    }
    return pod, objects.datalinks_config_map("nb", plan)


async def run_esap_pod(api: Any, pod: dict[str, Any], config_map: dict[str, Any]) -> list[str]:
    await api.create_namespaced_config_map(NS, config_map)
    await api.create_namespaced_pod(NS, pod)

    async def finished() -> Any:
        found = await api.read_namespaced_pod("nb", NS)
        return found if found.status.phase in ("Succeeded", "Failed") else None

    done = await until(finished, timeout=30)
    log = await api.read_namespaced_pod_log("nb", NS)
    assert done.status.phase == "Succeeded", (log, await warnings(api, "nb"))
    return [line for line in log.splitlines() if line.startswith(("FILE", "HOME"))]


async def test_workflow_checkout_into_the_home(cluster: Any, tmp_path: Path) -> None:
    """Cloned over https (the only transport the checkout uses) from the demo's server."""
    from esap_spawner.dev import demo_git

    _, api = cluster
    server = demo_git.start(tmp_path / "git")
    try:
        pod, config_map = esap_pod(
            tmp_path,
            datasets=False,
            workflow=server.workflow,
            checkout_env={"GIT_SSL_CAINFO": str(server.ca_file)},
        )
        lines = await run_esap_pod(api, pod, config_map)
    finally:
        server.stop()
    assert lines == [f"HOME {demo_git.REPOSITORY} ['.git', 'README.md', 'notebooks']"]


async def test_dataset_links_from_the_real_init_container(cluster: Any, tmp_path: Path) -> None:
    _, api = cluster
    pod, config_map = esap_pod(tmp_path, datasets=True, workflow=None)
    lines = await run_esap_pod(api, pod, config_map)
    assert [line for line in lines if line.startswith("FILE")] == [
        "FILE lofar:L1 a.fits ../../../../../archive/lofar/L1/a.fits AAA",
        "FILE lofar:L1 sub/b.fits ../../../../../../archive/lofar/L1/sub/b.fits BBB",
        # of the static volume the pod holds the dataset asked for, not lofar/L2
        "FILE archive ['lofar/L1/a.fits', 'lofar/L1/sub/b.fits']",
    ]


def test_volume_path_arguments_and_home_checked() -> None:
    from esap_spawner.dev.sim.cli import volume_paths
    from esap_spawner.dev.sim.simulator import Simulator

    assert volume_paths(["nfs.example.org:/archive=/srv/a", "esap-rse-x=/srv/b"]) == {
        "nfs.example.org:/archive": "/srv/a",
        "esap-rse-x": "/srv/b",
    }
    with pytest.raises(ValueError, match="expected KEY=FOLDER"):
        volume_paths(["/srv/a"])
    with pytest.raises(ValueError, match="home must be an absolute path"):
        Simulator(kubelet="process", home="/")


async def test_claim_at_the_home_with_nested_mounts_and_sub_paths(cluster: Any) -> None:
    sim, api = cluster
    await make_objects(api)
    script = r"""
import os, sys
home = os.environ["HOME"]
open(os.path.join(home, "notes.txt"), "a").write("kept\n")
open(sys.argv[1], "w").write("scratch")
print("CONF", open(sys.argv[2]).read())
print("SUB", open(sys.argv[3]).read())
print("HOME", sorted(os.listdir(home)))
"""
    container = {
        "name": "main",
        "image": "python:3",
        "command": [PY, "-c", script],
        "args": ["/home/jovyan/scratch/a/file", "/etc/app/plan.json", "/mnt/a-only/file"],
        "volumeMounts": [
            {"name": "home", "mountPath": "/home/jovyan"},
            {"name": "scratch", "mountPath": "/home/jovyan/scratch"},
            {"name": "scratch", "mountPath": "/mnt/a-only", "subPath": "a"},
            {"name": "config", "mountPath": "/etc/app/plan.json", "subPath": "plan.json"},
        ],
    }
    pod = {
        "metadata": {"name": "homed"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [container],
            "volumes": [
                {"name": "home", "persistentVolumeClaim": {"claimName": "work"}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "config", "configMap": {"name": "plan"}},
            ],
        },
    }
    await api.create_namespaced_pod(NS, pod)
    await until(lambda: phase(api, "homed", "Succeeded"))
    log = (await api.read_namespaced_pod_log("homed", NS)).splitlines()
    assert log == ['CONF {"v": 1}', "SUB scratch", "HOME ['notes.txt', 'scratch']"]
    claim = sim.sim.workdir.resolve() / "pvcs" / NS / "work"
    assert (claim / "scratch").is_symlink()  # the mount point, while the pod exists
    await api.delete_namespaced_pod("homed", NS)
    await until(lambda: gone(api, "homed"))
    await until(lambda: asyncio.sleep(0, not (claim / "scratch").is_symlink()))
    assert sorted(p.name for p in claim.iterdir()) == ["notes.txt"]  # the claim's data stays
