"""Refusals carry a reason from the fixed set; failures do not; the hub's series exist early."""

from __future__ import annotations

import jupyterhub
import pytest
from packaging.version import Version
from prometheus_client import CollectorRegistry, Histogram
from tornado import web

from esap_spawner.capacity.model import Refusal
from esap_spawner.data.catalogue.base import StagingStatus
from esap_spawner.data.staging import StagingError
from esap_spawner.spawn import refusals
from esap_spawner.spawn.option_values import OptionsError
from esap_spawner.spawn.refusals import failed, refuse, show_refusal_reasons
from esap_spawner.spawn.status import RefusalReason

JUPYTERHUB_6 = Version(jupyterhub.__version__) >= Version("6")


@pytest.mark.skipif(not JUPYTERHUB_6, reason="SpawnException is new in JupyterHub 6")
def test_a_refusal_is_a_spawn_exception_with_its_reason_status_and_words() -> None:
    from jupyterhub.spawner import SpawnException

    error = refuse(RefusalReason.quota, 409, "profile 'gpu' is full")
    assert isinstance(error, SpawnException)
    assert (error.reason, error.status_code) == ("quota", 409)
    assert error.jupyterhub_message == "profile 'gpu' is full"  # type: ignore[attr-defined]
    assert error.message == "profile 'gpu' is full"


def test_without_spawn_exception_a_refusal_is_the_http_error_it_always_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(refusals, "_SpawnException", None)  # as on JupyterHub 5
    error = refuse(RefusalReason.no_room, 409, "no node has room")
    assert type(error) is web.HTTPError
    assert error.status_code == 409
    assert error.jupyterhub_message == "no node has room"  # type: ignore[attr-defined]


def test_a_failure_is_a_plain_http_error_in_words() -> None:
    error = failed(503, "the cluster view is not available")
    assert type(error) is web.HTTPError
    assert error.status_code == 503
    assert error.jupyterhub_message == "the cluster view is not available"  # type: ignore[attr-defined]


def test_every_reason_is_created_at_zero_on_the_hub_histogram() -> None:
    registry = CollectorRegistry()
    hub = Histogram("spawn", "like JupyterHub 6's", ["status", "reason"], registry=registry)
    assert show_refusal_reasons(hub) is True
    counts = {
        (s.labels["status"], s.labels["reason"]): s.value
        for s in registry.collect().__next__().samples
        if s.name == "spawn_count"
    }
    assert counts == {("failure", r.value): 0.0 for r in RefusalReason}


def test_a_histogram_without_reasons_is_left_alone() -> None:
    registry = CollectorRegistry()
    hub = Histogram("spawn", "like JupyterHub 5's", ["status"], registry=registry)
    assert show_refusal_reasons(hub) is False
    assert [s for s in registry.collect().__next__().samples] == []


def test_reason_values_are_metric_friendly_and_distinct() -> None:
    values = [r.value for r in RefusalReason]
    assert len(set(values)) == len(values)
    assert all(v == v.lower() and " " not in v for v in values)


def reason_of(error: web.HTTPError) -> str | None:
    """The refusal reason the hub would label the spawn with (None: not a refusal)."""
    return getattr(error, "reason", None) if type(error) is not web.HTTPError else None


@pytest.mark.skipif(not JUPYTERHUB_6, reason="reasons are carried by JupyterHub 6's exception")
def test_each_no_maps_to_its_reason_or_to_a_failure() -> None:
    cases = [
        (OptionsError("profile", "you may not use gpu", forbidden=True), "not-allowed", 403),
        (OptionsError("dataset", "dataset is not a DID"), "invalid-options", 400),
        (Refusal("full", "profile 'x' is full"), "quota", 409),
        (Refusal("no_room", "no node has room"), "no-room", 409),
        (Refusal("unsynced", "the cluster view is not available"), None, 503),
        (
            StagingError(404, "escape:x does not exist", StagingStatus.failure),
            "staging-refused",
            404,
        ),
        (StagingError(403, "no quota", StagingStatus.failure), "staging-refused", 403),
        (StagingError(503, "catalogue unavailable", StagingStatus.failure), None, 503),
        (StagingError(504, "staging timed out", StagingStatus.timeout), None, 504),
    ]
    convert = {
        OptionsError: refusals.from_options,
        Refusal: refusals.from_capacity,
        StagingError: refusals.from_staging,
    }
    for source, reason, status in cases:
        error = convert[type(source)](source)
        assert (reason_of(error), error.status_code) == (reason, status), source
        words = source.message if isinstance(source, Refusal) else str(source)
        assert error.jupyterhub_message == words  # type: ignore[attr-defined]
