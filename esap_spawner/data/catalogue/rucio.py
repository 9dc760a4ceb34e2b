"""Rucio catalogue: locality and staging through rucio-clients.

rucio-clients is synchronous, so every call runs in a small thread pool (``workers``, 4 by
default) and the event loop never blocks. Calls go through :meth:`RucioCatalogue._call`, which
counts them per Rucio method (``calls``) and maps Rucio's exceptions onto the catalogue errors
of :mod:`esap_spawner.data.catalogue.base`.

Resolving DIDs is bulk: per batch of at most ``batch_size`` DIDs, one ``bulk_list_files``
(which DID each file belongs to; skipped for a single DID), one ``list_replicas`` with
``sort='random'`` (replicas and checksums of every file of every DID), and, only for DIDs that
came back without files, one ``get_metadata_bulk`` to tell an empty dataset from a missing
one. ``list_replicas(resolve_parents=True)`` would answer the "which DID" question in the same
call, but costs the server one parent query per file: 2.3-3.9 times slower than the extra
``bulk_list_files`` for 100 datasets of 100 files (see docs/performance.md). Results are cached
per identity and DID for ``cache_ttl`` seconds (injectable clock), and concurrent questions
about the same DID by the same identity share one Rucio call: one user's token never
answers another's question (a forged or expired token is refused, not served a cached
answer), while every user of the site's account shares its answers.

Staging (one replication rule per DID to the destination RSE) is the other half of the class:
:class:`~esap_spawner.data.catalogue.rucio_rules.RuleStaging`.

Identity: a service account (userpass, the password read from a file or an environment
variable) or a token (a file, or a user's token from JupyterHub's ``auth_state`` passed to
:meth:`RucioCatalogue.for_token`), so users stage only what their own Rucio account may.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from esap_spawner.data.catalogue import locality as _locality
from esap_spawner.data.catalogue.base import (
    AccessDenied,
    Catalogue,
    CatalogueError,
    CatalogueHealth,
    CatalogueUnavailable,
    DidFiles,
    DidNotFound,
    FileReplica,
    Locality,
    QuotaExceeded,
    Replica,
    StagingFailed,
    check_dids,
)
from esap_spawner.data.catalogue.rucio_client import RucioIdentity, make_client
from esap_spawner.data.catalogue.rucio_rules import RuleStaging
from esap_spawner.data.did import parse_did
from esap_spawner.site.model import LocalRSE, Site

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RucioSettings:
    """Everything :class:`RucioCatalogue` needs, as plain values (see ``from_site``)."""

    host: str
    identity: RucioIdentity
    auth_host: str | None = None
    local_rses: tuple[LocalRSE, ...] = ()
    destination_rse: str | None = None
    rule_lifetime: int = 7 * 24 * 3600
    vo: str | None = None
    ca_cert: str | None = None
    max_dids: int | None = None  # per resolve/locality call; None: any number, in batches
    cache_ttl: float = 60.0
    cache_max_entries: int = 20_000
    batch_size: int = 500
    workers: int = 4
    timeout: int = 30
    throughput: float | None = None  # bytes/s, until staging measures it


@dataclass
class _Shared:
    """What all views of one catalogue share: threads, cache, call counts, throughput."""

    pool: ThreadPoolExecutor
    # (identity, DID) -> (expires, answer), and the questions being asked
    cache: dict[tuple[str, str], tuple[float, DidFiles | None]] = field(default_factory=dict)
    inflight: dict[tuple[str, str], asyncio.Future[DidFiles | None]] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    cache_hits: int = 0
    throughput: float | None = None
    last_ok: float | None = None
    last_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _who(identity: RucioIdentity) -> str:
    """The cache's name for an identity: its account and how it authenticates; for a token
    given in memory (a user's), a digest of the token itself."""
    if identity.token is not None:
        digest = hashlib.sha256(identity.token.encode()).hexdigest()[:32]
        return f"{identity.account}/token/{digest}"
    return f"{identity.account}/{identity.auth_type}/{identity.username or identity.token_file}"


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _rucio_did(did: str) -> dict[str, str]:
    scope, name = parse_did(did)
    return {"scope": scope, "name": name}


def _words(exc: BaseException) -> str:
    """A Rucio exception as one line: its details when it has them, else its general message."""
    details = [str(a) for a in getattr(exc, "args", ()) if a]
    text = " ".join(" ".join(details).split()) if details else " ".join(str(exc).split())
    return text or type(exc).__name__


class RucioCatalogue(RuleStaging, Catalogue):
    """A :class:`~esap_spawner.data.catalogue.base.Catalogue` over a Rucio server."""

    def __init__(
        self,
        settings: RucioSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        client_factory: Callable[[str, str, RucioIdentity], Any] | None = None,
        _shared: _Shared | None = None,
    ) -> None:
        if settings.batch_size < 1 or settings.workers < 1:
            raise ValueError("batch_size and workers must be at least 1")
        self.settings = settings
        self.local_rses = settings.local_rses
        self._clock = clock
        self._client_factory = client_factory or functools.partial(
            make_client, timeout=settings.timeout, vo=settings.vo, ca_cert=settings.ca_cert
        )
        self._shared = _shared or _Shared(
            pool=ThreadPoolExecutor(settings.workers, thread_name_prefix="rucio"),
            throughput=settings.throughput,
        )
        self._clients = threading.local()
        self._who = _who(settings.identity)

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def from_site(cls, site: Site, **kwargs: Any) -> RucioCatalogue:
        """From the site file's ``data.rucio`` section (``kwargs`` go to the constructor)."""
        rucio = site.data.rucio
        if rucio is None:
            raise ValueError("the site file has no data.rucio section")
        if rucio.auth_type == "userpass":
            identity = RucioIdentity.userpass(
                rucio.account,
                username=rucio.username or rucio.account,
                password_file=rucio.password_file,
                password_env=None if rucio.password_file else rucio.password_env,
            )
        elif rucio.auth_type in ("token", "oidc") and rucio.token_file:
            identity = RucioIdentity.with_token(rucio.account, token_file=rucio.token_file)
        else:
            raise ValueError(
                f"data.rucio.auth_type {rucio.auth_type!r} is not supported by the catalogue "
                "yet: use userpass, or token/oidc with token_file"
            )
        settings = RucioSettings(
            host=rucio.host,
            auth_host=rucio.auth_host,
            identity=identity,
            vo=rucio.vo,
            ca_cert=rucio.ca_cert_file,
            local_rses=rucio.local_rses,
            destination_rse=rucio.staging.destination_rse,
            rule_lifetime=rucio.staging.rule_lifetime,
        )
        return cls(settings, **kwargs)

    def for_token(self, token: str, *, account: str) -> RucioCatalogue:
        """A view acting as ``account`` with ``token`` (a user's Rucio or OIDC token), sharing
        this catalogue's threads, cache and counters."""
        identity = RucioIdentity.with_token(account, token=token)
        return RucioCatalogue(
            replace(self.settings, identity=identity),
            clock=self._clock,
            client_factory=self._client_factory,
            _shared=self._shared,
        )

    @property
    def account(self) -> str:
        return self.settings.identity.account

    @property
    def calls(self) -> Counter[str]:
        """Rucio calls made so far, per client method (shared by all views)."""
        return self._shared.calls

    @property
    def cache_hits(self) -> int:
        return self._shared.cache_hits

    def health(self) -> CatalogueHealth:
        """Unhealthy while the last Rucio call failed to reach Rucio or to authenticate."""
        shared = self._shared
        if shared.last_error is not None:
            return CatalogueHealth(False, shared.last_error)
        if shared.last_ok is None:
            return CatalogueHealth(True, f"Rucio at {self.settings.host}: not asked yet")
        age = time.time() - shared.last_ok
        return CatalogueHealth(True, f"Rucio at {self.settings.host} answered {age:.0f}s ago")

    async def close(self) -> None:
        self._shared.pool.shutdown(wait=False, cancel_futures=True)

    # --- calls -------------------------------------------------------------------------------
    def _client(self) -> Any:
        client = getattr(self._clients, "client", None)
        if client is None:
            client = self._client_factory(
                self.settings.host,
                self.settings.auth_host or self.settings.host,
                self.settings.identity,
            )
            self._clients.client = client
        return client

    def _sync_call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with self._shared.lock:
            self._shared.calls[method] += 1
        try:
            result = getattr(self._client(), method)(*args, **kwargs)
            if isinstance(result, Iterator):
                result = list(result)
        except Exception as exc:
            error = self._translate(exc, method)
            if isinstance(error, CatalogueUnavailable):
                self._shared.last_error = str(error)
            else:
                self._shared.last_ok, self._shared.last_error = time.time(), None
            raise error from exc
        self._shared.last_ok, self._shared.last_error = time.time(), None
        return result

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``client.<method>(*args, **kwargs)`` in the pool (generators are drained there)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._shared.pool, self._sync_call, method, args, kwargs)

    def _translate(self, exc: Exception, method: str) -> CatalogueError:
        kind = type(exc).__name__
        words = _words(exc)
        where = f"Rucio at {self.settings.host}"
        if kind in ("DataIdentifierNotFound", "ScopeNotFound"):
            return DidNotFound("", f"not found in {where}: {words}")  # callers name the DID
        if kind == "InsufficientAccountLimit":
            return QuotaExceeded(
                f"Rucio account {self.account!r} has not enough quota at the destination "
                f"storage to stage this dataset ({words})"
            )
        if kind == "AccessDenied":
            return AccessDenied(f"Rucio account {self.account!r} may not do this: {words}")
        if kind in ("CannotAuthenticate", "NoAuthInformation", "MissingClientParameter"):
            return CatalogueUnavailable(
                f"{where} refused the credentials of account {self.account!r}: {words}"
            )
        if kind in ("RSENotFound", "InvalidRSEExpression", "InvalidReplicationRule"):
            return StagingFailed(f"{where} refused the destination: {words}")
        if kind == "ServerConnectionException" or isinstance(exc, OSError | ConnectionError):
            return CatalogueUnavailable(f"cannot reach {where} ({method}): {words}")
        if isinstance(exc, ValueError | RuntimeError):
            return CatalogueUnavailable(f"Rucio client set-up failed: {exc}")
        return CatalogueUnavailable(f"{where} failed on {method}: {kind}: {words}")

    # --- resolve and locality ------------------------------------------------------------------
    async def resolve(self, dids: Sequence[str]) -> dict[str, DidFiles | None]:
        wanted = check_dids(dids, max_dids=self.settings.max_dids)
        now = self._clock()
        found: dict[str, DidFiles | None] = {}
        missing: list[str] = []
        waiting: dict[str, asyncio.Future[DidFiles | None]] = {}
        inflight, who = self._shared.inflight, self._who
        for did in wanted:
            hit = self._shared.cache.get((who, did))
            if hit is not None and hit[0] > now:
                found[did] = hit[1]
                self._shared.cache_hits += 1
            elif (who, did) in inflight:
                waiting[did] = inflight[who, did]  # the same identity is asking right now
            else:
                missing.append(did)
        loop = asyncio.get_running_loop()
        mine = {did: loop.create_future() for did in missing}
        inflight.update({(who, did): future for did, future in mine.items()})
        try:
            for batch in _batches(missing, self.settings.batch_size):
                fetched = await self._fetch(batch)
                self._remember(fetched)
                found.update(fetched)
                for did, value in fetched.items():
                    mine[did].set_result(value)
        except BaseException as exc:
            for future in mine.values():
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved: no "never retrieved" warning if unshared
            raise
        finally:
            for did, future in mine.items():
                if inflight.get((who, did)) is future:
                    del inflight[who, did]
        for did, future in waiting.items():
            found[did] = await future
        return {did: found[did] for did in wanted}

    def _remember(self, fetched: dict[str, DidFiles | None]) -> None:
        cache = self._shared.cache
        expires = self._clock() + self.settings.cache_ttl
        for did, value in fetched.items():
            cache.pop((self._who, did), None)
            cache[self._who, did] = (expires, value)
        if len(cache) > self.settings.cache_max_entries:
            now = self._clock()
            for key in [k for k, (exp, _) in cache.items() if exp <= now]:
                del cache[key]
            while len(cache) > self.settings.cache_max_entries:
                del cache[next(iter(cache))]

    def invalidate(self, dids: Sequence[str] | None = None) -> None:
        """Forget cached answers (all, or for ``dids``), whoever asked."""
        if dids is None:
            self._shared.cache.clear()
        else:
            gone = set(dids)
            for key in [k for k in self._shared.cache if k[1] in gone]:
                del self._shared.cache[key]

    async def _fetch(self, batch: Sequence[str]) -> dict[str, DidFiles | None]:
        rucio_dids = [_rucio_did(d) for d in batch]
        owners: dict[str, set[str]] | None = None
        if len(batch) > 1:
            owners = {}
            asked = set(batch)
            for entry in await self._call("bulk_list_files", rucio_dids):
                parent = f"{entry['parent_scope']}:{entry['parent_name']}"
                if parent in asked:
                    owners.setdefault(f"{entry['scope']}:{entry['name']}", set()).add(parent)
        records = await self._call("list_replicas", rucio_dids, sort="random", all_states=True)
        files: dict[str, list[FileReplica]] = {did: [] for did in batch}
        for record in records:
            replica = self._file(record)
            for did in owners.get(replica.did, ()) if owners is not None else batch:
                files[did].append(replica)
        result: dict[str, DidFiles | None] = {}
        empty = [did for did in batch if not files[did]]
        types: dict[str, str] = {}
        if empty:
            for meta in await self._call("get_metadata_bulk", [_rucio_did(d) for d in empty]):
                types[f"{meta['scope']}:{meta['name']}"] = str(meta.get("did_type") or "")
        for did in batch:
            if files[did]:
                own = files[did]
                kind = "FILE" if len(own) == 1 and own[0].did == did else None
                result[did] = DidFiles(
                    did=did, did_type=kind, files=tuple(sorted(own, key=lambda f: f.did))
                )
            elif did in types:
                result[did] = DidFiles(did=did, did_type=types[did] or None, files=())
            else:
                result[did] = None
        return result

    @staticmethod
    def _file(record: dict[str, Any]) -> FileReplica:
        pfns: dict[str, list[str]] = record.get("rses") or {}
        states: dict[str, str] = record.get("states") or {}
        replicas = tuple(
            Replica(rse=rse, state=str(state), pfn=next(iter(pfns.get(rse) or ()), None))
            for rse, state in sorted(states.items())
        )
        return FileReplica(
            scope=record["scope"],
            name=record["name"],
            bytes=int(record.get("bytes") or 0),
            adler32=record.get("adler32"),
            md5=record.get("md5"),
            replicas=replicas,
        )

    async def locality(self, dids: Sequence[str]) -> list[Locality]:
        resolved = await self.resolve(dids)
        names = [r.name for r in self.settings.local_rses]
        return [
            _locality.did_locality(did, files, names, throughput=self._shared.throughput)
            for did, files in resolved.items()
        ]

    def observe_staging(self, bytes_moved: int, seconds: float) -> None:
        """Feed a measured staging rate (bytes over seconds) into the estimates (moving average)."""
        if bytes_moved <= 0 or seconds <= 0:
            return
        rate = bytes_moved / seconds
        old = self._shared.throughput
        self._shared.throughput = rate if old is None else 0.7 * old + 0.3 * rate
