"""Waiting, from a coroutine, for something a server does in its own time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp


async def wait_for(predicate: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    """``await predicate()`` until it is true (returned) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await predicate()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def http_status(url: str) -> int | None:
    """The status ``url`` answers with, or None when nothing answers within 2 s."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response,
        ):
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None
