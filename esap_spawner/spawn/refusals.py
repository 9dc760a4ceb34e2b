"""How the spawner says no, so users read why and the hub's own metrics can tell why.

A *refusal* stops a spawn before any pod exists, for a reason in
:class:`~esap_spawner.spawn.status.RefusalReason`; a *failure* is anything else that ends a
spawn early (the Kubernetes API, the catalogue or the cluster view being down). Both are
HTTP errors carrying ``jupyterhub_message``, the text JupyterHub shows as is on the spawn
form, the progress page and in the REST API's answer, with the same status as always
(400/403/409 for refusals, 5xx for failures).

On JupyterHub 6+ a refusal is a ``SpawnException(reason=...)``: the hub then records the
spawn as ``jupyterhub_server_spawn_duration_seconds{status="failure", reason=<ours>}`` and
does not count it towards ``consecutive_failure_limit``, while failures stay
``status="error"``. JupyterHub 5 has neither ``SpawnException`` nor the ``reason`` label: there a
refusal is the plain HTTP error it always was.
"""

from __future__ import annotations

from typing import Any

from tornado import web

from esap_spawner.capacity.model import Refusal
from esap_spawner.data.staging import StagingError, StagingLimit
from esap_spawner.spawn.option_values import OptionsError
from esap_spawner.spawn.status import RefusalReason

try:
    from jupyterhub.spawner import SpawnException as _SpawnException
except ImportError:  # JupyterHub 5
    _SpawnException = None

__all__ = [
    "failed",
    "from_capacity",
    "from_options",
    "from_staging",
    "refuse",
    "show_refusal_reasons",
]


def refuse(reason: RefusalReason, status: int, message: str) -> web.HTTPError:
    """A refusal with its reason; ``message`` is what the user reads."""
    error: web.HTTPError
    if _SpawnException is not None:
        error = _SpawnException(message, reason=reason.value, status_code=status)
    else:
        error = web.HTTPError(status, message)
    error.jupyterhub_message = message  # type: ignore[attr-defined]
    return error


def failed(status: int, message: str) -> web.HTTPError:
    """A failure that is not a refusal, in words; ``status`` is usually 5xx."""
    error = web.HTTPError(status, message)
    error.jupyterhub_message = message  # type: ignore[attr-defined]
    return error


def from_options(error: OptionsError) -> web.HTTPError:
    """The options validator's no: a profile for other groups (403), anything else (400)."""
    if error.forbidden:
        return refuse(RefusalReason.not_allowed, 403, str(error))
    return refuse(RefusalReason.invalid_options, 400, str(error))


def from_capacity(refusal: Refusal) -> web.HTTPError:
    """The cluster view's no: the profile at its ``max_servers`` or without room refuses the
    spawn (409); a view that is not synced is a failure (503), quota cannot be checked blind."""
    if refusal.reason == "unsynced":
        return failed(503, refusal.message)
    reason = RefusalReason.quota if refusal.reason == "full" else RefusalReason.no_room
    return refuse(reason, 409, refusal.message)


def from_staging(error: StagingError) -> web.HTTPError:
    """Staging's no: the site's limits (too much to stage, too many requests in flight) and
    the catalogue's 4xx (not found, no quota, no access) refuse the spawn, a 5xx (catalogue
    down, transfer failed, timeout) is a failure."""
    if isinstance(error, StagingLimit):
        return refuse(RefusalReason.staging_limit, error.status, str(error))
    if error.status < 500:
        return refuse(RefusalReason.staging_refused, error.status, str(error))
    return failed(error.status, str(error))


def show_refusal_reasons(histogram: Any = None) -> bool:
    """Create the hub's spawn-duration series of every refusal reason at zero, so a dashboard
    sees them before the first refusal (as JupyterHub does for its own reasons).

    ``histogram`` is JupyterHub's ``SERVER_SPAWN_DURATION_SECONDS`` (looked up when None);
    False, and nothing done, where it has no ``reason`` label (JupyterHub 5).
    """
    if histogram is None:
        from jupyterhub.metrics import SERVER_SPAWN_DURATION_SECONDS

        histogram = SERVER_SPAWN_DURATION_SECONDS
    if "reason" not in histogram._labelnames:
        return False
    for reason in RefusalReason:
        histogram.labels(status="failure", reason=reason.value)
    return True
