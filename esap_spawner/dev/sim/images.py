"""Image pulls on a simulated node: Pulling/Pulled events and the node's ``status.images``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from esap_spawner.dev.sim.errors import ApiError
from esap_spawner.dev.sim.store import Store

__all__ = ["pull_image"]

Obj = dict[str, Any]


async def pull_image(
    store: Store,
    node_name: str,
    container: Obj,
    *,
    delay: float,
    event: Callable[[str, str], None],
) -> None:
    """Pull ``container``'s image on the node (``delay`` seconds) unless it is present there
    and ``imagePullPolicy`` is not Always; ``event(reason, message)`` records the events."""
    image = container.get("image", "")
    node = store.find("nodes", "", node_name)
    images = (node or {}).get("status", {}).get("images") or []
    present = any(image in entry.get("names", []) for entry in images)
    if present and container.get("imagePullPolicy") != "Always":
        event("Pulled", f'Container image "{image}" already present on machine')
        return
    event("Pulling", f'Pulling image "{image}"')
    begin = time.monotonic()
    await asyncio.sleep(delay)
    took = f"{time.monotonic() - begin:.3f}s"
    event(
        "Pulled",
        f'Successfully pulled image "{image}" in {took} ({took} including waiting). '
        "Image size: 0 bytes.",
    )
    if node is not None and not present:

        def record(n: Obj) -> None:
            n["status"].setdefault("images", []).append({"names": [image], "sizeBytes": 0})

        with contextlib.suppress(ApiError):
            store.modify("nodes", "", node_name, record)
