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

import os
import re
import shutil
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from tests.harness.demo import DemoProcess, nothing_listens, processes_under

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "e2e-demo-password"
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


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoProcess]:
    running = DemoProcess(tmp_path_factory.mktemp("demo"), password=PASSWORD)
    try:
        running.wait_ready()
    except AssertionError:
        running.stop()
        raise
    try:
        yield running
    finally:
        code = running.stop()
        assert code == 0, running.text()[-3000:]
        assert "nothing is left running" in running.text(), running.text()[-3000:]
        assert processes_under(running.workdir) == []
        assert nothing_listens(running.port)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing browser test reports the end of the demo hub's log."""
    report = yield
    demo = getattr(item, "funcargs", {}).get("demo")
    if report.failed and isinstance(demo, DemoProcess):
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
def login(demo: DemoProcess, browser: Browser) -> Iterator[Any]:
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
