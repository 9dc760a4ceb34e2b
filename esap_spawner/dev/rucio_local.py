"""A real local Rucio server (PyPI ``rucio``, SQLite, gunicorn on 127.0.0.1) for the demo
and the tests.

``RucioServer`` keeps everything in one work directory: the server and alembic configs, the
SQLite database (WAL), the gunicorn log and one folder per posix RSE (``rse_dirs`` may place an
RSE's folder elsewhere, e.g. a folder the demo mounts into pods). ``start()`` initialises
the database on first use (``build_database``, ``create_base_vo``, ``create_root_account``, run
by the Rucio venv's python in a subprocess), starts gunicorn on a free port with ``[cache] url``
pointed at a closed port (so no stray memcached is shared), and, on first start, creates:

- the RSEs (by default ``HUB_LOCAL_DISK``, local to the hub, and ``REMOTE_ARCHIVE``), each with a
  ``file`` protocol whose prefix is the RSE's folder;
- unlimited quota for ``root`` on every RSE (or even root's rules fail);
- ``alice`` (userpass) with a quota on the first RSE and ``bob`` (userpass) with none.

``stop()`` (or ``crash()``) and ``start()`` again restart the server on the same database and
port. Helpers upload small datasets (contents made by ``make_files``, written to their PFNs and
registered in bulk: one ``lfns2pfns`` and one ``attach_dids`` with the RSE per 500 files, after
the dataset and its rule exist), add replicas of some files at another RSE, complete a transfer
honestly (copy the files to the destination PFNs and mark the replicas available as root, the
way a transfer service would), and seed a few example datasets (``seed_examples``).

The Rucio server runs in its own venv (``ESAP_RUCIO_VENV``, default ``<repo>/.rucio-venv``,
made by ``make setup-rucio``); this process talks to it with ``rucio-clients`` through
:func:`esap_spawner.data.catalogue.rucio_client.make_client`, which keeps tokens in memory (no token
cache under ``$TMPDIR``). Subprocesses get a per-run ``TMPDIR`` anyway.

The pytest fixture lives in ``tests/harness/rucio_server.py``.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import itertools
import os
import signal
import socket
import subprocess
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests

from esap_spawner.data.catalogue.rucio_client import RucioIdentity, make_client

REPO = Path(__file__).resolve().parents[2]
LOCAL_RSE = "HUB_LOCAL_DISK"
REMOTE_RSE = "REMOTE_ARCHIVE"
ROOT_PASSWORD = "root-test-password"
ALICE_PASSWORD = "alice-test-password"
BOB_PASSWORD = "bob-test-password"
ALICE_QUOTA_BYTES = 10**9
BATCH = 500  # files per bulk call: SQLite fails at about 1000 in one operation


def rucio_venv() -> Path:
    """The venv that holds the Rucio server (``ESAP_RUCIO_VENV`` or ``<repo>/.rucio-venv``)."""
    return Path(os.environ.get("ESAP_RUCIO_VENV") or REPO / ".rucio-venv")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def adler32_hex(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


@dataclass(frozen=True)
class SeededFile:
    """One file registered in Rucio by the harness."""

    scope: str
    name: str
    bytes: int
    adler32: str
    md5: str
    content: builtins.bytes

    @classmethod
    def of(cls, scope: str, name: str, content: builtins.bytes) -> SeededFile:
        """A file of ``content``, with the size and checksums Rucio registers."""
        return cls(
            scope=scope,
            name=name,
            bytes=len(content),
            adler32=adler32_hex(content),
            md5=hashlib.md5(content).hexdigest(),
            content=content,
        )

    @property
    def did(self) -> str:
        return f"{self.scope}:{self.name}"

    def as_rucio(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "name": self.name,
            "bytes": self.bytes,
            "adler32": self.adler32,
            "md5": self.md5,
        }


def make_files(scope: str, prefix: str, count: int, size: int = 64) -> list[SeededFile]:
    """``count`` small files with distinct contents (``size`` bytes each) named ``prefix.N``."""
    files = []
    for i in range(count):
        name = f"{prefix}.{i:04d}"
        seed = f"{scope}:{name}\n".encode()
        content = (seed * (size // len(seed) + 1))[:size]
        files.append(SeededFile.of(scope, name, content))
    return files


def _batches(items: Sequence[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


ALEMBIC_INI = """\
[alembic]
script_location = {script_location}
sqlalchemy.url = {db_url}

[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARN
handlers = console
qualname =

[logger_sqlalchemy]
level = WARN
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = WARN
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
datefmt = %H:%M:%S
"""

SERVER_CFG = """\
[common]
logdir = {workdir}/log
loglevel = WARNING

[database]
default = {db_url}
echo = false

[alembic]
cfg = {workdir}/alembic.ini

[bootstrap]
userpass_identity = root
userpass_pwd = {root_password}
userpass_email = root@localhost
x509_identity =
x509_email =
gss_identity =
gss_email =
ssh_identity =
ssh_email =

[policy]
permission = generic
schema = generic
lfn2pfn_algorithm_default = hash

[cache]
url = 127.0.0.1:{closed_port}
"""

INIT_DB = """\
import sqlite3, sys
from rucio.db.sqla.util import build_database, create_base_vo, create_root_account
build_database()
create_base_vo()
create_root_account()
con = sqlite3.connect(sys.argv[1])
con.execute("PRAGMA journal_mode=WAL")
con.close()
"""


class RucioServer:
    """One Rucio server process over a SQLite database in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        *,
        venv: Path | None = None,
        rses: Sequence[str] = (LOCAL_RSE, REMOTE_RSE),
        workers: int = 2,
        rse_dirs: Mapping[str, Path] | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self._rse_dirs = {rse: Path(d).resolve() for rse, d in (rse_dirs or {}).items()}
        self.venv = venv or rucio_venv()
        self.rses = tuple(rses)
        self.workers = workers
        self.port = free_port()
        self.closed_port = free_port()  # nothing listens here: the server's cache stays off
        self.proc: subprocess.Popen[bytes] | None = None
        self._initialised = False
        self._names = itertools.count()
        self._root: Any = None

    # --- paths and addresses -------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.workdir / "rucio.db"

    @property
    def config_path(self) -> Path:
        return self.workdir / "rucio.cfg"

    @property
    def log_path(self) -> Path:
        return self.workdir / "log" / "gunicorn.log"

    def rse_dir(self, rse: str) -> Path:
        """The folder that the RSE's ``file`` protocol prefix points at (ends without '/')."""
        if rse in self._rse_dirs:
            return self._rse_dirs[rse]
        return self.workdir / "rses" / rse.lower()

    def pfn_prefix(self, rse: str) -> str:
        return f"{self.rse_dir(rse)}/"

    def _env(self) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("RUCIO_") and k != "PYTHONPATH"
        }
        env["RUCIO_CONFIG"] = str(self.config_path)
        env["TMPDIR"] = str(self.workdir / "tmp")
        return env

    # --- life cycle --------------------------------------------------------------------------
    def _check_venv(self) -> None:
        for tool in ("python", "gunicorn"):
            if not (self.venv / "bin" / tool).exists():
                raise RuntimeError(
                    f"the Rucio venv at {self.venv} has no bin/{tool}: run `make setup-rucio` "
                    "(or point ESAP_RUCIO_VENV at a venv with rucio and gunicorn)"
                )

    def _write_config(self) -> None:
        for sub in ("log", "tmp", "rses"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        for rse in self.rses:
            self.rse_dir(rse).mkdir(parents=True, exist_ok=True)
        site_packages = subprocess.run(
            [
                str(self.venv / "bin" / "python"),
                "-c",
                "import os, rucio; print(os.path.dirname(rucio.__file__))",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        db_url = f"sqlite:///{self.db_path}"  # three slashes + an absolute path = four
        (self.workdir / "alembic.ini").write_text(
            ALEMBIC_INI.format(
                script_location=f"{site_packages}/db/sqla/migrate_repo/", db_url=db_url
            )
        )
        self.config_path.write_text(
            SERVER_CFG.format(
                workdir=self.workdir,
                db_url=db_url,
                root_password=ROOT_PASSWORD,
                closed_port=self.closed_port,
            )
        )

    def _init_db(self) -> None:
        result = subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", INIT_DB, str(self.db_path)],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"Rucio database set-up failed:\n{result.stderr[-4000:]}")

    def start(self, timeout: float = 60) -> RucioServer:
        """Start the server (initialising the database and the accounts on first start)."""
        if self.proc is not None:
            return self
        first = not self._initialised
        if first:
            self._check_venv()
            self._write_config()
            self._init_db()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                str(self.venv / "bin" / "gunicorn"),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.workers),
                "--no-control-socket",
                "--timeout",
                "120",
                "rucio.web.rest.flaskapi.v1.main:application",
            ],
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )
        log.close()
        self._wait_ready(timeout)
        if first:
            self._bootstrap()
            self._initialised = True
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the Rucio server exited with {self.proc.returncode}:\n{self.tail_log()}"
                )
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"the Rucio server did not answer /ping in {timeout}s:\n{self.tail_log()}"
        )

    def tail_log(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, *, grace: float = 1.0) -> None:
        """Stop gunicorn (the database and the RSE folders stay for a restart): a quick
        shutdown (SIGINT), then SIGKILL for whatever is left after ``grace`` seconds."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)  # gunicorn: quick shutdown
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # workers too: the whole process group
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def crash(self) -> None:
        """Kill the server at once, as a crash or a lost node would."""
        self.stop(grace=0)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> RucioServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- clients -----------------------------------------------------------------------------
    def identity(self, account: str) -> RucioIdentity:
        passwords = {"root": ROOT_PASSWORD, "alice": ALICE_PASSWORD, "bob": BOB_PASSWORD}
        return RucioIdentity.userpass(account, username=account, password=passwords[account])

    def client(self, account: str = "root") -> Any:
        """A ``rucio.client.Client`` for ``root``, ``alice`` or ``bob`` (new each call)."""
        return make_client(self.url, self.url, self.identity(account))

    @property
    def root(self) -> Any:
        if self._root is None:
            self._root = self.client("root")
        return self._root

    def token(self, account: str) -> str:
        """A fresh Rucio auth token for ``account`` (what a user's token would be)."""
        response = requests.get(
            f"{self.url}/auth/userpass",
            headers={
                "X-Rucio-Account": account,
                "X-Rucio-Username": account,
                "X-Rucio-Password": self.identity(account).password or "",
            },
            timeout=10,
        )
        response.raise_for_status()
        return str(response.headers["X-Rucio-Auth-Token"])

    def _bootstrap(self) -> None:
        root = self.root
        for rse in self.rses:
            root.add_rse(rse)
            root.add_protocol(
                rse,
                {
                    "scheme": "file",
                    "impl": "rucio.rse.protocols.posix.Default",
                    "hostname": "",
                    "port": 0,
                    "prefix": self.pfn_prefix(rse),
                    "domains": {
                        "lan": {"read": 1, "write": 1, "delete": 1},
                        "wan": {
                            "read": 1,
                            "write": 1,
                            "delete": 1,
                            "third_party_copy_read": 1,
                            "third_party_copy_write": 1,
                        },
                    },
                },
            )
            root.set_local_account_limit("root", rse, -1)
        for account, password in (("alice", ALICE_PASSWORD), ("bob", BOB_PASSWORD)):
            root.add_account(account, "USER", f"{account}@example.org")
            root.add_identity(
                account=account,
                identity=account,
                authtype="USERPASS",
                email=f"{account}@example.org",
                password=password,
            )
        root.set_local_account_limit("alice", self.rses[0], ALICE_QUOTA_BYTES)

    # --- data --------------------------------------------------------------------------------
    def new_scope(self, prefix: str = "t") -> str:
        """A fresh scope owned by root (at most 25 characters, as Rucio requires)."""
        scope = f"{prefix[:16]}{os.getpid() % 1000:03d}{next(self._names):04d}"
        self.root.add_scope("root", scope)
        return scope

    def pfns(self, rse: str, files: Sequence[SeededFile]) -> dict[str, str]:
        """``scope:name`` -> PFN at ``rse`` (one ``lfns2pfns`` call per batch)."""
        found: dict[str, str] = {}
        for batch in _batches(files):
            found.update(
                self.root.lfns2pfns(rse, [f.did for f in batch], operation="write", scheme="file")
            )
        return found

    def _write(self, rse: str, files: Sequence[SeededFile]) -> None:
        contents = {f.did: f.content for f in files}
        for did, pfn in self.pfns(rse, files).items():
            path = self.local_path(rse, pfn)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(contents[did])

    def local_path(self, rse: str, pfn: str) -> Path:
        """The file behind a ``file://`` PFN at one of our RSEs, refusing anything outside it."""
        path = Path(urlparse(pfn).path).resolve()
        if not path.is_relative_to(self.rse_dir(rse)):
            raise ValueError(f"PFN {pfn!r} is not under {self.rse_dir(rse)}")
        return path

    def upload_dataset(
        self, scope: str, name: str, files: Sequence[SeededFile], rse: str = LOCAL_RSE
    ) -> list[SeededFile]:
        """Create dataset ``scope:name`` with ``files`` on ``rse`` (and an OK root rule there).

        The rule is made with the dataset, before files are attached, so their locks are
        created at attach time (no judge daemon runs here). Files are written to their PFNs.
        """
        rule = {"account": "root", "copies": 1, "rse_expression": rse}
        self.root.add_dataset(scope, name, rules=[rule])
        self._write(rse, files)
        for batch in _batches(files):
            self.root.attach_dids(scope, name, [f.as_rucio() for f in batch], rse=rse)
        return list(files)

    def add_replicas(self, rse: str, files: Sequence[SeededFile]) -> None:
        """Copy existing files to ``rse`` and register them there as AVAILABLE (no rule)."""
        self._write(rse, files)
        for batch in _batches(files):
            self.root.add_replicas(rse, [dict(f.as_rucio(), state="A") for f in batch])

    def empty_dataset(self, scope: str, name: str) -> None:
        self.root.add_dataset(scope, name)

    def complete_transfer(self, rse: str, files: Sequence[SeededFile]) -> None:
        """Do what a transfer service would: copy the files to their PFNs at ``rse`` and, as
        root, mark the replicas there available (the rule's locks then go OK)."""
        self._write(rse, files)
        for batch in _batches(files):
            self.root.update_replicas_states(
                rse, [{"scope": f.scope, "name": f.name, "state": "A"} for f in batch]
            )

    def seed_examples(self, scope: str = "escape") -> dict[str, str]:
        """A few small datasets for the demo: status -> DID (local, partial, remote, empty)."""
        if scope not in self.root.list_scopes():
            self.root.add_scope("root", scope)
        local = make_files(scope, "crab-2020", 4, 4096)
        self.upload_dataset(scope, "crab-2020", local, self.rses[0])
        partial = make_files(scope, "lofar-l123", 6, 8192)
        self.upload_dataset(scope, "lofar-l123", partial, self.rses[1])
        self.add_replicas(self.rses[0], partial[:3])
        self.upload_dataset(
            scope, "gaia-dr3-sample", make_files(scope, "gaia", 5, 16384), self.rses[1]
        )
        self.empty_dataset(scope, "empty")
        return {
            "local": f"{scope}:crab-2020",
            "partial": f"{scope}:lofar-l123",
            "remote": f"{scope}:gaia-dr3-sample",
            "empty": f"{scope}:empty",
        }

    def rules(self, scope: str, name: str) -> list[Mapping[str, Any]]:
        return list(self.root.list_did_rules(scope, name))
