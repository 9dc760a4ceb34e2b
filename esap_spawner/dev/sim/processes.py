"""Local processes for the process kubelet: pod IPs on loopback, process groups, signals."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import random
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["FAKE_OCTETS", "PROCESS_OCTETS", "IPAllocator", "exit_code", "kill_group", "spawn"]


# Who uses which part of 127.0.0.0/8 (all of it is loopback on Linux), by second octet: the
# machine's own addresses (127.0.0.1, Debian's 127.0.1.1) stay below 16.
PROCESS_OCTETS = range(16, 128)  # process mode: a random 127.A.B.0/24 per simulator
FAKE_OCTETS = range(128, 254)  # fake mode: a random 127.A.0.0/16 per simulator
# 127.254.0.0/16 and 127.255.0.0/16 are the real control plane's (tools/kube: kwok's pods, nodes)


class IPAllocator:
    """Pod and node IPs on loopback, so that a hub or a test connecting to a pod reaches this
    machine and nothing else (a private range such as 10.0.0.0/8 may be routed elsewhere).

    ``kubelet="process"``: a random 127.A.B.0/24 per simulator (nodes 127.A.B.1, pods .2, .3,
    ... then the next /24), where each pod's server listens on its own address.
    ``kubelet="fake"``: a random 127.A.0.0/16 (nodes 127.A.0.1, pods from 127.A.0.2), 64,768
    pods before addresses repeat; nothing listens there, so a connection is refused at once.
    The two modes draw A from disjoint ranges, so simulators running at once on one machine
    never hand out a fake pod the address of another simulator's process pod.
    """

    def __init__(self, kubelet: str, *, rng: random.Random | None = None) -> None:
        if kubelet not in ("fake", "process"):
            raise ValueError(f"kubelet must be 'fake' or 'process', not {kubelet!r}")
        rng = rng or random.Random()
        process = kubelet == "process"
        self._a = rng.choice(PROCESS_OCTETS if process else FAKE_OCTETS)
        self._b = rng.randrange(0, 256) if process else 0
        self._next = 0

    @property
    def host_ip(self) -> str:
        """The address nodes report: the .1 of the simulator's first /24."""
        return f"127.{self._a}.{self._b}.1"

    def allocate(self) -> str:
        """The next pod IP: .2 to .254 of each /24 in turn (no .0, .1 or .255)."""
        n = self._next
        self._next += 1
        third = (self._b + n // 253) % 256
        return f"127.{self._a}.{third}.{n % 253 + 2}"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGKILL this process if the simulator's thread dies (a crashed test run)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


async def spawn(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path
) -> asyncio.subprocess.Process:
    """Start ``argv`` in its own session (process group), output appended to ``log_path``.

    On Linux the process is also killed if the simulator dies without stopping it.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env),
            cwd=str(cwd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )


def kill_group(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    """Signal the process group of ``process`` (its children too); ignore if it is gone."""
    if process.returncode is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)  # stragglers the leader left behind
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


async def stop_process(process: asyncio.subprocess.Process, grace: float) -> int:
    """SIGTERM the group, SIGKILL after ``grace`` seconds; returns the exit code."""
    kill_group(process, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout=max(grace, 0.0))
    except TimeoutError:
        kill_group(process, signal.SIGKILL)
        await process.wait()
    kill_group(process, signal.SIGKILL)  # children that ignored SIGTERM
    return exit_code(process.returncode)


def exit_code(returncode: int | None) -> int:
    """A container exit code: a death by signal N reads as 128+N, as in Kubernetes."""
    if returncode is None:
        return 0
    return 128 - returncode if returncode < 0 else returncode
