"""The unit tier does no I/O: no subprocess, no network connection or listening socket, no
temporary folder. A test that needs one belongs in tests/integration (``make test`` runs the
tiers as separate steps; this keeps the first one fast and able to run anywhere). Reading
the repository's own files (schemas, golden data, the package's source) is allowed."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pytest


class IOInTheUnitTier(AssertionError):
    """Raised where a unit test would do I/O."""


def _refuse(what: str) -> Callable[..., NoReturn]:
    def refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
        raise IOInTheUnitTier(f"the unit tier does no I/O ({what}): use tests/integration")

    return refuse


@pytest.fixture(autouse=True)
def no_io(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("a subprocess"))
    monkeypatch.setattr(socket.socket, "connect", _refuse("a network connection"))
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse("a network connection"))
    monkeypatch.setattr(socket.socket, "bind", _refuse("a listening socket"))
    monkeypatch.setattr(socket, "getaddrinfo", _refuse("a name lookup"))
    yield


@pytest.fixture
def tmp_path() -> NoReturn:
    raise IOInTheUnitTier("the unit tier does no I/O (a temporary folder): use tests/integration")


@pytest.fixture
def tmp_path_factory() -> NoReturn:
    raise IOInTheUnitTier("the unit tier does no I/O (a temporary folder): use tests/integration")


@pytest.fixture
def tmpdir() -> NoReturn:
    raise IOInTheUnitTier("the unit tier does no I/O (a temporary folder): use tests/integration")
