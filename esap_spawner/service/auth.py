"""Who is calling the advertising service, and what they may see.

Callers present a JupyterHub token in ``Authorization: token <t>`` (or ``Bearer <t>``).
An *authentication strategy* turns the token into a :class:`Caller`:

- :class:`HubTokenAuth` (production) asks the hub through
  :class:`jupyterhub.services.auth.HubAuth` (``GET /hub/api/user``, cached by HubAuth for
  ``cache_max_age`` seconds), on the async path so a request never blocks the loop.
- :class:`StaticTokenAuth` reads tokens from a JSON file, for portals testing against
  ``esap-spawner service --token-file FILE`` without a hub.

Both hand the hub-shaped identity model (``kind``, ``name``, ``groups``, ``admin``,
``scopes``) to :func:`caller_from_model`, so the scope rules live in one place:

- ``custom:esap:read`` (:data:`PORTAL_SCOPE`): a portal. Sees every profile, including
  group-restricted ones, with their ``allowed_groups``.
- ``access:services!service=esap`` (:func:`access_scope`; JupyterHub's own scope for
  "may talk to this service", also what HubAuth asks of OAuth clients): a user. Sees only
  the profiles that user may start, judged from the groups the hub reports. JupyterHub 5
  and 6 do *not* grant it to users by default (the ``user`` role is ``self``, which covers
  servers, not services); grant it with
  ``c.JupyterHub.extra_user_scopes = {"access:services!service=esap"}`` (JupyterHub 6) or
  by adding it to the ``user`` role in ``load_roles``.
- Any other valid token: 403. No token: 401, unless anonymous access is on (then the
  caller sees only unrestricted profiles).

:class:`CallerCache` keeps the callers of recent tokens for as long as HubAuth keeps the
hub's answers (``cache_max_age``, 300 s by default), so a repeat request with the same
``Authorization`` header costs a dictionary look-up instead of a round trip and a scope
check.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from jupyterhub.services.auth import check_scopes
from tornado.web import HTTPError

from esap_spawner.service.expiring import ExpiringCache

if TYPE_CHECKING:
    from jupyterhub.services.auth import HubAuth

__all__ = [
    "PORTAL_SCOPE",
    "AuthError",
    "AuthStrategy",
    "Caller",
    "CallerCache",
    "HubTokenAuth",
    "StaticTokenAuth",
    "access_scope",
    "auth_from_environment",
    "caller_from_model",
    "check_catalogue_access",
    "may_operate",
    "token_from_header",
]

log = logging.getLogger(__name__)

PORTAL_SCOPE = "custom:esap:read"
METRICS_SCOPE = "read:metrics"
_HEADER = re.compile(r"^\s*(?:token|bearer)\s+(\S+)\s*$", re.IGNORECASE)


def access_scope(service_name: str) -> str:
    """The JupyterHub scope that lets a user call the service ``service_name``."""
    return f"access:services!service={service_name}"


@dataclass(frozen=True)
class Caller:
    """An authenticated (or anonymous) caller.

    ``kind`` is ``portal`` (sees everything), ``user`` (sees what it may start),
    ``anonymous`` (sees unrestricted profiles) or ``other`` (a valid token without a
    catalogue scope: refused by the catalogue routes, perhaps allowed on ``metrics``).
    ``scopes`` are the token's scopes as the hub expanded them.
    """

    kind: Literal["portal", "user", "anonymous", "other"]
    name: str | None = None
    groups: frozenset[str] = frozenset()
    is_admin: bool = False
    scopes: frozenset[str] = field(default=frozenset(), repr=False)

    @property
    def is_portal(self) -> bool:
        return self.kind == "portal"

    def has_scope(self, scope: str) -> bool:
        return bool(check_scopes({scope}, set(self.scopes)))


ANONYMOUS = Caller("anonymous")


class AuthError(Exception):
    """A request refused for who it comes from: 401, 403, or 503 when the hub is away."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


def token_from_header(value: str | None) -> str | None:
    """The token in an ``Authorization`` header value, None when there is none.

    Raises :class:`AuthError` (401) for a header that is present but not ``token <t>`` or
    ``Bearer <t>``, so a typo is not silently treated as an anonymous call.
    """
    if value is None or value.strip() == "":
        return None
    match = _HEADER.match(value)
    if match is None:
        raise AuthError(
            401,
            "invalid_authorization",
            "the Authorization header must be 'token <api-token>' or 'Bearer <api-token>'",
        )
    return match.group(1)


def _valid_scopes(raw: Iterable[Any]) -> frozenset[str]:
    """The scopes JupyterHub can parse; a malformed one (``read:users!user``) is dropped."""
    valid = set()
    for scope in raw:
        try:
            check_scopes({PORTAL_SCOPE}, {str(scope)})
        except ValueError:
            log.warning("ignoring a malformed scope: %r", scope)
            continue
        valid.add(str(scope))
    return frozenset(valid)


def caller_from_model(model: Mapping[str, Any], *, service_name: str) -> Caller:
    """The caller a hub identity model (``GET /hub/api/user``) stands for."""
    scopes = _valid_scopes(model.get("scopes") or ())
    name = model.get("name")
    groups = frozenset(str(g) for g in model.get("groups") or ())
    is_admin = bool(model.get("admin", False))
    if check_scopes({PORTAL_SCOPE}, set(scopes)):
        return Caller("portal", name, groups, is_admin, scopes)
    if check_scopes({access_scope(service_name)}, set(scopes)):
        return Caller("user", name, groups, is_admin, scopes)
    return Caller("other", name, groups, is_admin, scopes)


def check_catalogue_access(caller: Caller, *, service_name: str) -> None:
    """Raise :class:`AuthError` (403) unless the caller may read the catalogue."""
    if caller.kind == "other":
        raise AuthError(
            403,
            "insufficient_scope",
            f"this token may not read the catalogue: it needs the scope {PORTAL_SCOPE!r}"
            f" (portals) or {access_scope(service_name)!r} (users)",
        )


def may_operate(caller: Caller) -> bool:
    """Whether the caller may read what operators read (``metrics``, ``health``'s details):
    a token with :data:`PORTAL_SCOPE` or :data:`METRICS_SCOPE` (JupyterHub's admin role has
    the latter)."""
    return caller.has_scope(PORTAL_SCOPE) or caller.has_scope(METRICS_SCOPE)


class AuthStrategy(Protocol):
    """Turns a token into a :class:`Caller` or raises :class:`AuthError`."""

    async def authenticate(self, token: str) -> Caller: ...


class HubTokenAuth:
    """Tokens checked by the hub through :class:`~jupyterhub.services.auth.HubAuth`."""

    def __init__(self, hub_auth: HubAuth, *, service_name: str = "esap") -> None:
        self.hub_auth = hub_auth
        self.service_name = service_name

    @property
    def cache_max_age(self) -> float:
        """How long HubAuth keeps the hub's answer about a token (seconds)."""
        return float(self.hub_auth.cache_max_age)

    async def authenticate(self, token: str) -> Caller:
        try:
            model = await self.hub_auth.user_for_token(token, sync=False)
        except HTTPError as exc:
            # HubAuth raises 500/502 when the hub cannot be reached or fails
            log.warning("checking a token with the hub failed: %s", exc)
            raise AuthError(
                503,
                "hub_unavailable",
                "the hub could not be reached to check the token; try again shortly",
                retry_after=10,
            ) from exc
        if model is None:
            raise AuthError(401, "invalid_token", "the token is not known to the hub")
        return caller_from_model(model, service_name=self.service_name)


class StaticTokenAuth:
    """Tokens listed in a JSON file, for running the service without a hub.

    The file holds a list of objects, one per token, in the hub's identity shape::

        [{"token": "s3cret-portal", "name": "portal", "kind": "service",
          "scopes": ["custom:esap:read"]},
         {"token": "s3cret-alice", "name": "alice", "groups": ["radio"],
          "scopes": ["access:services!service=esap"]}]
    """

    def __init__(self, entries: Iterable[Mapping[str, Any]], *, service_name: str = "esap"):
        self.service_name = service_name
        self._models: dict[str, dict[str, Any]] = {}
        for i, entry in enumerate(entries):
            token = entry.get("token") if isinstance(entry, Mapping) else None
            if not isinstance(token, str) or not token:
                raise ValueError(f"token entry {i}: 'token' must be a non-empty string")
            if token in self._models:
                raise ValueError(f"token entry {i}: the same token is listed twice")
            scopes = entry.get("scopes", [])
            if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
                raise ValueError(f"token entry {i}: 'scopes' must be a list of strings")
            self._models[token] = {k: v for k, v in entry.items() if k != "token"}

    @classmethod
    def from_file(cls, path: str | Path, *, service_name: str = "esap") -> StaticTokenAuth:
        try:
            entries = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read the token file {str(path)!r}: {exc}") from exc
        if not isinstance(entries, list):
            raise ValueError(f"token file {str(path)!r}: expected a JSON list of token entries")
        return cls(entries, service_name=service_name)

    async def authenticate(self, token: str) -> Caller:
        model = self._models.get(token)
        if model is None:
            raise AuthError(401, "invalid_token", "the token is not known to this service")
        return caller_from_model(model, service_name=self.service_name)


def auth_from_environment(*, token_file: str, service_name: str) -> tuple[AuthStrategy | None, Any]:
    """How tokens are checked, and the hub's OAuth for browsers (None without one).

    Run by a hub (``JUPYTERHUB_API_TOKEN``): the hub checks tokens; when it also gave the
    service an OAuth client (it does for a service with a URL: ``JUPYTERHUB_CLIENT_ID``),
    one :class:`~jupyterhub.services.auth.HubOAuth` checks tokens and signs browsers in to
    the status page. Else ``token_file`` (none: every token is refused).
    """
    if os.environ.get("JUPYTERHUB_API_TOKEN"):
        from jupyterhub.services.auth import HubAuth, HubOAuth

        log.info("checking tokens with the hub at %s", os.environ.get("JUPYTERHUB_API_URL"))
        if os.environ.get("JUPYTERHUB_CLIENT_ID"):
            hub_oauth = HubOAuth()
            return HubTokenAuth(hub_oauth, service_name=service_name), hub_oauth
        log.info("no OAuth client from the hub: the status page takes tokens only")
        return HubTokenAuth(HubAuth(), service_name=service_name), None
    if token_file:
        log.info("checking tokens against %s", token_file)
        return StaticTokenAuth.from_file(token_file, service_name=service_name), None
    log.warning("no hub and no token file: every token is refused")
    return None, None


#: How long a caller is remembered when the strategy does not say (HubAuth's default).
DEFAULT_CACHE_MAX_AGE = 300.0


class CallerCache:
    """The callers of recently seen ``Authorization`` headers, each for ``max_age`` seconds.

    The same rule as HubAuth's own cache (JupyterHub caches the hub's answer about a token
    for ``HubAuth.cache_max_age``): a change of a token's scopes or a revoked token takes
    effect within ``max_age``. Only accepted tokens are kept; a refused one is asked about
    again (HubAuth answers a repeat from its own cache, a token file at once). Entries are
    keyed by the header's SHA-256 digest, never by the token itself, and a hit needs no
    parsing of the header. At most ``max_entries`` (see :class:`.ExpiringCache`).
    """

    def __init__(
        self,
        max_age: float = DEFAULT_CACHE_MAX_AGE,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.entries: ExpiringCache[bytes, Caller] = ExpiringCache(
            max_age, max_entries=max_entries, clock=clock
        )

    @staticmethod
    def _key(header: str) -> bytes:
        return hashlib.sha256(header.encode("utf-8", "replace")).digest()

    def get(self, header: str) -> Caller | None:
        """The caller this header stood for, if seen within ``max_age``."""
        return self.entries.get(self._key(header))

    def put(self, header: str, caller: Caller) -> None:
        self.entries.put(self._key(header), caller)

    def __len__(self) -> int:
        return len(self.entries)
