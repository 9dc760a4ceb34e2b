"""Pure builders of the pod parts that bring datasets and a workflow into a server.

No I/O. Everything returns plain dicts in the Kubernetes API's camelCase (what KubeSpawner's
``extra_*``/``init_containers`` traits accept, and what ``get_k8s_model`` turns into ``V1*``
models), so tests compare them with golden dicts.

The pieces, for a spawn with datasets:

- the **plan** (:mod:`esap_spawner.spawn.plan`): DID -> files and the path of each file's
  replica inside the pod, and which part of each storage to mount;
- the **storage volumes** (:func:`storage_volumes`): each local RSE (or the static volume)
  that holds a requested file, mounted READ-ONLY at its ``mount_path`` (the static volume:
  only the requested datasets, by ``subPath``), with the volume source exactly as the site
  file gives it (PVC, NFS, hostPath, CSI, ...);
- the **ConfigMap** (:func:`datalinks_config_map`): the plan and the source of
  :mod:`esap_spawner.data.datalinks`. The file list reaches the init container this way because it
  can be large (an env var would sit in the pod spec and in every ``kubectl get``); it is
  refused above :data:`CONFIG_MAP_LIMIT` bytes with a message that says how many files were
  asked for. The spawner creates it before the pod and hands it to the pod as owner afterwards,
  so deleting the pod deletes it;
- an **emptyDir** at ``mount_root`` where the links init container
  (:func:`links_init_container`) builds ``<mount_root>/<scope>/<name>/<file>`` relative links
  and ``manifest.json``; the notebook sees it read-only, with ``ESAP_DATASETS`` pointing at the
  manifest;
- for a workflow, the **checkout** init container (:func:`checkout_init_container`) that clones
  into the home directory; the server then opens ``lab/tree/<folder>/<filepath>``.

Init containers run the notebook's image (it has python3 and git), as the notebook's user, never
as root, with no privilege escalation, every capability dropped, and get no JUPYTERHUB_*
variable: they need none, and the checkout talks to a host the user chose (the hub token
stays with the notebook, read from its Secret: :mod:`esap_spawner.spawn.token_secret`).
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import quote, urlparse

from esap_spawner.site.model import LocalRSE
from esap_spawner.spawn.plan import DataPlanError

#: Bytes a ConfigMap may hold (Kubernetes allows 1 MiB; leave room for metadata).
CONFIG_MAP_LIMIT = 1_000_000
DATALINKS_DIR = "/opt/esap"
PLAN_KEY = "plan.json"
SCRIPT_KEY = "datalinks.py"
#: The DID grammar the program imports, beside it (:mod:`esap_spawner.data.did`).
GRAMMAR_KEY = "esap_did.py"
DATASETS_VOLUME = "esap-datasets"
CONFIG_VOLUME = "esap-datalinks"
WORKFLOW_VOLUME = "esap-workflow"
LINKS_CONTAINER = "esap-datalinks"
CHECKOUT_CONTAINER = "esap-checkout"
INIT_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}


#: The pod annotation holding the spawn's validated options (JSON), datasets included.
OPTIONS_ANNOTATION = "esap.escape.eu/options"


def datasets_of(pod: Mapping[str, Any]) -> frozenset[str]:
    """The datasets a server's pod (a dict, as the API gives it) was started with, from its
    :data:`OPTIONS_ANNOTATION`; none when it has none or it does not read."""
    text = ((pod.get("metadata") or {}).get("annotations") or {}).get(OPTIONS_ANNOTATION)
    try:
        found = json.loads(text).get("dataset") if text else None
    except (ValueError, AttributeError):
        return frozenset()
    if not isinstance(found, list):
        return frozenset()
    return frozenset(d for d in found if isinstance(d, str))


def servers_using(
    pods: Iterable[Mapping[str, Any]], *, besides: str | None = None
) -> dict[str, list[str]]:
    """DID -> the names of the pods (but ``besides``) that were started with it and have not
    ended nor begun to end."""
    found: dict[str, list[str]] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        phase = (pod.get("status") or {}).get("phase")
        if meta.get("name") == besides or meta.get("deletionTimestamp"):
            continue
        if phase in ("Succeeded", "Failed"):
            continue
        for did in datasets_of(pod):
            found.setdefault(did, []).append(str(meta.get("name")))
    return found


def volume_name(prefix: str, name: str) -> str:
    """A DNS-label volume name ``<prefix>-<name>`` (lower case, ``[a-z0-9-]``, <= 63)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "x"
    return f"{prefix}-{slug}"[:63].rstrip("-")


# --- volumes and mounts --------------------------------------------------------------------
def storage_volumes(
    storage: Sequence[LocalRSE],
    used: Sequence[str],
    subpaths: Mapping[str, Sequence[str]] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and READ-ONLY mounts of the storage in ``used`` (RSE names), in ``storage``
    order; the volume source is copied from the site file as is (a plan never uses an
    RSE without one: :func:`~esap_spawner.spawn.plan.dataset_plan` refuses it). An RSE in
    ``subpaths`` is mounted only there: each subpath of the volume at the same path under
    its ``mount_path``."""
    volumes, mounts = [], []
    wanted = set(used)
    for s in storage:
        if s.name not in wanted or s.volume is None:
            continue
        name = volume_name("esap-rse", s.name)
        volumes.append({"name": name, **json.loads(json.dumps(dict(s.volume)))})
        if subpaths is None or s.name not in subpaths:
            mounts.append({"name": name, "mountPath": s.mount_path, "readOnly": True})
            continue
        for sub in subpaths[s.name]:
            path = posixpath.join(s.mount_path, sub)
            mounts.append({"name": name, "mountPath": path, "subPath": sub, "readOnly": True})
    return volumes, mounts


def datasets_volume() -> dict[str, Any]:
    return {"name": DATASETS_VOLUME, "emptyDir": {}}


def datasets_mount(mount_root: str, *, read_only: bool) -> dict[str, Any]:
    return {"name": DATASETS_VOLUME, "mountPath": mount_root, "readOnly": read_only}


def config_map_name(pod_name: str) -> str:
    return f"{pod_name}-datalinks"[:253]


def config_volume(pod_name: str) -> dict[str, Any]:
    return {
        "name": CONFIG_VOLUME,
        "configMap": {"name": config_map_name(pod_name), "defaultMode": 0o444},
    }


def datalinks_source() -> str:
    """The init container's program (the source of :mod:`esap_spawner.data.datalinks`)."""
    return resources.files("esap_spawner.data").joinpath("datalinks.py").read_text("utf-8")


def did_grammar_source() -> str:
    """The DID grammar the program imports (the source of :mod:`esap_spawner.data.did`)."""
    return resources.files("esap_spawner.data").joinpath("did.py").read_text("utf-8")


def datalinks_config_map(
    pod_name: str,
    plan: Mapping[str, Any],
    *,
    labels: Mapping[str, str] | None = None,
    owner: Mapping[str, Any] | None = None,
    script: str | None = None,
) -> dict[str, Any]:
    """The ConfigMap holding the plan and the program (with the DID grammar it imports);
    :class:`DataPlanError` when too big."""
    text = json.dumps(plan, separators=(",", ":"), sort_keys=True)
    source = datalinks_source() if script is None else script
    grammar = did_grammar_source()
    size = len(text.encode()) + len(source.encode()) + len(grammar.encode())
    if size > CONFIG_MAP_LIMIT:
        files = sum(len(d["files"]) for d in plan.get("datasets", {}).values())
        raise DataPlanError(
            f"the {len(plan.get('datasets', {}))} datasets asked for list {files} files, "
            f"too many to hand to the server ({size} bytes of file list, at most "
            f"{CONFIG_MAP_LIMIT}); ask for fewer datasets"
        )
    metadata: dict[str, Any] = {"name": config_map_name(pod_name), "labels": dict(labels or {})}
    if owner is not None:
        metadata["ownerReferences"] = [dict(owner)]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {PLAN_KEY: text, SCRIPT_KEY: source, GRAMMAR_KEY: grammar},
    }


def pod_owner_reference(pod_name: str, uid: str) -> dict[str, Any]:
    """An ownerReference making the pod own an object (deleted with the pod)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": pod_name,
        "uid": uid,
        "blockOwnerDeletion": True,
        "controller": False,
    }


# --- init containers -----------------------------------------------------------------------
def security_context(uid: int | None, *, read_only_root: bool) -> dict[str, Any]:
    """Non-root, no privilege escalation, no capabilities, default seccomp."""
    context: dict[str, Any] = {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
        "readOnlyRootFilesystem": read_only_root,
    }
    if uid is not None:
        context["runAsUser"] = uid
    return context


def links_init_container(
    *,
    image: str,
    mount_root: str,
    storage_mounts: Sequence[Mapping[str, Any]],
    uid: int | None,
    image_pull_policy: str | None = None,
) -> dict[str, Any]:
    """``python3 /opt/esap/datalinks.py links --plan ... --root <mount_root>`` as argv."""
    container: dict[str, Any] = {
        "name": LINKS_CONTAINER,
        "image": image,
        "command": [
            "python3",
            f"{DATALINKS_DIR}/{SCRIPT_KEY}",
            "links",
            f"--plan={DATALINKS_DIR}/{PLAN_KEY}",
            f"--root={mount_root}",
        ],
        "env": [{"name": "ESAP_DATASETS", "value": manifest_path(mount_root)}],
        "volumeMounts": [
            {"name": CONFIG_VOLUME, "mountPath": DATALINKS_DIR, "readOnly": True},
            datasets_mount(mount_root, read_only=False),
            *[dict(m, readOnly=True) for m in storage_mounts],
        ],
        "securityContext": security_context(uid, read_only_root=True),
        "resources": INIT_RESOURCES,
    }
    if image_pull_policy:
        container["imagePullPolicy"] = image_pull_policy
    return container


def manifest_path(mount_root: str) -> str:
    return posixpath.join(mount_root, "manifest.json")


def workflow_folder(url: str) -> str:
    """The folder a workflow repository is checked out into: its last path segment, without
    ``.git``, made safe (``https://git.example.org/a/My Notebooks.git`` -> ``My-Notebooks``)."""
    last = urlparse(url).path.rstrip("/").rsplit("/", 1)[-1]
    if last.endswith(".git"):
        last = last[:-4]
    safe = re.sub(r"[^A-Za-z0-9_.\-]+", "-", last).strip("-.")
    return safe[:100] or "workflow"


def checkout_folder(url: str, *, home: str, reserved: Sequence[str]) -> str:
    """The folder under ``home`` a workflow is checked out into: the repository's own name
    (:func:`workflow_folder`), unless ``<home>/<name>`` is, or holds, one of ``reserved``
    (where data is mounted: the datasets folder, storage mounts); then ``<name>-workflow``
    (``<name>-workflow-2``, ...). A repository called ``datasets`` would otherwise be
    checked out where the datasets are mounted."""
    name = workflow_folder(url)
    taken = [posixpath.normpath(r) for r in reserved]
    for n in range(1, len(taken) + 2):
        folder = name if n == 1 else f"{name}-workflow" + (f"-{n - 1}" if n > 2 else "")
        dest = posixpath.normpath(posixpath.join(home, folder))
        if not any(r == dest or r.startswith(dest + "/") for r in taken):
            return folder
    raise AssertionError("unreachable: each reserved path rules out at most one folder")


def workflow_url(folder: str, filepath: str | None) -> str:
    """JupyterLab's URL for the workflow: ``/lab/tree/<folder>[/<filepath>]``, escaped."""
    path = folder if not filepath else posixpath.join(folder, filepath.lstrip("/"))
    return "/lab/tree/" + quote(posixpath.normpath(path))


@dataclass(frozen=True)
class HomeVolume:
    """Where the checkout lands: the pod's volume mounted at the home directory, if any."""

    name: str
    mount_path: str
    sub_path: str | None = None


CHECKOUT_OWN_ENV = frozenset({"GIT_TERMINAL_PROMPT", "HOME"})


def checkout_init_container(
    *,
    image: str,
    url: str,
    ref: str | None,
    dest: str,
    home_volume: HomeVolume | None,
    uid: int | None,
    image_pull_policy: str | None = None,
    checkout_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``python3 /opt/esap/datalinks.py checkout --url U --dest DEST [--ref R]`` (``DEST``:
    ``<home>/<checkout_folder(...)>``).

    With a volume at the home directory the checkout goes there (and survives restarts, where
    it is kept as it is); without one, an emptyDir :data:`WORKFLOW_VOLUME` holds it (see
    :func:`workflow_volumes`). ``checkout_env`` (the admin's, e.g. ``GIT_SSL_CAINFO``) comes
    before ``GIT_TERMINAL_PROMPT`` and ``HOME``, which are always ours.
    """
    # --option=value: a value starting with '-' is refused by the script, not read as an option
    argv = [
        "python3",
        f"{DATALINKS_DIR}/{SCRIPT_KEY}",
        "checkout",
        f"--url={url}",
        f"--dest={dest}",
    ]
    if ref:
        argv.append(f"--ref={ref}")
    if home_volume is not None:
        mount: dict[str, Any] = {"name": home_volume.name, "mountPath": home_volume.mount_path}
        if home_volume.sub_path:
            mount["subPath"] = home_volume.sub_path
    else:
        mount = {"name": WORKFLOW_VOLUME, "mountPath": dest}
    container: dict[str, Any] = {
        "name": CHECKOUT_CONTAINER,
        "image": image,
        "command": argv,
        "env": [
            *(
                {"name": k, "value": v}
                for k, v in sorted((checkout_env or {}).items())
                if k not in CHECKOUT_OWN_ENV
            ),
            {"name": "GIT_TERMINAL_PROMPT", "value": "0"},
            {"name": "HOME", "value": "/tmp"},
        ],
        "volumeMounts": [
            {"name": CONFIG_VOLUME, "mountPath": DATALINKS_DIR, "readOnly": True},
            mount,
        ],
        "securityContext": security_context(uid, read_only_root=False),
        "resources": INIT_RESOURCES,
    }
    if image_pull_policy:
        container["imagePullPolicy"] = image_pull_policy
    return container


def workflow_volumes(
    dest: str, home_volume: HomeVolume | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Without a home volume: an emptyDir for the checkout at ``dest`` and its mount in the
    notebook."""
    if home_volume is not None:
        return [], []
    return [{"name": WORKFLOW_VOLUME, "emptyDir": {}}], [
        {"name": WORKFLOW_VOLUME, "mountPath": dest}
    ]


def find_home_volume(volume_mounts: Sequence[Mapping[str, Any]], home: str) -> HomeVolume | None:
    """The pod's mount at exactly ``home`` (e.g. z2jh's user PVC), if there is one."""
    target = posixpath.normpath(home)
    for m in volume_mounts:
        path = m.get("mountPath") or m.get("mount_path")
        if path and posixpath.normpath(str(path)) == target:
            sub = m.get("subPath") or m.get("sub_path")
            return HomeVolume(name=str(m["name"]), mount_path=target, sub_path=sub or None)
    return None


# --- everything a spawn adds to its pod ------------------------------------------------------
@dataclass(frozen=True)
class PodData:
    """What one spawn adds to its pod: volumes, notebook mounts and env, init containers."""

    volumes: list[dict[str, Any]]
    mounts: list[dict[str, Any]]
    env: dict[str, str]
    init_containers: list[dict[str, Any]]


def pod_data(
    *,
    pod_name: str,
    image: str,
    uid: int | None,
    plan: Mapping[str, Any] | None,
    storage: Sequence[LocalRSE],
    workflow: str | None,
    ref: str | None,
    home: str,
    home_volume: HomeVolume | None,
    reserved: Sequence[str],
    image_pull_policy: str | None = None,
    checkout_env: Mapping[str, str] | None = None,
) -> PodData:
    """The pod parts for ``plan`` (datasets, or None) and ``workflow`` (a URL, or None),
    checked out into ``<home>/<checkout_folder(workflow, home=home, reserved=reserved)>``.

    Only the storage the plan uses is mounted; nothing at all without datasets or workflow.
    """
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    env: dict[str, str] = {}
    inits: list[dict[str, Any]] = []
    if plan is None and not workflow:
        return PodData(volumes, mounts, env, inits)
    volumes.append(config_volume(pod_name))
    if plan is not None:
        mount_root = str(plan["mount_root"])
        store_volumes, store_mounts = storage_volumes(
            storage, plan.get("rses") or (), plan.get("subpaths")
        )
        volumes += [*store_volumes, datasets_volume()]
        mounts += [*store_mounts, datasets_mount(mount_root, read_only=True)]
        env["ESAP_DATASETS"] = manifest_path(mount_root)
        inits.append(
            links_init_container(
                image=image,
                mount_root=mount_root,
                storage_mounts=store_mounts,
                uid=uid,
                image_pull_policy=image_pull_policy,
            )
        )
    if workflow:
        dest = posixpath.join(home, checkout_folder(workflow, home=home, reserved=reserved))
        wf_volumes, wf_mounts = workflow_volumes(dest, home_volume)
        volumes += wf_volumes
        mounts += wf_mounts
        inits.append(
            checkout_init_container(
                image=image,
                url=workflow,
                ref=ref,
                dest=dest,
                home_volume=home_volume,
                uid=uid,
                image_pull_policy=image_pull_policy,
                checkout_env=checkout_env,
            )
        )
    return PodData(volumes, mounts, env, inits)
