"""What a hub records, at any amount: none, one staged spawn, or a busy week of 1,000 spawns.

Each scenario writes what the spawner writes (spawns with their phases, staging requests and
availability samples, unknown ones while the cluster view syncs) into a real database, for
the report's tests (tests/integration/test_report.py) and its screenshots in the docs
(tests/e2e/test_report_page.py).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from esap_spawner.observe.db import Database
from esap_spawner.spawn.status import Phase


class Avail:
    """One profile's availability as the spawner samples it."""

    def __init__(self, can_start_now: int | None, running: int | None, status: str) -> None:
        self.can_start_now, self.running, self.status = can_start_now, running, status


def record_one_staged_spawn(db: Database, now: datetime) -> None:
    """The demo's first hour: one spawn that staged one small dataset."""
    start = now - timedelta(hours=3)
    db.record_spawn(profile="gammapy", user="alice", outcome="success", started_at=start,
                    finished_at=start + timedelta(seconds=14.2),
                    phases={Phase.validate: 0.04, Phase.staging: 6.1, Phase.scheduling: 0.3,
                            Phase.startup: 5.2})  # fmt: skip
    rec = db.start_staging(user="alice", did="escape:crab-2020", destination_rse="HUB_DISK",
                           bytes_total=1830, at=start)  # fmt: skip
    db.finish_staging(rec.id, outcome="success", bytes_done=1830, at=start + timedelta(seconds=6.1))
    unknown = Avail(None, None, "unknown")  # sampled before the cluster view synced
    db.record_availability({"gammapy": unknown, "small": unknown}, at=start)


def record_a_busy_week(db: Database, now: datetime, spawns: int = 1000) -> None:
    """Six days of a busy hub: three profiles, refusals and failures, staging, availability."""
    rng = random.Random(7)
    first = now - timedelta(days=6)
    profiles = [("small", 0.6, (4, 25)), ("gammapy", 0.3, (20, 90)), ("gpu", 0.1, (60, 600))]
    for i in range(spawns):
        at = first + timedelta(seconds=rng.uniform(0, 6 * 86400 - 600))
        profile, _, (low, high) = rng.choices(profiles, weights=[w for _, w, _ in profiles])[0]
        roll = rng.random()
        if roll < 0.06:
            reason = "profile 'gpu' is full: 4 of 4 servers running (max_servers)"
            if profile != "gpu":
                reason = "cannot start now: no node has room for 16 CPU"
            db.record_spawn(profile=profile, user=f"u{i % 40}", outcome="refused", started_at=at,
                            finished_at=at + timedelta(seconds=0.2), failure_reason=reason,
                            phases={Phase.validate: 0.2})  # fmt: skip
            continue
        seconds = rng.uniform(low, high)
        outcome, reason = "success", None
        if roll > 0.99:
            outcome, reason = "cancelled", None
        elif roll > 0.96:
            outcome, reason = "failure", "Back-off pulling image: ErrImagePull"
        # 3 in 10 spawns land on a node without the image, which the kubelet pulls first
        pulled = seconds * 0.5 if rng.random() < 0.3 else 0.0
        phases = {Phase.validate: 0.05, Phase.scheduling: seconds * 0.1, Phase.image: pulled,
                  Phase.startup: seconds * 0.8 - pulled}  # fmt: skip
        db.record_spawn(profile=profile, user=f"u{i % 40}", outcome=outcome, started_at=at,
                        finished_at=at + timedelta(seconds=seconds), phases=phases,
                        failure_reason=reason)  # fmt: skip
    for i in range(60):
        at = first + timedelta(hours=2.3 * i)
        size = int(10 ** rng.uniform(7, 10.3))
        rec = db.start_staging(user=f"u{i % 40}", did=f"lofar:L{i}", destination_rse="HUB_DISK",
                               bytes_total=size, at=at)  # fmt: skip
        took = size / (10 ** rng.uniform(6.5, 8.3))
        outcome = "success" if i % 12 else "timeout"
        db.finish_staging(rec.id, outcome=outcome, bytes_done=size if outcome == "success"
                          else size // 3, at=at + timedelta(seconds=took))  # fmt: skip
    for step in range(6 * 96):  # every 15 minutes; the first two before the view synced
        at = first + timedelta(minutes=15 * step)
        busy = int(6 + 5 * math.sin(step / 96 * 2 * math.pi))
        counts = {"small": (20 - busy, busy), "gammapy": (8 - busy // 2, busy // 2),
                  "gpu": (busy % 3, 4 - busy % 3)}  # fmt: skip
        db.record_availability(
            {slug: Avail(*(pair if step >= 2 else (None, None)), "available")
             for slug, pair in counts.items()},
            at=at,
        )  # fmt: skip


SCENARIOS: dict[str, Callable[[Database, datetime], None] | None] = {
    "none": None,
    "one": record_one_staged_spawn,
    "many": record_a_busy_week,
}


def write_scenario(path: Path, scenario: str) -> str:
    """A SQLite database at ``path`` holding ``scenario``, recorded up to now; its URL."""
    url = f"sqlite:///{path}"
    db = Database(url)
    db.ensure_schema()
    record = SCENARIOS[scenario]
    if record is not None:
        record(db, datetime.now(UTC).replace(tzinfo=None))
    db.dispose()
    return url
