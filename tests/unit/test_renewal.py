"""Staging rules renewed before they end: at spawn and while servers run (no I/O: an
in-memory catalogue and a clock the test moves). The real Rucio side is in
tests/integration/test_staging_spawn.py."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from esap_spawner.data.catalogue import AccessDenied, DidNotFound, StagingRequest
from esap_spawner.data.renewal import (
    RuleExpiring,
    RuleRenewal,
    ensure_rules_last,
    expires_within,
)

T0 = datetime(2026, 12, 1, tzinfo=UTC)
DAY = 86400.0


class Rules:
    """The part of a catalogue renewal uses: one rule per DID, each with its end."""

    def __init__(self, ends: dict[str, datetime | None], *, may_extend: bool = True) -> None:
        self.ends = dict(ends)
        self.may_extend = may_extend
        self.extended: list[str] = []

    async def rule_for(self, did: str, *, destination_rse: str) -> StagingRequest | None:
        if did == "lost:one":
            raise DidNotFound(did)
        if did not in self.ends:
            return None
        end = self.ends[did]
        return StagingRequest(did, destination_rse, f"rule-{did}",
                              expires_at=end.isoformat() if end else None)  # fmt: skip

    async def extend(self, request: StagingRequest, *, lifetime: int) -> StagingRequest:
        if not self.may_extend:
            raise AccessDenied("Rucio account 'esap' may not do this: update rule")
        self.extended.append(request.did)
        self.ends[request.did] = T0 + timedelta(seconds=lifetime)
        return request


def test_expires_within() -> None:
    soon = StagingRequest("a:b", "RSE", "r", expires_at=(T0 + timedelta(hours=2)).isoformat())
    assert expires_within(soon, 3 * 3600, now=T0)
    assert not expires_within(soon, 3600, now=T0)
    assert not expires_within(StagingRequest("a:b", "RSE", "r"), DAY, now=T0)  # no end


async def test_at_spawn_a_rule_ending_soon_is_renewed_first() -> None:
    rules = Rules({"a:soon": T0 + timedelta(hours=1), "a:later": T0 + timedelta(days=5),
                   "a:forever": None})  # fmt: skip
    await ensure_rules_last(rules, ["a:soon", "a:later", "a:forever", "a:none"],  # type: ignore[arg-type]
                            destination="RSE", lifetime=7 * 86400, margin=DAY,
                            now=lambda: T0)  # fmt: skip
    assert rules.extended == ["a:soon"]


async def test_at_spawn_a_rule_that_cannot_be_extended_stops_it() -> None:
    rules = Rules({"a:soon": T0 + timedelta(hours=1)}, may_extend=False)
    with pytest.raises(RuleExpiring) as stopped:
        await ensure_rules_last(rules, ["a:soon"], destination="RSE",  # type: ignore[arg-type]
                                lifetime=7 * 86400, margin=DAY, now=lambda: T0)  # fmt: skip
    assert stopped.value.status == 409
    assert str(stopped.value).startswith(
        "a:soon is kept at RSE by a rule that ends within 24 h, and it could not be extended"
    )


async def test_the_hubs_rounds_renew_each_rule_as_it_comes_near_its_end() -> None:
    now = [T0]
    rules = Rules({"a:one": T0 + timedelta(days=2), "a:two": T0 + timedelta(days=6)})
    in_use: list[Sequence[str]] = [["a:one", "a:two", "lost:one", "a:one"]]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            raise StopRounds

    renewal = RuleRenewal(
        catalogue=lambda: rules,  # type: ignore[arg-type,return-value]
        datasets_in_use=lambda: in_use[0], destination="RSE", lifetime=7 * 86400,
        margin=DAY, interval=600, now=lambda: now[0], sleep=sleep,
    )  # fmt: skip
    assert await renewal.once() == {
        "a:one": "kept", "a:two": "kept", "lost:one": "dataset lost:one does not exist "
        "in the data catalogue",
    }  # fmt: skip
    now[0] = T0 + timedelta(days=1, hours=1)  # a:one now ends within a day
    assert (await renewal.once())["a:one"] == "renewed"
    assert rules.extended == ["a:one"]
    now[0] = T0 + timedelta(days=5, hours=1)  # a:two's turn; a:one was given 7 days
    in_use[0] = ["a:one", "a:two"]
    assert await renewal.once() == {"a:one": "kept", "a:two": "renewed"}
    assert slept == []


async def test_the_loop_goes_on_after_a_round_that_failed() -> None:
    rules = Rules({"a:one": T0 + timedelta(hours=1)})
    asked: list[int] = []

    def catalogue() -> Rules:
        asked.append(1)
        if len(asked) == 1:
            raise RuntimeError("the site file could not be read")
        return rules

    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:
            raise StopRounds

    renewal = RuleRenewal(
        catalogue=catalogue,  # type: ignore[arg-type]
        datasets_in_use=lambda: ["a:one"], destination="RSE", lifetime=7 * 86400,
        margin=DAY, interval=600, now=lambda: T0, sleep=sleep,
    )  # fmt: skip
    with pytest.raises(StopRounds):
        await renewal.run()
    assert slept == [600, 600] and rules.extended == ["a:one"]  # the second round renewed


class StopRounds(Exception):
    pass
