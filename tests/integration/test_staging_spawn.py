"""Staging at spawn against a REAL Rucio server (tests/harness/rucio_server.py).

The spawner is the real ESAPSpawner, fed as JupyterHub feeds it (user options, then
``load_user_options`` and ``get_pod_manifest``) with a plain MockUser on the session
simulator, whose API receives the datalinks ConfigMap. Transfers are completed honestly,
file by file, the way a transfer service would (copy + mark the replicas available).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from jupyterhub.objects import Hub
from kubernetes_asyncio.client import ApiClient
from tornado import web
from traitlets import TraitError
from traitlets.config import Config

import esap_spawner.data.datalinks as datalinks_module
from esap_spawner.observe.db import Database
from esap_spawner.spawn.spawner import ESAPSpawner
from tests.harness.hub import HUB_SITE
from tests.harness.rucio_server import (
    LOCAL_RSE,
    MOUNT,
    REMOTE_RSE,
    ROOT,
    RucioServer,
    SeededFile,
    alice_rules,
    make_files,
    rucio_site,
)
from tests.harness.spawner import MockUser

pytestmark = pytest.mark.integration

SCRIPT = Path(datalinks_module.__file__)


def make_spawner(
    tmp_path: Path, site: dict[str, Any], options: dict[str, Any], namespace: str, name: str
) -> ESAPSpawner:
    site_file = tmp_path / f"site-{name}.yaml"
    if not site_file.exists():
        site_file.write_text(yaml.safe_dump(site))
    config = Config()
    config.ESAPSpawner.site_file = str(site_file)
    config.KubeSpawner.namespace = namespace
    config.ESAPSpawner.admission = False
    config.ESAPSpawner.db_url = f"sqlite:///{tmp_path / 'esap.sqlite'}"
    config.ESAPSpawner.staging_poll_interval = 0.05
    config.ESAPSpawner.staging_poll_max = 0.3
    config.ESAPSpawner.staging_pod_margin = 1.0
    config.ESAPSpawner.start_timeout = 120
    spawner = ESAPSpawner(
        hub=Hub(ip="127.0.0.1", port=8081),
        user=MockUser(name),
        config=config,
        api_token="token",
        oauth_client_id="client",
    )
    spawner.user_options = options
    return spawner


async def eventually(check: Callable[[], Any], what: str, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(check)
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def collect(progress: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    """The staging part of ``progress()`` (up to "Datasets ready")."""
    seen = []
    async for event in progress:
        seen.append(event)
        if event["message"].startswith("Datasets ready"):
            break
    return seen


def messages_of(spawner: ESAPSpawner) -> list[str]:
    return [m["message"] for m in spawner._esap_messages or []]


async def complete_one_by_one(
    server: RucioServer, spawner: ESAPSpawner, files: list[SeededFile]
) -> None:
    for i, f in enumerate(files, start=1):
        await asyncio.to_thread(server.complete_transfer, LOCAL_RSE, [f])
        wanted = f"{i}/{len(files)} files"
        await eventually(said(spawner, wanted), f"progress {wanted}")


def said(spawner: ESAPSpawner, text: str) -> Callable[[], bool]:
    """Whether one of the spawner's progress messages contains ``text``, as a check."""
    return lambda: any(text in m for m in messages_of(spawner))


async def staging_under_way(
    server: RucioServer, spawner: ESAPSpawner, did: str, files: list[SeededFile], done: int
) -> tuple[asyncio.Future[None], dict[str, Any]]:
    """Start ``spawner``'s staging of ``did``, complete ``done`` of its transfers and wait
    until the spawner says so; the spawn's task (still running) and alice's rule."""
    scope, name = did.split(":")
    loading = asyncio.ensure_future(spawner.load_user_options())
    (rule,) = await eventually(lambda: alice_rules(server, scope, name), "the rule")
    await asyncio.to_thread(server.complete_transfer, LOCAL_RSE, files[:done])
    await eventually(said(spawner, f"{done}/{len(files)} files"), f"{done}/{len(files)}")
    return loading, rule


def staging_row(tmp_path: Path, did: str) -> Any:
    """The one staging row the spawn history holds for ``did``."""
    db = Database(f"sqlite:///{tmp_path / 'esap.sqlite'}")
    (row,) = [r for r in db.staging_between(0) if r.did == did]
    return row


@pytest.fixture
def remote_dataset(rucio_server: RucioServer) -> tuple[str, list[SeededFile]]:
    scope = rucio_server.new_scope("stg")
    files = make_files(scope, "crab", 4, 300_000)
    rucio_server.upload_dataset(scope, "crab-2020", files, REMOTE_RSE)
    return f"{scope}:crab-2020", files


async def test_staging_spawn_end_to_end(
    rucio_server: RucioServer,
    sim_namespace: str,
    sim: Any,
    tmp_path: Path,
    remote_dataset: tuple[str, list[SeededFile]],
) -> None:
    did, files = remote_dataset
    scope, name = did.split(":")
    site = rucio_site(rucio_server, tmp_path, "alice")
    spawner = make_spawner(
        tmp_path, site, {"profile": "small", "dataset": did}, sim_namespace, "ada"
    )
    spawner._esap_attempt = None
    loading = asyncio.ensure_future(spawner.load_user_options())
    watching = asyncio.ensure_future(collect(spawner.progress()))

    rules = await eventually(lambda: alice_rules(rucio_server, scope, name), "the rule")
    assert not loading.done()
    await complete_one_by_one(rucio_server, spawner, files)
    await asyncio.wait_for(loading, 20)
    events = await asyncio.wait_for(watching, 5)

    # progress: staging messages first, counts rising, within 0-30%
    texts = [e["message"] for e in events]
    assert texts[0].startswith(f"Created replication rule {rules[0]['id']} for {did}")
    counts = [int(m.group(1)) for t in texts if (m := re.search(r": (\d+)/4 files", t))]
    assert counts == sorted(counts) and {0, 1, 2, 3, 4} <= set(counts), texts
    assert f"Staging {did} to {LOCAL_RSE}: 4/4 files, 1.2/1.2 MB (ok)" in texts
    assert texts[-1] == f"Datasets ready: 1 datasets, 4 files, 1.2 MB under {ROOT}"
    percents = [e["progress"] for e in events]
    assert percents == sorted(percents) and percents[-1] == 30
    assert len(alice_rules(rucio_server, scope, name)) == 1  # one rule, never two

    # the pod: RSE mounted read-only, datasets folder, init container, env
    pod = ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest())
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["esap-rse-hub-local-disk"] == {
        "name": "esap-rse-hub-local-disk",
        "hostPath": {"path": str(rucio_server.rse_dir(LOCAL_RSE))},
    }
    assert volumes["esap-datasets"] == {"name": "esap-datasets", "emptyDir": {}}
    notebook = pod["spec"]["containers"][0]
    mounts = {m["mountPath"]: m for m in notebook["volumeMounts"]}
    assert mounts[MOUNT]["readOnly"] is True and mounts[ROOT]["readOnly"] is True
    assert {"name": "ESAP_DATASETS", "value": f"{ROOT}/manifest.json"} in notebook["env"]
    (init,) = pod["spec"]["initContainers"]
    assert init["command"][:3] == ["python3", "/opt/esap/datalinks.py", "links"]
    assert init["image"] == notebook["image"]
    assert all(m["readOnly"] for m in init["volumeMounts"] if m["mountPath"] != ROOT)
    assert [e["name"] for e in init["env"]] == ["ESAP_DATASETS"]  # no JUPYTERHUB_* at all
    assert init["securityContext"]["runAsNonRoot"] is True
    assert init["securityContext"]["allowPrivilegeEscalation"] is False

    # the plan in the ConfigMap lists exactly the requested files at the right paths
    cm_name = volumes["esap-datalinks"]["configMap"]["name"]
    cm = sim.call(sim.store.find, "configmaps", sim_namespace, cm_name)
    plan = json.loads(cm["data"]["plan.json"])
    assert list(plan["datasets"]) == [did]
    pfns = rucio_server.pfns(LOCAL_RSE, files)
    prefix = rucio_server.pfn_prefix(LOCAL_RSE)
    expected = {f.name: MOUNT + "/" + urlparse(pfns[f.did]).path[len(prefix) :] for f in files}
    assert {f["name"]: f["path"] for f in plan["datasets"][did]["files"]} == expected
    assert {f["name"]: f["adler32"] for f in plan["datasets"][did]["files"]} == {
        f.name: f.adler32 for f in files
    }
    assert cm["data"]["datalinks.py"] == SCRIPT.read_text()

    # run the shipped program for real on a container filesystem with the RSE "mounted"
    rootfs = tmp_path / "rootfs"
    (rootfs / "rucio").mkdir(parents=True)
    (rootfs / "rucio" / "hub-local").symlink_to(rucio_server.rse_dir(LOCAL_RSE))
    shipped = tmp_path / "opt"
    shipped.mkdir()
    (shipped / "datalinks.py").write_text(cm["data"]["datalinks.py"])
    (shipped / "plan.json").write_text(cm["data"]["plan.json"])
    ran = subprocess.run(
        [sys.executable, "-I", str(shipped / "datalinks.py"), "links",
         f"--plan={shipped / 'plan.json'}", f"--root={ROOT}", f"--rootfs={rootfs}", "--strict"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    folder = rootfs / ROOT.lstrip("/") / scope / name
    assert sorted(p.name for p in folder.iterdir()) == sorted(f.name for f in files)
    for f in files:
        assert (folder / f.name).read_bytes() == f.content
    manifest = json.loads((rootfs / ROOT.lstrip("/") / "manifest.json").read_text())
    assert manifest["datasets"][did]["bytes_total"] == sum(f.bytes for f in files)

    # recorded: database row, spawner state, attempt marks
    row = staging_row(tmp_path, did)
    assert (row.outcome, row.rule_id, row.files_done) == ("success", rules[0]["id"], 4)
    state = spawner.get_state()["esap_staging"]
    assert state["dids"][0]["request"]["rule_id"] == rules[0]["id"]
    attempt = spawner._attempt()
    assert attempt.staging_started is not None and attempt.staging_finished is not None


async def test_account_without_quota_is_refused(
    rucio_server: RucioServer,
    sim_namespace: str,
    tmp_path: Path,
    remote_dataset: tuple[str, list[SeededFile]],
) -> None:
    did, _ = remote_dataset
    site = rucio_site(rucio_server, tmp_path, "bob")
    spawner = make_spawner(
        tmp_path, site, {"profile": "small", "dataset": did}, sim_namespace, "bo"
    )
    with pytest.raises(web.HTTPError) as refused:
        await spawner.load_user_options()
    assert refused.value.status_code == 403
    message = refused.value.jupyterhub_message  # type: ignore[attr-defined]
    assert "Rucio account 'bob' has not enough quota" in message
    assert did in message


async def test_missing_dataset_is_refused(
    rucio_server: RucioServer, sim_namespace: str, tmp_path: Path
) -> None:
    scope = rucio_server.new_scope("none")
    site = rucio_site(rucio_server, tmp_path, "alice")
    options = {"profile": "small", "dataset": [f"{scope}:nothing-here"]}
    spawner = make_spawner(tmp_path, site, options, sim_namespace, "ny")
    with pytest.raises(web.HTTPError) as refused:
        await spawner.load_user_options()
    assert refused.value.status_code == 404
    assert refused.value.jupyterhub_message == (  # type: ignore[attr-defined]
        f"dataset {scope}:nothing-here does not exist in the data catalogue"
    )


async def test_staging_limits_refuse_before_any_rule(
    rucio_server: RucioServer,
    sim_namespace: str,
    sim: Any,
    tmp_path: Path,
    remote_dataset: tuple[str, list[SeededFile]],
) -> None:
    """Security review finding 2: the site's per-spawn limits (files, bytes) and per-user
    limit of requests in flight are checked right after the first resolve: a spawn over one
    is refused with the reason, and no rule, staging row or ConfigMap is made."""
    did, _ = remote_dataset  # 4 files of 300 kB, all remote
    scope, name = did.split(":")
    options = {"profile": "small", "dataset": [did]}
    db = Database(f"sqlite:///{tmp_path / 'esap.sqlite'}")
    for limit, status, words in (
        ({"max_files": 3}, 413, "need 4 files (1.2 MB) copied to"),
        ({"max_bytes": "1M"}, 413, "at most 4 files and 1.0 MB for one server"),
        ({"max_rules_per_user": 1}, 429, "you have 1 staging request in flight"),
    ):
        site = rucio_site(rucio_server, tmp_path, "alice")
        site["data"]["rucio"]["staging"].update(limit)
        site["data"]["rucio"]["staging"].setdefault("max_files", 4)
        user = f"lim{status}{len(words)}"
        if "max_rules_per_user" in limit:  # another server of this user is staging
            db.ensure_schema()
            db.start_staging(user=user, did=f"{scope}:other", destination_rse=LOCAL_RSE)
        spawner = make_spawner(tmp_path, site, options, sim_namespace, user)
        with pytest.raises(web.HTTPError) as refused:
            await spawner.load_user_options()
        assert refused.value.status_code == status, limit
        assert words in refused.value.jupyterhub_message, limit  # type: ignore[attr-defined]
        assert alice_rules(rucio_server, scope, name) == []
        assert not [r for r in db.staging_between(0) if r.did == did]
        made = sim.call(sim.store.objects, "configmaps", sim_namespace)
        assert not [o for o in made if user in o["metadata"]["name"]]


async def test_two_users_staging_one_dataset_share_the_sites_rule(
    rucio_server: RucioServer,
    sim_namespace: str,
    tmp_path: Path,
    remote_dataset: tuple[str, list[SeededFile]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Security review finding 9: the site's account holds one rule per dataset and RSE, so
    two users asking for one dataset wait on the same rule; each keeps its own staging row
    with that rule's id (the second used to lose it to a unique index, IntegrityError)."""
    did, files = remote_dataset
    scope, name = did.split(":")
    site = rucio_site(rucio_server, tmp_path, "alice")
    options = {"profile": "small", "dataset": [did]}
    first = make_spawner(tmp_path, site, options, sim_namespace, "sharer-a")
    second = make_spawner(tmp_path, site, options, sim_namespace, "sharer-b")
    loading, rule = await staging_under_way(rucio_server, first, did, files, 1)
    loading_too = asyncio.ensure_future(second.load_user_options())
    await eventually(said(second, "1/4 files"), "the second spawn on the same rule")
    await complete_one_by_one(rucio_server, first, files)
    await asyncio.wait_for(asyncio.gather(loading, loading_too), 30)
    assert [r["id"] for r in alice_rules(rucio_server, scope, name)] == [rule["id"]]
    db = Database(f"sqlite:///{tmp_path / 'esap.sqlite'}")
    rows = [r for r in db.staging_between(0) if r.did == did]
    assert [(r.rule_id, r.outcome) for r in rows] == [(rule["id"], "success")] * 2
    assert len({r.user_hash for r in rows}) == 2
    assert "staging record" not in caplog.text and "IntegrityError" not in caplog.text


def time_left(server: RucioServer, rule_id: str) -> timedelta | None:
    """How long a rule lasts from now (None: it has no end), as Rucio says."""
    (rule,) = list(server.client().list_replication_rules({"id": rule_id}))
    expires = rule["expires_at"]
    if isinstance(expires, str):
        expires = datetime.strptime(expires, "%a, %d %b %Y %H:%M:%S %Z")
    return None if expires is None else expires.replace(tzinfo=UTC) - datetime.now(UTC)


def rule_removed(server: RucioServer, rule_id: str) -> bool:
    """Rucio removes softly: a removed rule expires within the hour (the judge cleans up)."""
    left = time_left(server, rule_id)
    return left is not None and left <= timedelta(hours=1)


def rule_ends_after(server: RucioServer, rule_id: str, *, hours: float) -> bool:
    left = time_left(server, rule_id)
    return left is None or left > timedelta(hours=hours)


async def test_stop_removes_only_rules_it_made_and_nothing_else_needs(
    rucio_server: RucioServer,
    sim_namespace: str,
    tmp_path: Path,
    remote_dataset: tuple[str, list[SeededFile]],
) -> None:
    """Security review finding 4: with remove_staging_rules_on_stop, a server that stops
    removes a rule only if its spawn created it and the database shows no other request in
    flight and no running server on it. The site account here may remove rules (root)."""
    did, files = remote_dataset
    site = rucio_site(rucio_server, tmp_path, "root")
    site["data"]["rucio"]["staging"]["rule_lifetime"] = 7 * 24 * 3600  # removed: within 1 h
    options = {"profile": "small", "dataset": [did]}

    def spawner(user: str) -> ESAPSpawner:
        made = make_spawner(tmp_path, site, options, sim_namespace, user)
        made.remove_staging_rules_on_stop = True
        return made

    creator, sharer = spawner("rm-creator"), spawner("rm-sharer")
    loading = asyncio.ensure_future(creator.load_user_options())
    rule = await eventually(lambda: root_rule(rucio_server, did), "the rule")
    await asyncio.to_thread(rucio_server.complete_transfer, LOCAL_RSE, files)
    await asyncio.wait_for(loading, 30)
    # another user's server starts with the same dataset, now local through that rule: it
    # stages nothing (no row of its own), its pod's options name the dataset
    sharer.cmd = [sys.executable, "-c", "import time; time.sleep(600)"]
    await asyncio.wait_for(sharer.start(), 60)
    assert sharer._esap_stager.entries == {}  # type: ignore[union-attr]

    await creator.stop()  # the sharer's server still runs on it: the rule stays
    assert not rule_removed(rucio_server, rule["id"])
    await sharer.stop()  # the sharer did not create it: it stays, to expire
    assert not rule_removed(rucio_server, rule["id"])

    # a request in flight elsewhere (another hub process, in the shared database) keeps it
    again = spawner("rm-again")
    await again.load_user_options()
    db = Database(f"sqlite:///{tmp_path / 'esap.sqlite'}")
    other = db.start_staging(user="elsewhere", did=did, destination_rse=LOCAL_RSE)
    db.update_staging(other.id, rule_id=rule["id"])
    await again.stop()
    assert not rule_removed(rucio_server, rule["id"])

    # a rule its spawn made, that nothing else needs, goes
    scope = rucio_server.new_scope("rm")
    alone = make_files(scope, "solo", 2, 64)
    rucio_server.upload_dataset(scope, "solo", alone, REMOTE_RSE)
    solo = make_spawner(
        tmp_path, site, {"profile": "small", "dataset": [f"{scope}:solo"]}, sim_namespace, "rm-solo"
    )
    solo.remove_staging_rules_on_stop = True
    loading = asyncio.ensure_future(solo.load_user_options())
    own = await eventually(lambda: root_rule(rucio_server, f"{scope}:solo"), "its rule")
    await asyncio.to_thread(rucio_server.complete_transfer, LOCAL_RSE, alone)
    await asyncio.wait_for(loading, 30)
    await solo.stop()
    assert rule_removed(rucio_server, own["id"])
    released = [r for r in db.staging_between(0) if r.did == f"{scope}:solo"]
    assert [r.released_at is not None for r in released] == [True]


def root_rule(server: RucioServer, did: str) -> Any:
    scope, name = did.split(":")
    found = [r for r in server.rules(scope, name) if r["account"] == "root"
             and r["rse_expression"] == LOCAL_RSE]  # fmt: skip
    return found[0] if found else None


async def test_a_rule_ending_within_the_margin_is_renewed_before_ready(
    rucio_server: RucioServer, sim_namespace: str, tmp_path: Path
) -> None:
    """Security review finding 10: the dataset is here, kept by the account's rule, which
    ends in 10 minutes: "Datasets ready" only once that rule lasts rule_renew_margin more
    (renewed to the site's lifetime); an account that may not extend it gets the reason."""
    for account in ("alice", "root"):  # alice may not update rules; root may
        scope = rucio_server.new_scope("ren")
        files = make_files(scope, "r", 2, 64)
        rucio_server.upload_dataset(scope, "ds", files, REMOTE_RSE)
        did = f"{scope}:ds"
        (rule_id,) = await asyncio.to_thread(
            rucio_server.client(account).add_replication_rule,
            [{"scope": scope, "name": "ds"}], 1, LOCAL_RSE, lifetime=600, account=account,
        )  # fmt: skip
        await asyncio.to_thread(rucio_server.complete_transfer, LOCAL_RSE, files)
        site = rucio_site(rucio_server, tmp_path, account)
        site["data"]["rucio"]["staging"]["rule_lifetime"] = 3 * 3600
        options = {"profile": "small", "dataset": [did]}
        spawner = make_spawner(tmp_path, site, options, sim_namespace, f"renew-{account}")
        spawner.rule_renew_margin = 2 * 3600  # used: 1.5 h, half the rules' lifetime
        if account == "alice":
            with pytest.raises(web.HTTPError) as stopped:
                await spawner.load_user_options()
            assert stopped.value.status_code == 409
            message = stopped.value.jupyterhub_message  # type: ignore[attr-defined]
            assert f"{did} is kept at {LOCAL_RSE} by a rule that ends within 1.5 h" in message
            assert "'alice' may not do this" in message
            assert not said(spawner, "Datasets ready")()
            assert not rule_ends_after(rucio_server, rule_id, hours=1)
        else:
            await spawner.load_user_options()
            assert said(spawner, "Datasets ready")()
            assert rule_ends_after(rucio_server, rule_id, hours=2)  # renewed first


async def test_the_hubs_rounds_follow_the_running_servers(
    rucio_server: RucioServer, sim_namespace: str, tmp_path: Path
) -> None:
    """The renewal loop starts with a spawn that has datasets and looks at the rules of the
    datasets of the servers running in the namespace (their pods' options), and at none
    once they stop. (When a rule is renewed: the next test, and tests/unit/test_renewal.py.)"""
    scope = rucio_server.new_scope("loop")
    files = make_files(scope, "l", 2, 64)
    rucio_server.upload_dataset(scope, "ds", files, REMOTE_RSE)
    did = f"{scope}:ds"
    await asyncio.to_thread(
        rucio_server.client("root").add_replication_rule,
        [{"scope": scope, "name": "ds"}], 1, LOCAL_RSE, lifetime=600, account="root",
    )  # fmt: skip
    await asyncio.to_thread(rucio_server.complete_transfer, LOCAL_RSE, files)
    site = rucio_site(rucio_server, tmp_path, "root")
    spawner = make_spawner(
        tmp_path, site, {"profile": "small", "dataset": [did]}, sim_namespace, "rounds"
    )
    spawner.rule_renew_interval = 0.2
    spawner.cmd = [sys.executable, "-c", "import time; time.sleep(600)"]
    await asyncio.wait_for(spawner.start(), 60)
    catalogue = spawner.context.catalogue
    assert catalogue is not None

    def looked() -> int:  # a round asks for the account's rules of each dataset in use
        return int(catalogue.calls["list_did_rules"])  # type: ignore[attr-defined]

    try:
        assert catalogue.calls["update_replication_rule"] == 1  # type: ignore[attr-defined]
        at_start = looked()  # (renewed at spawn: it ended within half the lifetime)
        await eventually(lambda: looked() >= at_start + 2, "two rounds over the server's rule")
        await spawner.stop()
        stopped = looked()
        await asyncio.sleep(1)  # five rounds: no running server, nothing to look at
        assert looked() <= stopped + 1  # (a round under way as it stopped)
    finally:
        await spawner.context.close()  # the loop ends with the hub


async def test_the_hub_renews_the_rules_of_running_servers(
    rucio_server: RucioServer,
    tmp_path: Path,
    remote_dataset: tuple[str, list[SeededFile]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The hub's rounds (RuleRenewal, its clock moved): a rule of a dataset in use is renewed
    as it comes within the margin of its end; one that cannot be is logged and the round
    goes on."""
    from esap_spawner.data.catalogue.factory import catalogue_from_site
    from esap_spawner.data.renewal import RuleRenewal
    from esap_spawner.site.model import parse_site

    did, files = remote_dataset
    site = rucio_site(rucio_server, tmp_path, "root")
    site["data"]["rucio"]["staging"]["rule_lifetime"] = 7 * 24 * 3600
    catalogue = catalogue_from_site(parse_site(site))
    assert catalogue is not None
    try:
        request = await catalogue.stage(did, destination_rse=LOCAL_RSE)
        await asyncio.to_thread(rucio_server.complete_transfer, LOCAL_RSE, files)
        now = [datetime.now(UTC)]
        renewal = RuleRenewal(
            catalogue=lambda: catalogue, datasets_in_use=lambda: [did, "nosuch:scope"],
            destination=LOCAL_RSE, lifetime=7 * 24 * 3600, margin=24 * 3600, interval=600,
            now=lambda: now[0],
        )  # fmt: skip
        first = await renewal.once()
        assert first[did] == "kept" and "nosuch:scope" in first
        assert catalogue.calls["update_replication_rule"] == 0  # type: ignore[attr-defined]
        now[0] += timedelta(days=6, hours=12)  # the rule now ends within the day
        assert (await renewal.once())[did] == "renewed"
        assert catalogue.calls["update_replication_rule"] == 1  # type: ignore[attr-defined]
        assert rule_ends_after(rucio_server, str(request.rule_id), hours=6 * 24)
        assert "could not renew the rule of nosuch:scope" in caplog.text
    finally:
        await catalogue.close()


async def test_rucio_stopped_mid_staging_fails_cleanly(
    rucio_server: RucioServer,
    sim_namespace: str,
    tmp_path: Path,
    remote_dataset: tuple[str, list[SeededFile]],
) -> None:
    did, files = remote_dataset
    site = rucio_site(rucio_server, tmp_path, "alice")
    spawner = make_spawner(
        tmp_path, site, {"profile": "small", "dataset": did}, sim_namespace, "st"
    )
    loading, _ = await staging_under_way(rucio_server, spawner, did, files, 1)
    await asyncio.to_thread(rucio_server.stop)
    try:
        with pytest.raises(web.HTTPError) as failed:
            await asyncio.wait_for(loading, 60)
    finally:
        await asyncio.to_thread(rucio_server.start)
    assert failed.value.status_code == 503
    message = failed.value.jupyterhub_message  # type: ignore[attr-defined]
    assert message.startswith("The data catalogue is unavailable")
    assert "cannot reach Rucio" in message
    row = staging_row(tmp_path, did)
    assert row.outcome == "failure" and row.files_done == 1
    assert "cannot reach Rucio" in (row.reason or "")


async def test_restart_mid_staging_reuses_the_rule(
    rucio_server: RucioServer,
    sim_namespace: str,
    tmp_path: Path,
    remote_dataset: tuple[str, list[SeededFile]],
) -> None:
    did, files = remote_dataset
    scope, name = did.split(":")
    site = rucio_site(rucio_server, tmp_path, "alice")
    options = {"profile": "small", "dataset": did}
    first = make_spawner(tmp_path, site, options, sim_namespace, "re")
    loading, rule = await staging_under_way(rucio_server, first, did, files, 2)
    saved = first.get_state()  # what the hub keeps of the spawner
    loading.cancel()  # the hub goes away
    with pytest.raises(asyncio.CancelledError):
        await loading

    second = make_spawner(tmp_path, site, options, sim_namespace, "re")
    second.load_state(json.loads(json.dumps(saved)))
    resumed = asyncio.ensure_future(second.load_user_options())
    await eventually(said(second, "2/4 files"), "resumed")
    assert messages_of(second)[0] == f"Resuming staging of {did} (rule {rule['id']})"
    await asyncio.to_thread(rucio_server.complete_transfer, LOCAL_RSE, files[2:])
    await asyncio.wait_for(resumed, 20)
    assert [r["id"] for r in alice_rules(rucio_server, scope, name)] == [rule["id"]]
    assert second._esap_plan is not None
    assert len(second._esap_plan["datasets"][did]["files"]) == 4


async def test_static_catalogue_end_to_end(sim: Any, sim_namespace: str, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    (archive / "lofar" / "L123" / "sub").mkdir(parents=True)
    (archive / "lofar" / "L123" / "a.fits").write_bytes(b"a" * 10)
    (archive / "lofar" / "L123" / "sub" / "b.fits").write_bytes(b"b" * 20)
    mount_root = tmp_path / "datasets"
    site = {
        **HUB_SITE,
        "data": {
            "catalogue": "static",
            "mount_root": str(mount_root),
            "static": {
                "volume": {"nfs": {"server": "nfs.example.org", "path": "/archive"}},
                "mount_path": str(archive),
            },
        },
    }
    options = {"profile": "small", "dataset": "lofar:L123"}
    spawner = make_spawner(tmp_path, site, options, sim_namespace, "sta")
    await spawner.load_user_options()
    assert messages_of(spawner) == [f"Datasets ready: 1 datasets, 2 files, 30 B under {mount_root}"]
    pod = ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest())
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["esap-rse-static"]["nfs"] == {"server": "nfs.example.org", "path": "/archive"}
    notebook_mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert str(archive) not in notebook_mounts  # only the dataset asked for, by subPath
    mount = notebook_mounts[f"{archive}/lofar/L123"]
    assert (mount["subPath"], mount["readOnly"]) == ("lofar/L123", True)
    cm = sim.call(sim.store.find, "configmaps", sim_namespace, f"{spawner.pod_name}-datalinks")
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(cm["data"]["plan.json"])
    ran = subprocess.run(
        [sys.executable, "-I", str(SCRIPT), "links", f"--plan={plan_file}",
         f"--root={mount_root}", "--strict"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert (mount_root / "lofar" / "L123" / "sub" / "b.fits").read_bytes() == b"b" * 20
    assert (mount_root / "lofar" / "L123" / "a.fits").is_symlink()
    manifest = json.loads((mount_root / "manifest.json").read_text())
    assert sorted(f["name"] for f in manifest["datasets"]["lofar:L123"]["files"]) == [
        "a.fits",
        "sub/b.fits",
    ]


async def test_stuck_rule_fails_the_spawn_with_the_reason(
    rucio_server: RucioServer,
    sim_namespace: str,
    tmp_path: Path,
    remote_dataset: tuple[str, list[SeededFile]],
) -> None:
    did, files = remote_dataset
    site = rucio_site(rucio_server, tmp_path, "alice")
    spawner = make_spawner(
        tmp_path, site, {"profile": "small", "dataset": did}, sim_namespace, "sk"
    )
    loading, rule = await staging_under_way(rucio_server, spawner, did, files, 1)
    # what a transfer service does when copies keep failing
    await asyncio.to_thread(
        rucio_server.root.update_replication_rule, rule["id"], {"state": "STUCK"}
    )
    with pytest.raises(web.HTTPError) as failed:
        await asyncio.wait_for(loading, 20)
    assert failed.value.status_code == 500
    message = failed.value.jupyterhub_message  # type: ignore[attr-defined]
    # every transfer not done is reported stuck (Rucio's own counter may still read 0)
    assert re.fullmatch(
        rf"Staging {did} to {LOCAL_RSE}: 1/4 files, 0\.3/1\.2 MB \(stuck\): "
        r"3 of 4 file transfers are stuck \(rule [0-9a-f]{32}\)",
        message,
    ), message
    row = staging_row(tmp_path, did)
    assert (row.outcome, row.state) == ("failure", "STUCK")


async def test_staging_timeout_fails_the_spawn(
    rucio_server: RucioServer,
    sim_namespace: str,
    tmp_path: Path,
    remote_dataset: tuple[str, list[SeededFile]],
) -> None:
    did, _ = remote_dataset
    site = rucio_site(rucio_server, tmp_path, "alice")
    site["data"]["rucio"]["staging"]["timeout"] = 1
    spawner = make_spawner(
        tmp_path, site, {"profile": "small", "dataset": did}, sim_namespace, "to"
    )
    began = time.monotonic()
    with pytest.raises(web.HTTPError) as failed:
        await spawner.load_user_options()
    assert 1 <= time.monotonic() - began < 10
    assert failed.value.status_code == 504
    assert failed.value.jupyterhub_message == (  # type: ignore[attr-defined]
        f"Staging did not finish in time: {did} has 0/4 files"
    )
    assert staging_row(tmp_path, did).outcome == "timeout"


class TokenUser(MockUser):
    """A user whose auth_state carries a Rucio token (as an authenticator's token exchange
    to audience ``rucio`` would leave it)."""

    def __init__(self, name: str, auth_state: dict[str, Any]) -> None:
        super().__init__(name)
        self.auth_state = auth_state

    async def get_auth_state(self) -> dict[str, Any]:
        return self.auth_state


async def test_the_users_own_rucio_token_is_used(
    rucio_server: RucioServer,
    sim_namespace: str,
    tmp_path: Path,
    remote_dataset: tuple[str, list[SeededFile]],
) -> None:
    """The site's account (alice) has quota; the user's own account (bob) has none: the
    refusal names bob, so staging acted with the user's token."""
    did, _ = remote_dataset
    site = rucio_site(rucio_server, tmp_path, "alice")
    spawner = make_spawner(
        tmp_path, site, {"profile": "small", "dataset": did}, sim_namespace, "tk"
    )
    token = await asyncio.to_thread(rucio_server.token, "bob")
    spawner.user = TokenUser("tk", {"rucio_token": token, "rucio_account": "bob"})
    with pytest.raises(web.HTTPError) as refused:
        await spawner.load_user_options()
    assert refused.value.status_code == 403
    assert "Rucio account 'bob' has not enough quota" in str(
        refused.value.jupyterhub_message  # type: ignore[attr-defined]
    )


async def test_workflow_checkout_and_default_url(
    rucio_server: RucioServer, sim: Any, sim_namespace: str, tmp_path: Path
) -> None:
    site = rucio_site(rucio_server, tmp_path, "alice")
    options = {
        "profile": "small",
        "workflow": "https://git.example.org/esap/crab-analysis.git",
        "ref": "v2",
        "filepath": "notebooks/start.ipynb",
    }
    spawner = make_spawner(tmp_path, site, options, sim_namespace, "wf")
    spawner.checkout_env = {"GIT_SSL_CAINFO": "/etc/ssl/site-ca.pem"}
    for bad, message in (
        ({"1X": "a", "OK": "b"}, "'1X' is not an environment variable name"),
        ({"HOME": "/root"}, "HOME is set by the spawner"),
    ):
        with pytest.raises(TraitError, match=message):
            spawner.checkout_env = bad
    assert spawner.checkout_env == {"GIT_SSL_CAINFO": "/etc/ssl/site-ca.pem"}  # kept
    await spawner.load_user_options()
    pod = ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest())
    (checkout,) = pod["spec"]["initContainers"]
    assert {"name": "GIT_SSL_CAINFO", "value": "/etc/ssl/site-ca.pem"} in checkout["env"]
    assert "GIT_SSL_CAINFO" not in {e["name"] for e in pod["spec"]["containers"][0]["env"]}
    assert checkout["command"] == [
        "python3", "/opt/esap/datalinks.py", "checkout",
        "--url=https://git.example.org/esap/crab-analysis.git",
        "--dest=/home/jovyan/crab-analysis", "--ref=v2",
    ]  # fmt: skip
    assert {"name": "GIT_TERMINAL_PROMPT", "value": "0"} in checkout["env"]
    assert not [e for e in checkout["env"] if e["name"].startswith("JUPYTERHUB_")]
    notebook = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in notebook["env"]}
    assert env["JUPYTERHUB_DEFAULT_URL"] == "/lab/tree/crab-analysis/notebooks/start.ipynb"
    assert "ESAP_DATASETS" not in env  # no datasets: no links container, no storage
    assert {"name": "esap-workflow", "mountPath": "/home/jovyan/crab-analysis"} in notebook[
        "volumeMounts"
    ]
    assert not any(v["name"].startswith("esap-rse") for v in pod["spec"]["volumes"])
    cm = sim.call(sim.store.find, "configmaps", sim_namespace, f"{spawner.pod_name}-datalinks")
    assert cm["data"]["datalinks.py"] == SCRIPT.read_text()
