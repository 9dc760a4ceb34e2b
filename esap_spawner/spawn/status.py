"""How a spawn ended and where its time went: the words the spawner, the metrics, the
database and the report share (metric labels, database columns, report headings)."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Phase", "RefusalReason", "SpawnStatus"]


class SpawnStatus(StrEnum):
    """How a spawn ended (label ``status`` of ``esap_spawn_duration_seconds``)."""

    success = "success"  # the server is up
    failure = "failure"  # started, then failed (pod error, timeout, staging failure)
    refused = "refused"  # refused before any pod: bad options, access, quota, no room
    cancelled = "cancelled"  # the user stopped it before it was up


class RefusalReason(StrEnum):
    """Why a spawn was refused before any pod existed: the ``reason`` label JupyterHub (6+)
    puts on ``jupyterhub_server_spawn_duration_seconds{status="failure"}``, apart from the
    ``status="error"`` of spawns that failed. A small fixed set: add a member for a new kind
    of refusal and raise it with :func:`esap_spawner.spawn.refusals.refuse`."""

    invalid_options = "invalid-options"  # 400: the options do not validate
    not_allowed = "not-allowed"  # 403: the profile is not for this user's groups
    quota = "quota"  # 409: the profile is at its max_servers
    no_room = "no-room"  # 409: no node can hold the profile now
    staging_refused = "staging-refused"  # 4xx: the data catalogue refused the datasets
    staging_limit = "staging-limit"  # 413/429: more than the site's staging limits allow


class Phase(StrEnum):
    """Where a spawn's time goes (label ``phase``); see :mod:`esap_spawner.observe.phases`."""

    validate = "validate"  # spawn requested -> options validated
    staging = "staging"  # staging started -> data local
    scheduling = "scheduling"  # pod created -> bound to a node
    image = "image"  # image pulls (zero when the image is already on the node)
    startup = "startup"  # notebook container started -> server ready
