"""How a spawn ended and where its time went: the words the spawner, the metrics, the
database and the report share (metric labels, database columns, report headings)."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Phase", "SpawnStatus"]


class SpawnStatus(StrEnum):
    """How a spawn ended (label ``status`` of ``esap_spawn_duration_seconds``)."""

    success = "success"  # the server is up
    failure = "failure"  # started, then failed (pod error, timeout, staging failure)
    refused = "refused"  # refused before any pod: bad options, access, quota, no room
    cancelled = "cancelled"  # the user stopped it before it was up


class Phase(StrEnum):
    """Where a spawn's time goes (label ``phase``); see :mod:`esap_spawner.observe.phases`."""

    validate = "validate"  # spawn requested -> options validated
    staging = "staging"  # staging started -> data local
    scheduling = "scheduling"  # pod created -> bound to a node
    image = "image"  # image pulls (zero when the image is already on the node)
    startup = "startup"  # notebook container started -> server ready
