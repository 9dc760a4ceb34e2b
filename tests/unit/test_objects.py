"""Pure builders of the data and workflow parts of a pod, compared with golden dicts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from esap_spawner.data.catalogue import DidFiles, FileReplica, PathOutsideMount, Replica
from esap_spawner.site.model import LocalRSE
from esap_spawner.spawn import objects
from esap_spawner.spawn.objects import HomeVolume
from esap_spawner.spawn.plan import DataPlanError, dataset_plan, narrow_to_datasets

PREFIX = "/data/rucio/"
LOCAL = LocalRSE(
    name="HUB_LOCAL_DISK",
    pfn_prefix=PREFIX,
    mount_path="/rucio/hub-local",
    volume={"persistentVolumeClaim": {"claimName": "rucio-hub-local"}},
)
NFS = LocalRSE(
    name="NFS_RSE",
    pfn_prefix="/export/",
    mount_path="/rucio/nfs",
    volume={"nfs": {"server": "nfs.example.org", "path": "/export"}},
)


def replica_file(name: str, pfn: str, rse: str = "HUB_LOCAL_DISK", size: int = 10) -> FileReplica:
    return FileReplica(
        scope="escape",
        name=name,
        bytes=size,
        adler32="0000abcd",
        replicas=(
            Replica(rse="REMOTE", state="AVAILABLE", pfn=f"root://remote/{name}"),
            Replica(rse=rse, state="AVAILABLE", pfn=pfn),
        ),
    )


def resolved(*files: FileReplica, did: str = "escape:crab-2020") -> dict[str, DidFiles]:
    return {did: DidFiles(did=did, did_type="DATASET", files=files)}


def test_plan_refuses_storage_without_a_volume() -> None:
    bare = LocalRSE(name="HUB_LOCAL_DISK", pfn_prefix=PREFIX, mount_path="/rucio/hub-local")
    files = resolved(replica_file("c.0", "file:///data/rucio/escape/ab/cd/c.0"))
    with pytest.raises(DataPlanError, match="HUB_LOCAL_DISK has no volume to mount"):
        dataset_plan(files, [bare], "/home/jovyan/datasets")


def test_plan_maps_pfns_into_the_mounts() -> None:
    plan = dataset_plan(
        resolved(
            replica_file("c.0", "file:///data/rucio/escape/ab/cd/c.0"),
            replica_file("c.1", "file:///export/escape/12/34/c.1", rse="NFS_RSE", size=20),
        ),
        [LOCAL, NFS],
        "/home/jovyan/datasets/",
    )
    assert plan == {
        "version": 1,
        "mount_root": "/home/jovyan/datasets",
        "allowed_roots": ["/rucio/hub-local", "/rucio/nfs"],
        "rses": ["HUB_LOCAL_DISK", "NFS_RSE"],
        "datasets": {
            "escape:crab-2020": {
                "bytes_total": 30,
                "type": "DATASET",
                "files": [
                    {"name": "c.0", "bytes": 10, "adler32": "0000abcd", "md5": None,
                     "rse": "HUB_LOCAL_DISK", "path": "/rucio/hub-local/escape/ab/cd/c.0"},
                    {"name": "c.1", "bytes": 20, "adler32": "0000abcd", "md5": None,
                     "rse": "NFS_RSE", "path": "/rucio/nfs/escape/12/34/c.1"},
                ],
            }
        },
    }  # fmt: skip


def test_plan_refuses_escaping_pfns_and_files_not_local() -> None:
    with pytest.raises(PathOutsideMount, match="does not name a file inside"):
        dataset_plan(
            resolved(replica_file("c.0", "file:///data/rucio/../../etc/passwd")), [LOCAL], "/d"
        )
    with pytest.raises(PathOutsideMount, match="not under"):
        dataset_plan(resolved(replica_file("c.0", "file:///etc/passwd")), [LOCAL], "/d")
    with pytest.raises(DataPlanError, match="no available replica at the hub's storage"):
        dataset_plan(resolved(replica_file("c.0", "file:///x/c.0", rse="ELSE")), [LOCAL], "/d")
    with pytest.raises(DataPlanError, match="would leave the dataset folder"):
        dataset_plan(resolved(replica_file("../x", "file:///data/rucio/escape/x")), [LOCAL], "/d")


STATIC = LocalRSE("STATIC", "/srv/archive/", "/archive", {"nfs": {"server": "n", "path": "/a"}})


def static_plan(*datasets: tuple[str, str | None, list[str]]) -> dict[str, Any]:
    """A plan of static datasets: (DID, type, file paths under /archive)."""
    return {
        "version": 1, "mount_root": "/home/jovyan/datasets", "allowed_roots": ["/archive"],
        "rses": ["STATIC"],
        "datasets": {
            did: {"type": kind, "bytes_total": 0,
                  "files": [{"name": p, "rse": "STATIC", "path": f"/archive/{p}"} for p in paths]}
            for did, kind, paths in datasets
        },
    }  # fmt: skip


def test_the_static_volume_is_narrowed_to_the_datasets_asked_for() -> None:
    """Security review finding 3: a pod that asks for one dataset sees only that one."""
    plan = narrow_to_datasets(
        static_plan(
            ("lofar:L1", "DATASET", ["lofar/L1/a.fits", "lofar/L1/sub/b.fits"]),
            ("lofar:L2", "DATASET", ["lofar/L2/deep/only.fits"]),
            ("lofar:one", "FILE", ["lofar/one.fits"]),
            ("lofar:in-L1", "DATASET", ["lofar/L1/sub/b.fits"]),  # inside L1: mounted with it
        ),
        [STATIC],
        ["STATIC"],
    )
    assert plan["subpaths"] == {"STATIC": ["lofar/L1", "lofar/L2/deep", "lofar/one.fits"]}
    assert plan["allowed_roots"] == [
        "/archive/lofar/L1", "/archive/lofar/L2/deep", "/archive/lofar/one.fits"
    ]  # fmt: skip
    volumes, mounts = objects.storage_volumes([STATIC], ["STATIC"], plan["subpaths"])
    assert volumes == [{"name": "esap-rse-static", "nfs": {"server": "n", "path": "/a"}}]
    assert mounts == [
        {"name": "esap-rse-static", "mountPath": f"/archive/{sub}", "subPath": sub,
         "readOnly": True}
        for sub in ("lofar/L1", "lofar/L2/deep", "lofar/one.fits")
    ]  # fmt: skip
    with pytest.raises(DataPlanError, match="top of the volume"):
        narrow_to_datasets(static_plan(("x:y", "DATASET", ["top.fits"])), [STATIC], ["STATIC"])
    # a Rucio RSE (not narrowed) keeps its one whole mount
    assert narrow_to_datasets(static_plan(), [STATIC], [])["subpaths"] == {}


def test_storage_volumes_read_only_only_the_used_ones_and_any_volume_source() -> None:
    csi = LocalRSE("CSI_RSE", "/c/", "/rucio/csi", {"csi": {"driver": "x.csi.io"}})
    volumes, mounts = objects.storage_volumes([LOCAL, NFS, csi], ["NFS_RSE", "CSI_RSE"])
    assert volumes == [
        {"name": "esap-rse-nfs-rse", "nfs": {"server": "nfs.example.org", "path": "/export"}},
        {"name": "esap-rse-csi-rse", "csi": {"driver": "x.csi.io"}},
    ]
    assert mounts == [
        {"name": "esap-rse-nfs-rse", "mountPath": "/rucio/nfs", "readOnly": True},
        {"name": "esap-rse-csi-rse", "mountPath": "/rucio/csi", "readOnly": True},
    ]
    # the site's mapping is copied, never shared
    volumes[0]["nfs"]["path"] = "/changed"
    assert NFS.volume["nfs"]["path"] == "/export"


def test_links_init_container_golden() -> None:
    container = objects.links_init_container(
        image="quay.io/jupyter/scipy-notebook:2026-01-01",
        mount_root="/home/jovyan/datasets",
        storage_mounts=[{"name": "esap-rse-hub-local-disk", "mountPath": "/rucio/hub-local"}],
        uid=1000,
    )
    assert container == {
        "name": "esap-datalinks",
        "image": "quay.io/jupyter/scipy-notebook:2026-01-01",
        "command": ["python3", "/opt/esap/datalinks.py", "links",
                    "--plan=/opt/esap/plan.json", "--root=/home/jovyan/datasets"],
        "env": [{"name": "ESAP_DATASETS", "value": "/home/jovyan/datasets/manifest.json"}],
        "volumeMounts": [
            {"name": "esap-datalinks", "mountPath": "/opt/esap", "readOnly": True},
            {"name": "esap-datasets", "mountPath": "/home/jovyan/datasets", "readOnly": False},
            {"name": "esap-rse-hub-local-disk", "mountPath": "/rucio/hub-local",
             "readOnly": True},
        ],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
            "readOnlyRootFilesystem": True,
        },
        "resources": objects.INIT_RESOURCES,
    }  # fmt: skip
    assert "args" not in container  # argv in command, no shell anywhere
    assert container["command"][0] == "python3"


DEST = "/home/jovyan/My-Notebooks"


def test_checkout_container_argv_home_volume_and_url() -> None:
    url = "https://git.example.org/esap/My Notebooks.git"
    without = objects.checkout_init_container(
        image="img", url=url, ref="v1.0", dest=DEST, home_volume=None, uid=1000
    )
    assert without["command"] == [
        "python3", "/opt/esap/datalinks.py", "checkout", f"--url={url}",
        "--dest=/home/jovyan/My-Notebooks", "--ref=v1.0",
    ]  # fmt: skip
    assert {"name": "GIT_TERMINAL_PROMPT", "value": "0"} in without["env"]
    assert not [e for e in without["env"] if e["name"].startswith("JUPYTERHUB_")]
    assert without["volumeMounts"][1] == {
        "name": "esap-workflow", "mountPath": "/home/jovyan/My-Notebooks"
    }  # fmt: skip
    ctx = without["securityContext"]
    assert ctx["runAsNonRoot"] and not ctx["allowPrivilegeEscalation"]
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert objects.workflow_volumes(DEST, None) == (
        [{"name": "esap-workflow", "emptyDir": {}}],
        [{"name": "esap-workflow", "mountPath": "/home/jovyan/My-Notebooks"}],
    )

    home = objects.find_home_volume(
        [{"name": "x", "mountPath": "/tmp"}, {"name": "home", "mountPath": "/home/jovyan/",
                                               "subPath": "homes/ada"}],
        "/home/jovyan",
    )  # fmt: skip
    assert home == HomeVolume("home", "/home/jovyan", "homes/ada")
    within = objects.checkout_init_container(
        image="img", url=url, ref=None, dest=DEST, home_volume=home, uid=None
    )
    assert within["volumeMounts"][1] == {
        "name": "home", "mountPath": "/home/jovyan", "subPath": "homes/ada"
    }  # fmt: skip
    assert not any(a.startswith("--ref") for a in within["command"])
    extra = objects.checkout_init_container(
        image="img", url=url, ref=None, dest=DEST, home_volume=None, uid=1,
        checkout_env={"HTTPS_PROXY": "http://proxy:3128", "HOME": "/root"},
    )  # fmt: skip
    names = [e["name"] for e in extra["env"]]
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in extra["env"]
    assert names.count("HOME") == 1 and {"name": "HOME", "value": "/tmp"} in extra["env"]
    assert objects.workflow_volumes(DEST, home) == ([], [])
    assert objects.workflow_url("My-Notebooks", "nb/analysis 1.ipynb") == (
        "/lab/tree/My-Notebooks/nb/analysis%201.ipynb"
    )
    assert objects.workflow_url("w", None) == "/lab/tree/w"
    assert objects.workflow_folder("https://g.org/a/b/") == "b"
    assert objects.workflow_folder("https://g.org/") == "workflow"


@pytest.mark.parametrize(
    ("repository", "reserved", "folder"),
    [
        ("notebooks", ["/home/jovyan/datasets", "/rucio/hub-local"], "notebooks"),
        ("datasets", ["/home/jovyan/datasets"], "datasets-workflow"),
        ("datasets", ["/home/jovyan/datasets/"], "datasets-workflow"),
        ("datasets", ["/home/jovyan/datasets", "/home/jovyan/datasets-workflow"],
         "datasets-workflow-2"),
        ("data", ["/home/jovyan/data/sets"], "data-workflow"),  # it would hold the mount
        ("data", ["/home/jovyan/datasets"], "data"),  # a name sharing letters is no clash
        ("archive", ["/archive"], "archive"),  # outside the home directory
    ],
)  # fmt: skip
def test_a_checkout_never_lands_on_a_data_mount(
    repository: str, reserved: list[str], folder: str
) -> None:
    url = f"https://git.example.org/esap/{repository}.git"
    assert objects.checkout_folder(url, home="/home/jovyan/", reserved=reserved) == folder


def test_config_map_holds_plan_and_script_and_refuses_oversize() -> None:
    plan = {"version": 1, "datasets": {"a:b": {"files": [{"name": "x"}]}}}
    owner = objects.pod_owner_reference("jupyter-ada", "uid-1")
    cm = objects.datalinks_config_map(
        "jupyter-ada", plan, labels={"app": "jupyterhub"}, owner=owner, script="print(1)\n"
    )
    assert cm == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "jupyter-ada-datalinks",
            "labels": {"app": "jupyterhub"},
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Pod", "name": "jupyter-ada", "uid": "uid-1",
                 "blockOwnerDeletion": True, "controller": False}
            ],
        },
        "data": {"plan.json": json.dumps(plan, separators=(",", ":"), sort_keys=True),
                 "datalinks.py": "print(1)\n", "esap_did.py": objects.did_grammar_source()},
    }  # fmt: skip
    real = objects.datalinks_config_map("p", plan)
    assert "import subprocess" in real["data"]["datalinks.py"]  # the real program is shipped
    assert "def parse_did" in real["data"]["esap_did.py"]  # with the grammar it imports
    big: dict[str, Any] = {
        "version": 1,
        "datasets": {f"s:d{i}": {"files": [{"name": "x" * 200}] * 100} for i in range(100)},
    }
    with pytest.raises(DataPlanError, match="100 datasets asked for list 10000 files"):
        objects.datalinks_config_map("p", big)


def test_volume_names_are_dns_labels() -> None:
    assert objects.volume_name("esap-rse", "HUB_LOCAL_DISK") == "esap-rse-hub-local-disk"
    assert len(objects.volume_name("esap-rse", "X" * 200)) <= 63


def test_servers_using_reads_the_options_of_live_pods() -> None:
    def pod(name: str, datasets: Any, **state: Any) -> dict[str, Any]:
        options = json.dumps({"profile": "small", "dataset": datasets})
        return {
            "metadata": {"name": name, "annotations": {objects.OPTIONS_ANNOTATION: options},
                         **state.get("meta", {})},
            "status": {"phase": state.get("phase", "Running")},
        }  # fmt: skip

    pods = [
        pod("a", ["x:1", "x:2"]),
        pod("b", ["x:1"], phase="Pending"),
        pod("gone", ["x:1"], phase="Failed"),
        pod("going", ["x:1"], meta={"deletionTimestamp": "2026-12-06T00:00:00Z"}),
        pod("odd", "x:3"),  # not a list: nothing read from it
        {"metadata": {"name": "bare"}},
    ]
    assert objects.servers_using(pods) == {"x:1": ["a", "b"], "x:2": ["a"]}
    assert objects.servers_using(pods, besides="a") == {"x:1": ["b"]}
    broken = {"metadata": {"name": "c", "annotations": {objects.OPTIONS_ANNOTATION: "{"}}}
    assert objects.datasets_of(broken) == frozenset()
