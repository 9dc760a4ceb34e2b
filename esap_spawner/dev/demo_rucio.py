"""The demo's data catalogue from a real local Rucio server (``esap-spawner demo``).

When a Rucio server venv is available (``ESAP_RUCIO_VENV`` or ``<repo>/.rucio-venv``, made by
``make setup-rucio``) and ``rucio-clients`` is installed (the ``rucio`` extra), the demo runs
:class:`esap_spawner.dev.rucio_local.RucioServer` in its work folder with two posix RSEs:

- ``HUB_LOCAL_DISK``, the hub's storage: a folder of the demo, mounted into every pod that asks
  for data as a ``hostPath`` volume (the site file's ``local_rses`` entry; ``pfn_prefix`` is
  that folder), and the staging destination;
- ``REMOTE_ARCHIVE``, a "remote" archive that pods never see.

It seeds ``escape:crab-2020`` (already on ``HUB_LOCAL_DISK``) and ``escape:cta-sim-2024`` (only on
``REMOTE_ARCHIVE``, so a spawn asking for it must stage it first).

There is no transfer service (FTS) here, so **transfers are emulated by the demo**: a small
*demo transfer agent* (a background thread) looks every second for REPLICATING rules to
``HUB_LOCAL_DISK`` and completes them one file per tick, as a transfer service would: it copies
the file from its replica on ``REMOTE_ARCHIVE`` to its destination PFN and, as root, marks the
replica there available (:meth:`RucioServer.complete_transfer`), after which Rucio turns the
lock, and then the rule, OK. The spawner only sees Rucio, exactly as with a real deployment.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esap_spawner.dev.rucio_local import (
    ALICE_PASSWORD,
    LOCAL_RSE,
    REMOTE_RSE,
    RucioServer,
    SeededFile,
    rucio_venv,
)

log = logging.getLogger(__name__)

SCOPE = "escape"
LOCAL_DID = f"{SCOPE}:crab-2020"
REMOTE_DID = f"{SCOPE}:cta-sim-2024"

# file name in the dataset folder -> contents
LOCAL_FILES = {
    "events.csv": "time,energy_tev,ra,dec\n0.1,1.2,83.63,22.01\n0.4,3.4,83.62,22.02\n",
    "README.txt": "Crab nebula gamma-ray events (demo data).\n",
}
REMOTE_FILES = {
    "cta-sim-2024.README.txt": "Simulated CTA gamma-ray events, staged from REMOTE_ARCHIVE "
    "(demo data).\n",
    **{
        f"cta-sim-2024.run{i}.csv": "time,energy_tev\n"
        + "".join(f"{t / 10:.1f},{(t * 7 + i) % 50 / 10:.1f}\n" for t in range(200))
        for i in (1, 2)
    },
}


def available(venv: Path | None = None) -> bool:
    """Whether the demo can run a local Rucio server: the server venv and ``rucio-clients``."""
    venv = venv or rucio_venv()
    if not all((venv / "bin" / tool).exists() for tool in ("python", "gunicorn")):
        return False
    try:
        import rucio.client  # noqa: F401
    except ImportError:
        return False
    return True


def seeded(scope: str, files: dict[str, str]) -> list[SeededFile]:
    out = []
    for name, text in files.items():
        content = text.encode()
        out.append(SeededFile.of(scope, name, content))
    return out


class TransferAgent(threading.Thread):
    """The demo transfer agent: every ``interval`` seconds, completes one file of a REPLICATING
    rule to ``destination`` by copying it from a replica elsewhere (what FTS would do)."""

    def __init__(self, server: RucioServer, destination: str, interval: float = 1.0) -> None:
        super().__init__(name="demo-transfer-agent", daemon=True)
        self.server = server
        self.destination = destination
        self.interval = interval
        self.stopped = threading.Event()
        self.transferred = 0

    def run(self) -> None:
        client = self.server.client("root")
        while not self.stopped.wait(self.interval):
            try:
                self.step(client)
            except Exception as e:  # keep going: Rucio may be busy or restarting
                log.warning("demo transfer agent: %s", e)

    def step(self, client: Any) -> bool:
        """Transfer one file, if any is waiting; True if one was transferred."""
        rules = client.list_replication_rules({"state": "R", "rse_expression": self.destination})
        for rule in rules:
            for lock in client.list_replica_locks(rule["id"]):
                if lock.get("state") != "REPLICATING":
                    continue
                self.transfer(client, str(lock["scope"]), str(lock["name"]))
                return True
        return False

    def transfer(self, client: Any, scope: str, name: str) -> None:
        [replica] = client.list_replicas([{"scope": scope, "name": name}], sort="random")
        for rse, pfns in (replica.get("rses") or {}).items():
            if rse == self.destination or replica["states"].get(rse) != "AVAILABLE":
                continue
            content = self.server.local_path(rse, pfns[0]).read_bytes()
            break
        else:
            raise RuntimeError(f"{scope}:{name} has no available source replica")
        self.server.complete_transfer(self.destination, [SeededFile.of(scope, name, content)])
        self.transferred += 1

    def stop(self) -> None:
        self.stopped.set()
        if self.is_alive():
            self.join(10)


@dataclass
class DemoRucio:
    """A running local Rucio server for the demo, its seeded datasets and its transfer agent."""

    server: RucioServer
    agent: TransferAgent
    storage: Path
    site_data: dict[str, Any]
    local_did: str = LOCAL_DID
    remote_did: str = REMOTE_DID
    dids: Sequence[str] = field(default_factory=lambda: (LOCAL_DID, REMOTE_DID))

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.agent.stop()
        self.server.stop()


def start(workdir: Path, *, mount_root: str, interval: float = 1.0) -> DemoRucio:
    """Start the local Rucio server in ``workdir``, seed the demo datasets, start the agent.

    Returns what the demo's site file needs as ``site_data`` (the whole ``data`` section)."""
    storage = workdir / "hub-local-disk"  # HUB_LOCAL_DISK's folder, mounted into pods
    storage.mkdir(parents=True, exist_ok=True)
    server = RucioServer(workdir / "rucio", rse_dirs={LOCAL_RSE: storage})
    try:
        server.start()
        if SCOPE not in server.root.list_scopes():
            server.root.add_scope("root", SCOPE)
        server.upload_dataset(SCOPE, LOCAL_DID.split(":")[1], seeded(SCOPE, LOCAL_FILES), LOCAL_RSE)
        server.upload_dataset(
            SCOPE, REMOTE_DID.split(":")[1], seeded(SCOPE, REMOTE_FILES), REMOTE_RSE
        )
    except BaseException:  # Ctrl-C while starting too: leave no server behind
        server.stop()
        raise
    password_file = workdir / "rucio-password"
    password_file.write_text(ALICE_PASSWORD)
    password_file.chmod(0o600)
    agent = TransferAgent(server, LOCAL_RSE, interval)
    agent.start()
    prefix = server.pfn_prefix(LOCAL_RSE)
    site_data = {
        "catalogue": "rucio",
        "mount_root": mount_root,
        "rucio": {
            "host": server.url,
            "auth_host": server.url,
            "account": "alice",
            "auth_type": "userpass",
            "username": "alice",
            "password_file": str(password_file),
            "local_rses": [
                {
                    "name": LOCAL_RSE,
                    "pfn_prefix": prefix,
                    # the pods see the folder where it is (the process kubelet maps it)
                    "mount_path": str(storage),
                    "volume": {"hostPath": {"path": str(storage), "type": "Directory"}},
                }
            ],
            "staging": {"destination_rse": LOCAL_RSE, "rule_lifetime": 86400, "timeout": 600},
        },
    }
    return DemoRucio(server=server, agent=agent, storage=storage, site_data=site_data)
