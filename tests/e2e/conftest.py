"""Browser tests of `esap-spawner demo`: one demo per module, driven by headless Chromium.

The demo runs as a subprocess exactly as a newcomer starts it (a free port, one password)
and is stopped with SIGINT at the end of the module; its stop must leave nothing running.
Chromium is Debian's (``make setup-browser``), launched by Playwright without any browser
download. Each test logs in as its own user in its own browser context, so the tests do
not depend on each other's servers.

Screenshots go to ``docs/images/`` only when ``ESAP_UPDATE_SCREENSHOTS=1`` (the README uses
the committed ones); otherwise into the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from tests.harness.hub import free_port

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "e2e-demo-password"
NAMESPACE = "esap-demo"  # esap_spawner.dev.demo.NAMESPACE
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests may run as root
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# Timeouts (ms) for a loaded 2-core machine: a JupyterLab start takes 4-15 s here.
PAGE_MS = 15_000
LAB_MS = 90_000
expect.set_options(timeout=PAGE_MS)  # for expect(...); pages get PAGE_MS in `login`


def chromium_path() -> str:
    found = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(found).exists():
        raise RuntimeError("Chromium not found: run `make setup-browser` (Debian's chromium)")
    return found


@dataclass
class Demo:
    """A running `esap-spawner demo` and what its banner says."""

    url: str
    banner: str
    proc: subprocess.Popen[bytes]
    output: Path

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

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    @property
    def workdir(self) -> Path:
        return self.output.parent / "state"

    def hub_log_tail(self, lines: int = 60) -> str:
        log = self.workdir / "jupyterhub.log"
        if not log.exists():
            return "(no hub log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


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


def start_demo(workdir: Path, timeout: float = 120) -> Demo:
    port = free_port()
    output = workdir / "demo.out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "esap_spawner.cli",
            "demo",
            "--port",
            str(port),
            "--password",
            PASSWORD,
            "--workdir",
            str(workdir / "state"),
        ],
        stdout=output.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while "is ready" not in output.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_demo(proc)
            raise AssertionError(f"the demo did not come up:\n{output.read_text()}")
        time.sleep(0.5)  # polling the banner, not waiting for a fixed time
    return Demo(f"http://127.0.0.1:{port}", output.read_text(errors="replace"), proc, output)


def stop_demo(proc: subprocess.Popen[bytes], timeout: float = 90) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            raise AssertionError(f"the demo did not stop within {timeout} s of SIGINT") from None
    return proc.returncode


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = start_demo(tmp_path_factory.mktemp("demo"))
    try:
        yield running
    finally:
        code = stop_demo(running.proc)
        assert code == 0, running.text()[-3000:]
        assert "nothing is left running" in running.text(), running.text()[-3000:]
        assert processes_under(running.workdir) == []
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", int(running.url.rsplit(":", 1)[1]))) != 0


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing browser test reports the end of the demo hub's log."""
    report = yield
    demo = getattr(item, "funcargs", {}).get("demo")
    if report.failed and isinstance(demo, Demo):
        report.sections.append(("demo hub log (end)", demo.hub_log_tail()))
    return report


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture
def login(demo: Demo, browser: Browser) -> Iterator[Any]:
    """``login(user)`` -> a page of a fresh browser context, logged in as ``user``."""
    contexts: list[BrowserContext] = []

    def log_in(user: str) -> Page:
        context = browser.new_context(viewport={"width": 1000, "height": 760})
        context.set_default_timeout(PAGE_MS)
        contexts.append(context)
        page = context.new_page()
        page.goto(f"{demo.url}/hub/login")
        page.fill("#username_input", user)
        page.fill("#password_input", PASSWORD)
        page.click("#login_submit")
        page.wait_for_url(re.compile(r"/hub/(spawn|home)"))
        return page

    yield log_in
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``docs/images`` when ESAP_UPDATE_SCREENSHOTS=1, else a temporary folder."""
    if os.environ.get("ESAP_UPDATE_SCREENSHOTS") == "1":
        folder = REPO / "docs" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return tmp_path_factory.mktemp("screenshots")
