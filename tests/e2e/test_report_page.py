"""The performance report as a person sees it, in Chromium: every picture loads, and the page
reads right with one recorded spawn and with a busy week. The screenshots are the ones in
docs/metrics.md (``ESAP_UPDATE_SCREENSHOTS=1``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser

from esap_spawner import cli
from tests.harness.report_data import write_scenario

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("scenario", ["one", "many"])
def test_the_report_page_in_a_browser(
    browser: Browser, tmp_path: Path, screenshot_dir: Path, scenario: str
) -> None:
    url = write_scenario(tmp_path / "esap.sqlite", scenario)
    out = tmp_path / "report"
    assert cli.main(["report", "--db", url, "--since", "7d", "--out", str(out)]) == 0
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    try:
        page = context.new_page()
        page.goto((out / "index.html").as_uri())
        page.wait_for_load_state("load")
        pictures = page.locator("img")
        expected = 3 if scenario == "one" else 5
        assert pictures.count() == expected
        for i in range(expected):  # each one loaded, at its size
            width = pictures.nth(i).evaluate("img => img.complete && img.naturalWidth")
            assert width and width > 400
        headline = page.locator("#headlines li").first.inner_text()
        if scenario == "one":
            assert headline.startswith("gammapy: its one successful spawn was ready in 14.2 s")
            assert "none with a value" in page.locator("body").inner_text()
        else:
            assert "9 in 10 of its" in headline
        page.screenshot(path=screenshot_dir / f"report-{scenario}.png", full_page=True)
    finally:
        context.close()
