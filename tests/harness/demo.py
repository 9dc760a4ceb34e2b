"""`esap-spawner demo` as a newcomer starts it, in a process of its own (a free port, one
password), for the integration tests of the demo and the browser tests that drive it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.harness.hub import free_port

NAMESPACE = "esap-demo"  # esap_spawner.dev.demo.NAMESPACE


def nothing_listens(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def processes_under(folder: Path) -> list[str]:
    """Live processes whose HOME is inside ``folder`` (the process kubelet's pods)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        home = next((e[5:].decode(errors="replace") for e in env if e.startswith(b"HOME=")), "")
        if home.startswith(f"{folder}/"):
            found.append(f"{proc.name}: {home}")
    return found


class DemoProcess:
    """The demo, started at once: its output goes to ``<workdir>/demo.out``, its state to
    ``<workdir>/state`` (:attr:`workdir`); ``banner`` is what it printed once ready."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        password: str = "demo-pw",
        args: Sequence[str] = (),
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = workdir / "demo.out"
        self.workdir = workdir / "state"
        self.banner = ""
        command = [sys.executable, "-m", "esap_spawner.cli", "demo", "--port", str(self.port),
                   "--password", password, "--workdir", str(self.workdir), *args]  # fmt: skip
        self.proc = subprocess.Popen(
            command, stdout=self.output.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> str:
        """The banner, once the demo says it is ready (polling its output)."""
        deadline = time.monotonic() + timeout
        while "is ready" not in self.text():
            if self.proc.poll() is not None:
                raise AssertionError(f"demo exited {self.proc.returncode}:\n{self.text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"demo not ready after {timeout} s:\n{self.text()}")
            time.sleep(0.5)
        self.banner = self.text()
        return self.banner

    def stop(self, timeout: float = 90) -> int:
        """SIGINT, as Ctrl-C; its exit code. Killed, and an error, past ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                message = f"the demo did not stop within {timeout} s of SIGINT"
                raise AssertionError(message) from None
        return self.proc.returncode

    def banner_value(self, label: str) -> str:
        """The first word after ``label:`` in the banner (``Kubernetes``, ``ESAP link``)."""
        found = re.search(rf"{re.escape(label)}:\s+(\S+)", self.banner)
        assert found, f"no {label!r} in the demo banner:\n{self.banner}"
        return found[1]

    @property
    def portal_token(self) -> str:
        found = re.search(r"Authorization: token ([0-9a-f]+)", self.banner)
        assert found, self.banner
        return found[1]

    def get_json(self, url: str, token: str | None = None) -> Any:
        request = urllib.request.Request(url)
        if token:
            request.add_header("Authorization", f"token {token}")
        with urllib.request.urlopen(request, timeout=20) as answer:
            return json.load(answer)

    def pods(self, user: str) -> list[dict[str, Any]]:
        """The user's pods, as the simulator's Kubernetes API lists them."""
        sim = self.banner_value("Kubernetes")
        selector = quote(f"hub.jupyter.org/username={user}")
        listed = self.get_json(f"{sim}/api/v1/namespaces/{NAMESPACE}/pods?labelSelector={selector}")
        return [
            p
            for p in listed["items"]
            if p["metadata"].get("labels", {}).get("hub.jupyter.org/username") == user
        ]

    def hub_log_tail(self, lines: int = 60) -> str:
        log = self.workdir / "jupyterhub.log"
        if not log.exists():
            return "(no hub log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
