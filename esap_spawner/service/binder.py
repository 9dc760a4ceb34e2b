"""BinderHub-style launch links, read: what ESAP's Deploy button (and Binder users) send.

ESAP's Deploy builds, for every facility, the BinderHub launch URL::

    f"{facility.url}v2/git/{quote_plus(workflow.url)}/{workflow.ref}?urlpath=lab"
    + ("/tree/" + quote_plus(filepath) if filepath else "")

:func:`parse_launch` reads the part after ``v2/`` (still percent-encoded, as it arrived)
and the query string into a :class:`Launch`, or raises :class:`LaunchError` with a sentence
for the 400 page. Accepted, as BinderHub spells them:

- ``git/<url-encoded repository URL>/<ref>`` (``quote_plus`` or ``quote(safe='')``, or
  encoded twice); also the URL not encoded (``git/https://host/group/repo.git/<ref>``: the
  ref is what follows ``.git/``, else the last segment);
- ``gh/<org>/<repo>/<ref>`` for ``https://github.com/<org>/<repo>``;
- ``gl/<url-encoded namespace/repo>/<ref>`` for ``https://gitlab.com/<namespace/repo>``.

The ref may hold slashes (``feature/x``); ``HEAD`` (ESAP's default) or no ref means the
default branch, which the launch route looks up. The file to open comes from ``urlpath``
(``lab``, ``lab/tree/<file>``, ``doc/tree/<file>``, ``tree/<file>``, ``notebooks/<file>``,
with or without a leading ``/``), or from Binder's ``labpath`` / ``filepath``. The link
may also name a ``profile`` and ``dataset`` s (``opt-`` prefixed or not). Every value
goes through the spawn options' own checks (:mod:`esap_spawner.spawn.option_values`), so
the launch route refuses exactly what the hub would: non-https or credential-carrying
repository URLs, refs starting with ``-``, paths with ``..``. No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, unquote_plus

from esap_spawner.spawn.option_values import (
    OptionsError,
    validate_did,
    validate_filepath,
    validate_ref,
    validate_workflow,
)
from esap_spawner.spawn.options import DEFAULT_BRANCH, query_options, split_dids

__all__ = ["PROVIDERS", "Launch", "LaunchError", "filepath_from_urlpath", "parse_launch"]

PROVIDERS = ("git", "gh", "gl")
QUERY_KEYS = ("urlpath", "labpath", "filepath", "profile", "dataset")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_URLPATH_FILE = ("lab/tree/", "doc/tree/", "tree/", "notebooks/", "edit/")
_URLPATH_NONE = ("", "lab", "doc", "tree", "notebooks")
MAX_SPEC = 4096


class LaunchError(ValueError):
    """A launch link that cannot be used; ``part`` names what is wrong (for the page)."""

    def __init__(self, part: str, message: str) -> None:
        super().__init__(message)
        self.part = part
        self.message = message


@dataclass(frozen=True)
class Launch:
    """What a launch link asks for; ``ref`` is ``HEAD`` when the default branch is meant."""

    repo: str
    ref: str = DEFAULT_BRANCH
    filepath: str | None = None
    profile: str | None = None
    datasets: tuple[str, ...] = ()


def _split_ref(rest: str) -> str:
    ref = unquote(rest).strip("/")
    return ref or DEFAULT_BRANCH


def _repository(provider: str, spec: str) -> tuple[str, str]:
    """(repository URL, ref) of the path after ``v2/<provider>/``."""
    if provider == "git":
        if re.match(r"(?i)https?:/", spec):  # not encoded: the last segment is the ref
            plain = re.sub(r"(?i)^(https?):/+", r"\1://", unquote(spec))
            repo, sep, rest = plain.partition(".git/")
            if sep:
                return repo + ".git", _split_ref(rest)
            repo, _, rest = plain.rstrip("/").rpartition("/")
            return repo, _split_ref(rest)
        encoded, _, rest = spec.partition("/")
        repo = unquote_plus(encoded)
        if repo.lower().startswith("https%3a"):  # encoded twice on the way
            repo = unquote_plus(repo)
        return repo, _split_ref(rest)
    if provider == "gl":
        encoded, _, rest = spec.partition("/")
        project = unquote_plus(encoded).strip("/")
        parts = project.split("/")
        if not project or any(not _NAME.match(p) or p in (".", "..") for p in parts):
            raise LaunchError(
                "repository", f"{project!r} is not a GitLab project path (namespace/repository)"
            )
        return f"https://gitlab.com/{project}", _split_ref(rest)
    org, _, rest = spec.partition("/")
    repo, _, rest = rest.partition("/")
    org, repo = unquote(org), unquote(repo)
    if not (_NAME.match(org) and _NAME.match(repo)) or {org, repo} & {".", ".."}:
        raise LaunchError(
            "repository", f"{org}/{repo!s} is not a GitHub repository (write gh/<org>/<repo>/<ref>)"
        )
    return f"https://github.com/{org}/{repo}", _split_ref(rest)


def filepath_from_urlpath(urlpath: str) -> str | None:
    """The file a Binder ``urlpath`` opens, None for JupyterLab's launcher."""
    path = urlpath.strip().lstrip("/")
    for prefix in _URLPATH_FILE:
        if path.startswith(prefix):
            return path[len(prefix) :] or None
    if path.rstrip("/") in _URLPATH_NONE:
        return None
    raise LaunchError(
        "urlpath",
        f"urlpath {urlpath[:120]!r} is not one this hub opens: use lab, lab/tree/<file>, "
        "tree/<file> or notebooks/<file>",
    )


def _single(query: Mapping[str, Sequence[str]], key: str) -> str | None:
    values = [v for v in query.get(key, ()) if v != ""]
    if len(values) > 1:
        raise LaunchError(key, f"{key!r} was given {len(values)} times; give it once")
    return values[0] if values else None


def _filepath(query: Mapping[str, Sequence[str]]) -> str | None:
    given = [(k, v) for k in ("urlpath", "labpath", "filepath") if (v := _single(query, k))]
    if len(given) > 1:
        raise LaunchError(given[1][0], "give the file to open once: urlpath, labpath or filepath")
    if not given:
        return None
    key, value = given[0]
    return filepath_from_urlpath(value) if key == "urlpath" else value.lstrip("/") or None


def parse_launch(provider: str, spec: str, query: Mapping[str, Sequence[str]]) -> Launch:
    """The :class:`Launch` a link ``v2/<provider>/<spec>?<query>`` asks for."""
    if provider not in PROVIDERS:
        raise LaunchError("provider", f"unknown provider {provider[:20]!r}; use git, gh or gl")
    if len(spec) > MAX_SPEC:
        raise LaunchError("repository", f"the link is longer than {MAX_SPEC} characters")
    options = query_options(query)
    unknown = sorted(set(options) - set(QUERY_KEYS))
    if unknown:
        shown = ", ".join(repr(k[:40]) for k in unknown[:5])
        raise LaunchError(unknown[0], f"unknown query argument {shown}; allowed: "
                          f"{', '.join(QUERY_KEYS)}")  # fmt: skip
    repo, ref = _repository(provider, spec)
    try:
        repo = validate_workflow(repo)
        ref = validate_ref(ref)
        filepath = _filepath(options)
        if filepath is not None:
            filepath = validate_filepath(filepath)
        datasets = tuple(
            dict.fromkeys(validate_did(d) for d in split_dids(options.get("dataset", ())))
        )
    except OptionsError as exc:
        part = "repository" if exc.field == "workflow" else exc.field
        raise LaunchError(part, exc.message) from None
    profile = _single(options, "profile")
    if profile is not None and not _NAME.match(profile):
        raise LaunchError("profile", f"{profile[:80]!r} is not a profile slug")
    return Launch(repo=repo, ref=ref, filepath=filepath, profile=profile, datasets=datasets)
