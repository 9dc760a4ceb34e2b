"""Site-file checks: schema errors in plain words, and the rules a schema cannot express.

:func:`translate` turns one ``jsonschema`` error into :class:`SiteProblem` s whose path is
written as in the file (``profiles[1].memory.limit``) and whose message says what was
expected ("unknown key 'foo' (allowed: a, b)", "at most 30 characters, got 41").
:func:`semantic_problems` checks what JSON Schema cannot: unique slugs and RSE names,
quantities that parse and are not negative, limits not below guarantees, one default
profile, a GPU resource name, a staging RSE among the local RSEs, credentials that match
the auth type. Both are pure; :mod:`esap_spawner.site.model` runs them and builds the result.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema.exceptions import ValidationError

from esap_spawner.site.quantity import QuantityError, parse_quantity


@dataclass(frozen=True)
class SiteProblem:
    """One thing wrong in a site file: where (as written in the file) and what was expected."""

    path: str
    message: str

    def __str__(self) -> str:
        # An empty path is about the file as a whole (missing, unreadable).
        return f"{self.path}: {self.message}" if self.path else self.message


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


def json_type(value: Any) -> str:
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
        return (
            "a DID written scope:name (scope: 1 to 25 of A-Z a-z 0-9 _ . -, not starting "
            "with '.' or '-'; name: 1 to 250 of the same, starting with a letter or digit)"
        )
    if last in {"url", "host", "auth_host"}:
        return "an http(s) URL such as 'https://hub.example.org/'"
    if last == "resource":
        return "an extended resource name such as 'nvidia.com/gpu'"
    return f"text matching {pattern}"


def translate(error: ValidationError) -> list[SiteProblem]:
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
        message = f"expected {words}, got {json_type(value)} {_short(value)}"
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


def mapping(value: Any) -> Mapping[str, Any]:
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


def semantic_problems(data: Mapping[str, Any]) -> list[SiteProblem]:
    problems: list[SiteProblem] = []
    _profile_problems(_items(data.get("profiles")), problems)
    _data_problems(mapping(data.get("data")), problems)
    return problems


def _profile_problems(profiles: list[Any], problems: list[SiteProblem]) -> None:
    first_slug: dict[str, int] = {}
    first_default: int | None = None
    for i, raw in enumerate(profiles):
        profile = mapping(raw)
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
            spec = mapping(profile.get(resource))
            guarantee = _quantity(spec.get("guarantee"), f"{at}.{resource}.guarantee", problems)
            limit = _quantity(spec.get("limit"), f"{at}.{resource}.limit", problems, positive=True)
            if guarantee is not None and limit is not None and limit < guarantee:
                problems.append(
                    SiteProblem(
                        f"{at}.{resource}.limit",
                        f"limit {spec['limit']!r} is below the guarantee {spec['guarantee']!r}",
                    )
                )
        gpu = mapping(profile.get("gpu"))
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
    rucio = mapping(data.get("rucio"))
    if rucio:
        _rucio_problems(rucio, problems)
    static = mapping(data.get("static"))
    seen: dict[str, int] = {}
    for i, raw in enumerate(_items(static.get("datasets"))):
        entry = mapping(raw)
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
        name = mapping(raw).get("name")
        if isinstance(name, str):
            if name in names:
                problems.append(
                    SiteProblem(f"data.rucio.local_rses[{i}].name", f"duplicate RSE {name!r}")
                )
            names.append(name)
    staging = mapping(rucio.get("staging"))
    _quantity(staging.get("max_bytes"), "data.rucio.staging.max_bytes", problems, positive=True)
    destination = staging.get("destination_rse")
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
