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

__all__ = ["IPAllocator", "exit_code", "kill_group", "spawn"]


class IPAllocator:
    """Pod IPs: a random loopback /24 per simulator (127.A.B.2, .3, ...) in process mode, so
    that simulators running at once on one machine never collide; 10.244.0.0/14 in fake mode
    (never contacted, large enough for benchmark clusters)."""

    def __init__(self, *, loopback: bool, rng: random.Random | None = None) -> None:
        rng = rng or random.Random()
        self.loopback = loopback
        self._a = rng.randrange(16, 255)
        self._b = rng.randrange(0, 256)
        self._next = 0

    @property
    def host_ip(self) -> str:
        """The address nodes report (the .1 of the simulator's subnet, or 10.0.0.1)."""
        return f"127.{self._a}.{self._b}.1" if self.loopback else "10.0.0.1"

    def allocate(self) -> str:
        n = self._next
        self._next += 1
        if self.loopback:
            third = (self._b + n // 253) % 256
            return f"127.{self._a}.{third}.{n % 253 + 2}"
        return f"10.{244 + (n >> 16) % 4}.{(n >> 8) & 255}.{n & 255}"


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
