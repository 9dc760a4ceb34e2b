"""The site file: a table of bad files (each with its exact error paths), good files, the CLI."""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Callable
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from esap_spawner.site import cli as site_cli
from esap_spawner.site.model import SiteError, format_path, load_site, parse_site, schema
from esap_spawner.site.quantity import format_bytes

EXAMPLES = Path(str(resources.files("esap_spawner.site").joinpath("examples")))

BASE: dict[str, Any] = {
    "facility": {"name": "Test Hub", "url": "https://hub.example.org/"},
    "profiles": [
        {
            "slug": "small",
            "default": True,
            "cpu": {"guarantee": 0.5, "limit": 2},
            "memory": {"guarantee": "1G", "limit": "4G"},
            "image": "quay.io/jupyter/scipy-notebook:2026-01-01",
        },
        {"slug": "large", "cpu": {"limit": 8}, "memory": {"limit": "32Gi"}},
    ],
    "data": {
        "catalogue": "rucio",
        "rucio": {
            "host": "https://rucio.example.org",
            "account": "esap",
            "username": "esap",
            "password_file": "/etc/esap/rucio-password",
            "local_rses": [
                {
                    "name": "HUB_LOCAL",
                    "pfn_prefix": "/data/rucio/",
                    "mount_path": "/rucio/local",
                    "volume": {"persistentVolumeClaim": {"claimName": "rucio"}},
                }
            ],
            "staging": {"destination_rse": "HUB_LOCAL"},
        },
    },
}

Mutation = Callable[[dict[str, Any]], object]


def problems_of(data: dict[str, Any] | str) -> list[tuple[str, str]]:
    with pytest.raises(SiteError) as caught:
        parse_site(data)
    return [(p.path, p.message) for p in caught.value.problems]


def p0(d: dict[str, Any]) -> dict[str, Any]:
    first: dict[str, Any] = d["profiles"][0]
    return first


def rucio(d: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = d["data"]["rucio"]
    return found


# (id, change to BASE, [(exact path, fragment of the message), ...]): these are ALL the
# problems expected, so an extra or a missing one fails the case.
BAD: list[tuple[str, Mutation, list[tuple[str, str]]]] = [
    (
        "unknown top-level key",
        lambda d: d.update(profile=[]),
        [
            (
                "profile",
                "unknown key 'profile' (did you mean 'profiles'? allowed: facility, profiles",
            )
        ],
    ),
    (
        "unknown nested key",
        lambda d: p0(d)["memory"].update(gaurantee="1G"),
        [("profiles[0].memory.gaurantee", "did you mean 'guarantee'? allowed: guarantee, limit")],
    ),
    (
        "unknown key deep in rucio",
        lambda d: rucio(d)["local_rses"][0].update(path="/x"),
        [("data.rucio.local_rses[0].path", "unknown key 'path'")],
    ),
    (
        "duplicate slug",
        lambda d: d["profiles"].append({"slug": "small"}),
        [("profiles[2].slug", "duplicate slug 'small' (already used by profiles[0])")],
    ),
    (
        "bad slug characters",
        lambda d: p0(d).update(slug="Small_1"),
        [("profiles[0].slug", "only lowercase letters, digits and '-'")],
    ),
    ("slug ending in a dash", lambda d: p0(d).update(slug="small-"), [("profiles[0].slug", "")]),
    (
        "cpu limit below guarantee",
        lambda d: p0(d)["cpu"].update(guarantee=4),
        [("profiles[0].cpu.limit", "limit 2 is below the guarantee 4")],
    ),
    (
        "memory limit below guarantee across units",
        lambda d: p0(d)["memory"].update(guarantee="4Gi"),
        [("profiles[0].memory.limit", "limit '4G' is below the guarantee '4Gi'")],
    ),
    (
        "quantity with a space",
        lambda d: p0(d)["memory"].update(limit="4 GB"),
        [("profiles[0].memory.limit", "not a quantity: '4 GB'")],
    ),
    (
        "negative quantity",
        lambda d: p0(d)["cpu"].update(guarantee="-1"),
        [("profiles[0].cpu.guarantee", "must not be negative, got '-1'")],
    ),
    (
        "quantity in words",
        lambda d: p0(d)["memory"].update(guarantee="four"),
        [("profiles[0].memory.guarantee", "not a quantity: 'four'")],
    ),
    (
        "zero limit",
        lambda d: d["profiles"][1]["cpu"].update(limit=0),
        [("profiles[1].cpu.limit", "must be above 0")],
    ),
    (
        "quantity of the wrong type",
        lambda d: p0(d)["cpu"].update(limit=[2]),
        [("profiles[0].cpu.limit", "expected a number or a string, got list [2]")],
    ),
    (
        "facility name of 31 characters",
        lambda d: d["facility"].update(name="x" * 31),
        [("facility.name", "at most 30 characters, got 31")],
    ),
    (
        "facility description over 240",
        lambda d: d["facility"].update(description="y" * 241),
        [("facility.description", "at most 240 characters, got 241")],
    ),
    (
        "facility url not http",
        lambda d: d["facility"].update(url="hub.example.org"),
        [("facility.url", "an http(s) URL")],
    ),
    (
        "facility without a name",
        lambda d: d["facility"].pop("name"),
        [("facility.name", "required, but missing")],
    ),
    (
        "image without tag",
        lambda d: p0(d).update(image="quay.io/jupyter/scipy-notebook"),
        [("profiles[0].image", "an image with a tag or digest")],
    ),
    (
        "image with a registry port but no tag",
        lambda d: p0(d).update(image="registry:5000/notebook"),
        [("profiles[0].image", "an image with a tag or digest")],
    ),
    (
        "two defaults",
        lambda d: d["profiles"][1].update(default=True),
        [("profiles[1].default", "only one profile may be the default; profiles[0] already is")],
    ),
    (
        "no profiles",
        lambda d: d.update(profiles=[]),
        [("profiles", "at least one profile is required")],
    ),
    (
        "profiles missing",
        lambda d: d.pop("profiles"),
        [("profiles", "required, but missing")],
    ),
    (
        "gpu without resource",
        lambda d: p0(d).update(gpu={"count": 1}),
        [("profiles[0].gpu.resource", "required when gpu.count is above 0")],
    ),
    (
        "negative gpu count",
        lambda d: p0(d).update(gpu={"count": -1, "resource": "nvidia.com/gpu"}),
        [("profiles[0].gpu.count", "at least 0, got -1")],
    ),
    (
        "unknown hardware capability",
        lambda d: p0(d).update(hardware_capabilities=["quantum"]),
        [("profiles[0].hardware_capabilities[0]", "expected one of gpu, high-mem")],
    ),
    (
        "inline password",
        lambda d: rucio(d).update(password="hunter2"),
        [("data.rucio.password", "set password_file, or in an environment variable")],
    ),
    (
        "inline password and no password file",
        lambda d: rucio(d).update(password="hunter2") or rucio(d).pop("password_file"),
        [("data.rucio.password", "never written in the site file")],
    ),
    (
        "userpass without any password source",
        lambda d: rucio(d).pop("password_file"),
        [("data.rucio.password_file", "needs password_file or password_env")],
    ),
    (
        "token auth without token file",
        lambda d: rucio(d).update(auth_type="token"),
        [("data.rucio.token_file", "required for auth_type token")],
    ),
    (
        "unknown auth type",
        lambda d: rucio(d).update(auth_type="kerberos"),
        [("data.rucio.auth_type", "expected one of userpass, oidc, x509, token; got 'kerberos'")],
    ),
    (
        "destination RSE not local",
        lambda d: rucio(d)["staging"].update(destination_rse="FAR_AWAY"),
        [("data.rucio.staging.destination_rse", "'FAR_AWAY' is not one of data.rucio.local_rses")],
    ),
    (
        "staging byte limit not a quantity",
        lambda d: rucio(d)["staging"].update(max_bytes="lots"),
        [("data.rucio.staging.max_bytes", "lots")],
    ),
    (
        "staging byte limit zero",
        lambda d: rucio(d)["staging"].update(max_bytes=0),
        [("data.rucio.staging.max_bytes", "must be above 0")],
    ),
    (
        "staging file limit zero",
        lambda d: rucio(d)["staging"].update(max_files=0),
        [("data.rucio.staging.max_files", "at least 1")],
    ),
    (
        "unknown catalogue",
        lambda d: d["data"].update(catalogue="ftp"),
        [("data.catalogue", "expected one of rucio, static, none; got 'ftp'")],
    ),
    (
        "rucio catalogue without rucio section",
        lambda d: d["data"].pop("rucio"),
        [("data.rucio", "required when catalogue is 'rucio'")],
    ),
    (
        "relative mount path",
        lambda d: rucio(d)["local_rses"][0].update(mount_path="rucio/local"),
        [("data.rucio.local_rses[0].mount_path", "an absolute path")],
    ),
    (
        "volume with two sources",
        lambda d: rucio(d)["local_rses"][0].update(volume={"nfs": {}, "hostPath": {}}),
        [("data.rucio.local_rses[0].volume", "exactly one Kubernetes volume source")],
    ),
    (
        "staging lifetime wrong type",
        lambda d: rucio(d)["staging"].update(rule_lifetime="a week"),
        [("data.rucio.staging.rule_lifetime", "expected a whole number, got string 'a week'")],
    ),
    (
        "static dataset with malformed DID and a .. path",
        lambda d: d["data"].update(
            static={
                "volume": {"nfs": {"server": "nfs", "path": "/a"}},
                "mount_path": "/archive",
                "datasets": [{"did": "no-scope", "path": "../etc"}],
            }
        ),
        [
            ("data.static.datasets[0].did", "a DID written scope:name"),
            ("data.static.datasets[0].path", "must not contain '..'"),
        ],
    ),
    (
        "node selector value not a string",
        lambda d: p0(d).update(node_selector={"gpu.example.org/type": 1}),
        [('profiles[0].node_selector["gpu.example.org/type"]', "expected a string, got number 1")],
    ),
    (
        "max_servers negative",
        lambda d: p0(d).update(max_servers=-2),
        [("profiles[0].max_servers", "at least 0, got -2")],
    ),
]


@pytest.mark.parametrize(("change", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_site_file(change: Mutation, expected: list[tuple[str, str]]) -> None:
    data = copy.deepcopy(BASE)
    change(data)
    found = problems_of(data)
    assert [path for path, _ in found] == [path for path, _ in expected], found
    for (_, message), (_, fragment) in zip(found, expected, strict=True):
        assert fragment in message


def test_base_is_valid() -> None:
    site = parse_site(copy.deepcopy(BASE))
    assert site.slugs == ("small", "large")


def test_every_problem_reported_at_once_in_file_order() -> None:
    data = copy.deepcopy(BASE)
    data["facility"]["name"] = "n" * 41
    p0(data)["slug"] = "Bad Slug"
    p0(data)["memory"]["limit"] = "lots"
    data["profiles"][1]["default"] = True
    rucio(data)["password"] = "x"
    rucio(data)["staging"]["destination_rse"] = "ELSEWHERE"
    assert [p for p, _ in problems_of(data)] == [
        "facility.name",
        "profiles[0].memory.limit",
        "profiles[0].slug",
        "profiles[1].default",
        "data.rucio.password",
        "data.rucio.staging.destination_rse",
    ]
    with pytest.raises(SiteError) as caught:
        parse_site(data, source="hub.yaml")
    assert str(caught.value).splitlines()[0] == "hub.yaml: 6 problems in the site file"
    assert "hub.yaml: facility.name: at most 30 characters, got 41" in str(caught.value)


@pytest.mark.parametrize(
    ("quantity", "expected_bytes"),
    [("4Gi", 4 * 2**30), ("4G", 4 * 10**9), ("500m", 1), (1024, 1024), ("1.5Ki", 1536)],
)
def test_memory_quantities_accepted(quantity: Any, expected_bytes: int) -> None:
    data = copy.deepcopy(BASE)
    p0(data)["memory"] = {"limit": quantity}
    profile = parse_site(data).profile("small")
    assert profile.memory_limit == str(quantity)
    assert profile.memory_limit_bytes == expected_bytes
    assert profile.memory_guarantee is None and profile.memory_guarantee_bytes is None


@pytest.mark.parametrize(
    ("quantity", "cores"), [("500m", 0.5), (2, 2.0), ("1.5", 1.5), (0.25, 0.25)]
)
def test_cpu_quantities_accepted(quantity: Any, cores: float) -> None:
    data = copy.deepcopy(BASE)
    p0(data)["cpu"] = {"guarantee": quantity, "limit": quantity}
    profile = parse_site(data).profile("small")
    assert (profile.cpu_guarantee, profile.cpu_limit) == (cores, cores)


def test_format_bytes_in_decimal_units() -> None:
    # the one byte formatter of the package (spawn messages, locality, the report)
    assert format_bytes(999) == "999 B"
    assert format_bytes(1000) == "1.0 kB"
    assert format_bytes(6.2e9) == "6.2 GB"
    assert format_bytes(3e15) == "3.0 PB"
    assert format_bytes(5e18) == "5000.0 PB"


def test_yaml_syntax_error_has_line_and_column() -> None:
    text = "facility:\n  name: x\n url: y\n"
    assert problems_of(text) == [
        (
            "line 3, column 2",
            "YAML syntax error: expected <block end>, but found '<block mapping start>'",
        )
    ]


def test_yaml_duplicate_key_is_refused_with_its_line() -> None:
    text = "facility:\n  name: a\n  url: https://h/\n  name: b\nprofiles: [{slug: s}]\n"
    assert problems_of(text) == [
        ("line 4, column 3", "YAML syntax error: key 'name' appears twice in one mapping")
    ]


@pytest.mark.parametrize(
    ("text", "fragment"), [("", "got an empty file"), ("- a\n- b\n", "got a list")]
)
def test_not_a_mapping(text: str, fragment: str) -> None:
    [(path, message)] = problems_of(text)
    assert path == "(top level)"
    assert fragment in message


def test_defaults_are_filled_in() -> None:
    data = copy.deepcopy(BASE)
    del data["data"]["catalogue"]
    site = parse_site(data)
    assert site.data.catalogue == "none"
    assert site.data.mount_root == "/home/jovyan/datasets"
    assert site.data.rucio is not None
    staging = site.data.rucio.staging
    assert (staging.rule_lifetime, staging.max_dids, staging.timeout) == (604800, 100, 3600)
    assert (staging.max_files, staging.max_bytes, staging.max_rules_per_user) == (
        5000,
        100 * 10**9,
        20,
    )
    data["data"]["rucio"]["staging"]["max_bytes"] = "2Ti"
    assert parse_site(data).data.rucio.staging.max_bytes == 2 * 2**40  # type: ignore[union-attr]
    assert site.data.max_dids == 100
    assert site.data.rucio.auth_type == "userpass"
    large = site.profile("large")
    assert large.display_name == "large"
    assert large.cpu_guarantee is None and large.memory_limit_bytes == 32 * 2**30
    assert large.gpu.count == 0
    assert (site.service.limited_threshold, site.service.locality_max_dids) == (2, 1000)


def test_profile_lookup_and_default() -> None:
    site = parse_site(copy.deepcopy(BASE))
    assert site.default_profile is not None and site.default_profile.slug == "small"
    with pytest.raises(KeyError, match="no profile 'huge'; available: small, large"):
        site.profile("huge")
    data = copy.deepcopy(BASE)
    del p0(data)["default"]
    assert parse_site(data).default_profile is None
    data["profiles"] = data["profiles"][:1]
    only = parse_site(data).default_profile
    assert only is not None and only.slug == "small"


def test_format_path() -> None:
    assert format_path(["profiles", 1, "memory", "limit"]) == "profiles[1].memory.limit"
    assert format_path(["a", "b.c"]) == 'a["b.c"]'
    assert format_path([]) == "(top level)"


def test_schema_is_valid_and_every_property_is_described() -> None:
    doc = schema()
    Draft202012Validator.check_schema(doc)
    undescribed: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                if "description" not in sub:
                    undescribed.append(f"{where}.{name}")
            if node.get("additionalProperties") is True:
                undescribed.append(f"{where} allows any key")
            for key, sub in node.items():
                walk(sub, f"{where}.{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{where}[{i}]")

    walk(doc, "$")
    assert undescribed == []


def test_examples_are_valid() -> None:
    full = load_site(EXAMPLES / "site.yaml")
    assert full.slugs == ("small", "casa", "gammapy", "gpu")
    gpu = full.profile("gpu")
    assert gpu.allowed_groups == ("gpu-users",)
    assert (gpu.gpu.count, gpu.gpu.resource) == (1, "nvidia.com/gpu")
    assert full.data.rucio is not None
    assert full.data.rucio.local_rse("HUB_LOCAL_DISK") is not None
    minimal = load_site(EXAMPLES / "site-minimal.yaml")
    assert minimal.data.catalogue == "none"
    assert minimal.data.rucio is None
    # the parsed mapping is accepted as well as the text
    as_mapping = yaml.safe_load((EXAMPLES / "site.yaml").read_text())
    assert parse_site(json.loads(json.dumps(as_mapping))) == replace(full, source="site.yaml")


# -- check-config -------------------------------------------------------------------------


def run_check(path: str) -> int:
    parser = argparse.ArgumentParser()
    site_cli.add_arguments(parser)
    return site_cli.run(parser.parse_args([path]))


def test_check_config_ok(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(EXAMPLES / "site.yaml")
    assert run_check(path) == 0
    assert capsys.readouterr().out == (
        f"{path}: OK: facility 'ESCAPE Example Hub', 4 profiles (small, casa, gammapy, gpu), "
        "catalogue rucio with 1 local RSE\n"
    )


def test_check_config_lists_every_problem(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(Path(__file__).parent.parent / "data" / "site-bad.yaml")
    assert run_check(path) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{path}: facility.name: at most 30 characters, got 39",
        f"{path}: profiles[0].cpu.limit: limit 1 is below the guarantee 2",
        f"{path}: profiles[0].image: expected an image with a tag or digest, such as "
        "'quay.io/jupyter/scipy-notebook:2026-01-01'; got 'python'",
        f"{path}: profiles[1].slug: duplicate slug 'small' (already used by profiles[0])",
        f"{path}: 4 problems",
    ]


def test_check_config_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_check("/nonexistent/site.yaml") == 1
    assert capsys.readouterr().err.splitlines()[0] == "/nonexistent/site.yaml: no such file"


def test_check_config_through_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    from esap_spawner import cli

    assert cli.main(["check-config", str(EXAMPLES / "site-minimal.yaml")]) == 0
    assert "OK: facility 'Minimal Hub', 1 profile (default), catalogue none" in (
        capsys.readouterr().out
    )
