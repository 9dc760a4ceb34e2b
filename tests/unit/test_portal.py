"""What a portal reads: the spawn options' schema, ESAP's fixture; and the confirmation's words."""

from __future__ import annotations

from typing import Any

import pytest

from esap_spawner.data.catalogue.base import Locality
from esap_spawner.service.fixture_cli import facility_url, read_tokens
from esap_spawner.service.portal import LIMITS, FixtureError, fixture_entry
from esap_spawner.site.profiles import Profile
from esap_spawner.spawn.confirm import WARNING, ConfirmFirst, locality_words, summary
from esap_spawner.spawn.options import UserOptions

FACILITY = {
    "name": "Test Hub",
    "description": "integration tests",
    "url": "https://hub.example.org/services/esap/",
    "facilitytype": "jupyterhub",
    "keywords": ["x"],
}


def test_fixture_entry_is_what_esap_loads() -> None:
    entry, warnings = fixture_entry(FACILITY, 7)
    assert entry == {
        "model": "ida.facility",
        "pk": 7,
        "fields": {
            "name": "Test Hub",
            "description": "integration tests",
            "url": "https://hub.example.org/services/esap/",
            "facilitytype": "jupyterhub",
        },
    }
    assert warnings == []


def test_long_name_and_description_are_cut_with_a_warning() -> None:
    entry, warnings = fixture_entry({**FACILITY, "name": "N" * 45, "description": "d" * 300}, 1)
    fields = entry["fields"]
    assert len(fields["name"]) == LIMITS["name"] and fields["name"].endswith("…")
    assert len(fields["description"]) == LIMITS["description"]
    assert [w.split(" ", 1)[0] for w in warnings] == ["name", "description"]


@pytest.mark.parametrize(
    ("facility", "pk", "fragment"),
    [
        ({**FACILITY, "url": "https://h.org/" + "x" * 240}, 1, "at most 240"),
        ({**FACILITY, "url": None}, 1, "no http(s) url"),
        ({**FACILITY, "url": "ftp://h.org/"}, 1, "no http(s) url"),
        ({**FACILITY, "name": ""}, 1, "no name"),
        (FACILITY, 0, "pk must be"),
        (FACILITY, True, "pk must be"),
    ],
)
def test_facilities_esap_could_not_load_are_refused(
    facility: dict[str, Any], pk: Any, fragment: str
) -> None:
    with pytest.raises(FixtureError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        fixture_entry(facility, pk)


@pytest.mark.parametrize(
    ("url", "route"),
    [
        ("https://h.org", "https://h.org/services/esap/api/v1/facility"),
        ("https://h.org/jhub/", "https://h.org/jhub/services/esap/api/v1/facility"),
        ("https://h.org/services/esap", "https://h.org/services/esap/api/v1/facility"),
        ("https://h.org/services/esap/api/v1/facility/", "https://h.org/services/esap/api/v1/facility"),
    ],
)  # fmt: skip
def test_command_line_urls(url: str, route: str) -> None:
    assert facility_url(url) == route


def test_token_file() -> None:
    text = "# ESAP's tokens\nsecret-all\nhttps://b.org/ secret-b\n\n"
    assert read_tokens(text) == ("secret-all", {"https://b.org": "secret-b"})


# -- the confirmation's words ----------------------------------------------------------------


def test_summary_in_plain_words() -> None:
    options = UserOptions("casa", ("a:b", "c:d", "e:f"), "https://h.org/r.git", None, "nb/x.ipynb")
    localities = {
        "a:b": Locality("a:b", "local", files_total=2, files_local=2, bytes_total=2_000_000),
        "c:d": Locality("c:d", "remote", files_total=3, bytes_total=3_000_000_000,
                        estimated_staging_seconds=42.4),
    }  # fmt: skip
    shown = summary(options, Profile(slug="casa", display_name="Radio: CASA"), localities)
    assert shown == {
        "profile": "Radio: CASA",
        "datasets": [
            {"did": "a:b", "locality": "at this hub (2 files, 2.0 MB)"},
            {"did": "c:d", "locality": "not at this hub yet (3 files, 3.0 GB): copied here "
                                       "before the server starts, about 42 s"},
            {"did": "e:f", "locality": "locality unknown"},
        ],
        "workflow": "https://h.org/r.git",
        "ref": "the repository's default branch",
        "filepath": "nb/x.ipynb",
        "warning": WARNING,
    }  # fmt: skip
    partial = Locality("x:y", "partial", files_total=4, files_local=1, bytes_total=10)
    assert locality_words(partial).startswith("partly at this hub (1 of 4 files)")
    assert locality_words(Locality.unknown("x:y", "catalogue down")) == (
        "locality unknown: catalogue down"
    )


def test_a_confirmation_shows_no_error_on_any_hub() -> None:
    """JupyterHub 6 shows ``jupyterhub_message`` above the form, before 5.4 ``str(error)``:
    both are empty; the log line says what happened."""
    confirm = ConfirmFirst(UserOptions("casa", workflow="https://h.org/r.git"))
    assert (confirm.status_code, confirm.jupyterhub_message, str(confirm)) == (200, "", "")
    assert confirm.log_message == "it brings a workflow: the form asks the user first"
