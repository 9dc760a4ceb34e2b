"""Database URLs in messages, without their passwords.

A database URL (``postgresql+psycopg://user:password@host/db``) may carry a password;
every message, log line and error that names a database goes through these, never the
URL as given:

- :func:`display_url`: the URL with its password as ``***``; a URL that does not parse is
  not shown at all (it may still hold a password);
- :func:`redact`: any text (a driver's or SQLAlchemy's error) with the URL's password,
  as written and as decoded, and the raw URL replaced;
- :func:`database_problem`: "cannot use <url>: <what went wrong>", both redacted, for
  the command line and the logs.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

__all__ = ["UNPARSABLE", "database_problem", "display_url", "redact"]

UNPARSABLE = "<a database URL that does not parse>"
# user:password@ in the authority part, even where the rest does not parse
_USERINFO = re.compile(r"^[^:/?#]+://[^:/?#@]*:(?P<password>[^@/?#]*)@")


def display_url(url: str | URL) -> str:
    """The URL to show in messages: its password, if any, as ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return UNPARSABLE


def _raw(url: str | URL) -> str:
    return url if isinstance(url, str) else url.render_as_string(hide_password=False)


def _passwords(raw: str) -> set[str]:
    match = _USERINFO.match(raw)
    if not match or not match["password"]:
        return set()
    return {match["password"], unquote(match["password"])}


def redact(text: str, url: str | URL) -> str:
    """``text`` with ``url`` (as given) shown as :func:`display_url` and its password,
    wherever else it appears, as ``***``."""
    raw = _raw(url)
    text = text.replace(raw, display_url(url))
    for password in sorted(_passwords(raw), key=len, reverse=True):
        text = text.replace(password, "***")
    return text


def database_problem(url: str | URL, error: BaseException) -> str:
    """``cannot use <url>: <error>``, without the password; for a SQLAlchemy error, the
    driver's own words (not SQLAlchemy's link to its documentation)."""
    said = getattr(error, "orig", None) or error
    return f"cannot use {display_url(url)}: {redact(str(said), url)}"
