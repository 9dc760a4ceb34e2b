"""Database URLs in messages never show their password (no I/O)."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from esap_spawner.observe.urls import UNPARSABLE, database_problem, display_url, redact

URL = "postgresql+psycopg://esap:p%40ss-w0rd@db.example.org:5432/esap"


def test_display_url_hides_the_password() -> None:
    assert display_url(URL) == "postgresql+psycopg://esap:***@db.example.org:5432/esap"
    assert display_url(make_url(URL)) == display_url(URL)
    assert display_url("sqlite:////srv/esap.sqlite") == "sqlite:////srv/esap.sqlite"


@pytest.mark.parametrize("url", ["esap:pw@host", "postgresql://esap:pw@host:port/db", ""])
def test_a_url_that_does_not_parse_is_not_shown(url: str) -> None:
    assert display_url(url) == UNPARSABLE


def test_redact_replaces_the_url_and_the_password_in_any_form() -> None:
    text = f"could not connect to {URL}; password 'p@ss-w0rd' (p%40ss-w0rd) refused"
    assert redact(text, URL) == (
        "could not connect to postgresql+psycopg://esap:***@db.example.org:5432/esap; "
        "password '***' (***) refused"
    )
    broken = "postgresql://esap:s3cret@host:port/db"
    assert redact(f"bad {broken}, s3cret", broken) == f"bad {UNPARSABLE}, ***"


def test_database_problem_uses_the_drivers_words() -> None:
    class Wrapped(Exception):
        orig = ValueError("FATAL: password p@ss-w0rd refused")

    assert database_problem(URL, Wrapped("sqlalchemy's long text")) == (
        "cannot use postgresql+psycopg://esap:***@db.example.org:5432/esap: "
        "FATAL: password *** refused"
    )
