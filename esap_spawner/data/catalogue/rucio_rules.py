"""Staging with Rucio replication rules: one rule per DID to the destination RSE.

:class:`RuleStaging` is the staging half of
:class:`~esap_spawner.data.catalogue.rucio.RucioCatalogue` (which holds the calls, the
resolve cache and the locality half). A rule gets the site's lifetime, and a rule the same
account already has for that DID and RSE (``list_did_rules``) is reused, its lifetime
extended when less than half is left. Progress comes from the rule's lock counts
(``get_replication_rule``) and, while a transfer is part-way, from ``list_replica_locks``
for exact bytes. Cancelling removes the rule (replicas are left for Rucio's reaper).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from esap_spawner.data.catalogue.base import (
    AccessDenied,
    CatalogueUnavailable,
    DidFiles,
    DidNotFound,
    StagingFailed,
    StagingProgress,
    StagingRequest,
    StagingState,
)
from esap_spawner.data.did import parse_did

if TYPE_CHECKING:
    from esap_spawner.data.catalogue.rucio import RucioSettings

__all__ = ["RuleStaging"]

log = logging.getLogger(__name__)


def _rucio_kind(exc: BaseException) -> str:
    """The Rucio exception class behind a translated catalogue error ('' if none)."""
    return type(exc.__cause__).__name__ if exc.__cause__ is not None else ""


def _utc(value: Any) -> datetime | None:
    """A Rucio timestamp (naive UTC ``datetime`` or text) as an aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            try:
                value = datetime.strptime(value, "%a, %d %b %Y %H:%M:%S %Z")
            except ValueError:
                return None
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: Any) -> str | None:
    moment = _utc(value)
    return moment.isoformat() if moment else None


class RuleStaging(ABC):
    """``stage``, ``staging_progress`` and ``cancel`` over Rucio rules, for a catalogue
    that has ``settings``, ``account``, ``_call`` (a Rucio client call in its pool) and
    ``resolve``."""

    settings: RucioSettings

    @property
    @abstractmethod
    def account(self) -> str:
        """The Rucio account rules are made for."""

    @abstractmethod
    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``client.<method>(*args, **kwargs)``, off the event loop, errors translated."""

    @abstractmethod
    async def resolve(self, dids: Sequence[str]) -> dict[str, DidFiles | None]:
        """Each DID -> its files and replicas, or None when it does not exist."""

    async def stage(
        self, did: str, *, destination_rse: str | None = None, lifetime: int | None = None
    ) -> StagingRequest:
        scope, name = parse_did(did)
        destination = destination_rse or self.settings.destination_rse
        if not destination:
            raise StagingFailed("no destination RSE configured for staging")
        lifetime = int(lifetime or self.settings.rule_lifetime)
        resolved = (await self.resolve([did]))[did]
        if resolved is None:
            raise DidNotFound(did)
        request = StagingRequest(
            did=did,
            destination_rse=destination,
            rule_id=None,
            account=self.account,
            lifetime=lifetime,
            files_total=len(resolved.files),
            bytes_total=resolved.bytes,
        )
        existing = await self._existing_rule(scope, name, destination)
        if existing is not None:
            return await self._reuse(request, existing)
        try:
            rule_ids = await self._call(
                "add_replication_rule",
                [{"scope": scope, "name": name}],
                1,
                destination,
                lifetime=lifetime,
                account=self.account,
            )
        except CatalogueUnavailable as exc:
            if _rucio_kind(exc) != "DuplicateRule":
                raise
            existing = await self._existing_rule(scope, name, destination)  # lost a race
            if existing is None:
                raise
            return await self._reuse(request, existing)
        except DidNotFound as exc:
            raise DidNotFound(did) from exc
        except StagingFailed as exc:
            raise StagingFailed(f"cannot stage {did} to {destination}: {exc}") from exc
        expires = datetime.now(UTC) + timedelta(seconds=lifetime)
        return replace(request, rule_id=str(rule_ids[0]), expires_at=expires.isoformat())

    async def _reuse(self, request: StagingRequest, rule: dict[str, Any]) -> StagingRequest:
        """Reuse ``rule``; extend its lifetime when less than half the requested one is left
        (e.g. a rule cancelled earlier, which Rucio keeps for up to an hour). Under the generic
        policy only admin accounts may do that: others keep the rule as it is."""
        rule_id = str(rule["id"])
        expires = _utc(rule.get("expires_at"))
        lifetime = request.lifetime or self.settings.rule_lifetime
        if expires is not None:
            left = (expires - datetime.now(UTC)).total_seconds()
            if left < lifetime / 2:
                try:
                    await self._call("update_replication_rule", rule_id, {"lifetime": lifetime})
                    expires = datetime.now(UTC) + timedelta(seconds=lifetime)
                except AccessDenied:
                    log.info(
                        "rule %s expires in %ds and %s may not extend it",
                        rule_id,
                        left,
                        self.account,
                    )
        return replace(
            request,
            rule_id=rule_id,
            reused=True,
            expires_at=expires.isoformat() if expires else None,
        )

    async def rule_for(self, did: str, *, destination_rse: str) -> StagingRequest | None:
        """This account's rule for ``did`` at ``destination_rse``, with its end."""
        scope, name = parse_did(did)
        rule = await self._existing_rule(scope, name, destination_rse)
        if rule is None:
            return None
        return StagingRequest(
            did=did,
            destination_rse=destination_rse,
            rule_id=str(rule["id"]),
            account=self.account,
            reused=True,
            expires_at=_iso(rule.get("expires_at")),
        )

    async def extend(self, request: StagingRequest, *, lifetime: int) -> StagingRequest:
        """``update_replication_rule`` with a new lifetime; under Rucio's generic policy only
        admin accounts may (:class:`AccessDenied` otherwise)."""
        await self._call("update_replication_rule", request.rule_id, {"lifetime": lifetime})
        expires = datetime.now(UTC) + timedelta(seconds=lifetime)
        return replace(request, lifetime=lifetime, expires_at=expires.isoformat())

    async def _existing_rule(
        self, scope: str, name: str, destination: str
    ) -> dict[str, Any] | None:
        try:
            rules = await self._call("list_did_rules", scope, name)
        except DidNotFound as exc:
            raise DidNotFound(f"{scope}:{name}") from exc
        mine = [
            r
            for r in rules
            if r.get("account") == self.account
            and r.get("rse_expression") == destination
            and int(r.get("copies") or 1) == 1
        ]
        return mine[0] if mine else None

    async def staging_progress(self, request: StagingRequest) -> StagingProgress:
        base = StagingProgress(
            did=request.did,
            destination_rse=request.destination_rse,
            rule_id=request.rule_id,
            state=StagingState.NOT_AVAILABLE,
            files_total=request.files_total,
            bytes_total=request.bytes_total,
        )
        if request.rule_id is None:
            return replace(base, error="no replication rule was made for this request")
        try:
            rule = await self._call("get_replication_rule", request.rule_id)
        except CatalogueUnavailable as exc:
            if _rucio_kind(exc) != "RuleNotFound":
                raise
            return replace(base, error=f"rule {request.rule_id} no longer exists in Rucio")
        ok = int(rule.get("locks_ok_cnt") or 0)
        replicating = int(rule.get("locks_replicating_cnt") or 0)
        stuck = int(rule.get("locks_stuck_cnt") or 0)
        total = max(ok + replicating + stuck, request.files_total)
        try:
            state = StagingState(str(rule.get("state")))
        except ValueError:
            state = StagingState.REPLICATING
        if ok >= total:
            bytes_ok = request.bytes_total
        elif ok == 0:
            bytes_ok = 0
        else:
            locks = await self._call("list_replica_locks", request.rule_id)
            sizes = await self._sizes(request.did)
            bytes_ok = sum(
                sizes.get(f"{lock['scope']}:{lock['name']}", 0)
                for lock in locks
                if lock.get("state") == "OK"
            )
        error = rule.get("error") or None
        if state is StagingState.STUCK and not error:
            # every transfer not done is held up: Rucio may mark a rule STUCK before its
            # stuck-lock counter moves
            unfinished = max(stuck, total - ok)
            error = f"{unfinished} of {total} file transfers are stuck (rule {request.rule_id})"
        return replace(
            base,
            state=state,
            files_ok=ok,
            files_replicating=replicating,
            files_stuck=stuck,
            files_total=total,
            bytes_ok=bytes_ok,
            error=error,
            expires_at=_iso(rule.get("expires_at")),
        )

    async def _sizes(self, did: str) -> dict[str, int]:
        resolved = (await self.resolve([did]))[did]
        return {f.did: f.bytes for f in resolved.files} if resolved else {}

    async def cancel(self, request: StagingRequest) -> None:
        """Remove the rule (replicas are left for Rucio's reaper). Under Rucio's generic policy
        only root and admin accounts may remove rules: others get :class:`AccessDenied` and the
        rule simply expires at the end of its lifetime."""
        if request.rule_id is None:
            return
        try:
            await self._call("delete_replication_rule", request.rule_id, purge_replicas=False)
        except CatalogueUnavailable as exc:
            if _rucio_kind(exc) != "RuleNotFound":
                raise
