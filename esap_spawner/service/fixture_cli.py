"""``esap-spawner esap-fixture URL... [--pk-start N]``: ESAP's facility fixture from live hubs.

Asks each hub's ``api/v1/facility`` (with a portal token) and prints the YAML fixture ESAP
loads its facilities from (``python manage.py loaddata facilities.yaml``)::

    - model: ida.facility
      pk: 1
      fields: {name: ..., description: ..., url: https://hub.example.org/services/esap/,
               facilitytype: jupyterhub}

``URL`` is a hub's public URL (``https://hub.example.org/``: the service is taken at
``services/esap/``), the service's URL (``.../services/esap/``) or its facility route
(``.../api/v1/facility``). Primary keys count up from ``--pk-start`` (1) in the order the
URLs are given. The token comes from ``--token-file`` (one line ``TOKEN``, used for every
hub, and/or lines ``URL TOKEN`` for one hub) or the environment variable
``ESAP_PORTAL_TOKEN``. A name or description too long for ESAP is cut, with a warning on
stderr; a hub that cannot be asked, or whose url ESAP could not store, fails the command
(exit 1) and nothing is written, so a cron job never replaces a good fixture with a partial
one (``--output FILE`` replaces FILE only when every hub answered).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from esap_spawner.service.portal import MAX_PK, FixtureError, fixture_entry

__all__ = ["add_arguments", "facility_url", "run"]

TOKEN_ENV = "ESAP_PORTAL_TOKEN"
TIMEOUT = 20.0


class FixtureCommandError(Exception):
    """A problem the command reports (one line) before exiting with 1."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "urls", nargs="+", metavar="URL", help="a hub's URL (or its esap service's URL)"
    )
    parser.add_argument(
        "--pk-start", type=int, default=1, help="primary key of the first facility (1)"
    )
    parser.add_argument(
        "--token-file",
        help=f"portal token(s): 'TOKEN' and/or 'URL TOKEN' lines (default: ${TOKEN_ENV})",
    )
    parser.add_argument(
        "-o", "--output", help="write the fixture to this file (replaced only on success)"
    )


def facility_url(url: str) -> str:
    """The ``api/v1/facility`` route a command-line URL stands for."""
    if url.rstrip("/").endswith("api/v1/facility"):
        return url.rstrip("/")
    root = url if url.endswith("/") else url + "/"
    if "/services/" not in root.split("://", 1)[-1]:
        root += "services/esap/"
    return root + "api/v1/facility"


def read_tokens(text: str) -> tuple[str | None, dict[str, str]]:
    """The token for every hub and the tokens per URL, from a token file's text."""
    default, per_url = None, {}
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) == 1:
            default = words[0]
        elif len(words) == 2:
            per_url[words[0].rstrip("/")] = words[1]
        else:
            raise FixtureCommandError(f"token file, line {number}: expected TOKEN or URL TOKEN")
    return default, per_url


def fetch_facility(url: str, token: str | None) -> Mapping[str, Any]:
    """The facility answer of one hub."""
    target = facility_url(url)
    request = urllib.request.Request(target, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            body = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read(2000).decode("utf-8", "replace")
        try:
            detail = json.loads(detail)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            detail = exc.reason
        raise FixtureCommandError(f"{target}: {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise FixtureCommandError(f"{target}: {getattr(exc, 'reason', exc)}") from None
    if not isinstance(body, dict):
        raise FixtureCommandError(f"{target}: the answer is not a facility")
    return body


def build_fixture(
    urls: Sequence[str], *, pk_start: int, tokens: tuple[str | None, dict[str, str]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The fixture entries of ``urls`` and the warnings; raises on the first failing hub."""
    default, per_url = tokens
    entries, warnings = [], []
    for offset, url in enumerate(urls):
        facility = fetch_facility(url, per_url.get(url.rstrip("/"), default))
        try:
            entry, cut = fixture_entry(facility, pk_start + offset)
        except FixtureError as exc:
            raise FixtureCommandError(f"{url}: {exc}") from None
        entries.append(entry)
        warnings += [f"{url}: {w}" for w in cut]
    return entries, warnings


def _write(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    target = Path(output)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, target)


def run(args: argparse.Namespace) -> int:
    try:
        if not 1 <= args.pk_start <= MAX_PK - len(args.urls):
            raise FixtureCommandError(f"--pk-start must be from 1 to {MAX_PK - len(args.urls)}")
        if args.token_file:
            try:
                text = Path(args.token_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise FixtureCommandError(f"cannot read the token file: {exc}") from None
            tokens = read_tokens(text)
        else:
            tokens = (os.environ.get(TOKEN_ENV) or None, {})
        entries, warnings = build_fixture(args.urls, pk_start=args.pk_start, tokens=tokens)
        for warning in warnings:
            print(f"esap-spawner esap-fixture: warning: {warning}", file=sys.stderr)
        _write(yaml.safe_dump(entries, sort_keys=False, allow_unicode=True), args.output)
    except FixtureCommandError as exc:
        print(f"esap-spawner esap-fixture: {exc}", file=sys.stderr)
        return 1
    return 0
