"""The ``esap`` service without a hub: ``esap-spawner service --token-file ...`` in a process
of its own, as a site runs it beside a hub it does not manage (and as the fuzz tests hit it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from tests.harness.hub import free_port


class StandaloneService:
    """Started on 127.0.0.1 at a free port with ``site_text`` and ``tokens`` written to
    ``workdir``; ``extra`` arguments follow. ``base`` is its URL, ending in ``/``. Without a
    ``kubeconfig`` it points at an absent file (no cluster view)."""

    def __init__(
        self,
        workdir: Path,
        *extra: str,
        site_text: str,
        tokens: dict[str, Any],
        prefix: str = "/esap/",
        kubeconfig: str | None = None,
        timeout: float = 30,
    ) -> None:
        site_file = workdir / "site.yaml"
        site_file.write_text(site_text)
        token_file = workdir / "tokens.json"
        token_file.write_text(json.dumps(tokens))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
        env["KUBECONFIG"] = kubeconfig or str(workdir / "absent")
        command = [sys.executable, "-m", "esap_spawner.cli", "service", "--site-file",
                   str(site_file), "--token-file", str(token_file), "--ip", "127.0.0.1",
                   "--port", str(port), "--prefix", prefix, *extra]  # fmt: skip
        self.log_path = workdir / "service.log"
        self.proc = subprocess.Popen(
            command, env=env, stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT,
            cwd=workdir,  # its default database (sqlite:///esap.sqlite) goes there
        )  # fmt: skip
        self.base = f"http://127.0.0.1:{port}{prefix}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                requests.get(self.base + "health", timeout=2)
                return
            except requests.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    raise AssertionError(self.log_path.read_text()) from None
                time.sleep(0.2)

    def stop(self) -> int:
        """SIGTERM, as a site's process manager stops it; its exit code."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("the service did not stop within 10 s of SIGTERM") from None
