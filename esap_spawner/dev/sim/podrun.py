"""The process kubelet's per-pod pieces: bookkeeping, inherited environment, status entries."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esap_spawner.dev.sim.clock import now_rfc3339
from esap_spawner.dev.sim.podroot import PodRoot

__all__ = ["PodRun", "node_environment", "ready_conditions", "running_status", "waiting_statuses"]

PASS_THROUGH = ("PATH", "LANG", "LC_ALL", "VIRTUAL_ENV", "TZ", "PYTHONPATH")
Obj = dict[str, Any]


def node_environment() -> dict[str, str]:
    """What a container inherits from the "node": PATH, LANG, VIRTUAL_ENV... of the simulator.

    The simulator's own interpreter folder is put first on PATH when missing (and
    VIRTUAL_ENV set when it runs in one), so that commands installed next to it, such as
    ``jupyterhub-singleuser`` in a virtualenv that was not activated, are found.
    """
    env = {k: os.environ[k] for k in PASS_THROUGH if k in os.environ}
    bindir = os.path.dirname(sys.executable)
    path = env.get("PATH", os.defpath)
    if bindir not in path.split(os.pathsep):
        env["PATH"] = os.pathsep.join([bindir, path])
    if sys.prefix != sys.base_prefix:
        env.setdefault("VIRTUAL_ENV", sys.prefix)
    return env


@dataclass
class PodRun:
    """The kubelet's bookkeeping for one pod: its folder (logs, and ``root``), processes,
    deletion signal."""

    namespace: str
    name: str
    uid: str
    folder: Path
    deleting: asyncio.Event = field(default_factory=asyncio.Event)
    gone: bool = False  # removed from the API (force delete): do not write status
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    root: PodRoot | None = None  # process mode: the pod's files (see podroot.py)

    def log_path(self, container: str) -> Path:
        return self.folder / f"{container}.log"


def ready_conditions(ready: bool, initialized: bool = True) -> list[Obj]:
    """The pod conditions the kubelet reports, all at the current time."""
    now = now_rfc3339()
    flags = {
        "PodReadyToStartContainers": True,
        "Initialized": initialized,
        "Ready": ready,
        "ContainersReady": ready,
        "PodScheduled": True,
    }
    return [
        {"type": t, "status": "True" if ok else "False", "lastTransitionTime": now}
        for t, ok in flags.items()
    ]


def running_status(container: Obj, restarts: int, last: Obj | None = None) -> Obj:
    """A ready, running container status (a fresh containerID each start)."""
    image = container.get("image", "")
    return {
        "name": container["name"],
        "image": image,
        "imageID": f"sim://{image}",
        "containerID": f"sim://{secrets.token_hex(16)}",
        "ready": True,
        "started": True,
        "restartCount": restarts,
        "state": {"running": {"startedAt": now_rfc3339()}},
        "lastState": last or {},
    }


def waiting_statuses(containers: list[Obj], reason: str) -> list[Obj]:
    """Statuses of containers not started yet (PodInitializing, ContainerCreating)."""
    return [
        {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": False,
         "restartCount": 0, "started": False, "state": {"waiting": {"reason": reason}},
         "lastState": {}}
        for c in containers
    ]  # fmt: skip


def stopped(status: Obj, codes: list[int]) -> None:
    """``status`` once a deleted pod's containers are stopped: each terminated (the exit code
    of its process, in start order, when known), none ready."""
    now = now_rfc3339()
    for n, container in enumerate(status.get("containerStatuses") or []):
        state = container.get("state") or {}
        if "terminated" not in state:
            code = codes[n] if n < len(codes) else 0
            container["state"] = {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": (state.get("running") or {}).get("startedAt"),
                    "finishedAt": now,
                }
            }
        container["ready"] = False
        container["started"] = False
    status["conditions"] = ready_conditions(False)
