"""User options: form, query and JSON inputs through the one validator."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from esap_spawner.site.profiles import Profile
from esap_spawner.spawn.options import (
    ALLOWED_KEYS,
    OPTIONS,
    OptionsError,
    UserOptions,
    form_fields,
    options_from_form_data,
    options_from_query,
    options_schema,
    query_options,
    query_string_keys,
    validate_did,
    validate_filepath,
    validate_options,
    validate_ref,
    validate_workflow,
)

SMALL = Profile(slug="small", display_name="Small", default=True)
CASA = Profile(slug="casa", display_name="CASA")
GPU = Profile(slug="gpu", display_name="GPU", allowed_groups=("gpu-users", "ml"))
PROFILES = (SMALL, CASA, GPU)
OPENAPI = Path(__file__).resolve().parents[2] / "esap_spawner" / "service" / "openapi.json"


def check(
    raw: Any,
    *,
    profiles: tuple[Profile, ...] = PROFILES,
    groups: tuple[str, ...] = (),
    admin: bool = False,
    max_datasets: int = 5,
) -> UserOptions:
    return validate_options(
        raw, site_profiles=profiles, groups=groups, is_admin=admin, max_datasets=max_datasets
    )


# -- shaping the form and the query ----------------------------------------------------------


def test_form_data_is_shaped() -> None:
    form = {
        "_xsrf": ["token"],
        "profile": ["casa"],
        "dataset": ["lofar:L1\r\nlofar:L2, lofar:L3\n\n"],
        "workflow": [""],
        "ref": [""],
        "filepath": ["notebooks/start.ipynb"],
    }
    assert options_from_form_data(form) == {
        "profile": "casa",
        "dataset": ["lofar:L1", "lofar:L2", "lofar:L3"],
        "filepath": "notebooks/start.ipynb",
    }


def test_form_keeps_unknown_keys_for_the_validator_to_name() -> None:
    raw = options_from_form_data({"profile": ["small"], "image": ["evil:latest"]})
    assert raw == {"profile": "small", "image": "evil:latest"}
    with pytest.raises(OptionsError) as caught:
        check(raw)
    assert caught.value.field == "image"


def test_query_of_an_esap_deep_link() -> None:
    query = {
        "profile": ["gpu"],
        "dataset": ["lofar:L123456", "escape_wp2:ska-mid.ms"],
        "workflow": ["https://git.example.org/esap/notebooks.git"],
        "ref": ["v1.2"],
        "filepath": ["analysis/main.ipynb"],
        "next": ["/hub/user/alice/lab"],
    }
    raw = options_from_query(query)
    assert "next" not in raw
    options = check(raw, groups=("ml",))
    assert options == UserOptions(
        profile="gpu",
        datasets=("lofar:L123456", "escape_wp2:ska-mid.ms"),
        workflow="https://git.example.org/esap/notebooks.git",
        ref="v1.2",
        filepath="analysis/main.ipynb",
    )
    assert options.to_dict() == {
        "profile": "gpu",
        "dataset": ["lofar:L123456", "escape_wp2:ska-mid.ms"],
        "workflow": "https://git.example.org/esap/notebooks.git",
        "ref": "v1.2",
        "filepath": "analysis/main.ipynb",
    }


def test_single_valued_option_given_twice_is_refused() -> None:
    with pytest.raises(OptionsError, match="'profile' was given 2 times; give it once") as caught:
        options_from_query({"profile": ["small", "casa"]})
    assert caught.value.field == "profile"


# -- accepted ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kwargs", "expected"),
    [
        ({}, {}, UserOptions(profile="small")),
        ({"profile": ""}, {}, UserOptions(profile="small")),
        ({"profile": None, "workflow": None, "dataset": None}, {}, UserOptions(profile="small")),
        ({"profile": "casa"}, {}, UserOptions(profile="casa")),
        ({"profile": "gpu"}, {"groups": ("ml",)}, UserOptions(profile="gpu")),
        ({"profile": "gpu"}, {"admin": True}, UserOptions(profile="gpu")),
        ({"dataset": "lofar:L1"}, {}, UserOptions(profile="small", datasets=("lofar:L1",))),
        (
            {"dataset": ["a:x", "b:y", "a:x"]},
            {},
            UserOptions(profile="small", datasets=("a:x", "b:y")),  # duplicates kept once
        ),
        (
            {"dataset": ["a:1", "a:2", "a:3", "a:1"]},
            {"max_datasets": 3},
            UserOptions(profile="small", datasets=("a:1", "a:2", "a:3")),
        ),
        ({"dataset": []}, {}, UserOptions(profile="small")),
        (
            {"workflow": "https://github.com/escape2020/notebooks", "ref": "feature/x-1"},
            {},
            UserOptions(
                profile="small",
                workflow="https://github.com/escape2020/notebooks",
                ref="feature/x-1",
            ),
        ),
        (
            {"workflow": "https://git.example.org:8443/g/r.git", "filepath": "a b/c.ipynb"},
            {},
            UserOptions(
                profile="small",
                workflow="https://git.example.org:8443/g/r.git",
                filepath="a b/c.ipynb",
            ),
        ),
        # only one profile and not marked default: it is used
        ({}, {"profiles": (CASA,)}, UserOptions(profile="casa")),
        # the default is restricted: the one profile the user may use is taken
        (
            {},
            {
                "profiles": (
                    Profile(slug="d", display_name="d", default=True, allowed_groups=("x",)),
                    CASA,
                )
            },
            UserOptions(profile="casa"),
        ),
    ],
)
def test_accepted(raw: dict[str, Any], kwargs: dict[str, Any], expected: UserOptions) -> None:
    options = check(raw, **kwargs)
    assert options == expected
    assert check(options.to_dict(), **kwargs) == options
    assert UserOptions.from_dict(options.to_dict()) == options


# -- refused -----------------------------------------------------------------------------

REFUSED: list[tuple[str, Any, str, str]] = [
    # id, raw options, field, fragment of the message
    ("unknown key", {"image": "x:1"}, "image", "unknown option 'image'; allowed: profile, dataset"),
    ("pod field", {"volumes": []}, "volumes", "unknown option 'volumes'"),
    ("override", {"kubespawner_override": {}}, "kubespawner_override", "unknown option"),
    ("resource", {"cpu_limit": 64}, "cpu_limit", "unknown option"),
    ("profile option", {"profile-option-small--image": "x"}, "profile-option-small--image", ""),
    ("plural datasets", {"datasets": ["a:b"]}, "datasets", "allowed: profile, dataset,"),
    ("not a mapping", ["profile"], "options", "options must be a JSON object, got list"),
    ("profile not text", {"profile": 3}, "profile", "profile must be text, got int"),
    ("profile list", {"profile": ["small"]}, "profile", "profile must be text, got list"),
    (
        "unknown profile",
        {"profile": "huge"},
        "profile",
        "no profile 'huge'; available: small, casa",
    ),
    ("restricted profile", {"profile": "gpu"}, "profile", "it is for members of gpu-users, ml"),
    (
        "dataset number",
        {"dataset": 5},
        "dataset",
        "dataset must be a DID or a list of DIDs, got int",
    ),
    ("dataset mapping", {"dataset": {"a": "b"}}, "dataset", "got dict"),
    ("dataset item number", {"dataset": ["a:b", 7]}, "dataset", "dataset must be text, got int"),
    ("DID without scope", {"dataset": "L123456"}, "dataset", "write it as scope:name"),
    ("DID empty scope", {"dataset": ":L1"}, "dataset", "the scope '' must be 1 to 25"),
    ("DID long scope", {"dataset": "s" * 26 + ":n"}, "dataset", "must be 1 to 25"),
    ("DID bad scope char", {"dataset": "lo/far:L1"}, "dataset", "the scope 'lo/far'"),
    ("DID empty name", {"dataset": "lofar:"}, "dataset", "the name '' must be 1 to 250"),
    ("DID name with slash", {"dataset": "lofar:a/b"}, "dataset", "the name 'a/b'"),
    ("DID name leading dot", {"dataset": "lofar:.hidden"}, "dataset", "the name '.hidden'"),
    ("DID too long", {"dataset": "s:" + "n" * 251}, "dataset", "1 to 250"),
    ("DID with space", {"dataset": "lofar: L1"}, "dataset", "the name ' L1'"),
    ("DID scope ..", {"dataset": "..:L1"}, "dataset", "the scope '..'"),
    ("DID control char", {"dataset": "lofar:L1\x00"}, "dataset", "control characters"),
    ("too many", {"dataset": [f"s:{i}" for i in range(6)]}, "dataset", "6 asked, at most 5"),
    ("http", {"workflow": "http://git.example.org/r"}, "workflow", "must be an https URL"),
    ("git ssh", {"workflow": "git@github.com:a/b.git"}, "workflow", "must be an https URL"),
    ("ssh scheme", {"workflow": "ssh://git.example.org/r"}, "workflow", "https"),
    ("file scheme", {"workflow": "file:///etc/passwd"}, "workflow", "https"),
    ("credentials", {"workflow": "https://u:p@git.example.org/r"}, "workflow", "user name or pass"),
    ("token user", {"workflow": "https://tok@git.example.org/r"}, "workflow", "user name"),
    ("shell chars", {"workflow": "https://h.org/r;rm -rf ~"}, "workflow", "shell characters"),
    ("subshell", {"workflow": "https://h.org/$(id)"}, "workflow", "shell characters"),
    ("backtick", {"workflow": "https://h.org/`id`"}, "workflow", "shell characters"),
    ("query", {"workflow": "https://h.org/r?x=1"}, "workflow", "'?'"),
    ("no repo path", {"workflow": "https://h.org/"}, "workflow", "repository path is missing"),
    ("dot dot in url", {"workflow": "https://h.org/a/../b"}, "workflow", "'..'"),
    ("bad host", {"workflow": "https://h_o st/r"}, "workflow", "host"),
    ("option-like url", {"workflow": "--upload-pack=x"}, "workflow", "https"),
    ("url newline", {"workflow": "https://h.org/r\n"}, "workflow", "control characters"),
    ("ref without workflow", {"ref": "main"}, "ref", "ref needs a workflow"),
    ("filepath without workflow", {"filepath": "a.ipynb"}, "filepath", "needs a workflow"),
]
W = {"workflow": "https://git.example.org/g/r.git"}
REFUSED += [
    (f"ref {ref!r}", {**W, "ref": ref}, "ref", "is not a valid git ref")
    for ref in [
        "-x",
        "a b",
        "a..b",
        "..",
        "a~1",
        "a^",
        "a:b",
        ".hidden",
        "x.lock",
        "a//b",
        "@",
        "x/",
        "a@{1}",
        "b/.c",
        "a*",
        "a[1",
        "a\\b",
        "r" * 256,
    ]
]
REFUSED += [
    (f"ref control {ref!r}", {**W, "ref": ref}, "ref", "control characters")
    for ref in ["a\tb", "x\x7f"]
]
REFUSED += [
    (f"filepath {path!r}", {**W, "filepath": path}, "filepath", fragment)
    for path, fragment in [
        ("/etc/passwd", "relative to the repository"),
        ("../x.ipynb", "must not contain '..'"),
        ("a/../../x", "must not contain '..'"),
        ("a/..", "must not contain '..'"),
        ("a\\b.ipynb", "not '\\'"),
        ("a\x00b", "control characters"),
        ("x" * 1025, "longer than 1024"),
    ]
]


@pytest.mark.parametrize(
    ("raw", "field", "fragment"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
def test_refused(raw: Any, field: str, fragment: str) -> None:
    with pytest.raises(OptionsError) as caught:
        check(raw)
    assert caught.value.field == field
    assert fragment in str(caught.value)
    assert caught.value.forbidden is (raw == {"profile": "gpu"})


def test_no_profile_and_no_default_asks_to_choose() -> None:
    with pytest.raises(OptionsError, match=r"^choose a profile: casa, gpu$") as caught:
        check({}, profiles=(CASA, GPU), admin=True)
    assert caught.value.field == "profile"


def test_no_usable_profile_at_all_is_forbidden() -> None:
    with pytest.raises(OptionsError, match="no profile you may use") as caught:
        check({}, profiles=(GPU,))
    assert caught.value.forbidden


def test_unknown_profile_lists_only_profiles_the_user_may_use() -> None:
    with pytest.raises(OptionsError) as caught:
        check({"profile": "nope"})
    assert str(caught.value) == "no profile 'nope'; available: small, casa"


# -- property: anything in, UserOptions or OptionsError out ---------------------------------

DIDS = st.from_regex(r"\A[a-z0-9_.]{1,6}:[A-Za-z0-9][A-Za-z0-9._-]{0,8}\Z")
VALUES = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.integers(),
    st.booleans(),
    DIDS,
    st.lists(st.one_of(DIDS, DIDS, st.text(max_size=12), st.integers()), max_size=7),
    st.sampled_from(["small", "casa", "gpu", "https://h.org/r", "main", "nb/a.ipynb", "v1.0"]),
    st.from_regex(r"\Ahttps://[a-z.]{1,8}/[A-Za-z0-9/._~-]{1,12}\Z"),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)
KEYS = st.one_of(
    st.sampled_from(ALLOWED_KEYS), st.sampled_from(["image", "volumes"]), st.text(max_size=10)
)
LIKELY = {
    "profile": st.sampled_from(["small", "casa", "gpu"]),
    "dataset": st.lists(DIDS, max_size=6),
    "workflow": st.from_regex(r"\Ahttps://[a-z.]{1,8}/[A-Za-z0-9/._~-]{1,12}\Z"),
    "ref": st.from_regex(r"\A[A-Za-z0-9/._@{-]{1,12}\Z"),
    "filepath": st.from_regex(r"\A[A-Za-z0-9/._ -]{1,12}\Z"),
}
# Mostly the allowed keys with likely values (so acceptance is reached often), sometimes
# anything at all.
RAW = st.one_of(
    st.fixed_dictionaries({}, optional={k: st.one_of(v, v, VALUES) for k, v in LIKELY.items()}),
    st.fixed_dictionaries({}, optional={key: VALUES for key in ALLOWED_KEYS}),
    st.dictionaries(KEYS, VALUES, max_size=6),
)


@settings(max_examples=400, deadline=None)
@given(
    raw=RAW,
    groups=st.lists(st.sampled_from(["gpu-users", "ml", "radio"]), max_size=2),
    admin=st.booleans(),
)
def test_anything_either_validates_or_is_refused(
    raw: dict[str, Any], groups: list[str], admin: bool
) -> None:
    try:
        options = check(raw, groups=tuple(groups), admin=admin)
    except OptionsError as exc:
        assert isinstance(exc.field, str) and str(exc)
        return
    assert set(raw) <= set(ALLOWED_KEYS)
    assert options.profile in {"small", "casa", "gpu"}
    assert all(validate_did(d) == d for d in options.datasets)
    assert len(options.datasets) == len(set(options.datasets)) <= 5
    if options.workflow is not None:
        assert validate_workflow(options.workflow) == options.workflow
    else:
        assert options.ref is None and options.filepath is None
    if options.ref is not None:
        assert validate_ref(options.ref) == options.ref
    if options.filepath is not None:
        assert validate_filepath(options.filepath) == options.filepath
    assert check(options.to_dict(), groups=tuple(groups), admin=admin) == options


@settings(max_examples=200, deadline=None)
@given(form=st.dictionaries(KEYS, st.lists(st.text(max_size=20), max_size=3), max_size=6))
def test_any_form_is_shaped_or_refused(form: dict[str, list[str]]) -> None:
    try:
        raw = options_from_form_data(form)
    except OptionsError as exc:
        assert exc.field in form
        return
    assert "_xsrf" not in raw
    assert all(v != "" for v in raw.values())
    with contextlib.suppress(OptionsError):
        check(raw)


# -- declared once: the query styles, the schema, the form ---------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # JupyterHub 6's style
        (
            {"opt-profile": ["casa"], "opt-dataset": ["a:b"], "next": ["/x"]},
            {"profile": ["casa"], "dataset": ["a:b"]},
        ),
        # the older style, the hub's own arguments left out
        (
            {"profile": ["casa"], "_xsrf": ["t"], "next": ["/x"], "display_name": ["d"]},
            {"profile": ["casa"]},
        ),
        # mixed: as JupyterHub 6 does, the un-prefixed ones are ignored
        ({"opt-profile": ["casa"], "image": ["evil:1"]}, {"profile": ["casa"]}),
        # already stripped by JupyterHub 6: applying the rule again changes nothing
        (
            {"profile": ["casa"], "workflow": ["https://h.org/r"]},
            {"profile": ["casa"], "workflow": ["https://h.org/r"]},
        ),
    ],
)
def test_query_options_follow_jupyterhub_6(
    query: dict[str, list[str]], expected: dict[str, list[str]]
) -> None:
    assert query_options(query) == expected


def test_prefixed_query_is_validated_like_the_plain_one() -> None:
    plain = options_from_query({"profile": ["casa"], "dataset": ["a:b,c:d"], **{"ref": []}})
    prefixed = options_from_query({"opt-profile": ["casa"], "opt-dataset": ["a:b", "c:d"]})
    assert check(plain) == check(prefixed) == UserOptions("casa", ("a:b", "c:d"))
    with pytest.raises(OptionsError, match="unknown option 'image'"):
        check(options_from_query({"opt-profile": ["casa"], "opt-image": ["evil:1"]}))


def test_query_keys_in_each_style() -> None:
    assert query_string_keys("opt")["workflow"] == "opt-workflow"
    assert query_string_keys("plain")["workflow"] == "workflow"
    assert set(query_string_keys("opt")) == set(ALLOWED_KEYS)


@pytest.mark.parametrize("ref", ["HEAD", ""])
def test_head_means_the_default_branch(ref: str) -> None:
    options = check({**W, "ref": ref})
    assert options.ref is None
    assert "ref" not in options.to_dict()


@pytest.mark.parametrize(
    ("url", "hosts", "allowed"),
    [
        ("https://github.com/a/b", (), True),
        ("https://github.com/a/b", ("github.com",), True),
        ("https://GitHub.com:443/a/b", ("github.com",), True),
        ("https://gitlab.com/a/b", ("github.com",), False),
        ("https://git.astron.nl/a/b", ("*.astron.nl",), True),
        ("https://a.b.astron.nl/a/b", ("*.astron.nl",), True),
        ("https://astron.nl/a/b", ("*.astron.nl",), False),
        ("https://evilastron.nl/a/b", ("*.astron.nl",), False),
        ("https://github.com.evil.org/a/b", ("github.com",), False),
    ],
)
def test_workflow_hosts_allowlist(url: str, hosts: tuple[str, ...], allowed: bool) -> None:
    raw = {"workflow": url}
    if allowed:
        assert check_hosts(raw, hosts).workflow == url
        return
    with pytest.raises(OptionsError, match="this hub does not start workflows from") as caught:
        check_hosts(raw, hosts)
    assert caught.value.field == "workflow" and caught.value.forbidden
    assert ", ".join(hosts) in str(caught.value)


def check_hosts(raw: dict[str, Any], hosts: tuple[str, ...]) -> UserOptions:
    return validate_options(
        raw,
        site_profiles=PROFILES,
        groups=(),
        is_admin=False,
        max_datasets=5,
        workflow_hosts=hosts,
    )


def test_schema_is_the_declaration() -> None:
    schema = options_schema()
    assert schema["additionalProperties"] is False
    assert list(schema["properties"]) == list(ALLOWED_KEYS) == [o.name for o in OPTIONS]
    assert schema["dependentRequired"] == {"ref": ["workflow"], "filepath": ["workflow"]}
    for option in OPTIONS:
        assert schema["properties"][option.name]["description"] == option.help
    # narrowed to a caller's profiles, as GET api/v1/options answers
    narrowed = options_schema([SMALL, CASA])["properties"]["profile"]
    assert narrowed["enum"] == ["small", "casa"] and narrowed["default"] == "small"


def test_the_schema_accepts_what_the_validator_accepts() -> None:
    """Valid options, stored as user_options, are valid JSON for the schema; unknown keys
    and dependent keys are refused by both."""
    validator = Draft202012Validator(options_schema())
    accepted = check(
        {
            "profile": "casa",
            "dataset": ["lofar:L1", "a.b:c-d_e.f"],
            **W,
            "ref": "v1",
            "filepath": "nb/a.ipynb",
        }
    ).to_dict()
    assert list(validator.iter_errors(accepted)) == []
    assert list(validator.iter_errors({"profile": "small", "image": "x"}))
    assert list(validator.iter_errors({"ref": "main"}))
    assert list(validator.iter_errors({"dataset": ["no-scope"]}))


def test_openapi_keeps_the_declared_schema() -> None:
    doc = json.loads(OPENAPI.read_text())
    assert doc["components"]["schemas"]["UserOptions"] == options_schema(), (
        "esap_spawner/service/openapi.json: components.schemas.UserOptions differs from the "
        "declaration; replace it with the output of `python -m esap_spawner.spawn.options`"
    )


def test_form_fields_follow_the_declaration() -> None:
    fields = form_fields({"dataset": ["a:b", "c:d"], "workflow": "https://h.org/r", "ref": 3})
    assert [f["option"].name for f in fields] == ["dataset", "workflow", "ref", "filepath"]
    values = {f["option"].name: f["value"] for f in fields}
    assert values == {
        "dataset": "a:b\nc:d",
        "workflow": "https://h.org/r",
        "ref": "",
        "filepath": "",
    }
