"""The data-catalogue interface: plain value classes, errors in words, and the abstract Catalogue.

A catalogue turns dataset identifiers (DIDs, ``scope:name``) into files with sizes, checksums and
replicas per storage element (RSE), says which of them are already at the hub's local RSEs, and
stages the rest (a request, its progress, cancel). ``rucio.py`` and ``static.py`` implement it;
the spawner and the advertising service use only what is here.

Everything here is plain data; the arithmetic (locality, PFN -> pod path) is in ``locality.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Literal

from esap_spawner.data.did import DidError, parse_did
from esap_spawner.site.model import LocalRSE

LocalityStatus = Literal["local", "partial", "remote", "not_found", "unknown"]


# --- errors -------------------------------------------------------------------------------
class CatalogueError(Exception):
    """Base class: ``str(error)`` is a sentence a user can read."""


class InvalidDid(CatalogueError, DidError):
    """DIDs that are not ``scope:name`` (checked by :func:`check_dids` before anything is
    asked of the catalogue; the grammar is :func:`esap_spawner.data.did.parse_did`)."""


class CatalogueUnavailable(CatalogueError):
    """The catalogue cannot be reached or refuses our credentials; try again later."""


class DidNotFound(CatalogueError):
    def __init__(self, did: str, message: str | None = None) -> None:
        super().__init__(message or f"dataset {did} does not exist in the data catalogue")
        self.did = did


class QuotaExceeded(CatalogueError):
    """The account has no (or not enough) quota at the destination storage."""


class AccessDenied(CatalogueError):
    """The account may not do this (e.g. stage data it cannot read)."""


class StagingFailed(CatalogueError):
    """A staging request ended badly (stuck, suspended, expired or removed)."""


# --- DIDs ---------------------------------------------------------------------------------
def check_dids(dids: Sequence[str], *, max_dids: int | None = None) -> list[str]:
    """Validate a list of DIDs (every problem in one error) and drop duplicates, keeping order."""
    if isinstance(dids, str):
        raise InvalidDid("expected a list of dataset identifiers, not a single string")
    problems = []
    for did in dids:
        try:
            parse_did(did)
        except DidError as exc:
            problems.append(str(exc))
    if problems:
        raise InvalidDid("; ".join(problems))
    unique = list(dict.fromkeys(dids))
    if max_dids is not None and len(unique) > max_dids:
        raise InvalidDid(f"{len(unique)} datasets asked for; at most {max_dids} per request")
    return unique


# --- files and replicas -------------------------------------------------------------------
@dataclass(frozen=True)
class Replica:
    """One copy of a file at one RSE (``state`` as Rucio spells it: AVAILABLE, COPYING, ...)."""

    rse: str
    state: str
    pfn: str | None = None

    @property
    def available(self) -> bool:
        return self.state == "AVAILABLE"


@dataclass(frozen=True)
class FileReplica:
    """A file (scope, name, size, checksums) and its replicas per RSE.

    ``path`` is set by catalogues whose files are already on a mounted volume (static).
    """

    scope: str
    name: str
    bytes: int
    adler32: str | None = None
    md5: str | None = None
    replicas: tuple[Replica, ...] = ()
    path: str | None = None

    @property
    def did(self) -> str:
        return f"{self.scope}:{self.name}"

    def available_at(self, rses: frozenset[str] | set[str]) -> Replica | None:
        """The first AVAILABLE replica at one of ``rses`` (in ``rses`` name order), or None."""
        found = [r for r in self.replicas if r.available and r.rse in rses]
        return min(found, key=lambda r: r.rse) if found else None


@dataclass(frozen=True)
class DidFiles:
    """What a DID resolves to: its files (empty for an empty dataset)."""

    did: str
    did_type: str | None = None  # DATASET | CONTAINER | FILE, when the catalogue says
    files: tuple[FileReplica, ...] = ()

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)


@dataclass(frozen=True)
class Locality:
    """Where one DID's data is, as the advertising API reports it."""

    did: str
    status: LocalityStatus
    files_total: int = 0
    files_local: int = 0
    bytes_total: int = 0
    bytes_local: int = 0
    local_rses: tuple[str, ...] = ()
    staging_required: bool = False
    estimated_staging_seconds: float | None = None
    message: str = ""

    @classmethod
    def unknown(cls, did: str, message: str) -> Locality:
        return cls(did=did, status="unknown", message=message)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["local_rses"] = list(self.local_rses)
        return data


# --- staging ------------------------------------------------------------------------------
class StagingState(StrEnum):
    """A staging request's state: Rucio's rule states, plus NOT_AVAILABLE (no such rule)."""

    REPLICATING = "REPLICATING"
    OK = "OK"
    STUCK = "STUCK"
    SUSPENDED = "SUSPENDED"
    WAITING_APPROVAL = "WAITING_APPROVAL"
    INJECT = "INJECT"
    NOT_AVAILABLE = "NOT_AVAILABLE"

    @property
    def final(self) -> bool:
        return self is StagingState.OK or self.failed

    @property
    def failed(self) -> bool:
        """A state that needs someone to act (Rucio does not move on from it by itself)."""
        return self in (StagingState.STUCK, StagingState.SUSPENDED, StagingState.NOT_AVAILABLE)


class StagingStatus(StrEnum):
    """How one staging request ended, for the spawner (the staging metrics' label
    ``status``, the database's outcome column)."""

    success = "success"  # the data is at the destination RSE
    failure = "failure"  # the rule got stuck, or the catalogue refused (quota, access)
    timeout = "timeout"  # the spawn stopped waiting
    cancelled = "cancelled"  # the spawn was cancelled while staging


@dataclass(frozen=True)
class StagingRequest:
    """A request to bring one DID to ``destination_rse`` (a Rucio rule, or nothing to do).

    Plain JSON-able data (``to_json``/``from_json``), so the spawner can keep it in its state
    and database and poll it again after a hub restart.
    """

    did: str
    destination_rse: str
    rule_id: str | None
    account: str | None = None
    lifetime: int | None = None
    reused: bool = False
    files_total: int = 0
    bytes_total: int = 0
    expires_at: str | None = None  # ISO 8601, UTC, when the catalogue says

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StagingRequest:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class StagingProgress:
    """How far one staging request has got."""

    did: str
    destination_rse: str
    rule_id: str | None
    state: StagingState
    files_ok: int = 0
    files_replicating: int = 0
    files_stuck: int = 0
    files_total: int = 0
    bytes_ok: int = 0
    bytes_total: int = 0
    error: str | None = None
    expires_at: str | None = None  # ISO 8601, UTC

    @property
    def done(self) -> bool:
        return self.state is StagingState.OK

    @property
    def failed(self) -> bool:
        return self.state.failed

    def raise_for_failure(self) -> None:
        """Raise :class:`StagingFailed` (with :meth:`message` as its words) if this failed."""
        if self.failed:
            raise StagingFailed(self.message())

    def message(self) -> str:
        """``Staging escape:crab-2020 to HUB_LOCAL_DISK: 12/40 files, 1.2/4.0 GB``."""
        text = (
            f"Staging {self.did} to {self.destination_rse}: "
            f"{self.files_ok}/{self.files_total} files, "
            f"{format_fraction(self.bytes_ok, self.bytes_total)}"
        )
        if self.state is not StagingState.REPLICATING:
            text += f" ({self.state.value.lower().replace('_', ' ')})"
        if self.error:
            text += f": {self.error}"
        return text


def format_fraction(part: int, total: int) -> str:
    """``1.2/4.0 GB``: both numbers in the decimal unit that suits the total."""
    if total < 1000:
        return f"{part}/{total} B"
    scale, unit = 1000.0, "kB"
    for next_unit in ("MB", "GB", "TB", "PB"):
        if total < scale * 1000:
            break
        scale, unit = scale * 1000, next_unit
    return f"{part / scale:.1f}/{total / scale:.1f} {unit}"


@dataclass(frozen=True)
class CatalogueHealth:
    """Whether the catalogue answered lately (no I/O to find out), and words for operators."""

    ok: bool
    message: str


# --- the interface ------------------------------------------------------------------------
class Catalogue(ABC):
    """A data catalogue. All methods are coroutines and never block the event loop."""

    #: RSEs whose storage the hub mounts (for static: one pseudo-RSE for the volume).
    local_rses: tuple[LocalRSE, ...] = ()

    @abstractmethod
    async def resolve(self, dids: Sequence[str]) -> dict[str, DidFiles | None]:
        """Each DID -> its files and replicas, or None when it does not exist."""

    @abstractmethod
    async def locality(self, dids: Sequence[str]) -> list[Locality]:
        """One :class:`Locality` per distinct DID, in the order asked."""

    @abstractmethod
    async def stage(
        self, did: str, *, destination_rse: str | None = None, lifetime: int | None = None
    ) -> StagingRequest:
        """Start bringing ``did`` to ``destination_rse`` (or reuse the request already there)."""

    @abstractmethod
    async def staging_progress(self, request: StagingRequest) -> StagingProgress:
        """Where ``request`` has got to."""

    @abstractmethod
    async def cancel(self, request: StagingRequest) -> None:
        """Withdraw ``request`` (its data may then be deleted by the catalogue)."""

    async def rule_for(self, did: str, *, destination_rse: str) -> StagingRequest | None:
        """The rule this catalogue's account holds to keep ``did`` at ``destination_rse``
        (its end in ``expires_at``); None when there is none, or no rules at all."""
        return None

    async def extend(self, request: StagingRequest, *, lifetime: int) -> StagingRequest:
        """Give ``request``'s rule ``lifetime`` seconds from now (nothing to do here)."""
        return request

    def health(self) -> CatalogueHealth:
        """From what the catalogue last saw; never does I/O."""
        return CatalogueHealth(True, f"{type(self).__name__} has no remote part")

    async def locality_json(self, dids: Sequence[str]) -> list[dict[str, Any]]:
        """:meth:`locality` as the advertising API's JSON objects."""
        return [result.to_json() for result in await self.locality(dids)]

    def invalidate(self, dids: Sequence[str] | None = None) -> None:  # noqa: B027
        """Forget what is cached about ``dids`` (all when None); nothing to forget here."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release threads and connections."""
