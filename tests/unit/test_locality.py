"""Locality arithmetic, PFN -> pod path mapping, DID lists and progress wording (no I/O)."""

from __future__ import annotations

import pytest

from esap_spawner.data.catalogue import (
    DidFiles,
    FileReplica,
    InvalidDid,
    PathOutsideMount,
    Replica,
    StagingFailed,
    StagingProgress,
    StagingRequest,
    StagingState,
    check_dids,
    did_locality,
    pod_path,
)
from esap_spawner.data.catalogue.base import format_fraction
from esap_spawner.site.model import LocalRSE

LOCAL = {"HUB_LOCAL_DISK", "HUB_SCRATCH"}


def file(name: str, size: int, *replicas: tuple[str, str]) -> FileReplica:
    return FileReplica(
        scope="escape",
        name=name,
        bytes=size,
        adler32="0badc0de",
        replicas=tuple(
            Replica(rse=rse, state=state, pfn=f"file:///x/{name}") for rse, state in replicas
        ),
    )


def dataset(*files: FileReplica) -> DidFiles:
    return DidFiles(did="escape:ds", did_type="DATASET", files=files)


def test_all_files_local() -> None:
    result = did_locality(
        "escape:ds",
        dataset(
            file("a", 100, ("HUB_LOCAL_DISK", "AVAILABLE"), ("REMOTE", "AVAILABLE")),
            file("b", 300, ("HUB_SCRATCH", "AVAILABLE")),
        ),
        LOCAL,
        throughput=10.0,
    )
    assert result.status == "local"
    assert (result.files_total, result.files_local) == (2, 2)
    assert (result.bytes_total, result.bytes_local) == (400, 400)
    assert result.local_rses == ("HUB_LOCAL_DISK", "HUB_SCRATCH")
    assert result.staging_required is False
    assert result.estimated_staging_seconds == 0
    assert "all 2 files" in result.message


def test_partial_counts_only_available_local_replicas() -> None:
    result = did_locality(
        "escape:ds",
        dataset(
            file("a", 1000, ("HUB_LOCAL_DISK", "AVAILABLE")),
            file("b", 3000, ("HUB_LOCAL_DISK", "COPYING"), ("REMOTE", "AVAILABLE")),
            file("c", 6000, ("REMOTE", "AVAILABLE")),
        ),
        LOCAL,
        throughput=1000.0,
    )
    assert result.status == "partial"
    assert (result.files_local, result.bytes_local) == (1, 1000)
    assert result.local_rses == ("HUB_LOCAL_DISK",)
    assert result.staging_required is True
    assert result.estimated_staging_seconds == 9  # 9000 missing bytes at 1000 B/s
    assert result.message == "2 of 3 files (9.0 kB) need staging"


def test_remote_without_throughput_has_no_estimate() -> None:
    result = did_locality("escape:ds", dataset(file("a", 10, ("REMOTE", "AVAILABLE"))), LOCAL)
    assert result.status == "remote"
    assert result.files_local == 0
    assert result.local_rses == ()
    assert result.staging_required is True
    assert result.estimated_staging_seconds is None


def test_estimate_rounds_up() -> None:
    result = did_locality(
        "escape:ds", dataset(file("a", 1001, ("REMOTE", "AVAILABLE"))), LOCAL, throughput=1000
    )
    assert result.estimated_staging_seconds == 2


def test_missing_did() -> None:
    result = did_locality("escape:nope", None, LOCAL)
    assert result.status == "not_found"
    assert result.staging_required is False
    assert result.files_total == 0
    assert "does not exist" in result.message


def test_empty_dataset_is_local_with_nothing_to_stage() -> None:
    result = did_locality("escape:ds", dataset(), LOCAL, throughput=5.0)
    assert result.status == "local"
    assert (result.files_total, result.bytes_total) == (0, 0)
    assert result.staging_required is False
    assert result.message == "empty dataset: nothing to stage"


def test_lost_files_are_named_in_the_message() -> None:
    result = did_locality(
        "escape:ds",
        dataset(
            file("a", 10, ("HUB_LOCAL_DISK", "AVAILABLE")),
            file("b", 10, ("REMOTE", "UNAVAILABLE")),
        ),
        LOCAL,
    )
    assert result.status == "partial"
    assert "1 files have no available replica anywhere" in result.message


def test_locality_json_has_the_api_fields() -> None:
    data = did_locality(
        "escape:ds", dataset(file("a", 5, ("REMOTE", "AVAILABLE"))), LOCAL
    ).to_json()
    assert set(data) == {
        "did",
        "status",
        "files_total",
        "files_local",
        "bytes_total",
        "bytes_local",
        "local_rses",
        "staging_required",
        "estimated_staging_seconds",
        "message",
    }
    assert data["local_rses"] == []


RSE = LocalRSE(name="HUB_LOCAL_DISK", pfn_prefix="/data/rucio/", mount_path="/rucio/hub-local")


@pytest.mark.parametrize(
    ("pfn", "expected"),
    [
        ("file:///data/rucio/escape/3f/55/f.0002", "/rucio/hub-local/escape/3f/55/f.0002"),
        ("root://eos.example.org:1094//data/rucio/escape/a", None),  # '//data/...' path
        ("/data/rucio/escape/a", "/rucio/hub-local/escape/a"),
    ],
)
def test_pod_path(pfn: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(PathOutsideMount):
            pod_path(pfn, RSE)
    else:
        assert pod_path(pfn, RSE) == expected


def test_pod_path_prefix_without_trailing_slash() -> None:
    rse = LocalRSE(name="X", pfn_prefix="/data/rucio", mount_path="/mnt/x/")
    assert pod_path("file:///data/rucio/s/f", rse) == "/mnt/x/s/f"
    with pytest.raises(PathOutsideMount, match="not under"):
        pod_path("file:///data/rucio-other/s/f", rse)  # shares the prefix's letters only


@pytest.mark.parametrize(
    "pfn",
    [
        "file:///data/rucio/../etc/passwd",
        "file:///data/rucio/escape/../../etc/passwd",
        "file:///data/rucio/./escape/f",
        "file:///data/rucio/escape//f",
        "file:///data/rucio/",
        "file:///data/rucio/escape/..",
        "file:///etc/passwd",
        "file:///data/rucio/esc\x00ape/f",
        "",
    ],
)
def test_pod_path_refuses_anything_that_escapes(pfn: str) -> None:
    with pytest.raises(PathOutsideMount):
        pod_path(pfn, RSE)


def test_check_dids_lists_every_problem_and_dedups() -> None:
    assert check_dids(["a:x", "b:y", "a:x"]) == ["a:x", "b:y"]
    with pytest.raises(InvalidDid) as info:
        check_dids(["bad", "a:x", "also:bad/"])
    assert "'bad'" in str(info.value) and "'also:bad/'" in str(info.value)
    with pytest.raises(InvalidDid, match="at most 2"):
        check_dids(["a:x", "a:y", "a:z"], max_dids=2)
    with pytest.raises(InvalidDid, match="not a single string"):
        check_dids("a:x")


def test_progress_message_in_words() -> None:
    progress = StagingProgress(
        did="escape:crab-2020",
        destination_rse="HUB_LOCAL_DISK",
        rule_id="r1",
        state=StagingState.REPLICATING,
        files_ok=12,
        files_total=40,
        bytes_ok=1_200_000_000,
        bytes_total=4_000_000_000,
    )
    assert (
        progress.message() == "Staging escape:crab-2020 to HUB_LOCAL_DISK: 12/40 files, 1.2/4.0 GB"
    )
    stuck = StagingProgress(
        did="s:d",
        destination_rse="R",
        rule_id="r",
        state=StagingState.STUCK,
        files_total=2,
        bytes_total=10,
        error="1 of 2 file transfers are stuck",
    )
    assert stuck.failed and not stuck.done
    with pytest.raises(StagingFailed, match="file transfers are stuck"):
        stuck.raise_for_failure()
    progress.raise_for_failure()  # replicating is not a failure
    assert (
        stuck.message()
        == "Staging s:d to R: 0/2 files, 0/10 B (stuck): 1 of 2 file transfers are stuck"
    )


def test_format_fraction_units() -> None:
    assert format_fraction(5, 999) == "5/999 B"
    assert format_fraction(500, 1500) == "0.5/1.5 kB"
    assert format_fraction(0, 2_500_000) == "0.0/2.5 MB"


def test_staging_request_round_trips_through_json() -> None:
    request = StagingRequest(
        did="s:d", destination_rse="R", rule_id="abc", account="alice", lifetime=60, reused=True
    )
    assert StagingRequest.from_json(request.to_json()) == request
    assert StagingRequest.from_json({**request.to_json(), "future_field": 1}) == request
