"""The unit tier's rule, held by tests/unit/conftest.py: no I/O."""

from __future__ import annotations

import socket
import subprocess

import pytest

from tests.unit.conftest import IOInTheUnitTier


def test_the_unit_tier_refuses_io() -> None:
    with pytest.raises(IOInTheUnitTier, match="a subprocess"):
        subprocess.run(["true"], check=False)
    with pytest.raises(IOInTheUnitTier, match="a name lookup"):
        socket.create_connection(("localhost", 80))
    with socket.socket() as sock:
        with pytest.raises(IOInTheUnitTier, match="a listening socket"):
            sock.bind(("127.0.0.1", 0))
        with pytest.raises(IOInTheUnitTier, match="a network connection"):
            sock.connect(("127.0.0.1", 80))


def test_a_temporary_folder_is_refused(request: pytest.FixtureRequest) -> None:
    with pytest.raises(IOInTheUnitTier, match="a temporary folder"):
        request.getfixturevalue("tmp_path")
