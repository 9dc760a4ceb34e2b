"""StaticCatalogue over a real folder tree: listing and scan, sizes, paths, refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from esap_spawner.data.catalogue import DidNotFound, StagingState, pod_path
from esap_spawner.data.catalogue.static import STATIC_RSE, StaticCatalogue

pytestmark = pytest.mark.integration

MOUNT = "/archive"


class FakeClock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """<root>/lofar/L123/{a.fits, sub/b.fits}, a listed folder, a single file, an empty set."""
    root = tmp_path / "volume"
    (root / "lofar" / "L123" / "sub").mkdir(parents=True)
    (root / "lofar" / "L123" / "a.fits").write_bytes(b"x" * 10)
    (root / "lofar" / "L123" / "sub" / "b.fits").write_bytes(b"y" * 25)
    (root / "surveys" / "2020-crab").mkdir(parents=True)
    (root / "surveys" / "2020-crab" / "img.fits").write_bytes(b"z" * 7)
    (root / "single.h5").write_bytes(b"s" * 3)
    (root / "escape" / "empty").mkdir(parents=True)
    secret = tmp_path / "outside.txt"
    secret.write_text("not for pods")
    os.symlink(secret, root / "lofar" / "L123" / "escape-link")
    os.symlink(tmp_path, root / "lofar" / "up")
    return root


def catalogue(root: Path, clock: FakeClock | None = None, **kwargs: object) -> StaticCatalogue:
    return StaticCatalogue(
        root=root,
        mount_path=MOUNT,
        datasets=[
            ("escape:crab-2020", "surveys/2020-crab"),
            ("escape:one", "single.h5"),
            ("escape:gone", "not/there"),
        ],
        clock=clock or FakeClock(),
        **kwargs,  # type: ignore[arg-type]
    )


async def test_locality_of_listed_scanned_missing_and_unreadable(tree: Path) -> None:
    cat = catalogue(tree)
    dids = [
        "lofar:L123",
        "escape:crab-2020",
        "escape:one",
        "escape:empty",
        "escape:nope",
        "escape:gone",
        "lofar:up",
    ]
    results = {r.did: r for r in await cat.locality(dids)}
    assert list(results) == dids

    scanned = results["lofar:L123"]
    assert (scanned.status, scanned.files_total, scanned.bytes_total) == ("local", 2, 35)
    assert scanned.local_rses == (STATIC_RSE,)
    assert scanned.staging_required is False

    listed = results["escape:crab-2020"]
    assert (listed.status, listed.files_total, listed.bytes_total) == ("local", 1, 7)
    assert (results["escape:one"].files_total, results["escape:one"].bytes_total) == (1, 3)
    assert (results["escape:empty"].status, results["escape:empty"].files_total) == ("local", 0)
    assert results["escape:nope"].status == "not_found"
    gone = results["escape:gone"]
    assert gone.status == "unknown" and "listed in the site file" in gone.message
    assert results["lofar:up"].status == "not_found"  # a symlink out of the volume


async def test_resolve_gives_files_paths_and_pfns_that_map_into_the_pod(tree: Path) -> None:
    cat = catalogue(tree)
    resolved = (await cat.resolve(["lofar:L123"]))["lofar:L123"]
    assert resolved is not None
    files = {f.name: f for f in resolved.files}
    assert sorted(files) == ["a.fits", "sub/b.fits"]  # the escaping symlink is left out
    assert files["sub/b.fits"].bytes == 25
    assert files["sub/b.fits"].path == f"{MOUNT}/lofar/L123/sub/b.fits"
    (replica,) = files["sub/b.fits"].replicas
    assert replica.rse == STATIC_RSE and replica.available and replica.pfn
    assert pod_path(replica.pfn, cat.local_rses[0]) == f"{MOUNT}/lofar/L123/sub/b.fits"

    one = (await cat.resolve(["escape:one"]))["escape:one"]
    assert one is not None and one.did_type == "FILE"
    assert [f.path for f in one.files] == [f"{MOUNT}/single.h5"]


async def test_scan_off_only_serves_the_listing(tree: Path) -> None:
    cat = catalogue(tree, scan=False)
    scanned, listed = await cat.locality(["lofar:L123", "escape:crab-2020"])
    assert (scanned.status, listed.status) == ("not_found", "local")


async def test_staging_is_never_required(tree: Path) -> None:
    cat = catalogue(tree)
    request = await cat.stage("lofar:L123")
    assert request.rule_id is None and (request.files_total, request.bytes_total) == (2, 35)
    progress = await cat.staging_progress(request)
    assert progress.state is StagingState.OK and progress.done
    assert (progress.files_ok, progress.bytes_ok) == (2, 35)
    await cat.cancel(request)
    with pytest.raises(DidNotFound, match="escape:nope does not exist"):
        await cat.stage("escape:nope")


async def test_cached_until_the_ttl(tree: Path) -> None:
    clock = FakeClock()
    cat = catalogue(tree, clock)
    (before,) = await cat.locality(["lofar:L123"])
    (tree / "lofar" / "L123" / "new.fits").write_bytes(b"n" * 5)
    assert (await cat.locality(["lofar:L123"]))[0] == before
    clock.now += cat.cache_ttl + 1
    (after,) = await cat.locality(["lofar:L123"])
    assert (after.files_total, after.bytes_total) == (3, 40)


def test_listing_paths_must_stay_inside_the_volume(tmp_path: Path) -> None:
    for bad in ("../etc", "a/../../b", "/", "."):
        with pytest.raises(ValueError, match="relative path inside the volume"):
            StaticCatalogue(root=tmp_path, mount_path=MOUNT, datasets=[("s:d", bad)])


async def test_from_site(tree: Path) -> None:
    from esap_spawner.site.model import parse_site

    site = parse_site(
        f"""
facility: {{name: "Test Hub", url: "https://hub.example.org/"}}
profiles:
  - {{slug: default, display_name: "Default", cpu: {{limit: 1}}, memory: {{limit: 1Gi}}}}
data:
  catalogue: static
  static:
    volume: {{hostPath: {{path: {tree}}}}}
    mount_path: {tree}
    datasets:
      - {{did: "escape:crab-2020", path: surveys/2020-crab}}
"""
    )
    cat = StaticCatalogue.from_site(site)
    listed, scanned = await cat.locality(["escape:crab-2020", "lofar:L123"])
    assert (listed.status, listed.bytes_total, scanned.files_total) == ("local", 7, 2)
    # the volume the pods mount travels with the catalogue's one local RSE
    (rse,) = cat.local_rses
    assert (rse.mount_path, rse.volume) == (str(tree), {"hostPath": {"path": str(tree)}})
