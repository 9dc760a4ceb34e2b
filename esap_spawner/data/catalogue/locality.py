"""Pure functions over resolved files: where a DID's data is, and where a replica is in a pod.

- :func:`did_locality` turns a DID's resolved files, the names of the hub's local RSEs and the
  measured staging throughput into a :class:`~esap_spawner.data.catalogue.base.Locality`.
- :func:`pod_path` maps a replica's PFN at a local RSE to the file's path inside a pod that
  mounts that RSE, and refuses any PFN that would land outside the mount.

No I/O here: both catalogues and the spawner's mount builder call these.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Iterable
from urllib.parse import urlparse

from esap_spawner.data.catalogue.base import DidFiles, Locality, LocalityStatus
from esap_spawner.site.model import LocalRSE
from esap_spawner.site.quantity import format_bytes


def did_locality(
    did: str,
    resolved: DidFiles | None,
    local_rses: Iterable[str],
    *,
    throughput: float | None = None,
) -> Locality:
    """Where ``did``'s files are, relative to the hub's ``local_rses``.

    A file counts as local when it has an AVAILABLE replica at one of ``local_rses``.
    ``throughput`` is the measured staging rate in bytes per second; without it (None or <= 0)
    ``estimated_staging_seconds`` is None. An empty dataset is local: nothing to stage.
    """
    if resolved is None:
        return Locality(
            did=did, status="not_found", message=f"{did} does not exist in the data catalogue"
        )
    rses = frozenset(local_rses)
    files_local = bytes_local = 0
    lost = 0
    holding: set[str] = set()
    for f in resolved.files:
        replica = f.available_at(rses)
        if replica is not None:
            files_local += 1
            bytes_local += f.bytes
            holding.add(replica.rse)
        elif not any(r.available for r in f.replicas):
            lost += 1
    files_total = len(resolved.files)
    bytes_total = resolved.bytes
    missing = bytes_total - bytes_local
    status: LocalityStatus
    if files_local == files_total:
        status = "local"
    elif files_local:
        status = "partial"
    else:
        status = "remote"
    staging = files_local < files_total
    estimate: float | None = 0.0
    if staging:
        estimate = math.ceil(missing / throughput) if throughput and throughput > 0 else None
    if files_total == 0:
        message = "empty dataset: nothing to stage"
    elif not staging:
        message = f"all {files_total} files ({format_bytes(bytes_total)}) are local"
    else:
        message = (
            f"{files_total - files_local} of {files_total} files "
            f"({format_bytes(missing)}) need staging"
        )
    if lost:
        message += f"; {lost} files have no available replica anywhere"
    return Locality(
        did=did,
        status=status,
        files_total=files_total,
        files_local=files_local,
        bytes_total=bytes_total,
        bytes_local=bytes_local,
        local_rses=tuple(sorted(holding)),
        staging_required=staging,
        estimated_staging_seconds=estimate,
        message=message,
    )


class PathOutsideMount(ValueError):
    """A PFN that is not under the RSE's prefix, or that would escape the mount path."""


def pod_path(pfn: str, rse: LocalRSE) -> str:
    """The path inside a pod of the file behind ``pfn`` at local RSE ``rse``.

    ``urlparse(pfn).path`` minus ``rse.pfn_prefix``, joined onto ``rse.mount_path``. Refuses
    (:class:`PathOutsideMount`) a PFN outside the prefix, one with ``..`` or empty segments that
    would climb out, and NUL bytes.
    """
    path = urlparse(pfn).path
    if "\x00" in pfn or not path:
        raise PathOutsideMount(f"PFN {pfn!r} has no usable path")
    prefix = rse.pfn_prefix.rstrip("/") + "/"
    if not path.startswith(prefix):
        raise PathOutsideMount(f"PFN {pfn!r} is not under {rse.name}'s prefix {rse.pfn_prefix!r}")
    relative = path[len(prefix) :]
    parts = relative.split("/")
    if not relative or any(p in ("", ".", "..") for p in parts):
        raise PathOutsideMount(
            f"PFN {pfn!r} does not name a file inside {rse.name}'s prefix {rse.pfn_prefix!r}"
        )
    mount = posixpath.normpath(rse.mount_path)
    joined = posixpath.normpath(posixpath.join(mount, relative))
    if not joined.startswith(mount.rstrip("/") + "/"):
        raise PathOutsideMount(f"PFN {pfn!r} would escape the mount path {rse.mount_path!r}")
    return joined
