"""``esap-spawner report``: the performance-assessment report, as an HTML page with PNG plots.

::

    esap-spawner report --db sqlite:///esap.sqlite --since 7d --out report/

reads what the spawner recorded (:mod:`esap_spawner.observe.db`) and writes ``report/index.html``
plus one PNG per plot: spawn time per profile (p50/p90/p99 and the distribution), where
the time goes (phases, stacked), failures by reason, staging throughput, and
availability over time per profile. An empty period still gives a page that says so.

Small samples are described as they are: a percentile is given only when enough successful
spawns lie behind it (:data:`MIN_SAMPLES`), the summary speaks of "its one successful spawn"
or "its 4 successful spawns" below that, and a chart without data is left out for words.

The module has three layers: pure statistics over plain records (:func:`percentile`,
:func:`summarise_spawns`, ... tested without I/O), the page
(:mod:`esap_spawner.observe.report_page`, a Jinja template) and its plots
(:mod:`esap_spawner.observe.report_plots`, matplotlib with the Agg backend, imported only
when there is something to plot), and the command.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from esap_spawner.observe.db import url_from_environment
from esap_spawner.site.quantity import format_bytes
from esap_spawner.spawn.status import Phase

__all__ = [
    "MIN_SAMPLES",
    "FailureCount",
    "ProfileSummary",
    "ReportData",
    "StagingThroughput",
    "add_arguments",
    "availability_profiles",
    "failure_counts",
    "headlines",
    "parse_since",
    "percentile",
    "rate_unit",
    "run",
    "staging_summary",
    "staging_throughput",
    "summarise_spawns",
    "write_report",
]

OTHER = "other"  # time not attributed to any measured phase
PHASE_ORDER: tuple[str, ...] = (*(p.value for p in Phase), OTHER)
# The fewest spawns for which a q-th percentile rests on data: it says that (100 - q) % of
# spawns took longer, so at least one spawn must be expected above it (ceil(100 / (100 - q)):
# p50 needs 2, p90 10, p99 100). Below that the report gives no percentile, only the spawns.
MIN_SAMPLES: dict[int, int] = {q: math.ceil(100 / (100 - q)) for q in (50, 90, 99)}


# --- pure statistics ----------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks
    (Hyndman and Fan type 7, the default of numpy and of spreadsheet PERCENTILE)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be between 0 and 100, not {q!r}")
    ordered = sorted(float(v) for v in values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class SpawnLike(Protocol):
    profile: str
    outcome: str
    duration_seconds: float
    failure_reason: str | None

    def phase_seconds(self) -> dict[Phase, float]: ...


@dataclass
class ProfileSummary:
    """Spawn figures for one profile. Percentiles and phases are over successful spawns;
    a percentile is None when there are fewer successful spawns than :data:`MIN_SAMPLES`."""

    profile: str
    outcomes: dict[str, int]
    durations: list[float]
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    mean_phases: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    @property
    def timed(self) -> int:
        """Successful spawns, the ones with a duration."""
        return len(self.durations)


def summarise_spawns(spawns: Iterable[SpawnLike]) -> list[ProfileSummary]:
    """One summary per profile, sorted by slug.

    ``mean_phases`` holds the mean seconds per phase over successful spawns (an unmeasured
    phase counts as 0) plus ``other``: the mean of what the phases do not explain.
    """
    by_profile: dict[str, list[SpawnLike]] = {}
    for spawn in spawns:
        by_profile.setdefault(spawn.profile, []).append(spawn)
    summaries = []
    for profile in sorted(by_profile):
        group = by_profile[profile]
        ok = [s for s in group if s.outcome == "success"]
        durations = [float(s.duration_seconds) for s in ok]
        summary = ProfileSummary(profile, dict(Counter(s.outcome for s in group)), durations)
        if durations:
            summary.p50, summary.p90, summary.p99 = (
                percentile(durations, q) if len(durations) >= MIN_SAMPLES[q] else None
                for q in (50, 90, 99)
            )
            sums = dict.fromkeys(PHASE_ORDER, 0.0)
            for spawn in ok:
                phases = spawn.phase_seconds()
                for phase, seconds in phases.items():
                    sums[Phase(phase).value] += seconds
                sums[OTHER] += max(0.0, spawn.duration_seconds - sum(phases.values()))
            summary.mean_phases = {k: v / len(ok) for k, v in sums.items()}
        summaries.append(summary)
    return summaries


PHASE_WORDS = {
    "validate": "checking the request",
    "staging": "staging data",
    "scheduling": "waiting for a node (scheduling)",
    "image": "pulling the image",
    "startup": "the server starting",
    OTHER: "unattributed time",
}


def how_fast(s: ProfileSummary) -> str:
    """How long a profile's successful spawns took, in words that fit the number of them."""
    n = s.timed
    if s.p90 is not None:
        return f"9 in 10 of its {n} successful spawns were ready within {format_seconds(s.p90)}"
    if n == 1:
        return f"its one successful spawn was ready in {format_seconds(s.durations[0])}"
    slowest, middle = format_seconds(max(s.durations)), format_seconds(s.p50)
    return f"its {n} successful spawns were ready within {slowest} (median {middle})"


def headlines(summaries: Sequence[ProfileSummary]) -> list[str]:
    """One sentence per profile with a successful spawn, slowest first (p90, or the slowest
    spawn when there are too few for a p90): how slow, and where the time goes (the largest
    phase and its share of the mean spawn)."""
    timed = sorted(
        (s for s in summaries if s.durations),
        key=lambda s: -(s.p90 if s.p90 is not None else max(s.durations)),
    )
    lines = []
    for s in timed:
        total = sum(s.mean_phases.values())
        phase, seconds = max(s.mean_phases.items(), key=lambda kv: kv[1])
        share = f"{100 * seconds / total:.0f} %" if total > 0 else "all"
        whole = ("its " if s.timed == 1 else "the mean ") + format_seconds(total)
        lines.append(
            f"{s.profile}: {how_fast(s)}; most of the time goes to {PHASE_WORDS[phase]} "
            f"({share} of {whole})."
        )
    return lines


@dataclass(frozen=True)
class FailureCount:
    outcome: str
    reason: str
    count: int
    profiles: tuple[str, ...]


def failure_counts(spawns: Iterable[SpawnLike], *, width: int = 120) -> list[FailureCount]:
    """Spawns that did not succeed, grouped by outcome and reason, most frequent first.

    Reasons are cut at ``width`` characters so that messages differing only in a long tail
    (a pod name, a byte count) group together.
    """
    groups: dict[tuple[str, str], list[str]] = {}
    for spawn in spawns:
        if spawn.outcome == "success":
            continue
        reason = " ".join((spawn.failure_reason or "no reason recorded").split())
        if len(reason) > width:
            reason = reason[: width - 1] + "…"
        groups.setdefault((spawn.outcome, reason), []).append(spawn.profile)
    found = [
        FailureCount(outcome, reason, len(profiles), tuple(sorted(set(profiles))))
        for (outcome, reason), profiles in groups.items()
    ]
    return sorted(found, key=lambda f: (-f.count, f.outcome, f.reason))


class StagingLike(Protocol):
    did: str
    destination_rse: str
    created_at: datetime
    finished_at: datetime | None
    bytes_done: int
    outcome: str | None


@dataclass(frozen=True)
class StagingThroughput:
    did: str
    destination_rse: str
    started: datetime
    seconds: float
    bytes: int
    outcome: str

    @property
    def bytes_per_second(self) -> float:
        return self.bytes / self.seconds if self.seconds > 0 else math.inf


RATE_UNITS = (("B/s", 1.0), ("kB/s", 1e3), ("MB/s", 1e6), ("GB/s", 1e9), ("TB/s", 1e12))


def rate_unit(largest: float) -> tuple[str, float]:
    """The unit a chart of byte rates up to ``largest`` reads best in, and its size in B/s:
    the largest decimal unit that keeps ``largest`` at 1 or more (``1830`` -> ``kB/s``)."""
    chosen = RATE_UNITS[0]
    for unit in RATE_UNITS:
        if largest >= unit[1]:
            chosen = unit
    return chosen


def format_rate(bytes_per_second: float) -> str:
    return f"{format_bytes(bytes_per_second)}/s"


def staging_summary(throughput: Sequence[StagingThroughput]) -> str:
    """The staging section's sentence: one request is described, several summarised."""
    timed = [t for t in throughput if math.isfinite(t.bytes_per_second)]
    if not throughput:
        return "No staging request finished in this period."
    if len(throughput) == 1:
        (t,) = throughput
        rate = f" ({format_rate(t.bytes_per_second)})" if timed else ""
        return (
            f"1 staging request moved {format_bytes(t.bytes)} of {t.did} in "
            f"{format_seconds(t.seconds)}{rate}, from the request to completion."
        )
    moved = format_bytes(sum(t.bytes for t in throughput))
    median = format_rate(percentile([t.bytes_per_second for t in timed], 50)) if timed else "-"
    return (
        f"{len(throughput)} staging requests moved {moved}; median throughput {median} (bytes "
        "brought to the destination storage divided by the time from request to completion)."
    )


def staging_throughput(records: Iterable[StagingLike]) -> list[StagingThroughput]:
    """Finished staging requests that moved bytes, with their duration, oldest first."""
    found = []
    for r in records:
        if r.finished_at is None or r.outcome is None or r.bytes_done <= 0:
            continue
        seconds = (r.finished_at - r.created_at).total_seconds()
        found.append(
            StagingThroughput(
                r.did, r.destination_rse, r.created_at, seconds, r.bytes_done, r.outcome
            )
        )
    return sorted(found, key=lambda t: t.started)


def availability_profiles(samples: Sequence[Any]) -> tuple[list[str], list[str]]:
    """Profiles sampled in the period: those with at least one known value, and those whose
    every sample was unknown (the cluster view was not synced)."""
    known: set[str] = set()
    seen: set[str] = set()
    for sample in samples:
        seen.add(sample.profile)
        if sample.can_start_now is not None or sample.running is not None:
            known.add(sample.profile)
    return sorted(known), sorted(seen - known)


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, *, now: datetime) -> datetime:
    """The start of the period as naive UTC: ``7d``, ``24h``, ``30m``, ``2w``, ``90s``
    before ``now`` (naive UTC), or an ISO 8601 date or time (UTC unless it says otherwise)."""
    match = _RELATIVE.match(text)
    if match:
        amount = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        return now - timedelta(seconds=amount)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since {text!r} is neither a duration (7d, 24h, 30m, 2w) nor an ISO date "
            "(2026-11-01, 2026-11-01T12:00:00Z)"
        ) from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    if moment > now:
        raise ValueError(f"--since {text!r} is in the future (now is {now:%Y-%m-%d %H:%M} UTC)")
    return moment


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


# --- the page -----------------------------------------------------------------------------
@dataclass
class ReportData:
    since: datetime
    until: datetime
    spawns: list[Any]
    staging: list[Any]
    availability: list[Any]

    @property
    def empty(self) -> bool:
        return not (self.spawns or self.staging or self.availability)


def write_report(data: ReportData, out: Path, *, generated: datetime) -> Path:
    """Write ``index.html`` and its PNGs into ``out`` (created if needed); returns the page."""
    from esap_spawner.observe.report_page import render_html

    out.mkdir(parents=True, exist_ok=True)
    plots: dict[str, str] = {}
    if not data.empty:
        from esap_spawner.observe import report_plots

        plots = report_plots.write_plots(data, summarise_spawns(data.spawns), out)
    page = out / "index.html"
    page.write_text(render_html(data, plots, generated), encoding="utf-8")
    return page


# --- the command --------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=url_from_environment(),
        help="database URL (default: $ESAP_DATABASE_URL or sqlite:///esap.sqlite)",
    )
    parser.add_argument(
        "--since",
        default="7d",
        help="start of the period: 7d, 24h, 30m, 2w, or an ISO date (default: 7d)",
    )
    parser.add_argument("--out", default="esap-report", help="output folder (default: %(default)s)")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def run(args: argparse.Namespace) -> int:
    now = _now()
    try:
        since = parse_since(args.since, now=now)
    except ValueError as exc:
        print(f"esap-spawner report: {exc}", file=sys.stderr)
        return 1
    from sqlalchemy.exc import SQLAlchemyError

    from esap_spawner.observe.db import Database
    from esap_spawner.observe.schema import SchemaError, SchemaState, check_status, schema_status
    from esap_spawner.observe.urls import database_problem

    sqlite_path = args.db.removeprefix("sqlite:///") if args.db.startswith("sqlite:///") else None
    if sqlite_path and sqlite_path != ":memory:" and not Path(sqlite_path).exists():
        print(f"esap-spawner report: no database file at {sqlite_path!r}", file=sys.stderr)
        return 1
    try:
        status = schema_status(args.db)  # read only: an older schema is named, not upgraded
        check_status(status, args.db)
        db = Database(args.db)
        if status.state is SchemaState.current:
            data = ReportData(
                since,
                now,
                db.spawns_between(since, now),
                db.staging_between(since, now),
                db.availability_between(since, now),
            )
        else:
            data = ReportData(since, now, [], [], [])
        db.dispose()
    except SchemaError as exc:
        print(f"esap-spawner report: {exc}", file=sys.stderr)
        return 1
    except (SQLAlchemyError, ImportError, ValueError) as exc:  # ValueError: a URL's port
        print(f"esap-spawner report: {database_problem(args.db, exc)}", file=sys.stderr)
        return 1
    try:
        page = write_report(data, Path(args.out), generated=now)
    except ModuleNotFoundError as exc:
        print(
            f"esap-spawner report: {exc.name} is missing; install the report extra: "
            "pip install 'esap-spawner[report]'",
            file=sys.stderr,
        )
        return 1
    print(f"wrote {page}")
    return 0
