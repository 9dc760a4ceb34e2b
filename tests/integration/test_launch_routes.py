"""The BinderHub-style launch route in the service, in-process: ESAP's Deploy link redirects
to the spawn form, bad links get a readable page (or the JSON error), the host allowlist.
The links' parsing alone is tested in tests/unit/test_launch.py."""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlsplit

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from tests.harness.esap import esap_deploy
from tests.harness.openapi import check_openapi
from tests.harness.service import PREFIX, Service, ServiceFactory

pytestmark = pytest.mark.integration

REPO = "https://git.astron.nl/astron-sdc/escape-wp5/workflows/muse-demo.git"


class FixedBranches:
    """The default-branch lookup of a repository that always says ``trunk``."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def lookup(self, repo: str) -> str:
        self.asked.append(repo)
        return "trunk"


async def launch(service: Service, tail: str, accept: str = "text/html") -> HTTPResponse:
    return await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{service.port}{PREFIX}v2/{tail}",
        headers={"Accept": accept},
        follow_redirects=False,
        raise_error=False,
    )


async def test_esap_deploy_redirects_to_the_spawn_form(service_factory: ServiceFactory) -> None:
    branches = FixedBranches()
    service = await service_factory(default_branches=branches, query_style="opt")
    link = esap_deploy(f"http://127.0.0.1:{service.port}{PREFIX}", REPO, "HEAD", "nb/a.ipynb")
    answer = await AsyncHTTPClient().fetch(link, follow_redirects=False, raise_error=False)
    assert answer.code == 302, answer.body
    location = answer.headers["Location"]
    assert urlsplit(location).path == "/hub/spawn"
    assert parse_qs(urlsplit(location).query) == {
        "opt-workflow": [REPO], "opt-ref": ["trunk"], "opt-filepath": ["nb/a.ipynb"],
    }  # fmt: skip
    assert branches.asked == [REPO]
    # a named ref is not looked up
    answer = await launch(service, f"git/{quote_plus(REPO)}/v2.0?profile=gpu")
    assert answer.code == 302
    assert parse_qs(urlsplit(answer.headers["Location"]).query)["opt-ref"] == ["v2.0"]
    assert branches.asked == [REPO]


@pytest.mark.parametrize(
    ("tail", "status", "fragment"),
    [
        (f"git/{quote_plus('http://h.org/r')}/main", 400, "https URL"),
        (f"git/{quote_plus(REPO)}/-main", 400, "must not start with '-'"),
        (f"git/{quote_plus(REPO)}/main?urlpath=lab/tree/../x", 400, "'..'"),
        (f"git/{quote_plus(REPO)}/main?profile=a%20b", 400, "'a b' is not a profile slug"),
        (f"git/{quote_plus(REPO)}/main?urlpath=<script>alert(1)</script>", 400, "<script>"),
        ("svn/trunk/HEAD", 400, "unknown provider 'svn'; use git, gh or gl"),
        ("%7Bx%7D/trunk", 400, "unknown provider '{x}'"),
        ("git/", 400, "https URL"),
    ],
)
async def test_bad_links_get_a_readable_page(
    service_factory: ServiceFactory, tail: str, status: int, fragment: str
) -> None:
    service = await service_factory(default_branches=FixedBranches())
    page = await launch(service, tail)
    assert page.code == status
    assert page.headers["Content-Type"].startswith("text/html")
    text = page.body.decode()
    assert "This launch link cannot be used" in text and fragment in html.unescape(text)
    assert "<script>" not in text and "Traceback" not in text
    # an API client gets the service's JSON error instead
    answer = await launch(service, tail, accept="application/json")
    assert answer.code == status
    body: Any = check_openapi("GET", "/v2/{provider}/{spec}", answer)
    assert body["error"]["code"] == "invalid_launch_link"


async def test_encoded_provider_is_read_as_the_link_wrote_it(
    service_factory: ServiceFactory,
) -> None:
    service = await service_factory(default_branches=FixedBranches(), query_style="plain")
    answer = await launch(service, f"%67it/{quote_plus(REPO)}/main")  # %67 is 'g'
    assert answer.code == 302
    assert parse_qs(urlsplit(answer.headers["Location"]).query)["workflow"] == [REPO]


async def test_hosts_outside_the_allowlist_are_refused_before_any_lookup(
    service_factory: ServiceFactory, site_file: Any
) -> None:
    site_file.write_text(site_file.read_text() + "workflows:\n  allowed_hosts: ['*.astron.nl']\n")
    branches = FixedBranches()
    service = await service_factory(default_branches=branches)
    page = await launch(service, f"git/{quote_plus('https://github.com/a/b')}/HEAD")
    assert page.code == 403
    assert "does not start workflows from github.com" in page.body.decode()
    assert branches.asked == []
    assert (await launch(service, f"git/{quote_plus(REPO)}/HEAD")).code == 302
