"""The site file: facility, compute profiles and data catalogue, validated in one pass.

:func:`load_site` / :func:`parse_site` read a YAML site file, check it against the JSON
Schema kept next to this module (``site.schema.json``, also the Helm chart's values schema)
and against the rules a schema cannot express (unique slugs, limits not below guarantees,
quantities that parse, one default profile, a staging RSE that is local, ...). Every
problem is collected and raised at once as a :class:`SiteError`, each with its path as
written in the file (``profiles[1].memory.limit``) and what was expected. A valid file
becomes a frozen :class:`Site` with every default filled in.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from .profiles import Gpu, Profile
from .quantity import QuantityError, parse_bytes, parse_quantity

DEFAULT_MOUNT_ROOT = "/home/jovyan/datasets"
DEFAULT_RULE_LIFETIME = 604800
DEFAULT_MAX_DIDS = 100
DEFAULT_STAGING_TIMEOUT = 3600


# -- the result ------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteProblem:
    """One thing wrong in a site file: where (as written in the file) and what was expected."""

    path: str
    message: str

    def __str__(self) -> str:
        # An empty path is about the file as a whole (missing, unreadable).
        return f"{self.path}: {self.message}" if self.path else self.message


class SiteError(Exception):
    """A site file that cannot be used; ``problems`` lists everything wrong with it."""

    def __init__(self, problems: Sequence[SiteProblem], *, source: str = "site.yaml") -> None:
        self.problems = list(problems)
        self.source = source
        lines = [f"{source}: {p}" for p in self.problems]
        count = len(self.problems)
        head = f"{source}: {count} problem{'s' if count != 1 else ''} in the site file"
        super().__init__("\n".join([head, *lines]))


@dataclass(frozen=True)
class Facility:
    """The facility as ESAP lists it."""

    name: str
    url: str
    description: str = ""
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class LocalRSE:
    """An RSE whose storage this cluster mounts; ``volume`` is a Kubernetes volume source."""

    name: str
    pfn_prefix: str
    mount_path: str
    volume: Mapping[str, Any]


@dataclass(frozen=True)
class StagingConfig:
    """Staging with Rucio rules; without ``destination_rse`` nothing is staged."""

    destination_rse: str | None = None
    rule_lifetime: int = DEFAULT_RULE_LIFETIME
    max_dids: int = DEFAULT_MAX_DIDS
    timeout: int = DEFAULT_STAGING_TIMEOUT


@dataclass(frozen=True)
class RucioConfig:
    """Rucio server, account and credentials (by file or environment variable only)."""

    host: str
    account: str
    auth_host: str | None = None
    vo: str | None = None
    auth_type: str = "userpass"
    username: str | None = None
    password_file: str | None = None
    password_env: str | None = None
    token_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None
    ca_cert_file: str | None = None
    local_rses: tuple[LocalRSE, ...] = ()
    staging: StagingConfig = field(default_factory=StagingConfig)

    def local_rse(self, name: str) -> LocalRSE | None:
        return next((r for r in self.local_rses if r.name == name), None)


@dataclass(frozen=True)
class StaticDataset:
    did: str
    path: str


@dataclass(frozen=True)
class StaticCatalogue:
    """Datasets already on one mounted volume."""

    volume: Mapping[str, Any]
    mount_path: str
    datasets: tuple[StaticDataset, ...] = ()


@dataclass(frozen=True)
class DataConfig:
    catalogue: str = "none"
    mount_root: str = DEFAULT_MOUNT_ROOT
    rucio: RucioConfig | None = None
    static: StaticCatalogue | None = None

    @property
    def max_dids(self) -> int:
        """Most datasets one spawn may request (``rucio.staging.max_dids``, else 100)."""
        if self.rucio is not None:
            return self.rucio.staging.max_dids
        return DEFAULT_MAX_DIDS


@dataclass(frozen=True)
class ServiceConfig:
    limited_threshold: int = 2
    locality_max_dids: int = 1000


@dataclass(frozen=True)
class Site:
    """A validated site file."""

    facility: Facility
    profiles: tuple[Profile, ...]
    data: DataConfig = field(default_factory=DataConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    source: str = "site.yaml"

    def profile(self, slug: str) -> Profile:
        """The profile named ``slug``; :class:`KeyError` naming the slugs there are."""
        for p in self.profiles:
            if p.slug == slug:
                return p
        raise KeyError(f"no profile {slug!r}; available: {', '.join(self.slugs)}")

    @property
    def slugs(self) -> tuple[str, ...]:
        return tuple(p.slug for p in self.profiles)

    @property
    def default_profile(self) -> Profile | None:
        """The profile marked ``default``, else the only profile, else None."""
        marked = [p for p in self.profiles if p.default]
        if marked:
            return marked[0]
        return self.profiles[0] if len(self.profiles) == 1 else None

    def summary(self) -> str:
        """One line: facility, profiles, catalogue."""
        n = len(self.profiles)
        text = (
            f"facility {self.facility.name!r}, {n} profile{'s' if n != 1 else ''} "
            f"({', '.join(self.slugs)}), catalogue {self.data.catalogue}"
        )
        if self.data.catalogue == "rucio" and self.data.rucio is not None:
            k = len(self.data.rucio.local_rses)
            text += f" with {k} local RSE{'s' if k != 1 else ''}"
        elif self.data.catalogue == "static" and self.data.static is not None:
            k = len(self.data.static.datasets)
            text += f" with {k} dataset{'s' if k != 1 else ''}"
        return text


# -- loading -----------------------------------------------------------------------------


@cache
def schema() -> dict[str, Any]:
    """The site file's JSON Schema (draft 2020-12)."""
    text = resources.files("esap_spawner").joinpath("site.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema())


def load_site(path: str | Path) -> Site:
    """Read and validate the site file at ``path``."""
    source = str(path)
    try:
        text = Path(path).read_text("utf-8")
    except FileNotFoundError:
        raise SiteError([SiteProblem("", "no such file")], source=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SiteError([SiteProblem("", f"cannot read: {exc}")], source=source) from None
    return parse_site(text, source=source)


def parse_site(text_or_mapping: str | Mapping[str, Any], *, source: str = "site.yaml") -> Site:
    """Validate a site file given as YAML text or as an already parsed mapping."""
    if isinstance(text_or_mapping, str):
        try:
            data = yaml.load(text_or_mapping, Loader=_StrictLoader)  # a SafeLoader
        except yaml.MarkedYAMLError as exc:
            raise SiteError([_yaml_problem(exc)], source=source) from None
        except yaml.YAMLError as exc:
            raise SiteError([SiteProblem("(yaml)", f"YAML error: {exc}")], source=source) from None
    else:
        data = text_or_mapping
    if not isinstance(data, Mapping):
        what = "an empty file" if data is None else f"a {_json_type(data)}"
        problem = SiteProblem(
            "(top level)", f"expected a mapping with facility and profiles, got {what}"
        )
        raise SiteError([problem], source=source)

    problems = [p for e in _validator().iter_errors(data) for p in _translate(e)]
    problems += _semantic_problems(data)
    if problems:
        raise SiteError(_dedupe(problems), source=source)
    return _build(data, source=source)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, str | int | float | bool) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_problem(exc: yaml.MarkedYAMLError) -> SiteProblem:
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
    what = exc.problem or exc.context or "malformed"
    return SiteProblem(where, f"YAML syntax error: {what}")


def _dedupe(problems: Iterable[SiteProblem]) -> list[SiteProblem]:
    return list(dict.fromkeys(problems))


# -- paths and words -------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def format_path(parts: Iterable[str | int]) -> str:
    """``["profiles", 1, "memory", "limit"]`` -> ``profiles[1].memory.limit``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out or "(top level)"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}

_PATTERN_WORDS = {
    "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$": (
        "only lowercase letters, digits and '-', starting and ending with a letter or digit"
    ),
    "^/": "an absolute path (starting with '/')",
    "^[^/]": "a relative path (not starting with '/')",
    "^[A-Za-z_][A-Za-z0-9_]*$": "an environment variable name",
    "^[A-Za-z0-9_-]+$": "letters, digits, '_' and '-' only",
}

_SECRET_KEYS = {
    "password": "a password is never written in the site file: put it in a file and set "
    "password_file, or in an environment variable and set password_env",
    "token": "a token is never written in the site file: put it in a file and set token_file",
}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _pattern_words(pattern: str, path: list[str | int]) -> str:
    if pattern in _PATTERN_WORDS:
        return _PATTERN_WORDS[pattern]
    last = path[-1] if path else ""
    if last == "image":
        return "an image with a tag or digest, such as 'quay.io/jupyter/scipy-notebook:2026-01-01'"
    if last == "did":
        return "a DID written scope:name (scope up to 25 of A-Z a-z 0-9 _ . -)"
    if last in {"url", "host", "auth_host"}:
        return "an http(s) URL such as 'https://hub.example.org/'"
    if last == "resource":
        return "an extended resource name such as 'nvidia.com/gpu'"
    return f"text matching {pattern}"


def _translate(error: ValidationError) -> list[SiteProblem]:
    """One schema error in plain words (several for several unknown keys)."""
    path = list(error.absolute_path)
    where = format_path(path)
    value = error.instance
    kind = error.validator
    expected = error.validator_value
    if kind == "additionalProperties" and isinstance(value, Mapping):
        allowed = list(error.schema.get("properties", {}))
        out = []
        for key in value:
            if key in allowed:
                continue
            key_path = format_path([*path, str(key)])
            if key in _SECRET_KEYS:
                out.append(SiteProblem(key_path, _SECRET_KEYS[key]))
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            out.append(
                SiteProblem(key_path, f"unknown key {key!r} ({hint}allowed: {', '.join(allowed)})")
            )
        return out
    if kind == "required" and isinstance(value, Mapping):
        return [
            SiteProblem(format_path([*path, key]), "required, but missing")
            for key in expected
            if key not in value
        ]
    if kind == "type":
        names = [expected] if isinstance(expected, str) else list(expected)
        words = " or ".join(_TYPE_WORDS.get(n, n) for n in names)
        message = f"expected {words}, got {_json_type(value)} {_short(value)}"
    elif kind == "enum":
        message = f"expected one of {', '.join(map(str, expected))}; got {_short(value)}"
    elif kind == "maxLength":
        message = f"at most {expected} characters, got {len(value)}"
    elif kind == "minLength":
        message = "must not be empty" if expected == 1 else f"at least {expected} characters"
    elif kind == "pattern":
        message = f"expected {_pattern_words(expected, path)}; got {_short(value)}"
    elif kind == "minimum":
        message = f"at least {expected}, got {_short(value)}"
    elif kind == "maximum":
        message = f"at most {expected}, got {_short(value)}"
    elif kind == "minItems":
        message = (
            "at least one profile is required"
            if path == ["profiles"]
            else f"at least {expected} item{'s' if expected != 1 else ''} required"
        )
    elif kind == "uniqueItems":
        message = "each entry may appear only once"
    elif kind in {"minProperties", "maxProperties"} and path and path[-1] == "volume":
        message = (
            "expected exactly one Kubernetes volume source, such as "
            "{persistentVolumeClaim: {claimName: data}}"
        )
    else:
        message = error.message
    return [SiteProblem(where, message)]


# -- rules the schema cannot express ---------------------------------------------------


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _quantity(raw: Any, where: str, problems: list[SiteProblem], *, positive: bool = False) -> Any:
    """The parsed quantity, or None (and a problem) if it does not parse or is negative."""
    if raw is None or isinstance(raw, bool) or not isinstance(raw, str | int | float):
        return None  # absent, or a type error the schema reports
    try:
        value = parse_quantity(raw)
    except QuantityError as exc:
        problems.append(SiteProblem(where, str(exc)))
        return None
    if value < 0:
        problems.append(SiteProblem(where, f"must not be negative, got {_short(raw)}"))
        return None
    if positive and value == 0:
        problems.append(SiteProblem(where, "must be above 0 (leave it out for no limit)"))
        return None
    return value


def _semantic_problems(data: Mapping[str, Any]) -> list[SiteProblem]:
    problems: list[SiteProblem] = []
    _profile_problems(_items(data.get("profiles")), problems)
    _data_problems(_mapping(data.get("data")), problems)
    return problems


def _profile_problems(profiles: list[Any], problems: list[SiteProblem]) -> None:
    first_slug: dict[str, int] = {}
    first_default: int | None = None
    for i, raw in enumerate(profiles):
        profile = _mapping(raw)
        at = f"profiles[{i}]"
        slug = profile.get("slug")
        if isinstance(slug, str):
            if slug in first_slug:
                problems.append(
                    SiteProblem(
                        f"{at}.slug",
                        f"duplicate slug {slug!r} (already used by profiles[{first_slug[slug]}])",
                    )
                )
            else:
                first_slug[slug] = i
        if profile.get("default") is True:
            if first_default is None:
                first_default = i
            else:
                problems.append(
                    SiteProblem(
                        f"{at}.default",
                        "only one profile may be the default; "
                        f"profiles[{first_default}] already is",
                    )
                )
        for resource in ("cpu", "memory"):
            spec = _mapping(profile.get(resource))
            guarantee = _quantity(spec.get("guarantee"), f"{at}.{resource}.guarantee", problems)
            limit = _quantity(spec.get("limit"), f"{at}.{resource}.limit", problems, positive=True)
            if guarantee is not None and limit is not None and limit < guarantee:
                problems.append(
                    SiteProblem(
                        f"{at}.{resource}.limit",
                        f"limit {spec['limit']!r} is below the guarantee {spec['guarantee']!r}",
                    )
                )
        gpu = _mapping(profile.get("gpu"))
        count = gpu.get("count")
        gpu_count = isinstance(count, int) and not isinstance(count, bool) and count > 0
        if gpu_count and not gpu.get("resource"):
            problems.append(
                SiteProblem(
                    f"{at}.gpu.resource",
                    "required when gpu.count is above 0 (for example nvidia.com/gpu)",
                )
            )


def _data_problems(data: Mapping[str, Any], problems: list[SiteProblem]) -> None:
    catalogue = data.get("catalogue", "none")
    for name in ("rucio", "static"):
        if catalogue == name and name not in data:
            problems.append(SiteProblem(f"data.{name}", f"required when catalogue is {name!r}"))
    rucio = _mapping(data.get("rucio"))
    if rucio:
        _rucio_problems(rucio, problems)
    static = _mapping(data.get("static"))
    seen: dict[str, int] = {}
    for i, raw in enumerate(_items(static.get("datasets"))):
        entry = _mapping(raw)
        did, path = entry.get("did"), entry.get("path")
        if isinstance(did, str):
            if did in seen:
                problems.append(
                    SiteProblem(
                        f"data.static.datasets[{i}].did",
                        f"duplicate DID {did!r} (already data.static.datasets[{seen[did]}])",
                    )
                )
            seen.setdefault(did, i)
        if isinstance(path, str) and ".." in path.split("/"):
            problems.append(
                SiteProblem(f"data.static.datasets[{i}].path", "must not contain '..' segments")
            )


def _rucio_problems(rucio: Mapping[str, Any], problems: list[SiteProblem]) -> None:
    names: list[str] = []
    for i, raw in enumerate(_items(rucio.get("local_rses"))):
        name = _mapping(raw).get("name")
        if isinstance(name, str):
            if name in names:
                problems.append(
                    SiteProblem(f"data.rucio.local_rses[{i}].name", f"duplicate RSE {name!r}")
                )
            names.append(name)
    destination = _mapping(rucio.get("staging")).get("destination_rse")
    if isinstance(destination, str) and destination not in names:
        known = f"the local RSEs are {', '.join(names)}" if names else "no local_rses are listed"
        problems.append(
            SiteProblem(
                "data.rucio.staging.destination_rse",
                f"{destination!r} is not one of data.rucio.local_rses ({known}); "
                "staging must copy to storage this cluster mounts",
            )
        )
    auth = rucio.get("auth_type", "userpass")
    if auth == "userpass":
        if "username" not in rucio:
            problems.append(SiteProblem("data.rucio.username", "required for auth_type userpass"))
        given = [k for k in ("password_file", "password_env") if k in rucio]
        if not given and "password" not in rucio:
            problems.append(
                SiteProblem(
                    "data.rucio.password_file",
                    "auth_type userpass needs password_file or password_env",
                )
            )
        elif len(given) == 2:
            problems.append(
                SiteProblem(
                    "data.rucio.password_env", "give password_file or password_env, not both"
                )
            )
    elif auth in {"token", "oidc"} and "token_file" not in rucio:
        problems.append(SiteProblem("data.rucio.token_file", f"required for auth_type {auth}"))
    elif auth == "x509" and "client_cert_file" not in rucio:
        problems.append(SiteProblem("data.rucio.client_cert_file", "required for auth_type x509"))


# -- building the result ----------------------------------------------------------------


def _cores(raw: Any) -> float | None:
    return None if raw is None else float(parse_quantity(raw))


def _original(raw: Any) -> str | None:
    return None if raw is None else str(raw)


def _byte_count(raw: Any) -> int | None:
    return None if raw is None else parse_bytes(raw)


def _build_profile(raw: Mapping[str, Any]) -> Profile:
    cpu, memory, gpu = (_mapping(raw.get(k)) for k in ("cpu", "memory", "gpu"))
    count = int(gpu.get("count", 0))
    return Profile(
        slug=raw["slug"],
        display_name=raw.get("display_name") or raw["slug"],
        description=raw.get("description", ""),
        default=bool(raw.get("default", False)),
        cpu_guarantee=_cores(cpu.get("guarantee")),
        cpu_limit=_cores(cpu.get("limit")),
        memory_guarantee=_original(memory.get("guarantee")),
        memory_limit=_original(memory.get("limit")),
        memory_guarantee_bytes=_byte_count(memory.get("guarantee")),
        memory_limit_bytes=_byte_count(memory.get("limit")),
        gpu=Gpu(count=count, resource=gpu.get("resource"), model=gpu.get("model")),
        image=raw.get("image"),
        node_selector=dict(raw.get("node_selector") or {}),
        tolerations=tuple(dict(t) for t in raw.get("tolerations") or ()),
        allowed_groups=tuple(raw.get("allowed_groups") or ()),
        max_servers=raw.get("max_servers"),
        hardware_capabilities=tuple(raw.get("hardware_capabilities") or ()),
        kubespawner_override=dict(raw.get("kubespawner_override") or {}),
    )


def _build_rucio(raw: Mapping[str, Any]) -> RucioConfig:
    staging = _mapping(raw.get("staging"))
    optional = (
        "auth_host",
        "vo",
        "username",
        "password_file",
        "password_env",
        "token_file",
        "client_cert_file",
        "client_key_file",
        "ca_cert_file",
    )
    return RucioConfig(
        host=raw["host"],
        account=raw["account"],
        auth_type=raw.get("auth_type", "userpass"),
        local_rses=tuple(
            LocalRSE(
                name=r["name"],
                pfn_prefix=r["pfn_prefix"],
                mount_path=r["mount_path"],
                volume=dict(r["volume"]),
            )
            for r in raw.get("local_rses") or ()
        ),
        staging=StagingConfig(
            destination_rse=staging.get("destination_rse"),
            rule_lifetime=staging.get("rule_lifetime", DEFAULT_RULE_LIFETIME),
            max_dids=staging.get("max_dids", DEFAULT_MAX_DIDS),
            timeout=staging.get("timeout", DEFAULT_STAGING_TIMEOUT),
        ),
        **{key: raw[key] for key in optional if key in raw},
    )


def _build(data: Mapping[str, Any], *, source: str) -> Site:
    facility = data["facility"]
    raw_data = _mapping(data.get("data"))
    static = raw_data.get("static")
    service = _mapping(data.get("service"))
    return Site(
        facility=Facility(
            name=facility["name"],
            url=facility["url"],
            description=facility.get("description", ""),
            keywords=tuple(facility.get("keywords") or ()),
        ),
        profiles=tuple(_build_profile(p) for p in data["profiles"]),
        data=DataConfig(
            catalogue=raw_data.get("catalogue", "none"),
            mount_root=raw_data.get("mount_root", DEFAULT_MOUNT_ROOT),
            rucio=_build_rucio(raw_data["rucio"]) if "rucio" in raw_data else None,
            static=StaticCatalogue(
                volume=dict(static["volume"]),
                mount_path=static["mount_path"],
                datasets=tuple(
                    StaticDataset(did=d["did"], path=d["path"]) for d in static.get("datasets", ())
                ),
            )
            if static
            else None,
        ),
        service=ServiceConfig(
            limited_threshold=_mapping(service.get("availability")).get("limited_threshold", 2),
            locality_max_dids=_mapping(service.get("locality")).get("max_dids", 1000),
        ),
        source=source,
    )
