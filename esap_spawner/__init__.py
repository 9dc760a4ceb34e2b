"""esap-spawner: a JupyterHub spawner and resource-advertising service for ESAP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["ESAPSpawner", "__version__"]

if TYPE_CHECKING:
    from esap_spawner.spawn.spawner import ESAPSpawner


def __getattr__(name: str) -> Any:
    # Import the spawner lazily: the CLI, the service and the simulator do not need
    # JupyterHub's and KubeSpawner's import cost.
    if name == "ESAPSpawner":
        from esap_spawner.spawn.spawner import ESAPSpawner

        return ESAPSpawner
    raise AttributeError(name)
