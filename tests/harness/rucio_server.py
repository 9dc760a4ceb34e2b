"""The ``rucio_server`` pytest fixture over :mod:`esap_spawner.dev.rucio_local`.

The server itself (a real Rucio server on 127.0.0.1, SQLite, gunicorn) is in the developer
tools, shared with the demo; this module re-exports its names for the tests, and builds a
site whose catalogue is the server (:func:`rucio_site`). The fixture (session scope)
starts one server per test session. It skips when the Rucio venv is missing, unless ``CI`` is
set: then a missing venv is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from tests.harness.hub import HUB_SITE

__all__ = [
    "ALICE_PASSWORD",
    "ALICE_QUOTA_BYTES",
    "BATCH",
    "BOB_PASSWORD",
    "LOCAL_RSE",
    "MOUNT",
    "REMOTE_RSE",
    "ROOT",
    "ROOT_PASSWORD",
    "RucioServer",
    "SeededFile",
    "adler32_hex",
    "alice_rules",
    "free_port",
    "make_files",
    "rucio_server",
    "rucio_site",
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


# -- a site whose catalogue is this server -------------------------------------------------

MOUNT = "/rucio/hub-local"  # where the local RSE's storage is mounted in pods
ROOT = "/home/jovyan/datasets"  # the site's mount_root


def rucio_site(server: RucioServer, tmp_path: Path, account: str) -> dict[str, Any]:
    """:data:`~tests.harness.hub.HUB_SITE` with this server as its catalogue, acting as
    ``account`` (alice, bob or root; the password in a file under ``tmp_path``)."""
    password = tmp_path / f"{account}-password"
    passwords = {"alice": ALICE_PASSWORD, "bob": BOB_PASSWORD, "root": ROOT_PASSWORD}
    password.write_text(passwords[account])
    return {
        **HUB_SITE,
        "data": {
            "catalogue": "rucio",
            "mount_root": ROOT,
            "rucio": {
                "host": server.url,
                "account": account,
                "auth_type": "userpass",
                "username": account,
                "password_file": str(password),
                "local_rses": [
                    {
                        "name": LOCAL_RSE,
                        "pfn_prefix": server.pfn_prefix(LOCAL_RSE),
                        "mount_path": MOUNT,
                        "volume": {"hostPath": {"path": str(server.rse_dir(LOCAL_RSE))}},
                    }
                ],
                "staging": {"destination_rse": LOCAL_RSE, "rule_lifetime": 3600, "timeout": 45},
            },
        },
    }


def alice_rules(server: RucioServer, scope: str, name: str) -> list[Any]:
    return [
        r
        for r in server.rules(scope, name)
        if r["account"] == "alice" and r["rse_expression"] == LOCAL_RSE
    ]
