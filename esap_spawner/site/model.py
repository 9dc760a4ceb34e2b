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

from esap_spawner.site.checks import (
    SiteProblem,
    format_path,
    json_type,
    mapping,
    semantic_problems,
    translate,
)
from esap_spawner.site.profiles import Gpu, Profile, default_profile
from esap_spawner.site.quantity import parse_bytes, parse_quantity

__all__ = [
    "DataConfig",
    "Facility",
    "LocalRSE",
    "RucioConfig",
    "ServiceConfig",
    "Site",
    "SiteError",
    "SiteProblem",
    "StagingConfig",
    "StaticCatalogue",
    "StaticDataset",
    "WorkflowConfig",
    "format_path",
    "load_site",
    "parse_site",
    "schema",
]

DEFAULT_MOUNT_ROOT = "/home/jovyan/datasets"
DEFAULT_RULE_LIFETIME = 604800
DEFAULT_MAX_DIDS = 100
DEFAULT_MAX_STAGED_FILES = 5000
DEFAULT_MAX_STAGED_BYTES = 100 * 10**9
DEFAULT_MAX_RULES_PER_USER = 20
DEFAULT_STAGING_TIMEOUT = 3600


# -- the result ------------------------------------------------------------------------


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
    """Storage this cluster's pods can mount: a Rucio RSE, or the static catalogue's volume.

    The one type from the site file to the mount: catalogues report locality against it,
    the plan maps PFNs into pods with it (a PFN path under ``pfn_prefix`` is the same file
    under ``mount_path``) and the pod mounts ``volume``, a Kubernetes volume source exactly
    as the site file gives it. ``volume`` is None only for an RSE a catalogue was built
    with by hand (tests, tools): datasets there cannot be mounted.
    """

    name: str
    pfn_prefix: str
    mount_path: str
    volume: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class StagingConfig:
    """Staging with Rucio rules; without ``destination_rse`` nothing is staged."""

    destination_rse: str | None = None
    rule_lifetime: int = DEFAULT_RULE_LIFETIME
    max_dids: int = DEFAULT_MAX_DIDS
    timeout: int = DEFAULT_STAGING_TIMEOUT
    max_files: int = DEFAULT_MAX_STAGED_FILES
    max_bytes: int = DEFAULT_MAX_STAGED_BYTES
    max_rules_per_user: int = DEFAULT_MAX_RULES_PER_USER


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
    def mount_paths(self) -> tuple[str, ...]:
        """Every path the spawner may mount data at in a pod: ``mount_root`` (the datasets
        folder), each local RSE's and the static volume's ``mount_path``."""
        rses = self.rucio.local_rses if self.rucio is not None else ()
        static = (self.static.mount_path,) if self.static is not None else ()
        return (self.mount_root, *(r.mount_path for r in rses), *static)

    @property
    def max_dids(self) -> int:
        """Most datasets one spawn may request (``rucio.staging.max_dids``, else 100)."""
        if self.rucio is not None:
            return self.rucio.staging.max_dids
        return DEFAULT_MAX_DIDS


@dataclass(frozen=True)
class WorkflowConfig:
    """Where workflows may come from: ``allowed_hosts`` empty means any https host."""

    allowed_hosts: tuple[str, ...] = ()


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
    workflows: WorkflowConfig = field(default_factory=WorkflowConfig)
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
        """The profile marked ``default``, else the only profile, else None
        (:func:`esap_spawner.site.profiles.default_profile` over every profile)."""
        return default_profile(self.profiles)

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
    text = resources.files("esap_spawner.site").joinpath("site.schema.json").read_text("utf-8")
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
        except RecursionError:  # PyYAML parses nested collections recursively
            raise SiteError([_too_deep()], source=source) from None
    else:
        data = text_or_mapping
    if not isinstance(data, Mapping):
        what = "an empty file" if data is None else f"a {json_type(data)}"
        problem = SiteProblem(
            "(top level)", f"expected a mapping with facility and profiles, got {what}"
        )
        raise SiteError([problem], source=source)

    try:
        problems = [p for e in _validator().iter_errors(data) for p in translate(e)]
    except RecursionError:  # a mapping nested deeper than Python's stack: jsonschema recurses
        raise SiteError([_too_deep()], source=source) from None
    problems += semantic_problems(data)
    if problems:
        raise SiteError(_in_file_order(problems, data), source=source)
    return _build(data, source=source)


def _too_deep() -> SiteProblem:
    return SiteProblem("(top level)", "the file is nested too deeply to be a site file")


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


_PATH_TOKEN = re.compile(r"\[(\d+)\]|[^.\[\]]+")


def _in_file_order(problems: Iterable[SiteProblem], data: Mapping[str, Any]) -> list[SiteProblem]:
    """Problems without repeats, by top-level section as the file orders them, then by path
    (list indices numerically); within one place, schema errors before rule checks."""
    sections = {key: i for i, key in enumerate(data)}

    def key(problem: SiteProblem) -> tuple[int, list[tuple[int, int, str]]]:
        parts = [
            (0, int(m.group(1)), "") if m.group(1) is not None else (1, 0, m.group(0))
            for m in _PATH_TOKEN.finditer(problem.path)
        ]
        section = parts[0][2] if parts else ""
        return (sections.get(section, len(sections)), parts)

    return sorted(dict.fromkeys(problems), key=key)


# -- building the result ----------------------------------------------------------------


def _cores(raw: Any) -> float | None:
    return None if raw is None else float(parse_quantity(raw))


def _original(raw: Any) -> str | None:
    return None if raw is None else str(raw)


def _byte_count(raw: Any) -> int | None:
    return None if raw is None else parse_bytes(raw)


def _build_profile(raw: Mapping[str, Any]) -> Profile:
    cpu, memory, gpu = (mapping(raw.get(k)) for k in ("cpu", "memory", "gpu"))
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
    staging = mapping(raw.get("staging"))
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
            max_files=staging.get("max_files", DEFAULT_MAX_STAGED_FILES),
            max_bytes=parse_bytes(staging.get("max_bytes", DEFAULT_MAX_STAGED_BYTES)),
            max_rules_per_user=staging.get("max_rules_per_user", DEFAULT_MAX_RULES_PER_USER),
        ),
        **{key: raw[key] for key in optional if key in raw},
    )


def _build(data: Mapping[str, Any], *, source: str) -> Site:
    facility = data["facility"]
    raw_data = mapping(data.get("data"))
    static = raw_data.get("static")
    service = mapping(data.get("service"))
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
            limited_threshold=mapping(service.get("availability")).get("limited_threshold", 2),
            locality_max_dids=mapping(service.get("locality")).get("max_dids", 1000),
        ),
        workflows=WorkflowConfig(
            allowed_hosts=tuple(mapping(data.get("workflows")).get("allowed_hosts") or ())
        ),
        source=source,
    )
