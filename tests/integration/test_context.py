"""The hub's context: one per hub, nothing shared between hubs, the site re-read safely.

Reads site files and opens SQLite databases (I/O), so it lives in the integration tier;
no hub, no cluster.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from esap_spawner.data.catalogue.static import StaticCatalogue
from esap_spawner.observe.metrics import HubMetrics
from esap_spawner.observe.schema import SchemaState, schema_status
from esap_spawner.site.model import SiteError
from esap_spawner.spawn.context import SETTINGS_KEY, HubContext
from tests.harness.hub import HUB_SITE

pytestmark = pytest.mark.integration


def write(path: Path, site: dict[str, Any], *, mtime: float) -> None:
    path.write_text(yaml.safe_dump(site))
    os.utime(path, (mtime, mtime))


def static_site(root: Path) -> dict[str, Any]:
    return {
        **HUB_SITE,
        "data": {
            "catalogue": "static",
            "static": {"volume": {"hostPath": {"path": str(root)}}, "mount_path": str(root)},
        },
    }


class Spawner:
    """The part of ESAPSpawner that HubContext.of reads."""

    def __init__(self, user: Any, site_file: str, db_url: str = "") -> None:
        self.user, self.site_file, self.db_url = user, site_file, db_url
        self.db_upgrade_on_start = False


class User:
    def __init__(self, settings: dict[str, Any] | None) -> None:
        if settings is not None:
            self.settings = settings


def test_spawners_of_one_hub_share_its_context_and_hubs_share_nothing(tmp_path: Path) -> None:
    site_file = str(tmp_path / "site.yaml")
    hub_a: dict[str, Any] = {}
    hub_b: dict[str, Any] = {}
    ada = HubContext.of(Spawner(User(hub_a), site_file))  # type: ignore[arg-type]
    bob = HubContext.of(Spawner(User(hub_a), site_file))  # type: ignore[arg-type]
    assert ada is bob and hub_a[SETTINGS_KEY] == {(site_file, ""): ada}
    other_hub = HubContext.of(Spawner(User(hub_b), site_file))  # type: ignore[arg-type]
    assert other_hub is not ada
    other_db = HubContext.of(Spawner(User(hub_a), site_file, "sqlite:///x"))  # type: ignore[arg-type]
    assert other_db is not ada and other_db.db_url == "sqlite:///x"
    # a user without hub settings (a tool, a test): a context of its own, kept nowhere
    alone = HubContext.of(Spawner(User(None), site_file))  # type: ignore[arg-type]
    assert alone is not HubContext.of(Spawner(User(None), site_file))  # type: ignore[arg-type]


def test_site_is_read_again_when_it_changes_and_a_bad_change_keeps_the_last_good(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "site.yaml"
    write(path, HUB_SITE, mtime=1_000_000)
    registry = CollectorRegistry()
    context = HubContext(site_file=str(path), metrics=HubMetrics(registry))
    first = context.site
    assert context.site is first  # unchanged file: not read again
    assert registry.get_sample_value(
        "esap_spawn_duration_seconds_count", {"profile": "medium", "status": "success"}
    ) == 0  # fmt: skip

    changed = {**HUB_SITE, "profiles": [{**HUB_SITE["profiles"][0], "display_name": "Tiny"}]}
    write(path, changed, mtime=1_000_010)
    assert context.site.profile("small").display_name == "Tiny"

    path.write_text("facility: {name: broken}\n")  # no url, no profiles
    os.utime(path, (1_000_020, 1_000_020))
    kept = context.site
    assert kept.profile("small").display_name == "Tiny"
    assert "the changed site file is not used" in caplog.text
    assert "profiles" in caplog.text  # the problems are listed

    fresh = HubContext(site_file=str(path))
    with pytest.raises(SiteError):  # no good site to fall back on
        _ = fresh.site


async def test_catalogue_is_built_once_per_site_version(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    write(path, static_site(tmp_path), mtime=1_000_000)
    context = HubContext(site_file=str(path))
    catalogue = context.catalogue
    assert isinstance(catalogue, StaticCatalogue)
    assert context.catalogue is catalogue
    (rse,) = catalogue.local_rses
    assert rse.volume == {"hostPath": {"path": str(tmp_path)}}
    write(path, HUB_SITE, mtime=1_000_010)  # catalogue: none
    assert context.catalogue is None
    await context.close()


async def test_database_is_opened_once_with_its_tables(tmp_path: Path) -> None:
    assert await HubContext(site_file="unused").database() is None  # no db_url: no history
    url = f"sqlite:///{tmp_path / 'esap.sqlite'}"
    context = HubContext(site_file="unused", db_url=url)
    db = await context.database()
    assert db is not None and schema_status(url).state is SchemaState.current
    assert await context.database() is db
    await context.close()


async def test_an_unreachable_database_is_tried_again(tmp_path: Path) -> None:
    folder = tmp_path / "not-yet"
    url = f"sqlite:///{folder / 'esap.sqlite'}"
    context = HubContext(site_file="unused", db_url=url)
    assert await context.database() is None  # the folder does not exist: logged, no history
    folder.mkdir()
    assert await context.database() is not None
    assert schema_status(url).state is SchemaState.current
    await context.close()
