"""The ``rucio_server`` pytest fixture over :mod:`esap_spawner.dev.rucio_local`.

The server itself (a real Rucio server on 127.0.0.1, SQLite, gunicorn) is product code shared
with the demo; this module re-exports its names for the tests. The fixture (session scope)
starts one server per test session. It skips when the Rucio venv is missing, unless ``CI`` is
set: then a missing venv is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from esap_spawner.dev.rucio_local import (
    ALICE_PASSWORD,
    ALICE_QUOTA_BYTES,
    BATCH,
    BOB_PASSWORD,
    LOCAL_RSE,
    REMOTE_RSE,
    ROOT_PASSWORD,
    RucioServer,
    SeededFile,
    adler32_hex,
    free_port,
    make_files,
    rucio_venv,
)

__all__ = [
    "ALICE_PASSWORD",
    "ALICE_QUOTA_BYTES",
    "BATCH",
    "BOB_PASSWORD",
    "LOCAL_RSE",
    "REMOTE_RSE",
    "ROOT_PASSWORD",
    "RucioServer",
    "SeededFile",
    "adler32_hex",
    "free_port",
    "make_files",
    "rucio_server",
    "rucio_venv",
]


@pytest.fixture(scope="session")
def rucio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RucioServer]:
    """One real Rucio server per test session (skipped without the Rucio venv, unless CI)."""
    venv = rucio_venv()
    if not (venv / "bin" / "gunicorn").exists():
        message = f"no Rucio server venv at {venv} (run `make setup-rucio` or set ESAP_RUCIO_VENV)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    workdir = tmp_path_factory.mktemp("rucio")
    server = RucioServer(workdir, venv=venv)
    try:
        server.start()
    except Exception:
        server.stop()
        raise
    try:
        yield server
    finally:
        server.stop()
        if not os.environ.get("ESAP_KEEP_RUCIO"):
            shutil.rmtree(workdir, ignore_errors=True)
