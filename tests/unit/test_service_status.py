"""The status page's content, rendered from plain data (no I/O): what it says, and that
whatever the site file or the database holds is escaped."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest

from esap_spawner.capacity.model import ClusterModel
from esap_spawner.service.auth import ANONYMOUS, Caller
from esap_spawner.service.history import SpawnHistory, Staging
from esap_spawner.service.state import ServiceState
from esap_spawner.service.status import render_status, status_context
from esap_spawner.site.model import parse_site
from esap_spawner.site.profiles import may_use

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
SITE = {
    "facility": {"name": "Hub <script>alert(1)</script>", "description": "Tom & Jerry's hub",
                 "url": "https://hub.example.org/", "keywords": ["radio", "<b>gpu</b>"]},
    "profiles": [
        {"slug": "small", "display_name": "Small <i>one</i>", "cpu": {"guarantee": 1, "limit": 2},
         "memory": {"guarantee": "2G", "limit": "4G"}, "max_servers": 5,
         "description": "For <notebooks>"},
        {"slug": "gpu", "display_name": "GPU", "cpu": {"guarantee": 4},
         "memory": {"guarantee": "16G"},
         "gpu": {"count": 1, "resource": "nvidia.com/gpu", "model": "A100"},
         "allowed_groups": ["radio"], "hardware_capabilities": ["gpu"]},
    ],
}  # fmt: skip
PORTAL = Caller("portal", "esap-portal", scopes=frozenset({"custom:esap:read"}))
BOB = Caller("user", "bob")


class FakeHistory(SpawnHistory):
    """A snapshot as read from the database (no database here)."""

    def __init__(self, staging: tuple[Staging, ...], read_at: float | None) -> None:
        self.staging, self.read_at = staging, read_at


def node(name: str) -> dict[str, Any]:
    return {"kind": "Node", "metadata": {"name": name}, "spec": {},
            "status": {"allocatable": {"cpu": "8", "memory": "32G", "pods": "110"}}}  # fmt: skip


def page(caller: Caller, *, model: ClusterModel | None = None,
         history: SpawnHistory | None = None) -> str:  # fmt: skip
    if model is None:
        model = ClusterModel(clock=lambda: NOW - 3)
        model.replace_all([node("a")], [])
    state = ServiceState(site=parse_site(SITE, source="test"), capacity=model, may_use=may_use)
    answers = state.answers
    audience = answers.audience(caller)
    context = status_context(
        facility=state.site.facility, profiles=audience.profiles,
        listing=answers.listing(audience).data,
        caller=caller, history=history, view_age=model.view_age_seconds(), as_of=model.as_of,
        hub_url=answers.root, prefix="/services/esap/", now=NOW,
    )  # fmt: skip
    return render_status(context)


def text_of(page: str) -> str:
    """The page's words as a reader sees them (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def test_site_text_is_escaped() -> None:
    html = page(PORTAL)
    assert "<script>alert(1)</script>" not in html
    assert "Hub &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Tom &amp; Jerry&#39;s hub" in html
    assert "Small &lt;i&gt;one&lt;/i&gt;" in html and "For &lt;notebooks&gt;" in html
    assert "&lt;b&gt;gpu&lt;/b&gt;" in html
    # the only script is the page's own refresher
    assert html.count("<script>") == 1


def test_portal_sees_every_profile_with_figures_and_links() -> None:
    html = page(PORTAL)
    text = text_of(html)
    assert 'data-profile="small"' in html and 'data-profile="gpu"' in html
    # 8 CPU node: small (1 CPU) fits 8, quota 5 -> 5; the GPU profile fits nowhere
    small = text_of(html.split('data-profile="small"')[1].split("</tr>")[0])
    assert "1 to 2 CPU, 2 GB to 4 GB memory" in small and "available" in small  # the form's
    assert " 5 " in small and "0 of 5" in small
    gpu = text_of(html.split('data-profile="gpu"')[1].split("</tr>")[0])
    assert "1 A100 GPU" in gpu and "full" in gpu and "groups: radio" in gpu
    # the API's own spawn link (the query style of the hub installed here)
    assert re.search(r'href="https://hub.example.org/hub/spawn\?(opt-)?profile=small"', html)
    assert 'href="/services/esap/api/v1/openapi.json"' in html
    assert "the watches are connected; last change seen 3 s ago, at 23:59:57 UTC" in text
    assert "every profile, with the groups that may use it" in text


def test_a_user_sees_what_they_may_start_and_no_groups() -> None:
    html = page(BOB)
    assert 'data-profile="small"' in html and 'data-profile="gpu"' not in html
    assert "groups:" not in html
    assert "signed in as bob" in text_of(html)
    assert "the profiles you may start" in text_of(html)
    anonymous = text_of(page(ANONYMOUS))
    assert "signed in" not in anonymous and "the profiles open to everyone" in anonymous


def test_an_unsynced_or_stale_view_says_so() -> None:
    text = text_of(page(PORTAL, model=ClusterModel()))
    assert "The cluster view is not synced yet: availability is 'unknown'" in text
    assert "nothing seen yet" in text
    clock = [NOW - 100]
    model = ClusterModel(clock=lambda: clock[0])
    model.replace_all([node("a")], [])
    model.watch_down("pods")
    clock[0] = NOW
    text = text_of(page(PORTAL, model=model))
    assert "The cluster view is stale" in text and "(view age 2 min)" in text


ROOT = Caller("user", "root", is_admin=True)


@pytest.mark.parametrize("caller, rows", [(PORTAL, True), (ROOT, True), (BOB, False)])
def test_staging_totals_for_all_and_datasets_for_admins_and_portals(
    caller: Caller, rows: bool
) -> None:
    history = FakeHistory(
        (Staging("lofar:L1<x>", "REPLICATING", 3, 10, 3_000_000, 10_000_000, NOW - 120),
         Staging("lofar:L2", None, 0, 5, 0, 5_000_000, NOW - 30)),
        read_at=NOW - 5,
    )  # fmt: skip
    html = page(caller, history=history)
    text = text_of(html)
    assert "2 requests in flight: 3 of 15 files, 3.0 MB of 15.0 MB (as of 23:59:55 UTC)" in text
    assert ("lofar:L1&lt;x&gt;" in html) is rows and ("2 min" in text) is rows
    assert "lofar:L1<x>" not in html


def test_staging_without_a_database_or_before_the_first_read() -> None:
    assert "the service has no database" in text_of(page(PORTAL))
    assert "Not read from the database yet" in text_of(page(PORTAL, history=FakeHistory((), None)))
    assert "None right now" in text_of(page(PORTAL, history=FakeHistory((), NOW)))
