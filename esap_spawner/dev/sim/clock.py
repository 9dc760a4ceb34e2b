"""Timestamps as the API server writes them (RFC 3339, UTC, second or microsecond precision)."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["now_micro", "now_rfc3339"]


def now_rfc3339() -> str:
    """``2026-11-23T20:00:00Z``: metadata timestamps, lastTimestamp, startedAt."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """``2026-11-23T20:00:00.123456Z``: MicroTime fields such as an event's eventTime."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
