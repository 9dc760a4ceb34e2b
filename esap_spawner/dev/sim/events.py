"""Recording core/v1 Events about pods, as the scheduler and the kubelet do."""

from __future__ import annotations

import secrets
from typing import Any

from esap_spawner.dev.sim.clock import now_micro, now_rfc3339
from esap_spawner.dev.sim.errors import ApiError
from esap_spawner.dev.sim.store import Store

__all__ = ["record_event"]


def record_event(
    store: Store,
    pod: dict[str, Any],
    reason: str,
    message: str,
    *,
    type_: str = "Normal",
    component: str = "kubelet",
    host: str | None = None,
    field_path: str | None = None,
) -> dict[str, Any] | None:
    """Create an Event about ``pod``; None when its namespace is gone or going."""
    meta = pod["metadata"]
    now = now_rfc3339()
    involved = {
        "kind": "Pod",
        "namespace": meta["namespace"],
        "name": meta["name"],
        "uid": meta["uid"],
        "apiVersion": "v1",
        "resourceVersion": meta["resourceVersion"],
    }
    if field_path:
        involved["fieldPath"] = field_path
    source = {"component": component}
    if host:
        source["host"] = host
    event = {
        "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}"},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": type_,
        "source": source,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "eventTime": now_micro(),
        "count": 1,
        "reportingComponent": component,
        "reportingInstance": host or component,
        "action": reason,
    }
    try:
        return store.create("events", meta["namespace"], event)
    except ApiError:
        return None
