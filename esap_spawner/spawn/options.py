"""User options: the one validator that the spawn form, ESAP deep links and the REST API meet.

Three ways in, one way through:

- :func:`options_from_form_data` shapes the spawn form's fields,
- :func:`options_from_query` shapes the query string of an ESAP deep link
  (``/hub/spawn?profile=<slug>&dataset=<scope:name>&dataset=...&workflow=<https-url>&ref=<ref>&filepath=<path>``),
- the JSON body of ``POST /hub/api/users/{name}/server`` is used as it is,

and all three go through :func:`validate_options`, which accepts only the keys ``profile``,
``dataset``, ``workflow``, ``ref`` and ``filepath`` and returns a :class:`UserOptions`. No other
key survives, so nothing a user sends can set an image, a volume, a resource or any other pod
field. Every refusal is an :class:`OptionsError` naming the field and saying what was wrong in
words a user understands.

Decisions:

- The form's dataset field is one textarea named ``dataset``; it (and a repeated ``dataset``
  query argument) may hold several DIDs separated by newlines, commas or spaces. DIDs never
  contain those characters, so splitting loses nothing. In JSON, ``dataset`` is a string or a
  list of strings, taken as given (no splitting).
- A DID asked for twice is kept once (first position wins): asking twice is harmless.
- Empty strings and JSON ``null`` mean "not given".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from esap_spawner.data.did import DidError, parse_did
from esap_spawner.site.profiles import Profile, default_profile, may_use

ALLOWED_KEYS = ("profile", "dataset", "workflow", "ref", "filepath")

_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?(:[0-9]{1,5})?$")
_URL_PATH = re.compile(r"^[A-Za-z0-9._~/%+\-@=]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What the checkout init program (datalinks.py) accepts: refuse the rest here, at once.
_REF_CHARS = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./\-]*$")
_SPLIT = re.compile(r"[\s,]+")
MAX_URL = 2000
MAX_REF = 255
MAX_FILEPATH = 1024


class OptionsError(ValueError):
    """User options refused. ``field`` names the option; ``forbidden`` marks a refusal on
    permission (a profile the user may not use), which callers answer with 403."""

    def __init__(self, field: str, message: str, *, forbidden: bool = False) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.forbidden = forbidden


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


# -- shaping form and query input ------------------------------------------------------


def _shape(args: Mapping[str, Sequence[str]], *, drop: Iterable[str]) -> dict[str, Any]:
    dropped = set(drop)
    out: dict[str, Any] = {}
    for key, values in args.items():
        if key in dropped:
            continue
        texts = [v for v in (values if isinstance(values, list | tuple) else [values]) if v != ""]
        if key == "dataset":
            dids = [d for text in texts for d in _SPLIT.split(str(text)) if d]
            if dids:
                out[key] = dids
            continue
        if not texts:
            continue
        if len(texts) > 1:
            raise OptionsError(key, f"{key!r} was given {len(texts)} times; give it once")
        out[key] = texts[0]
    return out


def options_from_form_data(form: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Raw options from the spawn form's fields (``{name: [values]}``).

    Drops JupyterHub's ``_xsrf``; single values are un-listed, ``dataset`` stays a list (the
    textarea split at newlines, commas and spaces); empty fields are left out. Unknown keys
    are kept so that :func:`validate_options` can name them.
    """
    return _shape(form, drop=("_xsrf",))


def options_from_query(query: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Raw options from a deep link's query string (``{name: [values]}``), as the form."""
    return _shape(query, drop=("_xsrf", "next"))


# -- validators, one per field ---------------------------------------------------------


def _text(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise OptionsError(field, f"{field} must be text, got {type(value).__name__}")
    if _CONTROL.search(value):
        raise OptionsError(field, f"{field} must not contain control characters")
    return value


def validate_did(did: Any) -> str:
    """A DID written ``scope:name`` (the grammar: :func:`esap_spawner.data.did.parse_did`)."""
    text = _text("dataset", did)
    try:
        parse_did(text)
    except DidError as e:
        raise OptionsError("dataset", f"dataset {e}") from None
    return text


def validate_workflow(url: Any) -> str:
    """An ``https://host/path`` git URL without credentials, query or shell characters."""
    text = _text("workflow", url).strip()
    refuse = "workflow must be an https URL of a git repository, e.g. https://git.example.org/group/repo.git"
    if len(text) > MAX_URL:
        raise OptionsError("workflow", f"workflow URL is longer than {MAX_URL} characters")
    if not text.lower().startswith("https://"):
        raise OptionsError("workflow", f"{refuse}; got {text[:80]!r}")
    parts = urlsplit(text)
    if "@" in parts.netloc:
        raise OptionsError("workflow", "workflow URL must not carry a user name or password")
    if not _HOST.match(parts.netloc):
        raise OptionsError("workflow", f"{refuse}; the host {parts.netloc!r} is not valid")
    if parts.query or parts.fragment or not _URL_PATH.match(parts.path):
        raise OptionsError(
            "workflow", f"{refuse}; it may not contain spaces, quotes, '?', '#' or shell characters"
        )
    if ".." in parts.path.split("/"):
        raise OptionsError("workflow", "workflow URL must not contain '..' segments")
    if parts.path.strip("/") == "":
        raise OptionsError("workflow", f"{refuse}; the repository path is missing")
    return text


def validate_ref(ref: Any) -> str:
    """A git branch, tag or commit following ``git check-ref-format`` rules."""
    text = _text("ref", ref)
    problem = None
    if len(text) > MAX_REF:
        problem = f"at most {MAX_REF} characters"
    elif text.startswith("-"):
        problem = "must not start with '-'"
    elif any(c.isspace() for c in text) or any(c in text for c in "~^:?*[\\"):
        problem = "must not contain spaces or any of ~ ^ : ? * [ \\"
    elif ".." in text or "@{" in text or "//" in text or text == "@":
        problem = "must not contain '..', '@{' or '//', nor be '@'"
    elif text.startswith(("/", ".")) or text.endswith(("/", ".", ".lock")):
        problem = "must not start with '/' or '.', nor end with '/', '.' or '.lock'"
    elif any(part.startswith(".") or part.endswith(".lock") for part in text.split("/")):
        problem = "no part may start with '.' or end with '.lock'"
    elif not _REF_CHARS.match(text):
        problem = (
            "only letters, digits, '_', '.', '/' and '-' are accepted, "
            "starting with a letter, digit or '_'"
        )
    if problem:
        raise OptionsError("ref", f"ref {text[:80]!r} is not a valid git ref: {problem}")
    return text


def validate_filepath(path: Any) -> str:
    """A path relative to the repository, without ``..`` segments or backslashes."""
    text = _text("filepath", path)
    if len(text) > MAX_FILEPATH:
        raise OptionsError("filepath", f"filepath is longer than {MAX_FILEPATH} characters")
    if text.startswith("/"):
        raise OptionsError(
            "filepath", "filepath must be relative to the repository, not start with '/'"
        )
    if "\\" in text:
        raise OptionsError("filepath", "filepath must use '/' between folders, not '\\'")
    if ".." in text.split("/"):
        raise OptionsError("filepath", "filepath must not contain '..'")
    return text


# -- the validator ---------------------------------------------------------------------


def _pick_profile(
    raw: Any, profiles: Sequence[Profile], *, groups: Sequence[str], is_admin: bool
) -> str:
    usable = [p for p in profiles if may_use(p, groups=groups, is_admin=is_admin)]
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
    slug = _text("profile", raw)
    profile = next((p for p in profiles if p.slug == slug), None)
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


def _datasets(raw: Any, max_datasets: int) -> tuple[str, ...]:
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple):
        raise OptionsError(
            "dataset", f"dataset must be a DID or a list of DIDs, got {type(raw).__name__}"
        )
    dids = tuple(dict.fromkeys(validate_did(d) for d in items))
    if len(dids) > max_datasets:
        raise OptionsError(
            "dataset", f"too many datasets: {len(dids)} asked, at most {max_datasets} per server"
        )
    return dids


def validate_options(
    raw: Mapping[str, Any],
    *,
    site_profiles: Sequence[Profile],
    groups: Iterable[str],
    is_admin: bool,
    max_datasets: int,
) -> UserOptions:
    """Check raw user options and return them typed, or raise :class:`OptionsError`."""
    if not isinstance(raw, Mapping):
        raise OptionsError("options", f"options must be a JSON object, got {type(raw).__name__}")
    for key in raw:
        if key not in ALLOWED_KEYS:
            shown = key[:40] if isinstance(key, str) else repr(key)
            raise OptionsError(
                str(shown), f"unknown option {shown!r}; allowed: {', '.join(ALLOWED_KEYS)}"
            )

    def given(key: str) -> Any:
        value = raw.get(key)
        return None if value == "" else value

    group_list = list(groups)
    profile = _pick_profile(given("profile"), site_profiles, groups=group_list, is_admin=is_admin)
    datasets = _datasets(given("dataset"), max_datasets)
    workflow = given("workflow")
    ref, filepath = given("ref"), given("filepath")
    if workflow is None:
        for key, value in (("ref", ref), ("filepath", filepath)):
            if value is not None:
                raise OptionsError(key, f"{key} needs a workflow (the repository it belongs to)")
    return UserOptions(
        profile=profile,
        datasets=datasets,
        workflow=None if workflow is None else validate_workflow(workflow),
        ref=None if ref is None else validate_ref(ref),
        filepath=None if filepath is None else validate_filepath(filepath),
    )
