"""What the spawner's data side needs from the spawner it is mixed into.

:class:`SpawnerHost` lists the members beyond KubeSpawner's own; ``_Host`` is the base the
data side's mixins build on: for the type checker, the pod-owned objects in such a host;
at run time, the pod-owned objects alone (KubeSpawner comes after them in the MRO).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from esap_spawner.site.model import Site
from esap_spawner.spawn.pod_owned import PodOwnedObjects

if TYPE_CHECKING:
    from esap_spawner.spawn.context import HubContext
    from esap_spawner.spawn.records import SpawnAttempt

__all__ = ["SpawnerHost"]


class SpawnerHost(Protocol):
    """What the data side needs from the spawner it is mixed into, beyond
    KubeSpawner's own members (``user``, ``log``, ``api``, ``namespace``, ``pod_name``...):
    ESAPSpawner, which documents these with its other options
    (``tests/unit/test_spawner_host.py`` holds it to them)."""

    @property
    def context(self) -> HubContext: ...
    @property
    def site(self) -> Site: ...
    @property
    def home_dir(self) -> str: ...
    @property
    def checkout_env(self) -> dict[str, str]: ...
    @property
    def staging_poll_interval(self) -> float: ...
    @property
    def staging_poll_max(self) -> float: ...
    @property
    def staging_pod_margin(self) -> float: ...
    @property
    def remove_staging_rules_on_stop(self) -> bool: ...
    def _attempt(self) -> SpawnAttempt: ...


if TYPE_CHECKING:

    class _Host(PodOwnedObjects, SpawnerHost):
        """For the type checker: the data side sits on the pod-owned objects (on
        KubeSpawner), in a host like ESAPSpawner, so the host's members are typed here."""

else:
    _Host = PodOwnedObjects
