"""How much one spawn may stage, and how many staging requests one user may have going.

Checked by :class:`esap_spawner.data.staging.Stager` right after its first resolve, before
any rule exists (pure functions: the words of a refusal, or None):

- :func:`too_much_to_stage`: the files and bytes the spawn's datasets still need at a local
  RSE, together, against the site file's ``data.rucio.staging.max_files`` and
  ``max_bytes``;
- :func:`too_many_in_flight`: the user's staging requests in flight (from the spawner's
  database, over all their servers) plus the ones this spawn would add, against
  ``max_rules_per_user``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from esap_spawner.data.catalogue.base import Locality
from esap_spawner.site.model import (
    DEFAULT_MAX_RULES_PER_USER,
    DEFAULT_MAX_STAGED_BYTES,
    DEFAULT_MAX_STAGED_FILES,
)
from esap_spawner.site.quantity import format_bytes

__all__ = ["StagingLimits", "too_many_in_flight", "too_much_to_stage"]


@dataclass(frozen=True)
class StagingLimits:
    """The site file's limits (``data.rucio.staging``), with its defaults."""

    max_files: int = DEFAULT_MAX_STAGED_FILES
    max_bytes: int = DEFAULT_MAX_STAGED_BYTES
    max_rules_per_user: int = DEFAULT_MAX_RULES_PER_USER


def too_much_to_stage(
    needed: Sequence[Locality], limits: StagingLimits, *, destination: str
) -> str | None:
    """Why the datasets in ``needed`` (each not wholly local) are too much to stage for one
    server, or None."""
    files = sum(n.files_total - n.files_local for n in needed)
    size = sum(n.bytes_total - n.bytes_local for n in needed)
    if files <= limits.max_files and size <= limits.max_bytes:
        return None
    count = f"{len(needed)} dataset{'s' if len(needed) != 1 else ''}"
    return (
        f"the {count} to stage need {files:,} files ({format_bytes(size)}) copied to "
        f"{destination}; this hub stages at most {limits.max_files:,} files and "
        f"{format_bytes(limits.max_bytes)} for one server: ask for fewer datasets"
    )


def too_many_in_flight(in_flight: int, new: int, limits: StagingLimits) -> str | None:
    """Why ``new`` more staging requests are too many for a user who has ``in_flight`` (not
    counting this spawn's own, resumed, ones), or None."""
    if new == 0 or in_flight + new <= limits.max_rules_per_user:
        return None
    return (
        f"you have {in_flight} staging request{'s' if in_flight != 1 else ''} in flight and "
        f"this server needs {new} more; at most {limits.max_rules_per_user} per user: wait "
        "for them to finish, or stop a server that is still staging"
    )
