"""Fault injection for tests: failing requests, latency, dropped watches, sick or lost nodes.

``Faults`` is reachable as ``sim.faults``. Its methods may be called from any thread: work
that touches the store runs on the simulator's loop (``SimulatorThread`` included).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from esap_spawner.dev.sim.clock import now_rfc3339
from esap_spawner.dev.sim.errors import ApiError

if TYPE_CHECKING:
    from esap_spawner.dev.sim.store import Store

__all__ = ["Faults"]

T = TypeVar("T")
_REASONS = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}
NOT_READY = {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}


class Faults:
    """Switches a test flips to make the API server misbehave."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._failures: deque[int] = deque()
        self._lock = threading.Lock()
        self.latency = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.requests = 0  # API requests seen, failed ones included

    def _call(self, fn: Callable[[], T]) -> T:
        loop = self.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop or not loop.is_running():
            return fn()

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=30)

    def fail_next(self, count: int, code: int = 500) -> None:
        """Answer the next ``count`` API requests with ``code`` (500, 503 or 429)."""
        if code not in _REASONS:
            raise ValueError(f"fail_next: code must be one of {sorted(_REASONS)}, not {code!r}")
        with self._lock:
            self._failures.extend([code] * count)

    def set_latency(self, seconds: float) -> None:
        """Delay every API request by ``seconds`` (0 to stop)."""
        self.latency = max(float(seconds), 0.0)

    def clear(self) -> None:
        """Back to normal: no pending failures, no latency."""
        with self._lock:
            self._failures.clear()
        self.latency = 0.0

    async def before_request(self) -> None:
        self.requests += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        with self._lock:
            code = self._failures.popleft() if self._failures else None
        if code is not None:
            raise ApiError(code, _REASONS[code], f"injected fault: {code} {_REASONS[code]}")

    def close_watches(self) -> int:
        """End every open watch stream; returns how many were open."""
        return self._call(self._store.close_watches)

    def compact(self) -> None:
        """Drop the change log: watches resuming from an older resourceVersion get 410."""
        self._call(self._store.compact)

    def node_not_ready(self, name: str, ready: bool = False) -> None:
        """Set a node's Ready condition (False, with the not-ready taint; or back to True)."""

        def change(node: dict[str, Any]) -> None:
            now = now_rfc3339()
            for condition in node["status"].setdefault("conditions", []):
                if condition.get("type") == "Ready":
                    condition.update(
                        status="True" if ready else "False",
                        reason="KubeletReady" if ready else "KubeletNotReady",
                        lastTransitionTime=now,
                        lastHeartbeatTime=now,
                    )
            taints = [
                t for t in node["spec"].get("taints") or [] if t.get("key") != NOT_READY["key"]
            ]
            if not ready:
                taints.append({**NOT_READY, "timeAdded": now})
            node["spec"]["taints"] = taints

        self._call(lambda: self._store.modify("nodes", "", name, change))

    def remove_node(self, name: str) -> None:
        """Delete a node; its pods are removed too (as the pod garbage collector does)."""
        self._call(lambda: self._store.delete("nodes", "", name))
