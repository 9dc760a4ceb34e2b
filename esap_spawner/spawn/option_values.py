"""What a valid value of each user option looks like: DIDs, workflow URLs, git refs, paths.

Pure checks, each raising :class:`OptionsError` with a sentence a user understands; the
declaration of the options (:mod:`esap_spawner.spawn.options`) builds on them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from esap_spawner.data.did import DidError, parse_did

_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?(:[0-9]{1,5})?$")
_URL_PATH = re.compile(r"^[A-Za-z0-9._~/%+\-@=]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What the checkout init program (datalinks.py) accepts: refuse the rest here, at once.
REF_CHARS = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./\-]*$")
MAX_URL = 2000
MAX_REF = 255
MAX_FILEPATH = 1024


class OptionsError(ValueError):
    """User options refused. ``field`` names the option; ``forbidden`` marks a refusal on
    permission (a profile the user may not use, a workflow host the site does not allow),
    which callers answer with 403."""

    def __init__(self, field: str, message: str, *, forbidden: bool = False) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.forbidden = forbidden


# -- validators, one per field ---------------------------------------------------------


def text_value(field: str, value: Any) -> str:
    """``value`` when it is text without control characters."""
    if not isinstance(value, str):
        raise OptionsError(field, f"{field} must be text, got {type(value).__name__}")
    if _CONTROL.search(value):
        raise OptionsError(field, f"{field} must not contain control characters")
    return value


def validate_did(did: Any) -> str:
    """A DID written ``scope:name`` (the grammar: :func:`esap_spawner.data.did.parse_did`)."""
    text = text_value("dataset", did)
    try:
        parse_did(text)
    except DidError as e:
        raise OptionsError("dataset", f"dataset {e}") from None
    return text


def validate_workflow(url: Any) -> str:
    """An ``https://host/path`` git URL without credentials, query or shell characters."""
    text = text_value("workflow", url).strip()
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
    text = text_value("ref", ref)
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
    elif not REF_CHARS.match(text):
        problem = (
            "only letters, digits, '_', '.', '/' and '-' are accepted, "
            "starting with a letter, digit or '_'"
        )
    if problem:
        raise OptionsError("ref", f"ref {text[:80]!r} is not a valid git ref: {problem}")
    return text


def validate_filepath(path: Any) -> str:
    """A path relative to the repository, without ``..`` segments or backslashes."""
    text = text_value("filepath", path)
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


def workflow_host(url: str) -> str:
    """The host name of a (validated) workflow URL, lower case, without port."""
    return (urlsplit(url).hostname or "").lower()


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Whether ``host`` matches the site's ``workflows.allowed_hosts``: a name matches itself,
    ``*.example.org`` matches every subdomain of example.org. No list allows every host."""
    if not allowed:
        return True
    host = host.lower().rstrip(".")
    for pattern in (p.lower() for p in allowed):
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False
