"""The BinderHub-style launch route: real-world links parsed, hostile ones refused, redirects.

The table holds links as ESAP's Deploy builds them (its f-string with ``quote_plus``,
replicated here, not our helpers), as mybinder.org's form writes them, and as people type
them; then hostile ones. The route itself, in-process, is tested in
tests/integration/test_launch_routes.py; the default-branch lookup over the network in
tests/integration/test_launch_hub.py.
"""

from __future__ import annotations

from urllib.parse import parse_qs, quote, quote_plus, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esap_spawner.service.binder import Launch, LaunchError, filepath_from_urlpath, parse_launch
from esap_spawner.service.git_remote import RemoteError, default_branch
from esap_spawner.service.hub_version import query_style_for
from esap_spawner.service.launch import spawn_redirect
from esap_spawner.service.views import esap_url
from esap_spawner.site.profiles import Profile
from esap_spawner.spawn.options import (
    validate_filepath,
    validate_options,
    validate_ref,
    validate_workflow,
)
from tests.harness.esap import esap_deploy

REPO = "https://git.astron.nl/astron-sdc/escape-wp5/workflows/muse-demo.git"
V2 = "https://h.org/services/esap/v2/"
R = quote_plus("https://h.org/r.git")


def parse(link: str) -> Launch:
    """Parse a link as the route does: the raw path after v2/<provider>/, the query."""
    parts = urlsplit(link)
    provider, _, spec = parts.path.split("/v2/", 1)[1].partition("/")
    return parse_launch(provider, spec, parse_qs(parts.query, keep_blank_values=True))


ACCEPTED: list[tuple[str, Launch]] = [
    (esap_deploy("https://hub.example.org/services/esap/", REPO, "HEAD", ""), Launch(REPO)),
    (
        esap_deploy("https://h.org/services/esap/", REPO, "main", "notebooks/analysis.ipynb"),
        Launch(REPO, "main", "notebooks/analysis.ipynb"),
    ),
    (
        esap_deploy("https://h.org/services/esap/", REPO, "feature/x-1", "a b/c+d.ipynb"),
        Launch(REPO, "feature/x-1", "a b/c+d.ipynb"),
    ),
    # mybinder.org's own form: quote(url, safe='') and urlpath encoded once
    (
        V2 + "git/"
        + quote("https://gitlab.com/g/sub/r", safe="")
        + "/v1.0?urlpath=%2Flab%2Ftree%2Findex.ipynb",
        Launch("https://gitlab.com/g/sub/r", "v1.0", "index.ipynb"),
    ),
    # the repository URL encoded twice on the way
    (
        V2 + "git/" + quote(quote("https://h.org/r.git", safe=""), safe="")
        + "/main",
        Launch("https://h.org/r.git", "main"),
    ),
    # not encoded at all: the ref follows .git/, else it is the last segment
    (V2 + "git/https://h.org/g/r.git/dev/x", Launch("https://h.org/g/r.git", "dev/x")),
    (V2 + "git/https:/h.org/g/r/main", Launch("https://h.org/g/r", "main")),
    # GitHub and GitLab shortcuts
    (V2 + "gh/escape2020/school2021/HEAD?urlpath=tree/README.md",
     Launch("https://github.com/escape2020/school2021", "HEAD", "README.md")),
    (V2 + "gh/a/b/release/2.0?labpath=nb/x.ipynb",
     Launch("https://github.com/a/b", "release/2.0", "nb/x.ipynb")),
    (V2 + "gl/" + quote("group/sub/repo", safe="") + "/main?filepath=/x.ipynb",
     Launch("https://gitlab.com/group/sub/repo", "main", "x.ipynb")),
    # urlpath as Binder users write it
    (V2 + "gh/a/b/main?urlpath=lab", Launch("https://github.com/a/b", "main")),
    (V2 + "gh/a/b/main?urlpath=notebooks/n.ipynb",
     Launch("https://github.com/a/b", "main", "n.ipynb")),
    (V2 + "gh/a/b/main?urlpath=%2Fdoc%2Ftree%2Fn.ipynb",
     Launch("https://github.com/a/b", "main", "n.ipynb")),
    (V2 + "gh/a/b", Launch("https://github.com/a/b")),
    # ours on top: a profile and datasets, plain or opt- prefixed
    (V2 + "gh/a/b/main?profile=small&dataset=lofar:L1,lofar:L2",
     Launch("https://github.com/a/b", "main", profile="small", datasets=("lofar:L1", "lofar:L2"))),
    (V2 + "gh/a/b/main?opt-profile=gpu&opt-dataset=a:b&opt-dataset=a:b",
     Launch("https://github.com/a/b", "main", profile="gpu", datasets=("a:b",))),
]  # fmt: skip


@pytest.mark.parametrize(("link", "expected"), ACCEPTED, ids=[a[0][:90] for a in ACCEPTED])
def test_real_world_links(link: str, expected: Launch) -> None:
    assert parse(link) == expected


HOSTILE: list[tuple[str, str, str]] = [
    # link tail after /v2/, the part named, a fragment of the message
    ("git/" + quote_plus("http://h.org/r.git") + "/main", "repository", "https URL"),
    ("git/" + quote_plus("file:///etc/passwd") + "/main", "repository", "https URL"),
    ("git/" + quote_plus("ext::sh -c touch% /tmp/x") + "/main", "repository", "https URL"),
    ("git/" + quote_plus("git@github.com:a/b.git") + "/main", "repository", "https URL"),
    ("git/" + quote_plus("https://user:pw@h.org/r.git") + "/main", "repository", "password"),
    ("git/" + quote_plus("https://h.org/r.git;id") + "/main", "repository", "shell"),
    ("git/" + quote_plus("https://h.org/a/../b") + "/main", "repository", "'..'"),
    ("git/" + quote_plus("https://h.org/") + "/main", "repository", "path is missing"),
    ("git/" + quote_plus("https://h.org/r\n") + "/main", "repository", "control"),
    ("git/notaurl/main", "repository", "https URL"),
    (f"git/{R}/--upload-pack=touch", "ref", "'-'"),
    (f"git/{R}/-x", "ref", "must not start with '-'"),
    (f"git/{R}/a..b", "ref", "'..'"),
    (f"git/{R}/a%20b", "ref", "spaces"),
    (f"git/{R}/main?urlpath=lab/tree/../../etc/passwd",
     "filepath", "'..'"),
    (f"git/{R}/main?urlpath=lab/tree/" + quote_plus("a/../../x"),
     "filepath", "'..'"),
    (f"git/{R}/main?labpath=../x", "filepath", "'..'"),
    (f"git/{R}/main?urlpath=voila/render/x.ipynb",
     "urlpath", "not one this hub opens"),
    (f"git/{R}/main?urlpath=lab&labpath=x", "labpath", "once"),
    (f"git/{R}/main?image=evil:1", "image", "unknown query"),
    (f"git/{R}/main?dataset=no-scope", "dataset", "scope:name"),
    (f"git/{R}/main?profile=a&profile=b", "profile", "once"),
    ("gh/a/b;c/main", "repository", "not a GitHub repository"),
    ("gh/a", "repository", "not a GitHub repository"),
    ("gl/" + quote("../etc", safe="") + "/main", "repository", "GitLab project"),
    ("svn/x/main", "provider", "unknown provider"),
    ("git/" + "a" * 5000, "repository", "longer than"),
]  # fmt: skip


@pytest.mark.parametrize(("tail", "part", "fragment"), HOSTILE, ids=[h[0][:70] for h in HOSTILE])
def test_hostile_links_are_refused(tail: str, part: str, fragment: str) -> None:
    with pytest.raises(LaunchError) as caught:
        parse(V2 + tail)
    assert caught.value.part == part
    assert fragment in caught.value.message


@pytest.mark.parametrize("urlpath", ["lab/", "/lab", "tree", "", "lab/tree/"])
def test_urlpaths_that_open_the_launcher(urlpath: str) -> None:
    assert filepath_from_urlpath(urlpath) is None


# -- what the route answers with --------------------------------------------------------


def test_spawn_redirect_in_each_style() -> None:
    launch = Launch(REPO, "main", "nb/a b.ipynb", "small", ("a:b",))
    opt = spawn_redirect("/", launch, style="opt")
    assert opt.startswith("/hub/spawn?opt-profile=small&opt-dataset=a%3Ab&opt-workflow=")
    assert parse_qs(urlsplit(opt).query) == {
        "opt-profile": ["small"], "opt-dataset": ["a:b"], "opt-workflow": [REPO],
        "opt-ref": ["main"], "opt-filepath": ["nb/a b.ipynb"],
    }  # fmt: skip
    plain = spawn_redirect("/jhub", Launch(REPO), style="plain")
    assert plain == "/jhub/hub/spawn?workflow=" + quote_plus(REPO)


@pytest.mark.parametrize(
    ("root", "prefix", "base", "expected"),
    [
        ("https://h.org/", "/services/esap/", "/", "https://h.org/services/esap/"),
        ("https://h.org/jhub/", "/jhub/services/esap/", "/jhub/", "https://h.org/jhub/services/esap/"),
        ("https://h.org/jhub/", "/jhub/services/esap/", "/jhub", "https://h.org/jhub/services/esap/"),
        ("https://h.org/", "/", "/", "https://h.org/"),  # a service alone, without a hub
    ],
)  # fmt: skip
def test_esap_url_is_where_the_deploy_lands(
    root: str, prefix: str, base: str, expected: str
) -> None:
    assert esap_url(root, prefix=prefix, hub_base_url=base) == expected
    deploy = esap_deploy(expected, REPO, "HEAD", "")
    assert urlsplit(deploy).path.startswith(urlsplit(expected).path + "v2/git/")


@pytest.mark.parametrize(
    ("version", "style"),
    [
        ("6.1.1", "opt"),
        ("7.0.0b1", "opt"),
        ("5.2.1", "plain"),
        ("4.1.6", "plain"),
        ("dev", "plain"),
    ],
)
def test_query_style_follows_the_hub_version(version: str, style: str) -> None:
    assert query_style_for(version) == style


# -- default branch from a ref advertisement ----------------------------------------------


def pkt(line: bytes) -> bytes:
    return b"%04x" % (len(line) + 4) + line


SHA, OTHER = b"a" * 40, b"b" * 40


def advertisement(*lines: bytes) -> bytes:
    return pkt(b"# service=git-upload-pack\n") + b"0000" + b"".join(pkt(x) for x in lines)


@pytest.mark.parametrize(
    ("data", "branch"),
    [
        (advertisement(SHA + b" HEAD\0multi_ack symref=HEAD:refs/heads/trunk agent=git/2\n",
                       SHA + b" refs/heads/trunk\n"), "trunk"),
        # no symref capability (old servers): the branch at HEAD's commit, main first
        (advertisement(SHA + b" HEAD\0multi_ack\n", SHA + b" refs/heads/dev\n",
                       SHA + b" refs/heads/main\n", OTHER + b" refs/heads/x\n"), "main"),
        (advertisement(SHA + b" HEAD\0\n", SHA + b" refs/heads/zeta\n"), "zeta"),
        # an empty repository
        (advertisement(b"0" * 40 + b" capabilities^{}\0multi_ack\n"), None),
    ],
)  # fmt: skip
def test_default_branch_of_an_advertisement(data: bytes, branch: str | None) -> None:
    assert default_branch(data) == branch


@pytest.mark.parametrize("data", [b"<html>not git</html>", b"0002xx", advertisement()[:-2]])
def test_not_git_is_refused(data: bytes) -> None:
    with pytest.raises(RemoteError) as caught:
        default_branch(data)
    assert caught.value.status == 502


# -- anything in: a Launch whose values the hub accepts, or a LaunchError --------------------

SEGMENT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
RAW = st.one_of(
    SEGMENT.map(lambda t: quote(t, safe="/:%+")),
    st.builds(lambda r, ref: f"{quote_plus(r)}/{ref}",
              st.one_of(SEGMENT, st.sampled_from([REPO, "https://h.org/a/../b"])), SEGMENT),
)  # fmt: skip
QUERY = st.dictionaries(
    st.sampled_from(["urlpath", "labpath", "filepath", "profile", "dataset", "opt-profile", "x"]),
    st.lists(SEGMENT, max_size=2),
    max_size=3,
)


@settings(max_examples=500, deadline=None)
@given(provider=st.sampled_from(["git", "gh", "gl", "svn"]), spec=RAW, query=QUERY)
def test_any_link_parses_to_valid_options_or_is_refused(
    provider: str, spec: str, query: dict[str, list[str]]
) -> None:
    try:
        launch = parse_launch(provider, spec, query)
    except LaunchError as exc:
        assert exc.part and exc.message
        return
    assert validate_workflow(launch.repo) == launch.repo
    assert validate_ref(launch.ref) == launch.ref and not launch.ref.startswith("-")
    if launch.filepath is not None:
        assert validate_filepath(launch.filepath) == launch.filepath
        assert ".." not in launch.filepath.split("/")
    # what the hub is then sent passes the spawn options' own validator
    redirect = parse_qs(urlsplit(spawn_redirect("/", launch, style="plain")).query)
    raw = {k: v if k == "dataset" else v[0] for k, v in redirect.items()}
    validate_options(raw, site_profiles=(Profile(slug=launch.profile or "p", display_name="p",
                     default=True),), groups=(), is_admin=False, max_datasets=1000)  # fmt: skip
