"""The look-ups aiohttp makes before each request to the Kubernetes API, done once instead.

kubernetes_asyncio opens its aiohttp session with ``trust_env=True``, so before every
request aiohttp looks for a proxy in the environment (``HTTPS_PROXY``, ``NO_PROXY``, ...)
and for credentials for the API server's host in a ``.netrc`` file, each on a thread of
the default executor: two thread hops per request, more than half of what a small request
costs the hub (``docs/performance.md``, "Spawner overhead"). Neither answer changes while
the hub runs. :func:`look_up_once` asks both questions once, for the API server's host:
when neither finds anything, the session stops asking; when either does, the session
keeps asking as before, so a proxy or a ``.netrc`` entry is used exactly as aiohttp would.

Duck-typed on kubernetes_asyncio's ``ApiClient`` (``configuration.host``,
``rest_client.pool_manager``), so this module needs no Kubernetes import.
"""

from __future__ import annotations

import netrc
import os
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["environment_applies", "look_up_once"]


def _netrc_has(host: str) -> bool:
    """Whether the ``.netrc`` aiohttp would read (``NETRC``, else ``~/.netrc``) may hold
    credentials for ``host`` (a file that cannot be parsed counts: aiohttp may still)."""
    path = os.environ.get("NETRC")
    try:
        file = Path(path) if path is not None else Path.home() / ".netrc"
    except RuntimeError:  # no home directory: aiohttp finds no file either
        return False
    if not file.is_file():
        return False
    try:
        return netrc.netrc(file).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return True


def environment_applies(url: str) -> bool:
    """Whether the environment gives a request to ``url`` a proxy or ``.netrc``
    credentials, as aiohttp's ``trust_env`` reads it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    proxied = parts.scheme in urllib.request.getproxies()
    proxied = proxied and not urllib.request.proxy_bypass(host)
    return proxied or _netrc_has(host)


def look_up_once(api_client: Any) -> bool:
    """Stop the per-request look-ups of ``api_client``'s session when the environment
    gives its API server neither a proxy nor credentials; True if they were stopped.

    A client configured with an explicit proxy keeps its session as it is (aiohttp then
    skips the proxy look-up itself), as does one whose session is not aiohttp's
    ``ClientSession`` with ``trust_env`` (a kubernetes_asyncio that changed its REST layer).
    """
    rest = getattr(api_client, "rest_client", None)
    session = getattr(rest, "pool_manager", None)
    if getattr(session, "_trust_env", None) is not True or getattr(rest, "proxy", None):
        return False
    if environment_applies(str(api_client.configuration.host)):
        return False
    session._trust_env = False  # type: ignore[union-attr]
    return True
