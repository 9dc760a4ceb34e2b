"""RucioCatalogue against a real Rucio server (tests/harness/rucio_server.py): locality, bulk
calls, cache, staging with honest transfers, refusals, and Rucio going down and up again."""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import pytest

from esap_spawner.data.catalogue import (
    AccessDenied,
    CatalogueUnavailable,
    DidNotFound,
    QuotaExceeded,
    StagingFailed,
    StagingState,
    pod_path,
)
from esap_spawner.data.catalogue.rucio import RucioCatalogue, RucioSettings
from esap_spawner.data.catalogue.rucio_client import RucioIdentity
from esap_spawner.site.model import LocalRSE
from tests.harness.rucio_server import (
    ALICE_PASSWORD,
    LOCAL_RSE,
    REMOTE_RSE,
    RucioServer,
    SeededFile,
    make_files,
)

pytestmark = pytest.mark.integration

MOUNT = "/rucio/hub-local"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Seeded:
    scope: str
    local: list[SeededFile]
    remote: list[SeededFile]
    partial: list[SeededFile]

    def did(self, name: str) -> str:
        return f"{self.scope}:{name}"


@pytest.fixture(scope="module")
def seeded(rucio_server: RucioServer) -> Seeded:
    """One scope: a local, a remote, a partial (2 of 4 files local) and an empty dataset."""
    scope = rucio_server.new_scope("loc")
    local = rucio_server.upload_dataset(scope, "local", make_files(scope, "l", 3, 100), LOCAL_RSE)
    remote = rucio_server.upload_dataset(
        scope, "remote", make_files(scope, "r", 4, 200), REMOTE_RSE
    )
    partial = rucio_server.upload_dataset(
        scope, "partial", make_files(scope, "p", 4, 300), REMOTE_RSE
    )
    rucio_server.add_replicas(LOCAL_RSE, partial[:2])
    rucio_server.empty_dataset(scope, "empty")
    return Seeded(scope=scope, local=local, remote=remote, partial=partial)


def settings(server: RucioServer, account: str = "alice", **overrides: object) -> RucioSettings:
    values: dict[str, object] = {
        "host": server.url,
        "identity": server.identity(account),
        "local_rses": (
            LocalRSE(name=LOCAL_RSE, pfn_prefix=server.pfn_prefix(LOCAL_RSE), mount_path=MOUNT),
        ),
        "destination_rse": LOCAL_RSE,
        "rule_lifetime": 3600,
        "throughput": 100.0,
    }
    values.update(overrides)
    return RucioSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def catalogue(rucio_server: RucioServer, clock: FakeClock) -> Iterator[RucioCatalogue]:
    cat = RucioCatalogue(settings(rucio_server), clock=clock)
    yield cat
    cat._shared.pool.shutdown(wait=True)


async def test_locality_local_partial_remote_empty_and_missing(
    catalogue: RucioCatalogue, seeded: Seeded
) -> None:
    assert catalogue.health().ok  # nothing asked yet
    names = ["local", "partial", "remote", "empty", "missing"]
    results = {r.did: r for r in await catalogue.locality([seeded.did(n) for n in names])}
    assert [r.split(":")[1] for r in results] == names

    local = results[seeded.did("local")]
    assert (local.status, local.files_total, local.files_local) == ("local", 3, 3)
    assert (local.bytes_total, local.bytes_local) == (300, 300)
    assert local.local_rses == (LOCAL_RSE,)
    assert local.staging_required is False

    partial = results[seeded.did("partial")]
    assert (partial.status, partial.files_total, partial.files_local) == ("partial", 4, 2)
    assert (partial.bytes_total, partial.bytes_local) == (1200, 600)
    assert partial.staging_required is True
    assert partial.estimated_staging_seconds == 6  # 600 bytes at 100 B/s

    remote = results[seeded.did("remote")]
    assert (remote.status, remote.files_local, remote.bytes_total) == ("remote", 0, 800)
    assert remote.local_rses == ()
    assert remote.estimated_staging_seconds == 8

    empty = results[seeded.did("empty")]
    assert (empty.status, empty.files_total, empty.staging_required) == ("local", 0, False)

    missing = results[seeded.did("missing")]
    assert missing.status == "not_found"


async def test_resolve_gives_checksums_and_pfns_that_map_into_the_pod(
    catalogue: RucioCatalogue, seeded: Seeded, rucio_server: RucioServer
) -> None:
    resolved = (await catalogue.resolve([seeded.did("local")]))[seeded.did("local")]
    assert resolved is not None
    by_name = {f.name: f for f in resolved.files}
    assert sorted(by_name) == sorted(f.name for f in seeded.local)
    rse = catalogue.local_rses[0]
    for seed in seeded.local:
        got = by_name[seed.name]
        assert (got.bytes, got.adler32, got.md5) == (seed.bytes, seed.adler32, seed.md5)
        replica = got.available_at({LOCAL_RSE})
        assert replica is not None and replica.pfn is not None
        in_pod = pod_path(replica.pfn, rse)
        assert in_pod.startswith(MOUNT + "/" + seeded.scope + "/")
        # the same relative path under the RSE's real folder is the real file
        on_disk = Path(rse.pfn_prefix) / Path(in_pod).relative_to(MOUNT)
        assert on_disk.read_bytes() == seed.content
        assert urlparse(replica.pfn).path == str(on_disk)


async def test_one_list_replicas_call_for_many_datasets(
    catalogue: RucioCatalogue, rucio_server: RucioServer
) -> None:
    scope = rucio_server.new_scope("bulk")
    expected = {}
    for i in range(25):
        rse = LOCAL_RSE if i % 3 == 0 else REMOTE_RSE
        files = rucio_server.upload_dataset(scope, f"ds{i}", make_files(scope, f"f{i}", 4), rse)
        expected[f"{scope}:ds{i}"] = sorted(f.name for f in files)
    rucio_server.empty_dataset(scope, "empty")
    dids = [*expected, f"{scope}:empty", f"{scope}:missing"]

    resolved = await catalogue.resolve(dids)

    assert catalogue.calls["list_replicas"] == 1
    assert catalogue.calls["bulk_list_files"] == 1
    assert catalogue.calls["get_metadata_bulk"] == 1  # only for the two DIDs without files
    assert sum(catalogue.calls.values()) == 3
    for did, names in expected.items():
        got = resolved[did]
        assert got is not None
        assert sorted(f.name for f in got.files) == names  # each file attributed to its dataset
    empty = resolved[f"{scope}:empty"]
    assert empty is not None and empty.files == () and empty.did_type == "DATASET"
    assert resolved[f"{scope}:missing"] is None


async def test_batches_of_at_most_batch_size_dids(
    rucio_server: RucioServer, seeded: Seeded, clock: FakeClock
) -> None:
    cat = RucioCatalogue(settings(rucio_server, batch_size=2), clock=clock)
    try:
        names = ["local", "partial", "remote", "empty", "missing"]
        results = await cat.locality([seeded.did(n) for n in names])
        assert [r.status for r in results] == ["local", "partial", "remote", "local", "not_found"]
        assert cat.calls["list_replicas"] == 3  # 2 + 2 + 1
    finally:
        await cat.close()


async def test_repeat_is_served_from_cache_until_the_ttl(
    catalogue: RucioCatalogue, seeded: Seeded, clock: FakeClock
) -> None:
    dids = [seeded.did("local"), seeded.did("remote")]
    first = await catalogue.locality(dids)
    calls = sum(catalogue.calls.values())
    assert await catalogue.locality(dids) == first
    assert sum(catalogue.calls.values()) == calls
    assert catalogue.cache_hits == 2
    clock.now += catalogue.settings.cache_ttl + 1
    assert await catalogue.locality(dids) == first
    assert sum(catalogue.calls.values()) > calls


async def test_staging_creates_one_rule_reuses_it_and_reports_progress(
    catalogue: RucioCatalogue, rucio_server: RucioServer
) -> None:
    scope = rucio_server.new_scope("stage")
    files = rucio_server.upload_dataset(scope, "crab", make_files(scope, "c", 4, 250), REMOTE_RSE)
    did = f"{scope}:crab"

    request = await catalogue.stage(did)
    assert request.rule_id and not request.reused
    assert (request.account, request.destination_rse, request.lifetime) == (
        "alice",
        LOCAL_RSE,
        3600,
    )
    assert (request.files_total, request.bytes_total) == (4, 1000)

    again = await catalogue.stage(did)
    assert again.rule_id == request.rule_id and again.reused
    alice_rules = [r for r in rucio_server.rules(scope, "crab") if r["account"] == "alice"]
    assert [r["id"] for r in alice_rules] == [request.rule_id]
    assert alice_rules[0]["rse_expression"] == LOCAL_RSE

    progress = await catalogue.staging_progress(request)
    assert progress.state is StagingState.REPLICATING
    assert (progress.files_ok, progress.files_total, progress.bytes_ok) == (0, 4, 0)
    seen = [progress.files_ok]
    for i, f in enumerate(files, start=1):
        rucio_server.complete_transfer(LOCAL_RSE, [f])
        progress = await catalogue.staging_progress(request)
        seen.append(progress.files_ok)
        assert progress.bytes_ok == 250 * i
        if i < 4:
            assert progress.state is StagingState.REPLICATING
            assert progress.message() == (
                f"Staging {did} to {LOCAL_RSE}: {i}/4 files, {250 * i / 1000:.1f}/1.0 kB"
            )
    assert seen == [0, 1, 2, 3, 4]
    assert progress.state is StagingState.OK and progress.done
    assert progress.message() == f"Staging {did} to {LOCAL_RSE}: 4/4 files, 1.0/1.0 kB (ok)"

    catalogue.invalidate([did])
    (after,) = await catalogue.locality([did])
    assert (after.status, after.files_local) == ("local", 4)


async def test_staging_a_partial_dataset_counts_local_files_at_once(
    catalogue: RucioCatalogue, rucio_server: RucioServer
) -> None:
    scope = rucio_server.new_scope("part")
    files = rucio_server.upload_dataset(scope, "ds", make_files(scope, "p", 4, 100), REMOTE_RSE)
    rucio_server.add_replicas(LOCAL_RSE, files[:3])
    request = await catalogue.stage(f"{scope}:ds")
    progress = await catalogue.staging_progress(request)
    assert (progress.files_ok, progress.bytes_ok, progress.state) == (
        3,
        300,
        StagingState.REPLICATING,
    )
    assert catalogue.calls["list_replica_locks"] == 1  # exact bytes while part-way


async def test_quota_refusal_is_quota_exceeded_in_words(
    rucio_server: RucioServer, seeded: Seeded
) -> None:
    bob = RucioCatalogue(settings(rucio_server, "bob"))
    try:
        with pytest.raises(QuotaExceeded) as info:
            await bob.stage(seeded.did("remote"))
        assert "'bob'" in str(info.value) and "quota" in str(info.value)
        assert not [r for r in rucio_server.rules(seeded.scope, "remote") if r["account"] == "bob"]
    finally:
        await bob.close()


async def test_nonexistent_did(catalogue: RucioCatalogue, seeded: Seeded) -> None:
    with pytest.raises(DidNotFound) as info:
        await catalogue.stage(seeded.did("no-such-dataset"))
    assert info.value.did == seeded.did("no-such-dataset")
    assert "does not exist" in str(info.value)
    with pytest.raises(DidNotFound):
        await catalogue.stage("noscope:no-such-dataset")


async def test_user_token_acts_as_that_user(rucio_server: RucioServer, clock: FakeClock) -> None:
    scope = rucio_server.new_scope("tok")
    rucio_server.upload_dataset(scope, "ds", make_files(scope, "t", 2), REMOTE_RSE)
    service = RucioCatalogue(settings(rucio_server, "root"), clock=clock)
    try:
        alice = service.for_token(rucio_server.token("alice"), account="alice")
        request = await alice.stage(f"{scope}:ds")
        assert request.account == "alice"
        (rule,) = rucio_server.rules(scope, "ds")[1:]  # [0] is root's rule at the origin
        assert (rule["id"], rule["account"]) == (request.rule_id, "alice")
        assert alice.calls is service.calls  # one pool, one cache, one count

        forged = service.for_token("not-a-token", account="alice")
        with pytest.raises(CatalogueUnavailable, match="refused"):
            await forged.stage(f"{scope}:ds")
    finally:
        await service.close()


async def test_one_users_answer_never_answers_another(
    rucio_server: RucioServer, clock: FakeClock
) -> None:
    """Security review finding 3: the resolve cache is keyed by the identity that asked. A
    forged (or expired) token got the answer cached for a good one; now it is refused, and
    each user's question goes to Rucio with that user's own token."""
    scope = rucio_server.new_scope("who")
    rucio_server.upload_dataset(scope, "ds", make_files(scope, "w", 2), REMOTE_RSE)
    did = f"{scope}:ds"
    service = RucioCatalogue(settings(rucio_server, "root"), clock=clock)
    try:
        alice = service.for_token(rucio_server.token("alice"), account="alice")
        assert (await alice.resolve([did]))[did] is not None
        forged = service.for_token("not-a-token", account="alice")
        with pytest.raises(CatalogueUnavailable, match="refused"):
            await forged.resolve([did])
        asked = service.calls["list_replicas"]
        bob = service.for_token(rucio_server.token("bob"), account="bob")
        await bob.resolve([did])  # bob's own question, with bob's token
        assert service.calls["list_replicas"] == asked + 1
        hits = service.cache_hits
        await alice.resolve([did])  # alice's answer, cached for alice
        assert (service.calls["list_replicas"], service.cache_hits) == (asked + 1, hits + 1)
        service.invalidate([did])  # staging changed it: gone for every identity
        await bob.resolve([did])
        assert service.calls["list_replicas"] == asked + 2
    finally:
        await service.close()


async def test_wrong_password_is_refused_even_after_a_good_login(
    rucio_server: RucioServer,
) -> None:
    good = RucioCatalogue(settings(rucio_server, "alice"))
    bad = RucioCatalogue(
        settings(
            rucio_server,
            identity=RucioIdentity.userpass("alice", username="alice", password="wrong"),
        )
    )
    argv0 = sys.argv[0]
    try:
        await good.locality(["some:thing"])
        with pytest.raises(
            CatalogueUnavailable, match="refused the credentials of account 'alice'"
        ):
            await bad.locality(["some:thing"])
        # tokens live on the client objects only: nothing in rucio-clients' token folder
        from rucio.client.baseclient import BaseClient

        folder = Path(BaseClient.TOKEN_PATH_PREFIX + getpass.getuser())
        assert not (folder / "auth_token_for_account_alice").exists()
        assert sys.argv[0] == argv0  # rucio-clients shortens it; make_client puts it back
    finally:
        await good.close()
        await bad.close()


async def test_cancel_needs_an_admin_and_a_cancelled_rule_is_revived_on_reuse(
    rucio_server: RucioServer, catalogue: RucioCatalogue
) -> None:
    scope = rucio_server.new_scope("cancel")
    rucio_server.upload_dataset(scope, "ds", make_files(scope, "x", 2), REMOTE_RSE)
    request = await catalogue.stage(f"{scope}:ds")
    with pytest.raises(AccessDenied, match="'alice' may not"):
        await catalogue.cancel(request)

    root = RucioCatalogue(settings(rucio_server, "root", rule_lifetime=7 * 24 * 3600))
    try:
        root_request = await root.stage(f"{scope}:ds")
        assert root_request.rule_id != request.rule_id  # rules are per account
        await root.cancel(root_request)
        # Rucio deletes softly: the rule stays, expiring within the hour (the judge cleans it)
        cancelled = await root.staging_progress(root_request)
        assert cancelled.expires_at is not None
        left = datetime.fromisoformat(cancelled.expires_at) - datetime.now(UTC)
        assert left <= timedelta(hours=1)
        # staging again reuses that rule and gives it its full lifetime back
        again = await root.stage(f"{scope}:ds")
        assert again.rule_id == root_request.rule_id and again.reused
        assert root.calls["update_replication_rule"] == 1
        extended = await root.staging_progress(again)
        assert extended.expires_at is not None
        left = datetime.fromisoformat(extended.expires_at) - datetime.now(UTC)
        assert left > timedelta(days=6)
    finally:
        await root.close()


async def test_rucio_down_is_unavailable_then_works_after_restart(
    rucio_server: RucioServer, seeded: Seeded, clock: FakeClock
) -> None:
    cat = RucioCatalogue(settings(rucio_server), clock=clock)
    try:
        await cat.locality([seeded.did("local")])
        rucio_server.crash()
        try:
            cat.invalidate()
            with pytest.raises(CatalogueUnavailable, match="cannot reach Rucio"):
                await cat.locality([seeded.did("local")])
            with pytest.raises(CatalogueUnavailable):
                await cat.stage(seeded.did("remote"))
            health = cat.health()
            assert not health.ok and "cannot reach Rucio" in health.message
        finally:
            rucio_server.start()
        (again,) = await cat.locality([seeded.did("local")])
        assert again.status == "local"
        assert cat.health().ok
    finally:
        await cat.close()


async def test_from_site_file(
    rucio_server: RucioServer, seeded: Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from esap_spawner.site.model import parse_site

    password = tmp_path / "rucio-password"
    password.write_text(ALICE_PASSWORD + "\n")
    site = parse_site(
        f"""
facility: {{name: "Test Hub", url: "https://hub.example.org/"}}
profiles:
  - {{slug: default, display_name: "Default", cpu: {{limit: 1}}, memory: {{limit: 1Gi}}}}
data:
  catalogue: rucio
  rucio:
    host: {rucio_server.url}
    account: alice
    auth_type: userpass
    username: alice
    password_file: {password}
    local_rses:
      - name: {LOCAL_RSE}
        pfn_prefix: {rucio_server.pfn_prefix(LOCAL_RSE)}
        mount_path: {MOUNT}
        volume: {{hostPath: {{path: {rucio_server.rse_dir(LOCAL_RSE)}}}}}
    staging: {{destination_rse: {LOCAL_RSE}, rule_lifetime: 7200}}
"""
    )
    cat = RucioCatalogue.from_site(site)
    try:
        assert cat.settings.rule_lifetime == 7200
        assert cat.local_rses == site.data.rucio.local_rses  # one type, volume included
        assert repr(cat.settings.identity) == "RucioIdentity(account='alice', auth_type='userpass')"
        local, partial = await cat.locality([seeded.did("local"), seeded.did("partial")])
        assert (local.status, partial.status) == ("local", "partial")
    finally:
        await cat.close()


async def test_demo_examples_are_what_they_say(
    rucio_server: RucioServer, catalogue: RucioCatalogue
) -> None:
    dids = rucio_server.seed_examples("demo")
    results = await catalogue.locality(list(dids.values()))
    assert [r.status for r in results] == ["local", "partial", "remote", "local"]
    assert [r.files_total for r in results] == [4, 6, 5, 0]


async def test_concurrent_questions_share_one_call(
    catalogue: RucioCatalogue, seeded: Seeded
) -> None:
    dids = [seeded.did("local"), seeded.did("remote")]
    first, second, third = await asyncio.gather(
        catalogue.locality(dids), catalogue.locality(dids), catalogue.locality(dids[:1])
    )
    assert first == second and third == first[:1]
    assert catalogue.calls["list_replicas"] == 1
    assert not catalogue._shared.inflight


async def test_token_file_and_password_env_identities(
    rucio_server: RucioServer, seeded: Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "rucio-token"
    token_file.write_text(rucio_server.token("alice") + "\n")
    monkeypatch.setenv("ESAP_TEST_RUCIO_PASSWORD", ALICE_PASSWORD)
    identities = [
        RucioIdentity.with_token("alice", token_file=str(token_file)),
        RucioIdentity.userpass("alice", username="alice", password_env="ESAP_TEST_RUCIO_PASSWORD"),
    ]
    for identity in identities:
        cat = RucioCatalogue(settings(rucio_server, identity=identity))
        try:
            (result,) = await cat.locality([seeded.did("partial")])
            assert result.status == "partial"
        finally:
            await cat.close()
    monkeypatch.delenv("ESAP_TEST_RUCIO_PASSWORD")
    cat = RucioCatalogue(settings(rucio_server, identity=identities[1]))
    try:
        with pytest.raises(CatalogueUnavailable, match="ESAP_TEST_RUCIO_PASSWORD"):
            await cat.locality([seeded.did("partial")])
    finally:
        await cat.close()


async def test_a_user_cannot_extend_a_rule_so_it_is_reused_as_it_is(
    catalogue: RucioCatalogue, rucio_server: RucioServer
) -> None:
    scope = rucio_server.new_scope("short")
    rucio_server.upload_dataset(scope, "ds", make_files(scope, "s", 2), REMOTE_RSE)
    short = await catalogue.stage(f"{scope}:ds", lifetime=600)
    longer = await catalogue.stage(f"{scope}:ds", lifetime=7 * 24 * 3600)
    assert longer.rule_id == short.rule_id and longer.reused
    assert catalogue.calls["update_replication_rule"] == 1  # tried, refused by the policy
    assert longer.expires_at is not None
    left = datetime.fromisoformat(longer.expires_at) - datetime.now(UTC)
    assert left <= timedelta(seconds=600)


async def test_unknown_destination_fails_in_words(
    rucio_server: RucioServer, seeded: Seeded
) -> None:
    cat = RucioCatalogue(settings(rucio_server, destination_rse="NO_SUCH_RSE"))
    try:
        with pytest.raises(
            StagingFailed, match=f"cannot stage {seeded.did('remote')} to NO_SUCH_RSE"
        ):
            await cat.stage(seeded.did("remote"))
    finally:
        await cat.close()
