"""Dataset identifiers: the one DID type and its one grammar. STDLIB ONLY.

A DID is written ``scope:name``. Everything that reads one goes through :func:`parse_did`:
the spawn options (form, deep link, REST body: :mod:`esap_spawner.spawn.options`), the
advertising API (``POST api/v1/locality``) and the pattern its OpenAPI document gives
(:data:`DID_PATTERN`, checked equal by the unit tests), the catalogues
(:mod:`esap_spawner.data.catalogue`), the pod's plan (:mod:`esap_spawner.spawn.objects`) and
the init containers' program (:mod:`esap_spawner.data.datalinks`), which runs in the user's
image without esap-spawner: this file travels beside it in the pod's ConfigMap, so it must
import nothing but the standard library.

The grammar is Rucio's generic schema, narrowed where a DID becomes a path (the pod's
``<mount_root>/<scope>/<name>`` folder, the static catalogue's ``<root>/<scope>/<name>``):

- **scope**: 1 to 25 letters, digits, ``_``, ``.`` or ``-``, starting with a letter, digit
  or ``_`` (so never ``.``, ``..``, a hidden ``.x`` folder, nor an ``-option``);
- **name**: 1 to 250 letters, digits, ``_``, ``.`` or ``-``, starting with a letter or digit.

Both parts are therefore single, safe path segments: no ``/``, no ``..``, no spaces or
control characters.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["DID_PATTERN", "NAME_PATTERN", "SCOPE_PATTERN", "Did", "DidError", "parse_did"]

SCOPE_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,24}"
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,249}"
#: The whole grammar as one regular expression (ECMA-262 and Python alike), for documents.
DID_PATTERN = f"^{SCOPE_PATTERN}:{NAME_PATTERN}$"

_SCOPE = re.compile(SCOPE_PATTERN)
_NAME = re.compile(NAME_PATTERN)
_SHOWN = 80  # characters of a refused DID quoted back


class DidError(ValueError):
    """Not a DID; ``str()`` says why, in words for the person who wrote it."""


class Did(NamedTuple):
    """A parsed DID; ``str()`` writes it back as ``scope:name``."""

    scope: str
    name: str

    def __str__(self) -> str:
        return f"{self.scope}:{self.name}"


def parse_did(text: object) -> Did:
    """``"scope:name"`` -> :class:`Did`, or :class:`DidError` saying what is wrong."""
    if not isinstance(text, str):
        raise DidError(
            f"a dataset identifier must be text like 'scope:name', not {type(text).__name__}"
        )
    shown = text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
    scope, sep, name = text.partition(":")
    if not sep:
        raise DidError(
            f"{shown!r} is not a dataset identifier: write it as scope:name, e.g. lofar:L123456"
        )
    if not _SCOPE.fullmatch(scope):
        raise DidError(
            f"{shown!r}: the scope {scope[:_SHOWN]!r} must be 1 to 25 letters, digits, '_', "
            "'.' or '-', starting with a letter, digit or '_'"
        )
    if not _NAME.fullmatch(name):
        raise DidError(
            f"{shown!r}: the name {name[:_SHOWN]!r} must be 1 to 250 letters, digits, '_', "
            "'.' or '-', starting with a letter or digit"
        )
    return Did(scope, name)
