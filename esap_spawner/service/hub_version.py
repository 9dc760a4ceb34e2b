"""Which query style the running hub wants for spawn options: ``opt-profile=`` or ``profile=``.

JupyterHub 6 reads ``/hub/spawn`` query options prefixed with ``opt-`` (un-prefixed ones
still work, with a warning, and are ignored when mixed with prefixed ones); JupyterHub 5
knows only the un-prefixed ones. The service publishes links in the style of the hub that
runs it: asked at start from the hub's API root (``GET /hub/api/`` answers its version,
without a token), else the JupyterHub installed beside the service (the same image in
every standard deployment).
"""

from __future__ import annotations

import json
import logging

from jupyterhub import __version__ as installed_version
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from esap_spawner.service.views import QueryStyle

__all__ = ["installed_query_style", "query_style_for", "running_hub_query_style"]

log = logging.getLogger(__name__)


def query_style_for(version: str) -> QueryStyle:
    """``opt`` for JupyterHub 6 and later, ``plain`` before (``"5.2.1"`` -> ``plain``)."""
    major = version.strip().split(".", 1)[0]
    return "opt" if major.isdigit() and int(major) >= 6 else "plain"


def installed_query_style() -> QueryStyle:
    return query_style_for(installed_version)


async def running_hub_query_style(api_url: str, *, timeout: float = 5.0) -> QueryStyle:
    """The style of the hub at ``api_url`` (``JUPYTERHUB_API_URL``); the installed
    JupyterHub's when the hub does not answer in time."""
    try:
        answer = await AsyncHTTPClient().fetch(
            api_url.rstrip("/") + "/", connect_timeout=timeout, request_timeout=timeout
        )
        version = str(json.loads(answer.body)["version"])
    except (HTTPClientError, OSError, ValueError, KeyError, TypeError) as exc:
        log.warning(
            "the hub's version could not be read at %s (%s): links use the style of the "
            "JupyterHub installed here, %s",
            api_url,
            exc,
            installed_version,
        )
        return installed_query_style()
    return query_style_for(version)
