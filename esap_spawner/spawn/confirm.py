"""Ask before running someone else's code: the confirmation step of a spawn link.

A GET of ``/hub/spawn?...`` with options starts a server at once in JupyterHub (a link is
followed without any click, right after the login too). That is fine for a link that only
names a profile, but a link that carries a *workflow* (a repository whose notebooks will
run with the user's files) or *datasets* must not start anything before the user says so.
So :meth:`ESAPSpawner.options_from_query` validates such a link and then raises
:class:`ConfirmFirst`: JupyterHub falls back to the spawn form, which the spawner renders
prefilled, with the plain :func:`summary` at the top, and the hub's one Start button POSTs
it. No server is started by the GET.

:class:`ConfirmFirst` is an HTTP "error" with status 200 and an empty message (and an empty
``str()``, which JupyterHub before 5.4 shows instead), so the hub shows no error. JupyterHub
logs every exception of ``options_from_query`` with its traceback;
:func:`quiet_confirmations` turns that record into one info line.

Pure, apart from :func:`dataset_localities`, which asks the catalogue with a timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from tornado import web

from esap_spawner.data.catalogue.base import Catalogue, CatalogueError, Locality
from esap_spawner.site.profiles import Profile
from esap_spawner.site.quantity import format_bytes
from esap_spawner.spawn.options import UserOptions

__all__ = [
    "WARNING",
    "ConfirmFirst",
    "dataset_localities",
    "locality_words",
    "quiet_confirmations",
    "summary",
]

WARNING = (
    "The workflow's notebooks will run in your server, with your files and your "
    "permissions: start only if you trust the link that brought you here."
)
DATA_ONLY_WARNING = "The datasets are mounted read-only in your server."


class ConfirmFirst(web.HTTPError):
    """Not an error: the link's options are valid and wait for the user's Start."""

    def __init__(self, options: UserOptions) -> None:
        what = "a workflow" if options.workflow else "datasets"
        super().__init__(200, log_message=f"it brings {what}: the form asks the user first")
        self.jupyterhub_message = ""  # the hub then shows no error above the form

    def __str__(self) -> str:
        """Nothing: JupyterHub before 5.4 shows ``str(error)`` above the form."""
        return self.jupyterhub_message


def locality_words(locality: Locality | None) -> str:
    """Where a dataset is, for the summary: ``at this hub``, ``not at this hub yet: ...``."""
    if locality is None:
        return "locality unknown"
    size = format_bytes(locality.bytes_total)
    if locality.status == "local":
        return f"at this hub ({locality.files_total} files, {size})"
    eta = locality.estimated_staging_seconds
    wait = f", about {eta:.0f} s" if eta is not None else ""
    if locality.status == "partial":
        return (
            f"partly at this hub ({locality.files_local} of {locality.files_total} files): "
            f"the rest is copied here before the server starts{wait}"
        )
    if locality.status == "remote":
        return (
            f"not at this hub yet ({locality.files_total} files, {size}): "
            f"copied here before the server starts{wait}"
        )
    return f"locality unknown: {locality.message or locality.status}"


def summary(
    options: UserOptions, profile: Profile, localities: Mapping[str, Locality]
) -> dict[str, Any]:
    """What the confirmation shows, in words, from valid options."""
    return {
        "profile": profile.display_name,
        "datasets": [
            {"did": did, "locality": locality_words(localities.get(did))}
            for did in options.datasets
        ],
        "workflow": options.workflow,
        "ref": options.ref or "the repository's default branch",
        "filepath": options.filepath or "JupyterLab's launcher (no file named)",
        "warning": WARNING if options.workflow else DATA_ONLY_WARNING,
    }


async def dataset_localities(
    catalogue: Catalogue | None, dids: Sequence[str], *, timeout: float
) -> dict[str, Locality]:
    """Where each DID is, as the catalogue says within ``timeout`` seconds; ``unknown``
    (with the reason) when there is no catalogue or it does not answer in time."""
    if not dids:
        return {}
    if catalogue is None:
        return {d: Locality.unknown(d, "this hub has no data catalogue") for d in dids}
    try:
        found = await asyncio.wait_for(catalogue.locality(list(dids)), timeout)
    except TimeoutError:
        reason = f"the data catalogue did not answer within {timeout:g} s"
        return {d: Locality.unknown(d, reason) for d in dids}
    except CatalogueError as exc:
        return {d: Locality.unknown(d, f"the data catalogue failed: {exc}") for d in dids}
    return {loc.did: loc for loc in found}


class _ConfirmationRecords(logging.Filter):
    """JupyterHub's "Failed to spawn ... with query arguments" for a :class:`ConfirmFirst`
    becomes one info line without a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ConfirmFirst):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "Spawn link: %s", (exc.log_message,)
            record.exc_info, record.exc_text = None, None
        return True


def quiet_confirmations(logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
    """Install the filter on the hub's logger, once."""
    target = logger.logger if isinstance(logger, logging.LoggerAdapter) else logger
    if not any(isinstance(f, _ConfirmationRecords) for f in target.filters):
        target.addFilter(_ConfirmationRecords())
