"""Rucio going away during catalogue work and coming back, against a real Rucio server.

The catalogue directly (locality questions in flight when the server dies) and the
:class:`~esap_spawner.data.staging.Stager` with its database (a staging request cut by the outage,
then the spawn retried): every call answers right or raises ``CatalogueUnavailable`` with
the reason, none hangs, the retry reuses the one rule, and the staging rows tell both
attempts. (Staging faults through the spawner are in ``test_staging_spawn.py``.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from esap_spawner.data.catalogue import CatalogueUnavailable
from esap_spawner.data.catalogue.rucio import RucioCatalogue, RucioSettings
from esap_spawner.data.staging import Stager, StagingError, StagingSettings
from esap_spawner.observe.db import Database
from esap_spawner.site.model import LocalRSE
from tests.harness.rucio_server import LOCAL_RSE, REMOTE_RSE, RucioServer, make_files

pytestmark = pytest.mark.integration


def catalogue(server: RucioServer) -> RucioCatalogue:
    return RucioCatalogue(
        RucioSettings(
            host=server.url,
            identity=server.identity("alice"),
            local_rses=(
                LocalRSE(
                    name=LOCAL_RSE, pfn_prefix=server.pfn_prefix(LOCAL_RSE), mount_path="/rucio"
                ),
            ),
            destination_rse=LOCAL_RSE,
            rule_lifetime=3600,
            cache_ttl=0.0,  # every question goes to Rucio
            timeout=10,
        )
    )


async def eventually(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


def alice_rules(server: RucioServer, did: str) -> list[str]:
    scope, name = did.split(":")
    return [
        str(r["id"])
        for r in server.rules(scope, name)
        if r["account"] == "alice" and r["rse_expression"] == LOCAL_RSE
    ]


async def test_locality_calls_in_flight_when_rucio_dies_fail_in_words_then_work(
    rucio_server: RucioServer,
) -> None:
    scope = rucio_server.new_scope("flt")
    rucio_server.upload_dataset(scope, "here", make_files(scope, "h", 2, 100), LOCAL_RSE)
    rucio_server.upload_dataset(scope, "away", make_files(scope, "a", 3, 100), REMOTE_RSE)
    dids = [f"{scope}:here", f"{scope}:away"]
    cat = catalogue(rucio_server)
    ok: list[float] = []  # end times of right answers
    failed: list[str] = []
    wrong: list[str] = []
    slowest = 0.0
    stop = asyncio.Event()

    async def ask() -> None:
        nonlocal slowest
        for _ in range(2000):  # bounded; ends on stop
            if stop.is_set():
                return
            began = time.monotonic()
            try:
                results = await cat.locality(dids)
            except CatalogueUnavailable as e:
                failed.append(str(e))
                await asyncio.sleep(0.05)
            else:
                statuses = [(r.did, r.status, r.files_total) for r in results]
                if statuses != [(dids[0], "local", 2), (dids[1], "remote", 3)]:
                    wrong.append(repr(statuses))
                ok.append(time.monotonic())
            slowest = max(slowest, time.monotonic() - began)

    askers = [asyncio.ensure_future(ask()) for _ in range(4)]
    try:
        await eventually(lambda: len(ok) >= 8, "answers before the crash")
        await asyncio.to_thread(rucio_server.crash)
        try:
            await eventually(lambda: len(failed) >= 4, "refusals while Rucio is down")
            health = cat.health()
            assert not health.ok and "Rucio" in health.message
        finally:
            await asyncio.to_thread(rucio_server.start)
        back = time.monotonic()
        await eventually(lambda: sum(t > back for t in ok) >= 8, "answers after the restart")
        assert cat.health().ok
    finally:
        stop.set()
        await asyncio.gather(*askers)
        await cat.close()
    assert not wrong, wrong[:3]
    assert all(message.startswith(("cannot reach Rucio", "Rucio at")) for message in failed), set(
        failed
    )
    assert slowest < 30, f"a call took {slowest:.1f} s"


async def test_staging_cut_by_an_outage_then_retried_reuses_the_rule_and_records_both(
    rucio_server: RucioServer, tmp_path: Path
) -> None:
    scope = rucio_server.new_scope("fst")
    files = make_files(scope, "f", 4, 1000)
    rucio_server.upload_dataset(scope, "set", files, REMOTE_RSE)
    did = f"{scope}:set"
    db = Database(f"sqlite:///{tmp_path / 'esap.sqlite'}")
    db.ensure_schema()
    cat = catalogue(rucio_server)
    messages: list[str] = []

    def stager() -> Stager:
        return Stager(
            catalogue=cat,
            user="ada",
            settings=StagingSettings(LOCAL_RSE, 3600, poll_min=0.05, poll_max=0.2),
            deadline=time.monotonic() + 120,
            db=db,
            on_message=lambda message, fraction: messages.append(message),
        )

    try:
        first = asyncio.ensure_future(stager().run([did]))
        (rule,) = await eventually(lambda: alice_rules(rucio_server, did), "the rule")
        await asyncio.to_thread(rucio_server.complete_transfer, LOCAL_RSE, files[:1])
        await eventually(lambda: any(": 1/4 files" in m for m in messages), "1/4 staged")
        await asyncio.to_thread(rucio_server.crash)
        try:
            with pytest.raises(StagingError) as cut:
                await asyncio.wait_for(first, 60)
        finally:
            await asyncio.to_thread(rucio_server.start)
        assert cut.value.status == 503 and "cannot reach Rucio" in str(cut.value)
        (row,) = db.staging_between(0)
        assert (row.outcome, row.rule_id, row.files_done) == ("failure", rule, 1)
        assert "cannot reach Rucio" in (row.reason or "") and row.finished_at is not None

        # the user spawns again once Rucio is back: the same rule, a row of its own
        second = asyncio.ensure_future(stager().run([did]))
        await eventually(lambda: len(db.staging_between(0)) == 2, "the retry's row")
        await asyncio.to_thread(rucio_server.complete_transfer, LOCAL_RSE, files[1:])
        resolved = await asyncio.wait_for(second, 60)
        assert len(resolved[did].files) == 4
    finally:
        await cat.close()
    assert alice_rules(rucio_server, did) == [rule]  # never a second rule
    first_row, retry = db.staging_between(0)
    assert (first_row.id, first_row.outcome) == (row.id, "failure")
    assert (retry.outcome, retry.rule_id, retry.files_done, retry.files_total) == (
        "success",
        rule,
        4,
        4,
    )
    assert retry.bytes_done == retry.bytes_total == 4000
    assert db.staging_in_flight() == []
    found = db.staging_by_rule(rule)
    assert found is not None and found.id == retry.id  # the latest request of that rule
