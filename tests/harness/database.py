"""An empty database for the esap tables: a SQLite file, and PostgreSQL too when
``ESAP_TEST_DATABASE_URL`` is set (``postgresql+psycopg://user@host:port/db``; the esap
tables there are dropped before and after each test)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, inspect, text

BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("ESAP_TEST_DATABASE_URL") else [])


def drop_esap_tables(engine: Engine) -> None:
    """Every ``esap_*`` table, the version table included; other tables stay."""
    names = [n for n in inspect(engine).get_table_names() if n.startswith("esap_")]
    names.sort(key=lambda name: name != "esap_staging")  # the referencing table first
    with engine.begin() as connection:
        for name in names:
            connection.execute(text(f"DROP TABLE {name}"))


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database, once per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'esap.sqlite'}"
        return
    url = os.environ["ESAP_TEST_DATABASE_URL"]
    engine = create_engine(url)
    drop_esap_tables(engine)
    yield url
    drop_esap_tables(engine)
    engine.dispose()
