"""Hostile input against the two parsers users and administrators feed: the user-options
validator (form, deep-link query and REST JSON shapes) and the site-file loader.

The contract under fuzzing:

- :func:`validate_options` either raises :class:`OptionsError` or returns a
  :class:`UserOptions` whose ``to_dict()`` holds only the five allowed keys and validates
  again to the same value; a group-restricted profile never comes back for a user outside
  its groups;
- :func:`parse_site` either raises :class:`SiteError` or returns a :class:`Site`; nothing
  else escapes, whatever the text or mapping.

Then targeted cases: workflow URLs with shell metacharacters and other schemes, path
traversal in ``filepath``, option injection in ``ref``. The outcomes are the hostile-input
table in ``docs/security.md``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from esap_spawner.site.model import Site, SiteError, parse_site
from esap_spawner.spawn.objects import workflow_folder, workflow_url
from esap_spawner.spawn.options import (
    ALLOWED_KEYS,
    OptionsError,
    UserOptions,
    options_from_form_data,
    options_from_query,
    validate_did,
    validate_options,
)

SITE_YAML = """
facility: {name: Fuzz Hub, url: "https://hub.example.org/"}
profiles:
  - slug: small
    display_name: Small
    default: true
    cpu: {guarantee: 0.5, limit: 1}
    memory: {guarantee: 1G, limit: 2G}
    image: quay.io/jupyter/minimal-notebook:2026-01-01
  - slug: gpu
    display_name: GPU
    cpu: {limit: 4}
    memory: {limit: 8G}
    gpu: {count: 1, resource: nvidia.com/gpu}
    allowed_groups: [gpu-users]
"""
SITE = parse_site(SITE_YAML)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The site loader runs a JSON Schema validation per example: fewer, still varied.
FUZZ_SITE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pod fields a hostile client might try to set, and the names KubeSpawner reads.
POD_KEYS = ["image", "volumes", "volume_mounts", "env", "environment", "cpu_limit",
            "mem_limit", "extra_resource_limits", "securityContext", "uid", "privileged",
            "node_selector", "tolerations", "kubespawner_override", "profile_list", "cmd",
            "service_account", "init_containers", "extra_pod_config", "__class__"]  # fmt: skip
KEYS = st.sampled_from([*ALLOWED_KEYS, *POD_KEYS]) | st.text(max_size=12)
HOSTILE_TEXT = st.sampled_from([
    "small", "gpu", "lofar:L123456", "https://git.example.org/a/b.git", "main", "nb.ipynb",
    "../../etc/passwd", "/etc/passwd", "a;rm -rf /", "$(id)", "`id`", "x|y", "a\nb", "\x00",
    "\u202egpu", "gpu\u200b", "🚀:🚀", "file:///etc/passwd", "-oProxyCommand=x", "@{-1}",
    "https://u:p@git.example.org/a.git", "git@github.com:a/b.git", "%2e%2e/x", "\uff0e\uff0e/x",
])  # fmt: skip
SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40)
)
JSON_VALUES = st.recursive(
    SCALARS | HOSTILE_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
FORM_VALUES = st.lists(HOSTILE_TEXT | st.text(max_size=60), max_size=3)


def validate(raw: Any, *, groups: tuple[str, ...] = (), admin: bool = False) -> UserOptions:
    return validate_options(
        raw, site_profiles=SITE.profiles, groups=groups, is_admin=admin, max_datasets=5
    )


def check_accepted(options: UserOptions, *, groups: tuple[str, ...], admin: bool) -> None:
    """What an accepted value must be: closed, re-valid, and allowed for this user."""
    stored = options.to_dict()
    assert set(stored) <= set(ALLOWED_KEYS)
    assert validate(stored, groups=groups, admin=admin) == options
    assert options.profile in SITE.slugs
    if options.profile == "gpu":
        assert admin or "gpu-users" in groups
    for did in options.datasets:
        assert validate_did(did) == did
    if options.filepath is not None:
        assert options.workflow is not None
        folder = workflow_folder(options.workflow)
        assert workflow_url(folder, options.filepath).startswith(f"/lab/tree/{folder}/")


@FUZZ
@given(
    raw=st.dictionaries(KEYS, JSON_VALUES, max_size=6),
    groups=st.sampled_from([(), ("gpu-users",), ("other",)]),
    admin=st.booleans(),
)
@example(raw={"profile": "small", "image": "evil:1"}, groups=(), admin=False)
@example(raw={"profile": "gpu"}, groups=("other",), admin=False)
def test_json_options_only_documented_outcomes(
    raw: dict[Any, Any], groups: tuple[str, ...], admin: bool
) -> None:
    try:
        options = validate(raw, groups=groups, admin=admin)
    except OptionsError as e:
        assert e.message and isinstance(e.field, str)
        return
    assert set(raw) <= set(ALLOWED_KEYS)
    check_accepted(options, groups=groups, admin=admin)


NEAR_VALID = {
    "profile": st.sampled_from(["small", "gpu", "", None]) | HOSTILE_TEXT,
    "dataset": st.lists(st.sampled_from(["lofar:L1", "lofar:L2", "a.b:c-d_e"]) | HOSTILE_TEXT,
                        max_size=7) | HOSTILE_TEXT,
    "workflow": st.sampled_from(["https://git.example.org/a/b.git", "https://h:8443/x", None])
    | HOSTILE_TEXT,
    "ref": st.sampled_from(["main", "v1.0", "feature/x", "0" * 40, None]) | HOSTILE_TEXT,
    "filepath": st.sampled_from(["nb.ipynb", "a/b c.ipynb", "données.ipynb", None])
    | HOSTILE_TEXT,
}  # fmt: skip


@FUZZ
@given(
    raw=st.fixed_dictionaries({}, optional=NEAR_VALID),
    groups=st.sampled_from([(), ("gpu-users",)]),
    admin=st.booleans(),
)
def test_near_valid_options_only_documented_outcomes(
    raw: dict[str, Any], groups: tuple[str, ...], admin: bool
) -> None:
    """The five keys with a mix of good and hostile values: many are accepted, and every
    accepted one is closed, re-valid and allowed."""
    try:
        options = validate(raw, groups=groups, admin=admin)
    except OptionsError as e:
        assert e.field in (*ALLOWED_KEYS, "options")
        return
    check_accepted(options, groups=groups, admin=admin)


@FUZZ
@given(
    args=st.dictionaries(KEYS, FORM_VALUES, max_size=6),
    shape=st.sampled_from([options_from_form_data, options_from_query]),
    groups=st.sampled_from([(), ("gpu-users",)]),
)
def test_form_and_query_options_only_documented_outcomes(
    args: dict[str, list[str]], shape: Any, groups: tuple[str, ...]
) -> None:
    try:
        options = validate(shape(args), groups=groups)
    except OptionsError as e:
        assert e.message
        return
    check_accepted(options, groups=groups, admin=False)


@FUZZ
@given(raw=JSON_VALUES)
def test_options_that_are_not_an_object_are_refused(raw: Any) -> None:
    if isinstance(raw, Mapping):
        return
    with pytest.raises(OptionsError):
        validate(raw)


# -- targeted: what a deep link or a REST body might smuggle ------------------------------

WORKFLOW = "https://git.example.org/group/repo.git"

HOSTILE_WORKFLOWS = [
    "https://git.example.org/a.git;rm -rf ~",
    "https://git.example.org/$(id).git",
    "https://git.example.org/`id`.git",
    "https://git.example.org/a.git|sh",
    "https://git.example.org/a.git\nrm -rf ~",
    "https://git.example.org/a.git&&id",
    "https://git.example.org/a b.git",
    "https://git.example.org/a'b.git",
    "file:///etc/passwd",
    "file://localhost/home/jovyan/.ssh",
    "ssh://git@git.example.org/a.git",
    "git@github.com:a/b.git",
    "git://git.example.org/a.git",
    "ext::sh -c id",
    "http://git.example.org/a.git",
    "https://user:secret@git.example.org/a.git",
    "https://token@git.example.org/a.git",
    "https://git.example.org/a.git?upload-pack=id",
    "https://git.example.org/a.git#frag",
    "https://git.example.org/../../etc",
    "https://-oProxyCommand=id/a.git",
    "https://git.ex\u0430mple.org/a.git",  # Cyrillic a
    "https://git.example.org/\u202ea.git",
    "https://",
    "https://git.example.org/",
    "https://git.example.org/" + "a" * 2100,
]


@pytest.mark.parametrize("url", HOSTILE_WORKFLOWS)
def test_hostile_workflow_urls_are_refused(url: str) -> None:
    with pytest.raises(OptionsError) as refused:
        validate({"profile": "small", "workflow": url})
    assert refused.value.field == "workflow"


HOSTILE_FILEPATHS = [
    "../x.ipynb",
    "a/../../x",
    "..",
    "/etc/passwd",
    "..\\..\\x",
    "a\\b",
    "a\x00b",
    "a\nb",
    "x" * 1100,
]


@pytest.mark.parametrize("path", HOSTILE_FILEPATHS)
def test_path_traversal_in_filepath_is_refused(path: str) -> None:
    with pytest.raises(OptionsError) as refused:
        validate({"profile": "small", "workflow": WORKFLOW, "filepath": path})
    assert refused.value.field == "filepath"


@pytest.mark.parametrize(
    "path", ["%2e%2e/%2e%2e/etc/passwd", "\uff0e\uff0e/x", "\u2025/x", "..%2f..%2fetc", "a/./b"]
)
def test_encoded_and_lookalike_dots_stay_literal_names(path: str) -> None:
    """Accepted as file names: nothing decodes or normalises them, and the URL the server
    opens escapes them, so they cannot climb out of the checkout."""
    options = validate({"profile": "small", "workflow": WORKFLOW, "filepath": path})
    url = workflow_url("repo", options.filepath)
    assert url.startswith("/lab/tree/repo/")
    assert ".." not in url.split("/")


HOSTILE_REFS = ["-u", "--upload-pack=id", "-", "a..b", "..", "a@{1}", "@", "a b", "a\tb",
                "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b", "/main", "main/", "main.",
                "x.lock", ".hidden", "a//b", "a/.b", "a\x00", "r" * 300, "<script>x</script>",
                "v1+build", "@x", "caf\u00e9", "a,b", "a#b", "a'b", "a$b"]  # fmt: skip


@pytest.mark.parametrize("ref", HOSTILE_REFS)
def test_hostile_refs_are_refused(ref: str) -> None:
    with pytest.raises(OptionsError) as refused:
        validate({"profile": "small", "workflow": WORKFLOW, "ref": ref})
    assert refused.value.field == "ref"


REF_ALPHABET = st.sampled_from(list("abcXYZ019_./-@{}~^:?*[]\\ +<>#$,'\"\u00e9")) | st.characters()


@FUZZ
@given(ref=st.text(REF_ALPHABET, min_size=1, max_size=20))
@example(ref="0" * 40)
@example(ref="v1.0")
def test_a_ref_the_validator_accepts_the_checkout_accepts(ref: str) -> None:
    """The init program (datalinks.py) checks the ref again inside the pod: anything the
    spawn accepted must pass there too, or the spawn would fail late and obscurely."""
    from esap_spawner.data.datalinks import git_argvs

    try:
        options = validate({"profile": "small", "workflow": WORKFLOW, "ref": ref})
    except OptionsError:
        return
    assert options.ref is not None
    argvs = git_argvs(WORKFLOW, options.ref, "/home/jovyan/repo")  # raises Refused if not
    assert any(options.ref in argv for argv in argvs)  # one argv item, never split or joined


@FUZZ
@given(path=st.text(st.sampled_from(list("ab0.-_~/%+@=:?#;$ `|\\'\"")), max_size=30))
def test_a_workflow_the_validator_accepts_the_checkout_accepts(path: str) -> None:
    from esap_spawner.data.datalinks import git_argvs

    url = "https://git.example.org/" + path
    try:
        options = validate({"profile": "small", "workflow": url})
    except OptionsError:
        return
    assert options.workflow is not None
    (argv,) = git_argvs(options.workflow, None, "/home/jovyan/repo")
    assert argv[-3:] == ["--", options.workflow, "/home/jovyan/repo"]


@pytest.mark.parametrize(
    "raw",
    [
        {"profile": "small", "dataset": "lofar:L1;id"},
        {"profile": "small", "dataset": "lofar:../../etc"},
        {"profile": "small", "dataset": "lofar:L1\u202e"},
        {"profile": "small", "dataset": "🚀:🚀"},
        {"profile": "small", "dataset": ["lofar:L1", {"did": "x"}]},
        {"profile": "small", "dataset": 1},
        {"profile": "small", "dataset": [f"lofar:L{i}" for i in range(6)]},
        {"profile": "gpu\u200b"},
        {"profile": ["small"]},
        {"profile": "small", "ref": "main"},
    ],
)
def test_other_hostile_options_are_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(OptionsError):
        validate(raw)


def test_a_restricted_profile_is_403_for_outsiders() -> None:
    with pytest.raises(OptionsError) as refused:
        validate({"profile": "gpu"}, groups=("other",))
    assert refused.value.forbidden
    assert validate({"profile": "gpu"}, groups=("gpu-users",)).profile == "gpu"


# -- the site file ---------------------------------------------------------------------------

SITE_KEYS = st.sampled_from([
    "facility", "profiles", "data", "service", "name", "url", "description", "keywords",
    "slug", "display_name", "default", "cpu", "memory", "gpu", "guarantee", "limit", "count",
    "resource", "image", "node_selector", "tolerations", "allowed_groups", "max_servers",
    "kubespawner_override", "catalogue", "mount_root", "rucio", "static", "host", "account",
    "auth_type", "local_rses", "staging", "volume", "mount_path", "pfn_prefix", "datasets",
    "did", "path", "destination_rse", "max_dids", "timeout", "availability", "locality",
])  # fmt: skip
SITE_SCALARS = st.sampled_from(
    [None, True, 0, -1, 1.5, 10**30, "", "1G", "-2Gi", "1e999", "nan", "2", "x" * 300,
     "rucio", "static", "none", "userpass", "../etc", "a:b", "2026-01-01", "1Ki"]
) | st.text(max_size=20) | st.integers() | st.floats()  # fmt: skip
SITE_VALUES = st.recursive(
    SITE_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(SITE_KEYS | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=15,
)


def parse_ok(source: Any) -> None:
    try:
        site = parse_site(source)
    except SiteError as e:
        assert e.problems
        return
    assert isinstance(site, Site)
    assert len(set(site.slugs)) == len(site.slugs)


def mutate(data: Any, path: list[int], value: Any) -> Any:
    """``data`` with the node picked by ``path`` (indices into its children) replaced."""
    if not path or not isinstance(data, dict | list) or not data:
        return value
    if isinstance(data, dict):
        keys = list(data)
        key = keys[path[0] % len(keys)]
        return {**data, key: mutate(data[key], path[1:], value)}
    i = path[0] % len(data)
    return [*data[:i], mutate(data[i], path[1:], value), *data[i + 1 :]]


EXAMPLE = yaml.safe_load(SITE_YAML)


@FUZZ_SITE
@given(path=st.lists(st.integers(0, 20), max_size=5), value=SITE_VALUES)
def test_mutated_site_files_only_documented_outcomes(path: list[int], value: Any) -> None:
    parse_ok(mutate(EXAMPLE, path, value))


@FUZZ_SITE
@given(data=st.dictionaries(SITE_KEYS, SITE_VALUES, max_size=5))
def test_random_site_mappings_only_documented_outcomes(data: dict[str, Any]) -> None:
    parse_ok(data)


@FUZZ_SITE
@given(text=st.text(max_size=300) | st.sampled_from(["[" * 5000, "{a: " * 3000, "*x", "&a [*a]"]))
@example(text=SITE_YAML.replace("small", "small\x00"))
@example(text="!!python/object/apply:os.system ['id']")
@example(text="a: &x [*x, *x]\n")
@example(text="\ufeff" + SITE_YAML)
def test_random_site_text_only_documented_outcomes(text: str) -> None:
    parse_ok(text)


@FUZZ_SITE
@given(data=SITE_VALUES)
def test_site_mutations_as_yaml_text(data: Any) -> None:
    try:
        text = yaml.safe_dump({"facility": EXAMPLE["facility"], "profiles": [data]})
    except yaml.YAMLError:
        return
    parse_ok(text)


def test_deep_nesting_is_a_site_error() -> None:
    with pytest.raises(SiteError):
        parse_site("profiles: " + "[" * 20000 + "]" * 20000)


def test_a_valid_site_survives_a_round_trip() -> None:
    assert posixpath.isabs(SITE.data.mount_root)
    assert parse_site(yaml.safe_dump(EXAMPLE)).slugs == SITE.slugs
