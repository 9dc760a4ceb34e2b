"""Volumes for the process kubelet: each ``volumeMount`` laid out in the pod's root.

Every container of a pod sees the same root (:class:`~esap_spawner.dev.sim.podroot.PodRoot`),
holding the mounts of all its containers (a container also sees the mounts of its
siblings). For each mount, ``<podroot>/<mountPath>`` becomes:

- ``hostPath``: a link to the host path. ``type`` is checked as the kubelet does
  (``Directory``, ``File``, ``Socket``, ``CharDevice``, ``BlockDevice`` must exist as such;
  ``DirectoryOrCreate``/``FileOrCreate`` create it). An unset type on a missing path fails too:
  the process kubelet creates host paths only when the type says so.
- ``emptyDir``: a folder of the pod, shared by its containers, removed with the pod. It is a
  real folder at its first mount path (so relative links made in it resolve, ``..`` being
  resolved physically), or ``<podroot>/.volumes/<name>`` when that mount is nested in another
  mount or uses a ``subPath``; other mounts of it link there. ``medium``/``sizeLimit`` are
  ignored.
- ``configMap``, ``secret``: the object's keys as files (secret values and ``binaryData``
  base64-decoded), or only ``items`` (key -> path, ``mode``), with ``defaultMode`` (0644).
  Written once when the pod starts: later changes to the object are not seen.
- ``downwardAPI``: ``items`` as files (``metadata.labels``/``annotations`` as ``key="value"``
  lines, other ``fieldRef`` and ``resourceFieldRef`` values); ``projected``: its
  ``configMap``/``secret``/``downwardAPI`` sources in one folder.
- ``persistentVolumeClaim``: a link to ``<workdir>/pvcs/<namespace>/<claim>``, kept across
  pods like a real claim's volume and removed when the claim is deleted (once no pod uses it).
- any other type (``nfs``, ``csi``, ...): mounted only if the simulator's ``volume_paths``
  maps it to a local folder, by the volume's name or, for NFS, by ``"<server>:<path>"`` (a
  mapped export also serves its subfolders); otherwise a FailedMount event says that the type is
  not emulated by the process kubelet.

``subPath`` selects a folder of the volume (made if missing, except in a host path).
``subPathExpr`` is not emulated. ``readOnly`` is NOT enforced (processes may run as root and
are not confined): read-only mounts are readable, and nothing stops a write.

A volume that cannot be set up raises :class:`MountError`; the kubelet records a FailedMount
event, keeps the pod Pending (ContainerCreating) and retries while ``retry`` is true (a missing
ConfigMap, Secret, claim or host path may appear later), as Kubernetes does. The fake
kubelet does not look at volumes.

The process kubelet never writes into a host path it links to (hostPath, mapped folders): a
mount nested inside one is refused. Mount points nested in a claim's folder are made there and
removed with the pod.
"""

from __future__ import annotations

import asyncio
import base64
import os
import posixpath
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esap_spawner.dev.sim.podenv import Lookup, field_ref
from esap_spawner.dev.sim.podroot import PodRoot

__all__ = ["MountError", "VolumeOptions", "mount_volumes", "mount_with_retries"]

Obj = dict[str, Any]
_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")  # what the API accepts
IN_ROOT = ("emptyDir", "configMap", "secret", "downwardAPI", "projected")
HOST_TYPES = {
    "Directory": stat.S_ISDIR,
    "File": stat.S_ISREG,
    "Socket": stat.S_ISSOCK,
    "CharDevice": stat.S_ISCHR,
    "BlockDevice": stat.S_ISBLK,
}


class MountError(Exception):
    """A volume cannot be set up (a FailedMount event); ``retry``: it may work later."""

    def __init__(self, volume: str, message: str, *, retry: bool = True) -> None:
        where = f' for volume "{volume}"' if volume else ""
        super().__init__(f"MountVolume.SetUp failed{where} : {message}")
        self.volume = volume
        self.retry = retry


@dataclass(frozen=True)
class VolumeOptions:
    """Where claims live, and which non-local volume types map to local folders."""

    pvc_root: Path
    #: an NFS "<server>:<path>" or a volume's name -> a local folder
    volume_paths: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Mount:
    path: str
    volume: str
    sub_path: str


def _volume_type(volume: Mapping[str, Any]) -> str:
    kinds = [k for k in volume if k != "name"]
    return kinds[0] if kinds else "emptyDir"


def _mounts(pod: Obj) -> list[_Mount]:
    """Every container's mounts (init containers first), one per mount path."""
    spec = pod.get("spec") or {}
    found: dict[str, _Mount] = {}
    for container in [*(spec.get("initContainers") or ()), *(spec.get("containers") or ())]:
        for m in container.get("volumeMounts") or ():
            name = str(m.get("name", ""))
            raw = str(m.get("mountPath") or "")
            path = posixpath.normpath(raw) if raw else ""
            if not raw.startswith("/") or path == "/" or ".." in raw.split("/"):
                raise MountError(name, f"mount path {raw!r} must be an absolute path below /")
            if m.get("subPathExpr"):
                raise MountError(
                    name, "subPathExpr is not emulated by the process kubelet", retry=False
                )
            sub = str(m.get("subPath") or "")
            if sub.startswith("/") or ".." in sub.split("/"):
                raise MountError(name, f"subPath {sub!r} must be a relative path inside the volume")
            mount = _Mount(path, name, posixpath.normpath(sub) if sub else "")
            if found.setdefault(path, mount) != mount:
                raise MountError(
                    name,
                    f"containers mount different volumes at {path}: one root per pod cannot "
                    "show both (not emulated by the process kubelet)",
                    retry=False,
                )
    return list(found.values())


def mount_volumes(pod: Obj, root: PodRoot, *, lookup: Lookup, options: VolumeOptions) -> None:
    """Lay out every mount of ``pod`` in ``root``; :class:`MountError` when one cannot be."""
    mounts = _mounts(pod)
    volumes = {v["name"]: v for v in (pod.get("spec") or {}).get("volumes") or ()}
    namespace = pod["metadata"]["namespace"]
    root.mount_paths = tuple(m.path for m in mounts)
    paths = {m.path for m in mounts}

    def nested(path: str) -> bool:
        return any(path != p and path.startswith(p.rstrip("/") + "/") for p in paths)

    locations: dict[str, Path] = {}
    in_root: dict[str, Obj] = {}
    linked: set[str] = set()  # volumes whose location is a host path we only link to
    for m in mounts:
        if m.volume in locations:
            continue
        volume = volumes.get(m.volume)
        if volume is None:
            raise MountError(m.volume, "no volume of this name in the pod's spec", retry=False)
        kind = _volume_type(volume)
        if not _NAME.match(m.volume):
            raise MountError(m.volume, "not a valid volume name", retry=False)
        if kind in IN_ROOT:
            in_root[m.volume] = volume
            primary = next(
                (
                    x
                    for x in mounts
                    if x.volume == m.volume and not x.sub_path and not nested(x.path)
                ),
                None,
            )
            where = root.host(primary.path) if primary else root.root / ".volumes" / m.volume
            locations[m.volume] = where
        elif kind == "persistentVolumeClaim":
            claim = str(volume[kind].get("claimName", ""))
            if not _NAME.match(claim):
                raise MountError(m.volume, f"{claim!r} is not a valid claim name", retry=False)
            if lookup("persistentvolumeclaims", claim) is None:
                raise MountError(m.volume, f'persistentvolumeclaim "{claim}" not found')
            folder = options.pvc_root / namespace / claim
            folder.mkdir(parents=True, exist_ok=True)
            locations[m.volume] = folder
            root.claims.add((namespace, claim))
        else:
            locations[m.volume] = _host_source(m.volume, kind, volume, options)
            linked.add(m.volume)
    for name, volume in in_root.items():  # files first: a subPath may name one
        locations[name].mkdir(parents=True, exist_ok=True)
        _fill(name, volume, locations[name], pod, lookup)
    claims = Path(os.path.realpath(options.pvc_root))
    for m in sorted(mounts, key=lambda x: x.path.count("/")):
        _place(m, root, locations[m.volume], linked=m.volume in linked, claim_area=claims)
    root.make_home()


async def mount_with_retries(
    pod: Callable[[], Obj | None],
    root: PodRoot,
    *,
    lookup: Lookup,
    options: VolumeOptions,
    failed: Callable[[str], None],
    deleting: asyncio.Event,
    retry: float,
) -> bool:
    """:func:`mount_volumes` until it works (True) or the pod goes (False); ``failed`` is told
    each distinct error once. A partial attempt is removed before the next one."""
    reported: set[str] = set()
    while True:
        current = pod()
        if current is None:
            return False
        root.root.mkdir(parents=True, exist_ok=True)
        try:
            mount_volumes(current, root, lookup=lookup, options=options)
            return True
        except (MountError, OSError) as exc:
            root.remove()
            error = exc if isinstance(exc, MountError) else MountError("", str(exc), retry=False)
            if str(error) not in reported:
                reported.add(str(error))
                failed(str(error))
            if not error.retry:
                await deleting.wait()
                return False
        await asyncio.sleep(retry)


def _host_source(name: str, kind: str, volume: Obj, options: VolumeOptions) -> Path:
    source = volume[kind] or {}
    if kind == "hostPath":
        path = Path(str(source.get("path", "")))
        if not path.is_absolute():
            raise MountError(name, f"hostPath {str(path)!r} must be absolute", retry=False)
        type_ = str(source.get("type") or "")
        if type_ == "DirectoryOrCreate":
            path.mkdir(parents=True, exist_ok=True)
        elif type_ == "FileOrCreate" and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        check = HOST_TYPES.get(type_)
        if check is not None:
            try:
                ok = check(path.stat().st_mode)
            except OSError:
                ok = False
            if not ok:
                raise MountError(name, f"hostPath type check failed: {path} is not a {type_}")
        elif not path.exists():
            raise MountError(
                name,
                f"hostPath {path} does not exist (the process kubelet creates host paths only "
                "for type DirectoryOrCreate or FileOrCreate)",
            )
        return path
    mapped = options.volume_paths.get(name)
    if mapped is None and kind == "nfs":
        export = posixpath.normpath("/" + str(source.get("path", "")).lstrip("/"))
        server = str(source.get("server", ""))
        for key, folder in options.volume_paths.items():
            key_server, _, key_path = key.partition(":")
            key_path = posixpath.normpath(key_path or "/")
            if key_server == server and (
                export == key_path or export.startswith(key_path.rstrip("/") + "/")
            ):
                mapped = os.path.join(folder, posixpath.relpath(export, key_path))
                break
    if mapped is None:
        hint = f"{source.get('server')}:{source.get('path')}" if kind == "nfs" else name
        raise MountError(
            name,
            f"volume type {kind} is not emulated by the process kubelet (map it to a local "
            f"folder with Simulator(volume_paths={{{hint!r}: FOLDER}}))",
            retry=False,
        )
    path = Path(os.path.normpath(mapped))
    if not path.exists():
        raise MountError(name, f"{kind} volume mapped to {path}, which does not exist")
    return path


def _place(m: _Mount, root: PodRoot, location: Path, *, linked: bool, claim_area: Path) -> None:
    """Make ``<podroot>/<mountPath>``: the volume's own folder, or a link to it."""
    target = root.host(m.path)
    parent = target.parent
    missing: list[Path] = []
    while not (parent.exists() or parent.is_symlink()):
        missing.append(parent)
        parent = parent.parent
    if not root.inside(parent):
        real = Path(os.path.realpath(parent))
        if not real.is_relative_to(claim_area):
            raise MountError(
                m.volume,
                f"{m.path} is nested in a host path volume ({real}): the process kubelet does "
                "not write into host paths",
                retry=False,
            )
        root.outside.extend(reversed(missing))
        if not target.exists() and not target.is_symlink():
            root.outside.append(target)
    parent.joinpath(*[p.name for p in reversed(missing)]).mkdir(parents=True, exist_ok=True)
    if target == location:
        target.mkdir(exist_ok=True)
        return
    source = location / m.sub_path if m.sub_path else location
    if m.sub_path and not source.exists():
        if linked:
            raise MountError(m.volume, f"subPath {m.sub_path} does not exist in {location}")
        source.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():
        target.unlink()  # a mount point left in a claim's folder by an earlier pod
    elif target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    elif target.exists():
        raise MountError(m.volume, f"{m.path} already holds files: cannot mount over them")
    target.symlink_to(source)


# -- files of configMap, secret, downwardAPI and projected volumes ---------------------------
def _fill(name: str, volume: Obj, folder: Path, pod: Obj, lookup: Lookup) -> None:
    kind = _volume_type(volume)
    source = volume.get(kind) or {}
    if kind == "emptyDir":
        return
    if kind == "projected":
        mode = int(source.get("defaultMode", 0o644))
        for part in source.get("sources") or ():
            for sub_kind, sub in part.items():
                if sub_kind not in ("configMap", "secret", "downwardAPI"):
                    raise MountError(
                        name,
                        f"projected {sub_kind} is not emulated by the process kubelet",
                        retry=False,
                    )
                _write_files(name, folder, _files(name, sub_kind, sub, pod, lookup), mode)
        return
    mode = int(source.get("defaultMode", 0o644))
    _write_files(name, folder, _files(name, kind, source, pod, lookup), mode)


def _files(
    name: str, kind: str, source: Mapping[str, Any], pod: Obj, lookup: Lookup
) -> list[tuple[str, bytes, int | None]]:
    """(relative path, content, mode or None) of one configMap/secret/downwardAPI source."""
    if kind == "downwardAPI":
        return [
            (str(item["path"]), _downward(name, item, pod).encode(), item.get("mode"))
            for item in source.get("items") or ()
        ]
    resource, key = ("configmaps", "name") if kind == "configMap" else ("secrets", "secretName")
    if kind == "secret" and "name" in source and key not in source:
        key = "name"  # a projected secret source names it "name"
    object_name = str(source.get(key, ""))
    obj = lookup(resource, object_name)
    if obj is None:
        if source.get("optional"):
            return []
        raise MountError(name, f'{resource[:-1]} "{object_name}" not found')
    values: dict[str, bytes] = {}
    if resource == "secrets":
        values.update({k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()})
        values.update({k: str(v).encode() for k, v in (obj.get("stringData") or {}).items()})
    else:
        values.update({k: str(v).encode() for k, v in (obj.get("data") or {}).items()})
        values.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    items = source.get("items")
    if not items:
        return [(k, v, None) for k, v in sorted(values.items())]
    out = []
    for item in items:
        if item.get("key") not in values:
            if source.get("optional"):
                continue
            raise MountError(
                name, f"{kind.lower()} references non-existent config key: {item.get('key')}"
            )
        out.append((str(item.get("path") or item["key"]), values[item["key"]], item.get("mode")))
    return out


def _downward(name: str, item: Mapping[str, Any], pod: Obj) -> str:
    if "fieldRef" in item:
        path = str(item["fieldRef"].get("fieldPath", ""))
        if path in ("metadata.labels", "metadata.annotations"):
            values = (pod.get("metadata") or {}).get(path.split(".")[1]) or {}
            return "".join(f'{k}="{v}"\n' for k, v in sorted(values.items()))
        try:
            return field_ref(pod, path)
        except ValueError as exc:
            raise MountError(name, str(exc), retry=False) from None
    if "resourceFieldRef" in item:
        ref = item["resourceFieldRef"]
        containers = (pod.get("spec") or {}).get("containers") or []
        wanted = ref.get("containerName") or (containers[0]["name"] if containers else "")
        container: Obj = next((c for c in containers if c["name"] == wanted), {})
        kind, _, resource = str(ref.get("resource", "")).partition(".")
        return str(((container.get("resources") or {}).get(kind) or {}).get(resource, "0"))
    raise MountError(name, f"unsupported downwardAPI item {dict(item)!r}", retry=False)


def _write_files(
    name: str, folder: Path, files: list[tuple[str, bytes, int | None]], default_mode: int
) -> None:
    for rel, content, mode in files:
        clean = posixpath.normpath(rel)
        if rel.startswith("/") or clean.startswith("..") or clean == ".":
            raise MountError(name, f"item path {rel!r} must be a relative path inside the volume")
        path = folder / clean
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        path.write_bytes(content)
        path.chmod(int(mode) if mode is not None else default_mode)
