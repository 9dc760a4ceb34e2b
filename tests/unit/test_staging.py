"""Stager without I/O: an in-memory catalogue (the collaborator), a fake clock and sleep.

The real-Rucio behaviour is in tests/integration/test_staging_spawn.py; here the timing
rules: backoff that grows while nothing moves and drops back when a file arrives, the
deadline, resumption from saved state, and a remembered rule that is gone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from esap_spawner.data.catalogue import (
    Catalogue,
    DidFiles,
    FileReplica,
    Locality,
    Replica,
    StagingProgress,
    StagingRequest,
    StagingState,
)
from esap_spawner.data.staging import (
    DidStaging,
    Stager,
    StagingError,
    StagingSettings,
    dump_staging_state,
    load_staging_state,
    staging_deadline,
)
from esap_spawner.observe import metrics
from esap_spawner.site.model import LocalRSE
from tests.harness.clock import Clock

DID = "escape:crab-2020"
LOCAL = "HUB_LOCAL_DISK"


class MemoryCatalogue(Catalogue):
    """Two files of DID at REMOTE; each poll of the rule returns the next scripted count of
    files done (the last repeats); ``ok`` files are AVAILABLE at LOCAL once done."""

    def __init__(self, script: Sequence[int | str], *, local: bool = False) -> None:
        self.local_rses = (LocalRSE(LOCAL, "/data/", "/rucio/local"),)
        self.script = list(script)
        self.polls = 0
        self.calls: Counter[str] = Counter()
        self.done = 2 if local else 0

    def _files(self) -> tuple[FileReplica, ...]:
        out = []
        for i in range(2):
            replicas = [Replica("REMOTE", "AVAILABLE", f"root://remote/f{i}")]
            if i < self.done:
                replicas.append(Replica(LOCAL, "AVAILABLE", f"file:///data/escape/f{i}"))
            out.append(FileReplica("escape", f"f{i}", 500, replicas=tuple(replicas)))
        return tuple(out)

    async def resolve(self, dids: Sequence[str]) -> dict[str, DidFiles | None]:
        self.calls["resolve"] += 1
        return {d: DidFiles(d, "DATASET", self._files()) if d == DID else None for d in dids}

    async def locality(self, dids: Sequence[str]) -> list[Locality]:
        raise AssertionError("the stager computes locality from resolve()")

    async def stage(
        self, did: str, *, destination_rse: str | None = None, lifetime: int | None = None
    ) -> StagingRequest:
        self.calls["stage"] += 1
        return StagingRequest(did, destination_rse or "", f"rule-{self.calls['stage']}",
                              lifetime=lifetime, files_total=2, bytes_total=1000)  # fmt: skip

    async def staging_progress(self, request: StagingRequest) -> StagingProgress:
        self.calls["progress"] += 1
        step = self.script[min(self.polls, len(self.script) - 1)]
        self.polls += 1
        if step == "gone":
            return StagingProgress(DID, LOCAL, request.rule_id, StagingState.NOT_AVAILABLE,
                                   files_total=2, bytes_total=1000)  # fmt: skip
        assert isinstance(step, int)
        self.done = step
        state = StagingState.OK if step == 2 else StagingState.REPLICATING
        return StagingProgress(DID, LOCAL, request.rule_id, state, files_ok=step,
                               files_total=2, bytes_ok=500 * step, bytes_total=1000)  # fmt: skip

    async def cancel(self, request: StagingRequest) -> None:
        self.calls["cancel"] += 1


def stager(
    catalogue: MemoryCatalogue, clock: Clock, *, deadline: float = 1000.0, **kwargs: Any
) -> tuple[Stager, list[tuple[str, float]]]:
    messages: list[tuple[str, float]] = []
    settings = StagingSettings(LOCAL, 3600, poll_min=0.5, poll_max=2.0, poll_factor=2.0)
    return Stager(
        catalogue=catalogue,
        user="ada",
        settings=kwargs.pop("settings", settings),
        deadline=clock.now + deadline,
        on_message=lambda m, f: messages.append((m, f)),
        clock=clock,
        wall=clock,
        sleep=clock.sleep,
        **kwargs,
    ), messages


def counted(status: str) -> float:
    value: float = metrics.HUB.staging_requests.labels(status=status)._value.get()
    return value


async def test_backoff_grows_while_nothing_moves_and_resets_when_a_file_arrives() -> None:
    catalogue, clock = MemoryCatalogue([0, 0, 0, 0, 1, 1, 2]), Clock(100.0)
    run, messages = stager(catalogue, clock)
    before = counted("success")
    resolved = await run.run([DID])
    # polls 1-4 see nothing new after the first: 0.5 (first report), 1.0, 2.0, 2.0 (cap);
    # the 5th sees a file: back to 0.5, then 1.0 before the last poll
    assert clock.slept == [0.5, 1.0, 2.0, 2.0, 0.5, 1.0]
    assert [m for m, _ in messages] == [
        "Created replication rule rule-1 for escape:crab-2020 to HUB_LOCAL_DISK (2 files, 1.0 kB)",
        "Staging escape:crab-2020 to HUB_LOCAL_DISK: 0/2 files, 0.0/1.0 kB",
        "Staging escape:crab-2020 to HUB_LOCAL_DISK: 1/2 files, 0.5/1.0 kB",
        "Staging escape:crab-2020 to HUB_LOCAL_DISK: 2/2 files, 1.0/1.0 kB (ok)",
    ]
    assert [f for _, f in messages] == [0.0, 0.0, 0.5, 1.0]
    assert catalogue.calls["resolve"] == 2  # once before, once (fresh) after staging
    assert all(f.available_at({LOCAL}) for f in resolved[DID].files)
    assert counted("success") == before + 1
    state = run.state()
    assert state["dids"][0]["outcome"] == "success"
    assert state["dids"][0]["request"]["rule_id"] == "rule-1"


async def test_deadline_fails_with_the_counts_and_records_a_timeout() -> None:
    catalogue, clock = MemoryCatalogue([0, 1]), Clock(100.0)
    run, _ = stager(catalogue, clock, deadline=3.0)
    before = counted("timeout")
    with pytest.raises(StagingError) as failed:
        await run.run([DID])
    assert (failed.value.status, str(failed.value)) == (
        504,
        "Staging did not finish in time: escape:crab-2020 has 1/2 files",
    )
    assert clock.now == pytest.approx(103.0)  # never slept past the deadline
    assert counted("timeout") == before + 1
    assert run.state()["dids"][0]["outcome"] == "timeout"


async def test_local_data_is_never_staged() -> None:
    catalogue, clock = MemoryCatalogue([2], local=True), Clock(100.0)
    run, messages = stager(catalogue, clock)
    resolved = await run.run([DID])
    assert catalogue.calls["stage"] == 0 and catalogue.calls["progress"] == 0
    assert (messages, clock.slept, run.staged) == ([], [], False)
    assert len(resolved[DID].files) == 2


async def test_without_a_destination_remote_data_is_refused() -> None:
    catalogue, clock = MemoryCatalogue([2]), Clock(100.0)
    run, _ = stager(catalogue, clock, settings=StagingSettings(None, 0))
    with pytest.raises(StagingError) as refused:
        await run.run([DID])
    assert refused.value.status == 409
    assert "this hub does not stage data" in str(refused.value)


async def test_missing_dataset_named() -> None:
    run, _ = stager(MemoryCatalogue([2]), Clock(100.0))
    with pytest.raises(StagingError) as refused:
        await run.run([DID, "escape:nope"])
    assert (refused.value.status, str(refused.value)) == (
        404,
        "dataset escape:nope does not exist in the data catalogue",
    )


async def test_saved_state_resumes_the_same_rule() -> None:
    saved_request = StagingRequest(DID, LOCAL, "rule-saved", files_total=2, bytes_total=1000)
    saved = load_staging_state(
        dump_staging_state({DID: DidStaging(DID, saved_request, started_at=50.0)})
    )
    catalogue, clock = MemoryCatalogue([1, 2]), Clock(100.0)
    run, messages = stager(catalogue, clock, saved=saved)
    await run.run([DID])
    assert catalogue.calls["stage"] == 0
    assert messages[0] == ("Resuming staging of escape:crab-2020 (rule rule-saved)", 0.0)
    # a finished entry or another destination is not resumed
    finished = {DID: replace_entry(saved[DID], finished_at=60.0)}
    catalogue2 = MemoryCatalogue([2])
    await stager(catalogue2, Clock(100.0), saved=finished)[0].run([DID])
    assert catalogue2.calls["stage"] == 1


def replace_entry(entry: DidStaging, **changes: Any) -> DidStaging:
    data = entry.to_json()
    data.update(changes)
    return DidStaging.from_json(data)


async def test_a_remembered_rule_that_is_gone_is_asked_for_again_once() -> None:
    saved = {DID: DidStaging(DID, StagingRequest(DID, LOCAL, "rule-old"), started_at=1.0)}
    catalogue, clock = MemoryCatalogue(["gone", 1, 2]), Clock(100.0)
    run, messages = stager(catalogue, clock, saved=saved)
    await run.run([DID])
    assert catalogue.calls["stage"] == 1
    assert "Replication rule rule-1 for escape:crab-2020 to HUB_LOCAL_DISK" in [
        m for m, _ in messages
    ]
    # gone twice: the second time it is a failure, in words
    catalogue = MemoryCatalogue(["gone"])
    run, _ = stager(catalogue, Clock(100.0), saved=dict(saved))
    with pytest.raises(StagingError) as failed:
        await run.run([DID])
    assert failed.value.status == 500 and "(not available)" in str(failed.value)


def test_deadline_is_the_smaller_of_site_timeout_and_start_timeout_left() -> None:
    common = {"now": 10.0, "started": 1000.0, "pod_margin": 30.0}
    assert staging_deadline(site_timeout=3600, start_timeout=300, wall_now=1100.0, **common) == (
        10.0 + 300 - 100 - 30
    )
    assert staging_deadline(site_timeout=60, start_timeout=3000, wall_now=1000.0, **common) == 70
    assert staging_deadline(site_timeout=60, start_timeout=10, wall_now=1100.0, **common) == 10


def test_unreadable_state_is_ignored() -> None:
    assert load_staging_state(None) == {}
    assert load_staging_state({"version": 99, "dids": []}) == {}
    assert load_staging_state({"version": 1, "dids": [{"no": "did"}]}) == {}


async def test_state_keeps_this_runs_dids_and_unfinished_others() -> None:
    done = DidStaging(
        "old:finished", StagingRequest("old:finished", LOCAL, "r1"), started_at=1.0, finished_at=2.0
    )
    open_ = DidStaging("old:open", StagingRequest("old:open", LOCAL, "r2"), started_at=1.0)
    run, _ = stager(
        MemoryCatalogue([2]), Clock(100.0), saved={"old:finished": done, "old:open": open_}
    )
    await run.run([DID])
    assert [d["did"] for d in run.state()["dids"]] == ["old:open", DID]


# -- the site's staging limits (security review finding 2) ---------------------------------


def test_too_much_to_stage_counts_what_is_not_yet_local() -> None:
    from esap_spawner.data.staging_limits import StagingLimits, too_much_to_stage

    half = Locality(DID, "partial", files_total=10, files_local=4, bytes_total=10**9,
                    bytes_local=4 * 10**8, staging_required=True)  # fmt: skip
    limits = StagingLimits(max_files=6, max_bytes=6 * 10**8)
    assert too_much_to_stage([half], limits, destination=LOCAL) is None  # 6 files, 600 MB
    assert too_much_to_stage([half, half], limits, destination=LOCAL) == (
        f"the 2 datasets to stage need 12 files (1.2 GB) copied to {LOCAL}; this hub stages "
        "at most 6 files and 600.0 MB for one server: ask for fewer datasets"
    )
    assert too_much_to_stage([half], StagingLimits(max_files=5), destination=LOCAL)
    assert too_much_to_stage([half], StagingLimits(max_bytes=10**8), destination=LOCAL)


def test_too_many_in_flight_counts_only_new_requests() -> None:
    from esap_spawner.data.staging_limits import StagingLimits, too_many_in_flight

    limits = StagingLimits(max_rules_per_user=3)
    assert too_many_in_flight(2, 1, limits) is None
    assert too_many_in_flight(5, 0, limits) is None  # everything resumed: nothing new
    assert too_many_in_flight(2, 2, limits) == (
        "you have 2 staging requests in flight and this server needs 2 more; at most 3 per "
        "user: wait for them to finish, or stop a server that is still staging"
    )


class InFlight:
    """The part of the database the stager's limit reads: one user's requests in flight."""

    def __init__(self, *rows: tuple[str, str]) -> None:
        self.rows = [type("Row", (), {"did": did, "destination_rse": rse}) for did, rse in rows]
        self.asked: list[str | None] = []

    def staging_in_flight(self, user: str | None = None) -> list[Any]:
        self.asked.append(user)
        return self.rows


async def test_a_spawn_over_the_limits_makes_no_rule() -> None:
    from esap_spawner.data.staging import StagingLimit
    from esap_spawner.data.staging_limits import StagingLimits

    catalogue, clock = MemoryCatalogue([2]), Clock()
    tight = StagingSettings(LOCAL, 3600, limits=StagingLimits(max_files=1))
    run, _ = stager(catalogue, clock, settings=tight)
    with pytest.raises(StagingLimit) as refused:
        await run.run([DID])
    assert refused.value.status == 413
    assert "need 2 files (1.0 kB)" in str(refused.value)
    assert catalogue.calls["stage"] == 0 and run.entries == {}

    busy = InFlight(("escape:a", LOCAL), ("escape:b", "ELSEWHERE"))
    full = StagingSettings(LOCAL, 3600, limits=StagingLimits(max_rules_per_user=2))
    run, _ = stager(catalogue, clock, settings=full, db=busy)
    with pytest.raises(StagingLimit) as refused:
        await run.run([DID])
    assert refused.value.status == 429 and busy.asked == ["ada"]
    assert "you have 2 staging requests in flight" in str(refused.value)
    assert catalogue.calls["stage"] == 0

    # its own request in flight (a hub restart, a retried spawn) is resumed, not new
    resumed = InFlight(("escape:a", LOCAL), (DID, LOCAL))
    run, _ = stager(catalogue, clock, settings=full, db=resumed)
    await run._check_limits([Locality(DID, "remote", files_total=2, staging_required=True)])
