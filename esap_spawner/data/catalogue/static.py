"""Static catalogue: datasets already on a mounted volume, for sites without Rucio.

Datasets come from the site file's ``data.static.datasets`` listing (``{did, path}``, the path
relative to the volume) and, when ``scan`` is on, from the folder tree itself:
``<root>/<scope>/<name>/...`` is dataset ``scope:name``. A dataset's files are the regular files
under its folder (or the one file its path names), with sizes; everything is local and staging
is never required. Unknown DIDs are ``not_found``; a listed dataset whose folder the hub cannot
read is ``unknown``, with the reason.

``root`` is where this process reads the volume; ``mount_path`` is where pods see it (often the
same path: the hub mounts the volume where the pods do). Each file is reported as an AVAILABLE
replica at the pseudo-RSE :data:`STATIC_RSE` with a ``file://`` PFN under ``root``, so
:func:`~esap_spawner.data.catalogue.locality.pod_path` maps it into the pod like any Rucio replica.
Symbolic links that lead outside ``root`` are ignored.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from esap_spawner.data.catalogue.base import (
    Catalogue,
    DidFiles,
    DidNotFound,
    FileReplica,
    Locality,
    Replica,
    StagingProgress,
    StagingRequest,
    StagingState,
    check_dids,
)
from esap_spawner.data.catalogue.locality import did_locality
from esap_spawner.data.did import parse_did
from esap_spawner.site.model import LocalRSE, Site

STATIC_RSE = "STATIC"


class _Unreadable(Exception):
    """A listed dataset whose folder cannot be read (becomes an ``unknown`` locality)."""


def _relative(path: str, did: str) -> PurePosixPath:
    parts = path.strip("/").split("/")
    if not path.strip("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(
            f"static dataset {did}: path {path!r} must be a relative path inside the volume "
            "without '.' or '..'"
        )
    return PurePosixPath(*parts)


class StaticCatalogue(Catalogue):
    """A :class:`~esap_spawner.data.catalogue.base.Catalogue` over a folder tree."""

    def __init__(
        self,
        *,
        root: str | Path,
        mount_path: str,
        volume: Mapping[str, Any] | None = None,
        datasets: Sequence[tuple[str, str]] = (),
        scan: bool = True,
        cache_ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = Path(root).resolve()
        self.mount_path = mount_path
        self.scan = scan
        self.cache_ttl = cache_ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, DidFiles | _Unreadable | None]] = {}
        self.listing: dict[str, PurePosixPath] = {}
        for did, path in datasets:
            parse_did(did)
            self.listing[did] = _relative(path, did)
        self.local_rses = (
            LocalRSE(
                name=STATIC_RSE, pfn_prefix=f"{self.root}/", mount_path=mount_path, volume=volume
            ),
        )

    @classmethod
    def from_site(
        cls, site: Site, *, root: str | Path | None = None, scan: bool = True
    ) -> StaticCatalogue:
        """From the site file's ``data.static``; ``root`` defaults to its ``mount_path``."""
        static = site.data.static
        if static is None:
            raise ValueError("the site file has no data.static section")
        return cls(
            root=root if root is not None else static.mount_path,
            mount_path=static.mount_path,
            volume=static.volume,
            datasets=[(d.did, d.path) for d in static.datasets],
            scan=scan,
        )

    # --- reading the tree (in a thread) ----------------------------------------------------------
    def _folder(self, did: str) -> Path | None:
        scope, name = parse_did(did)
        if did in self.listing:
            rel = self.listing[did]
        elif self.scan:
            rel = PurePosixPath(scope, name)
        else:
            return None
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            return None
        return path

    def _read(self, did: str) -> DidFiles | _Unreadable | None:
        scope, _ = parse_did(did)
        path = self._folder(did)
        listed = did in self.listing
        if path is None or not path.exists():
            if listed:
                return _Unreadable(
                    f"{did} is listed in the site file, but {path or self.listing[did]} "
                    "is not readable by the hub"
                )
            return None
        try:
            if path.is_file():
                return DidFiles(did=did, did_type="FILE", files=(self._file(scope, path, path),))
            found: list[FileReplica] = []
            for folder, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    file = Path(folder, name)
                    real = file.resolve()
                    if real.is_relative_to(self.root) and real.is_file():
                        found.append(self._file(scope, file, path))
        except OSError as exc:
            return _Unreadable(f"{did}: cannot read {path}: {exc.strerror}")
        return DidFiles(did=did, did_type="DATASET", files=tuple(found))

    def _file(self, scope: str, file: Path, base: Path) -> FileReplica:
        rel = file.name if file == base else file.relative_to(base).as_posix()
        return FileReplica(
            scope=scope,
            name=rel,
            bytes=file.stat().st_size,
            replicas=(Replica(rse=STATIC_RSE, state="AVAILABLE", pfn=file.as_uri()),),
            path=str(PurePosixPath(self.mount_path, file.relative_to(self.root).as_posix())),
        )

    async def _lookup(self, dids: Sequence[str]) -> dict[str, DidFiles | _Unreadable | None]:
        wanted = check_dids(dids)
        now = self._clock()
        out: dict[str, DidFiles | _Unreadable | None] = {}
        missing = []
        for did in wanted:
            hit = self._cache.get(did)
            if hit is not None and hit[0] > now:
                out[did] = hit[1]
            else:
                missing.append(did)
        if missing:
            read = await asyncio.to_thread(lambda: {did: self._read(did) for did in missing})
            expires = self._clock() + self.cache_ttl
            for did, value in read.items():
                self._cache[did] = (expires, value)
            out.update(read)
        return {did: out[did] for did in wanted}

    # --- the interface ---------------------------------------------------------------------------
    async def resolve(self, dids: Sequence[str]) -> dict[str, DidFiles | None]:
        return {
            did: None if isinstance(value, _Unreadable) else value
            for did, value in (await self._lookup(dids)).items()
        }

    async def locality(self, dids: Sequence[str]) -> list[Locality]:
        results = []
        for did, value in (await self._lookup(dids)).items():
            if isinstance(value, _Unreadable):
                results.append(Locality.unknown(did, str(value)))
            else:
                results.append(did_locality(did, value, {STATIC_RSE}))
        return results

    async def stage(
        self, did: str, *, destination_rse: str | None = None, lifetime: int | None = None
    ) -> StagingRequest:
        """Nothing to stage: a request that is already complete (or :class:`DidNotFound`)."""
        resolved = (await self.resolve([did]))[did]
        if resolved is None:
            raise DidNotFound(did)
        return StagingRequest(
            did=did,
            destination_rse=STATIC_RSE,
            rule_id=None,
            files_total=len(resolved.files),
            bytes_total=resolved.bytes,
        )

    async def staging_progress(self, request: StagingRequest) -> StagingProgress:
        return StagingProgress(
            did=request.did,
            destination_rse=request.destination_rse,
            rule_id=None,
            state=StagingState.OK,
            files_ok=request.files_total,
            files_total=request.files_total,
            bytes_ok=request.bytes_total,
            bytes_total=request.bytes_total,
        )

    async def cancel(self, request: StagingRequest) -> None:
        return None
