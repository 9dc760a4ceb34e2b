"""Staging rules outlive the servers that read their data.

A rule brings a dataset to the hub's storage for ``rule_lifetime`` seconds; once it expires,
Rucio may delete the replicas under a server that still reads them. Two guards, both about
the rule the catalogue's account holds for a dataset at the destination RSE
(:meth:`~esap_spawner.data.catalogue.base.Catalogue.rule_for`):

- at spawn, :func:`ensure_rules_last`: a rule that expires within ``margin`` seconds gets
  the full lifetime again before the spawn says its datasets are ready; when the account
  may not extend it, the spawn fails with the rule and the moment in words
  (:class:`RuleExpiring`);
- while servers run, :class:`RuleRenewal`: a periodic task in the hub process renews the
  rules of the datasets running servers were started with, each as it comes within
  ``margin`` of its end. One failing rule is logged and the others are still renewed.

Time comes from one small function (``now``), so tests move the clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from esap_spawner.data.catalogue.base import (
    Catalogue,
    CatalogueError,
    StagingRequest,
    StagingStatus,
)
from esap_spawner.data.staging import StagingError

__all__ = ["RuleExpiring", "RuleRenewal", "ensure_rules_last", "expires_within", "utc_now"]

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


def expires_within(request: StagingRequest, margin: float, *, now: datetime) -> bool:
    """Whether the rule of ``request`` ends within ``margin`` seconds (never for a rule
    without an end)."""
    if not request.expires_at:
        return False
    ends = datetime.fromisoformat(request.expires_at)
    if ends.tzinfo is None:
        ends = ends.replace(tzinfo=UTC)
    return ends - now <= timedelta(seconds=margin)


class RuleExpiring(StagingError):
    """A dataset's rule ends too soon and cannot be extended: the datasets are not ready."""


async def _renew_if_due(
    catalogue: Catalogue,
    did: str,
    *,
    destination: str,
    lifetime: int,
    margin: float,
    now: datetime,
) -> StagingRequest | None:
    """The account's rule for ``did``, renewed when it ends within ``margin``; None when
    there is none (or it needs nothing)."""
    rule = await catalogue.rule_for(did, destination_rse=destination)
    if rule is None or not expires_within(rule, margin, now=now):
        return None
    return await catalogue.extend(rule, lifetime=lifetime)


async def ensure_rules_last(
    catalogue: Catalogue,
    dids: Sequence[str],
    *,
    destination: str,
    lifetime: int,
    margin: float,
    now: Callable[[], datetime] = utc_now,
) -> None:
    """Every rule the account holds for ``dids`` at ``destination`` lasts ``margin`` seconds
    more, or :class:`RuleExpiring` says which does not and until when."""

    async def one(did: str) -> None:
        try:
            await _renew_if_due(
                catalogue, did, destination=destination, lifetime=lifetime, margin=margin,
                now=now(),
            )  # fmt: skip
        except CatalogueError as exc:
            raise RuleExpiring(
                409,
                f"{did} is kept at {destination} by a rule that ends within "
                f"{margin / 3600:g} h, and it could not be extended ({exc}); ask the hub's "
                "administrators, or start without it",
                StagingStatus.failure,
            ) from exc

    await asyncio.gather(*(one(did) for did in dids))


@dataclass
class RuleRenewal:
    """Every ``interval`` seconds, renew the rules of the datasets in use (see the module)."""

    catalogue: Callable[[], Catalogue | None]
    datasets_in_use: Callable[[], Iterable[str]]
    destination: str
    lifetime: int
    margin: float
    interval: float
    now: Callable[[], datetime] = utc_now
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep

    async def once(self) -> dict[str, str]:
        """One round: each dataset in use -> ``renewed``, ``kept`` or why it failed."""
        catalogue = self.catalogue()
        outcome: dict[str, str] = {}
        if catalogue is None:
            return outcome
        for did in sorted(set(self.datasets_in_use())):
            try:
                renewed = await _renew_if_due(
                    catalogue, did, destination=self.destination, lifetime=self.lifetime,
                    margin=self.margin, now=self.now(),
                )  # fmt: skip
            except CatalogueError as exc:
                log.warning("esap: could not renew the rule of %s at %s: %s", did,
                            self.destination, exc)  # fmt: skip
                outcome[did] = str(exc)
                continue
            if renewed is not None:
                log.info("esap: renewed rule %s of %s until %s", renewed.rule_id, did,
                         renewed.expires_at)  # fmt: skip
            outcome[did] = "kept" if renewed is None else "renewed"
        return outcome

    async def run(self) -> None:
        """Rounds until cancelled; a round that fails as a whole is logged, not fatal."""
        while True:
            try:
                await self.once()
            except Exception:
                log.exception("esap: renewing staging rules failed; trying again later")
            await self.sleep(self.interval)
