"""The plan of a spawn's datasets: each file's replica in the pod, and what to mount. Pure.

:func:`dataset_plan` maps every file of every requested DID to the path of its replica
inside the pod (the PFN's path minus the RSE's ``pfn_prefix``, joined onto its
``mount_path``; anything escaping the mount is refused). The links init container
(:mod:`esap_spawner.data.datalinks`) builds ``<mount_root>/<scope>/<name>/<file>`` from it,
and refuses any replica path outside the plan's ``allowed_roots``.

What the pod mounts of the storage follows the catalogue:

- a **Rucio RSE** is mounted whole: replicas of one dataset lie in hashed folders spread
  over the RSE (``<scope>/<md5[0:2]>/<md5[2:4]>/<name>``), so no small set of folders holds
  exactly one dataset. A user can read what is on the hub's local RSEs, as Rucio's own read
  model lets any account read any replica on a storage it can reach (docs/security.md);
- the **static volume** is narrowed (:func:`narrow_to_datasets`): only each requested
  dataset's folder (or file) is mounted, by ``subPath``, at the same path it would have in
  the whole volume, so the plan's paths hold and nothing else of the volume is in the pod.
"""

from __future__ import annotations

import posixpath
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from esap_spawner.data.catalogue.base import DidFiles
from esap_spawner.data.catalogue.locality import pod_path
from esap_spawner.data.did import parse_did
from esap_spawner.site.model import LocalRSE

__all__ = ["PLAN_VERSION", "DataPlanError", "dataset_plan", "narrow_to_datasets"]

PLAN_VERSION = 1


class DataPlanError(ValueError):
    """The datasets cannot be laid out in the pod (not local, escaping a mount, too many)."""


def dataset_plan(
    resolved: Mapping[str, DidFiles], storage: Sequence[LocalRSE], mount_root: str
) -> dict[str, Any]:
    """DID -> files with their replica paths in the pod, for the links init container.

    Every file must have an AVAILABLE replica at one of ``storage`` (a :class:`DataPlanError`
    names the first that has none); a PFN outside its RSE's prefix or escaping the mount is
    refused (:class:`~esap_spawner.data.catalogue.locality.PathOutsideMount`, a ``ValueError``).
    """
    by_rse = {s.name: s for s in storage}
    names = frozenset(by_rse)
    used: set[str] = set()
    datasets: dict[str, Any] = {}
    for did, files in resolved.items():
        parse_did(did)
        entries = []
        for f in files.files:
            replica = f.available_at(names)
            if replica is None or not replica.pfn:
                raise DataPlanError(
                    f"{did}: file {f.name} has no available replica at the hub's storage "
                    f"({', '.join(sorted(names)) or 'none configured'})"
                )
            mount = by_rse[replica.rse]
            if mount.volume is None:
                raise DataPlanError(f"{did}: the hub's storage {mount.name} has no volume to mount")
            used.add(mount.name)
            entries.append(
                {
                    "name": _file_name(f.scope, f.name, did),
                    "bytes": f.bytes,
                    "adler32": f.adler32,
                    "md5": f.md5,
                    "rse": replica.rse,
                    "path": pod_path(replica.pfn, mount),
                }
            )
        datasets[did] = {"files": entries, "bytes_total": files.bytes, "type": files.did_type}
    return {
        "version": PLAN_VERSION,
        "mount_root": posixpath.normpath(mount_root),
        "allowed_roots": sorted({posixpath.normpath(by_rse[r].mount_path) for r in used}),
        "rses": sorted(used),
        "datasets": datasets,
    }


def _file_name(scope: str, name: str, did: str) -> str:
    """The link's name inside the dataset folder; files of another scope keep their scope."""
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise DataPlanError(f"{did}: file name {name!r} would leave the dataset folder")
    did_scope = did.partition(":")[0]
    return name if scope == did_scope else f"{scope}/{name}"


def _dataset_subpath(entry: Mapping[str, Any], mount_path: str, rse: str) -> str | None:
    """The part of ``rse``'s volume that holds one dataset of the plan: the file of a
    single-file dataset, else the deepest folder holding all its files there."""
    paths = [posixpath.relpath(f["path"], mount_path) for f in entry["files"] if f["rse"] == rse]
    if not paths:
        return None
    if entry.get("type") == "FILE" and len(paths) == 1:
        return paths[0]
    return posixpath.commonpath([posixpath.dirname(p) or "." for p in paths])


def narrow_to_datasets(
    plan: Mapping[str, Any], storage: Sequence[LocalRSE], rses: Collection[str]
) -> dict[str, Any]:
    """``plan`` with the storage of ``rses`` mounted only where its datasets are: ``subpaths``
    (RSE -> the parts of its volume to mount) and ``allowed_roots`` narrowed to them.

    A dataset lying at the volume's top (no folder of its own) cannot be narrowed and is
    refused (:class:`DataPlanError`) rather than mounting the whole volume.
    """
    mount_paths = {s.name: posixpath.normpath(s.mount_path) for s in storage}
    subpaths: dict[str, list[str]] = {}
    roots = {r for r in plan["allowed_roots"]}
    for rse in sorted(set(rses) & set(plan["rses"])):
        parts: set[str] = set()
        for did, entry in plan["datasets"].items():
            sub = _dataset_subpath(entry, mount_paths[rse], rse)
            if sub in ("", "."):
                raise DataPlanError(f"{did}: its files lie at the top of the volume of {rse}")
            if sub is not None:
                parts.add(sub)
        # a part inside another is mounted with it
        kept = sorted(p for p in parts if not any(p.startswith(q + "/") for q in parts))
        subpaths[rse] = kept
        roots.discard(mount_paths[rse])
        roots |= {posixpath.join(mount_paths[rse], p) for p in kept}
    return {**plan, "allowed_roots": sorted(roots), "subpaths": subpaths}
