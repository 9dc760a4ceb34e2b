"""``esap-spawner db``: the database's esap tables.

::

    esap-spawner db upgrade [--db URL]   # create them, or upgrade them to this esap-spawner
    esap-spawner db status [--db URL]    # where they stand; exit status 1 unless current

``upgrade`` is idempotent: run again, it changes nothing. ``--db`` defaults to
``ESAP_DATABASE_URL``, else ``sqlite:///esap.sqlite`` (the spawner's default, in the
working directory). See :mod:`esap_spawner.observe.schema`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from esap_spawner.observe.db import url_from_environment
from esap_spawner.observe.schema import (
    SchemaError,
    SchemaState,
    schema_status,
    upgrade_schema,
)
from esap_spawner.observe.urls import database_problem, display_url

__all__ = ["add_arguments", "run"]

ACTIONS = {
    "upgrade": "create the esap tables, or upgrade them to this esap-spawner's schema",
    "status": "say where the esap tables stand (exit status 1 unless current)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, help_text in ACTIONS.items():
        action = actions.add_parser(name, help=help_text, description=help_text)
        action.add_argument(
            "--db",
            default=url_from_environment(),
            metavar="URL",
            help="database URL (default: $ESAP_DATABASE_URL or sqlite:///esap.sqlite)",
        )


def run(args: argparse.Namespace) -> int:
    try:
        return upgrade(args.db) if args.action == "upgrade" else status(args.db)
    except SchemaError as exc:
        print(f"esap-spawner db {args.action}: {exc}", file=sys.stderr)
    except (SQLAlchemyError, ImportError, ValueError) as exc:  # ValueError: a URL's port
        print(f"esap-spawner db {args.action}: {database_problem(args.db, exc)}", file=sys.stderr)
    return 1


def upgrade(url: str) -> int:
    before, after = upgrade_schema(url)
    shown = display_url(url)
    if before.state is SchemaState.current:
        print(f"the database {shown} {after.describe()}: nothing to do")
    elif before.state is SchemaState.empty:
        print(f"created the esap tables in {shown} at revision {after.revision}")
    else:
        was = f"revision {before.revision}" if before.revision else "no version table"
        print(f"upgraded the esap tables in {shown} from {was} to revision {after.revision}")
    return 0


def status(url: str) -> int:
    parsed = make_url(url)
    sqlite_file = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if sqlite_file and not Path(sqlite_file).exists():  # do not create the file by looking
        print(f"no database file at {sqlite_file!r}")
        return 1
    found = schema_status(url)
    shown = display_url(url)
    print(f"the database {shown} {found.describe()}")
    if found.state is SchemaState.behind:
        print(f"upgrade it with: esap-spawner db upgrade --db {shown}")
    return 0 if found.state is SchemaState.current else 1
