"""User options, declared once: the form, the JSON Schema and the validator come from one list.

:data:`OPTIONS` declares every option a user may send (``profile``, ``dataset``,
``workflow``, ``ref``, ``filepath``): its name (the form field, the query argument and the
JSON key), its label and help for the form, the JSON Schema of its value, and the check
that turns a raw value into a valid one. Everything else is derived from that list, as
dask-gateway's ``options.py`` does:

- :func:`options_schema`: the JSON Schema of the options (``additionalProperties: false``),
  kept as ``UserOptions`` in the service's ``openapi.json`` and served, narrowed to the
  caller's profiles, at ``GET api/v1/options``;
- :func:`form_fields`: the fields of the spawn form (``templates/form.html``);
- :func:`validate_options`: the one validator that the spawn form, ESAP deep links and the
  REST API meet. Only declared keys survive, so nothing a user sends can set an image, a
  volume, a resource or any other pod field. Every refusal is an :class:`OptionsError`
  naming the field and saying what was wrong in words a user understands.

Three ways in, one way through:

- :func:`options_from_form_data` shapes the spawn form's fields,
- :func:`options_from_query` shapes the query string of a deep link, in JupyterHub 6's
  style (``/hub/spawn?opt-profile=<slug>&opt-dataset=<scope:name>&opt-workflow=...``) or
  the older one without ``opt-`` (the rule is JupyterHub 6's: when any argument starts
  with ``opt-``, only those count),
- the JSON body of ``POST /hub/api/users/{name}/server`` is used as it is.

Decisions:

- The form's dataset field is one textarea named ``dataset``; it (and a repeated ``dataset``
  query argument) may hold several DIDs separated by newlines, commas or spaces. DIDs never
  contain those characters, so splitting loses nothing. In JSON, ``dataset`` is a string or a
  list of strings, taken as given (no splitting).
- A DID asked for twice is kept once (first position wins): asking twice is harmless.
- Empty strings and JSON ``null`` mean "not given".
- ``ref=HEAD`` means the repository's default branch, as git and ESAP use it: the same as
  no ref.
- A site may list the hosts workflows may come from (``workflows.allowed_hosts`` in the
  site file); a workflow from any other host is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from esap_spawner.data.did import DID_PATTERN
from esap_spawner.site.profiles import Profile, default_profile, may_use
from esap_spawner.spawn.option_values import (
    MAX_FILEPATH,
    MAX_REF,
    MAX_URL,
    REF_CHARS,
    OptionsError,
    host_allowed,
    text_value,
    validate_did,
    validate_filepath,
    validate_ref,
    validate_workflow,
    workflow_host,
)

__all__ = [
    "ALLOWED_KEYS",
    "OPTIONS",
    "Option",
    "OptionsError",
    "UserOptions",
    "form_fields",
    "host_allowed",
    "options_from_form_data",
    "options_from_query",
    "options_schema",
    "query_options",
    "split_dids",
    "validate_did",
    "validate_filepath",
    "validate_options",
    "validate_ref",
    "validate_workflow",
]

_SPLIT = re.compile(r"[\s,]+")

QUERY_PREFIX = "opt-"
DEFAULT_BRANCH = "HEAD"


@dataclass(frozen=True)
class UserOptions:
    """Validated options of one spawn."""

    profile: str
    datasets: tuple[str, ...] = ()
    workflow: str | None = None
    ref: str | None = None
    filepath: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, stored as the spawner's ``user_options``; valid input again."""
        out: dict[str, Any] = {"profile": self.profile, "dataset": list(self.datasets)}
        for key in ("workflow", "ref", "filepath"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserOptions:
        """Read back what :meth:`to_dict` wrote (trusted, already validated data)."""
        datasets = data.get("dataset") or ()
        return cls(
            profile=str(data["profile"]),
            datasets=(datasets,) if isinstance(datasets, str) else tuple(datasets),
            workflow=data.get("workflow"),
            ref=data.get("ref"),
            filepath=data.get("filepath"),
        )

    @property
    def asks_to_run_code(self) -> bool:
        """True when these options bring someone else's code or data into the server: a
        link carrying them opens the form to confirm instead of starting at once."""
        return bool(self.workflow or self.datasets)


# -- the declaration -------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What the checks need to know about the site and the user."""

    profiles: Sequence[Profile]
    groups: Sequence[str] = ()
    is_admin: bool = False
    max_datasets: int = 100
    workflow_hosts: Sequence[str] = ()


def _check_profile(raw: Any, ctx: Context) -> str:
    usable = [p for p in ctx.profiles if may_use(p, groups=ctx.groups, is_admin=ctx.is_admin)]
    if raw is None:
        chosen = default_profile(usable)
        if chosen is None:
            if not usable:
                raise OptionsError(
                    "profile",
                    "there is no profile you may use; ask the hub's administrators",
                    forbidden=True,
                )
            names = ", ".join(p.slug for p in usable)
            raise OptionsError("profile", f"choose a profile: {names}")
        return chosen.slug
    slug = text_value("profile", raw)
    profile = next((p for p in ctx.profiles if p.slug == slug), None)
    if profile is None:
        names = ", ".join(p.slug for p in usable) or "none"
        raise OptionsError("profile", f"no profile {slug[:80]!r}; available: {names}")
    if profile not in usable:
        raise OptionsError(
            "profile",
            f"you may not use the profile {slug!r}: it is for members of "
            f"{', '.join(profile.allowed_groups)}",
            forbidden=True,
        )
    return slug


def _check_datasets(raw: Any, ctx: Context) -> tuple[str, ...]:
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple):
        raise OptionsError(
            "dataset", f"dataset must be a DID or a list of DIDs, got {type(raw).__name__}"
        )
    dids = tuple(dict.fromkeys(validate_did(d) for d in items))
    if len(dids) > ctx.max_datasets:
        raise OptionsError(
            "dataset",
            f"too many datasets: {len(dids)} asked, at most {ctx.max_datasets} per server",
        )
    return dids


def _check_workflow(raw: Any, ctx: Context) -> str | None:
    if raw is None:
        return None
    url = validate_workflow(raw)
    host = workflow_host(url)
    if not host_allowed(host, ctx.workflow_hosts):
        raise OptionsError(
            "workflow",
            f"this hub does not start workflows from {host}; allowed hosts: "
            f"{', '.join(ctx.workflow_hosts)}",
            forbidden=True,
        )
    return url


def _check_ref(raw: Any, ctx: Context) -> str | None:
    if raw is None:
        return None
    ref = validate_ref(raw)
    return None if ref == DEFAULT_BRANCH else ref


def _check_filepath(raw: Any, ctx: Context) -> str | None:
    return None if raw is None else validate_filepath(raw)


Widget = Literal["profiles", "textarea", "url", "text"]


@dataclass(frozen=True)
class Option:
    """One user option: where it shows, what it accepts, how it is checked.

    ``schema`` is the JSON Schema of the value as the REST API takes it; ``check`` turns a
    raw value (None when not given) into the valid one or raises :class:`OptionsError`;
    ``needs`` names an option that must be given too.
    """

    name: str
    label: str
    help: str
    schema: Mapping[str, Any]
    check: Callable[[Any, Context], Any]
    widget: Widget
    placeholder: str = ""
    needs: str | None = None


_DID_SCHEMA = {"type": "string", "pattern": DID_PATTERN, "examples": ["lofar:L123456"]}

OPTIONS: tuple[Option, ...] = (
    Option(
        name="profile",
        label="Compute profile",
        help="The slug of a compute profile you may use; the site's default profile when "
        "not given.",
        schema={"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"},
        check=_check_profile,
        widget="profiles",
    ),
    Option(
        name="dataset",
        label="Datasets",
        help="Rucio DIDs (scope:name), mounted read-only under ~/datasets; one per line "
        "on the form.",
        schema={"oneOf": [_DID_SCHEMA, {"type": "array", "items": _DID_SCHEMA}]},
        check=_check_datasets,
        widget="textarea",
        placeholder="lofar:L123456",
    ),
    Option(
        name="workflow",
        label="Workflow",
        help="An https git repository, checked out into your home.",
        schema={"type": "string", "format": "uri", "pattern": "^https://", "maxLength": MAX_URL},
        check=_check_workflow,
        widget="url",
        placeholder="https://git.example.org/group/notebooks.git",
    ),
    Option(
        name="ref",
        label="Git ref",
        help="Branch, tag or commit of the workflow; its default branch when not given (or HEAD).",
        schema={"type": "string", "pattern": REF_CHARS.pattern, "maxLength": MAX_REF},
        check=_check_ref,
        widget="text",
        needs="workflow",
    ),
    Option(
        name="filepath",
        label="File to open",
        help="A path inside the workflow's repository, opened in JupyterLab.",
        schema={"type": "string", "maxLength": MAX_FILEPATH},
        check=_check_filepath,
        widget="text",
        needs="workflow",
    ),
)
ALLOWED_KEYS = tuple(o.name for o in OPTIONS)


def options_schema(profiles: Sequence[Profile] | None = None) -> dict[str, Any]:
    """The JSON Schema of the options; with ``profiles``, ``profile`` is one of theirs (and
    defaults to the default one), as ``GET api/v1/options`` answers a caller."""
    properties: dict[str, Any] = {}
    for option in OPTIONS:
        properties[option.name] = {"title": option.label, "description": option.help,
                                   **option.schema}  # fmt: skip
    if profiles is not None:
        slugs = [p.slug for p in profiles]
        properties["profile"] = {**properties["profile"], "enum": slugs}
        default = default_profile(profiles)
        if default is not None:
            properties["profile"]["default"] = default.slug
    return {
        "title": "UserOptions",
        "description": "Options of one spawn: the spawn form's fields, the deep link's query "
        "arguments (opt-<name>) and the REST body of POST /hub/api/users/{name}/server.",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "dependentRequired": {o.name: [o.needs] for o in OPTIONS if o.needs},
    }


def form_fields(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The form's fields after the profiles, each with the text it is prefilled with."""
    fields = []
    for option in OPTIONS:
        if option.widget == "profiles":
            continue
        value = values.get(option.name)
        if isinstance(value, list | tuple):
            text = "\n".join(str(v) for v in value)
        else:
            text = value if isinstance(value, str) else ""
        fields.append({"option": option, "value": text})
    return fields


# -- shaping form and query input ------------------------------------------------------


def _shape(args: Mapping[str, Sequence[str]], *, drop: Iterable[str]) -> dict[str, Any]:
    dropped = set(drop)
    out: dict[str, Any] = {}
    for key, values in args.items():
        if key in dropped:
            continue
        texts = [v for v in (values if isinstance(values, list | tuple) else [values]) if v != ""]
        if key == "dataset":
            dids = split_dids(str(text) for text in texts)
            if dids:
                out[key] = dids
            continue
        if not texts:
            continue
        if len(texts) > 1:
            raise OptionsError(key, f"{key!r} was given {len(texts)} times; give it once")
        out[key] = texts[0]
    return out


def split_dids(texts: Iterable[str]) -> list[str]:
    """The DIDs in form or query texts, which may hold several separated by newlines,
    commas or spaces (DIDs never contain them)."""
    return [did for text in texts for did in _SPLIT.split(text) if did]


def options_from_form_data(form: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Raw options from the spawn form's fields (``{name: [values]}``).

    Drops JupyterHub's ``_xsrf``; single values are un-listed, ``dataset`` stays a list (the
    textarea split at newlines, commas and spaces); empty fields are left out. Unknown keys
    are kept so that :func:`validate_options` can name them.
    """
    return _shape(form, drop=("_xsrf",))


def query_options(query: Mapping[str, Sequence[str]]) -> dict[str, Sequence[str]]:
    """The options in a ``/hub/spawn`` query string, by JupyterHub 6's rule: when any
    argument starts with ``opt-``, only those are options (the prefix removed); otherwise
    every argument but the hub's own (``_xsrf``, ``next``, ``display_name``) is one.
    JupyterHub 6 applies the rule before the spawner sees the query; JupyterHub 5 and the
    form's prefill do not, so it is applied here too (it changes nothing the second time).
    """
    prefixed = {k[len(QUERY_PREFIX) :]: v for k, v in query.items() if k.startswith(QUERY_PREFIX)}
    if prefixed:
        return prefixed
    return {k: v for k, v in query.items() if k not in ("_xsrf", "next", "display_name")}


def options_from_query(query: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Raw options from a deep link's query string (``{name: [values]}``), as the form."""
    return _shape(query_options(query), drop=())


def query_string_keys(style: Literal["opt", "plain"]) -> dict[str, str]:
    """The query argument of each option in a hub's style: ``opt-profile`` (JupyterHub 6)
    or ``profile`` (JupyterHub 5)."""
    prefix = QUERY_PREFIX if style == "opt" else ""
    return {name: prefix + name for name in ALLOWED_KEYS}


# -- the validator ---------------------------------------------------------------------


def validate_options(
    raw: Mapping[str, Any],
    *,
    site_profiles: Sequence[Profile],
    groups: Iterable[str],
    is_admin: bool,
    max_datasets: int,
    workflow_hosts: Sequence[str] = (),
) -> UserOptions:
    """Check raw user options against :data:`OPTIONS` and return them typed, or raise
    :class:`OptionsError`."""
    if not isinstance(raw, Mapping):
        raise OptionsError("options", f"options must be a JSON object, got {type(raw).__name__}")
    for key in raw:
        if key not in ALLOWED_KEYS:
            shown = key[:40] if isinstance(key, str) else repr(key)
            raise OptionsError(
                str(shown), f"unknown option {shown!r}; allowed: {', '.join(ALLOWED_KEYS)}"
            )
    ctx = Context(
        profiles=site_profiles,
        groups=list(groups),
        is_admin=is_admin,
        max_datasets=max_datasets,
        workflow_hosts=workflow_hosts,
    )

    def given(key: str) -> Any:
        value = raw.get(key)
        return None if value == "" else value

    for option in OPTIONS:
        if option.needs and given(option.name) is not None and given(option.needs) is None:
            raise OptionsError(
                option.name,
                f"{option.name} needs a {option.needs} (the repository it belongs to)",
            )
    checked = {option.name: option.check(given(option.name), ctx) for option in OPTIONS}
    return UserOptions(
        profile=checked["profile"],
        datasets=checked["dataset"],
        workflow=checked["workflow"],
        ref=checked["ref"],
        filepath=checked["filepath"],
    )


if __name__ == "__main__":  # the schema kept in the service's openapi.json
    import json

    print(json.dumps(options_schema(), indent=2))
