"""``esap-spawner report``: the performance-assessment report, as an HTML page with PNG plots.

::

    esap-spawner report --db sqlite:///esap.sqlite --since 7d --out report/

reads what the spawner recorded (:mod:`esap_spawner.observe.db`) and writes ``report/index.html``
plus one PNG per plot: spawn time per profile (p50/p90/p99 and the distribution), where
the time goes (phases, stacked), failures by reason, staging throughput, and
availability over time per profile. An empty period still gives a page that says so.

The module has three layers: pure statistics over plain records (:func:`percentile`,
:func:`summarise_spawns`, ... tested without I/O), plots (:mod:`esap_spawner.observe.report_plots`,
matplotlib with the Agg backend, imported only when needed), and the page and command.
"""

from __future__ import annotations

import argparse
import html
import math
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from esap_spawner.observe.db import url_from_environment
from esap_spawner.site.quantity import format_bytes
from esap_spawner.spawn.status import Phase

__all__ = [
    "FailureCount",
    "ProfileSummary",
    "StagingThroughput",
    "add_arguments",
    "failure_counts",
    "headlines",
    "parse_since",
    "percentile",
    "run",
    "staging_throughput",
    "summarise_spawns",
]

OTHER = "other"  # time not attributed to any measured phase
PHASE_ORDER: tuple[str, ...] = (*(p.value for p in Phase), OTHER)


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
    """Spawn figures for one profile. Percentiles and phases are over successful spawns."""

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
            summary.p50, summary.p90, summary.p99 = (percentile(durations, q) for q in (50, 90, 99))
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


def headlines(summaries: Sequence[ProfileSummary]) -> list[str]:
    """One sentence per timed profile, slowest p90 first: how slow, and where the time goes
    (the largest phase and its share of the mean spawn)."""
    timed = sorted((s for s in summaries if s.p90 is not None), key=lambda s: -(s.p90 or 0))
    lines = []
    for s in timed:
        total = sum(s.mean_phases.values())
        phase, seconds = max(s.mean_phases.items(), key=lambda kv: kv[1])
        share = f"{100 * seconds / total:.0f} %" if total > 0 else "all"
        lines.append(
            f"{s.profile}: 9 in 10 successful spawns ready within {format_seconds(s.p90)}; "
            f"most of the time goes to {PHASE_WORDS[phase]} ({share} of the mean "
            f"{format_seconds(total)})."
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


CSS = """
body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:1em 0}td,th{padding:.3em .8em;border:1px solid #ddd}
th{background:#f4f4f4;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #eee}.note{color:#555}.empty{font-size:1.2em;padding:1em;
background:#fff8e0;border:1px solid #e8d890}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(seconds: float | None) -> str:
    attr = "" if seconds is None else f' data-value="{seconds!r}"'
    return f'<td class="num"{attr}>{_e(format_seconds(seconds))}</td>'


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], css_id: str) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cells) + "</tr>" for cells in rows)
    return f'<table id="{css_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render_html(data: ReportData, plots: dict[str, str], generated: datetime) -> str:
    """The page. ``plots`` maps a section name to the PNG file written for it."""
    period = f"{data.since:%Y-%m-%d %H:%M} to {data.until:%Y-%m-%d %H:%M} UTC"
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>esap-spawner performance report</title><style>{CSS}</style></head><body>",
        "<h1>Spawn performance report</h1>",
        f"<p>Period: <b>{_e(period)}</b>. Generated {generated:%Y-%m-%d %H:%M} UTC from the "
        "spawner's database. A <i>spawn</i> is one request to start a notebook server, from "
        "the moment the user asked until the server answered (or the spawn failed). "
        "A <i>profile</i> is one compute size a user can pick.</p>",
    ]
    if data.empty:
        parts.append(
            "<p class='empty'>Nothing recorded yet in this period: no spawns, no staging, "
            "no availability samples. Come back after users have started servers.</p>"
        )
        return "\n".join([*parts, "</body></html>"])

    def img(name: str, alt: str) -> str:
        if name not in plots:
            return ""
        return f"<p><img src='{_e(plots[name])}' alt='{_e(alt)}'></p>"

    summaries = summarise_spawns(data.spawns)
    lines = headlines(summaries)
    if lines:
        items = "".join(f"<li>{_e(line)}</li>" for line in lines)
        parts.append(f"<h2>In short</h2><ul id='headlines'>{items}</ul>")
    parts += _spawn_sections(summaries, img)
    parts += _failure_section(data, img)
    parts += _staging_section(data, img)
    parts += _availability_section(data, img)
    return "\n".join([*parts, "</body></html>"])


def _spawn_sections(
    summaries: Sequence[ProfileSummary], img: Callable[[str, str], str]
) -> list[str]:
    """ "Spawn time per profile" and "Where the time goes"."""
    parts = ["<h2>Spawn time per profile</h2>"]
    if not summaries:
        return [*parts, "<p>No spawns in this period.</p>"]
    outcomes = ("success", "failure", "refused", "cancelled")
    rows = [
        [f"<td>{_e(s.profile)}</td>", f'<td class="num">{s.total}</td>',
         *(f'<td class="num">{s.outcomes.get(o, 0)}</td>' for o in outcomes),
         _num(s.p50), _num(s.p90), _num(s.p99)]
        for s in summaries
    ]  # fmt: skip
    headers = ["profile", "spawns", *outcomes, "p50", "p90", "p99"]
    parts += [
        "<p class='note'>p50/p90/p99: half, 90 % and 99 % of the <b>successful</b> spawns "
        "of the profile were ready within this time. Refused spawns end at once and would "
        "hide slowness, so they are counted but not timed here.</p>",
        _table(headers, rows, "spawn-times"),
        img("durations", "Distribution of spawn times per profile"),
    ]
    parts.append("<h2>Where the time goes</h2>")
    timed = [s for s in summaries if s.mean_phases]
    if not timed:
        return [*parts, "<p>No successful spawn in this period, so no phase breakdown.</p>"]
    parts.append(
        "<p class='note'>Mean seconds per phase of a successful spawn. <i>validate</i>: "
        "checking the request; <i>staging</i>: bringing datasets to local storage; "
        "<i>scheduling</i>: waiting for a node with room; <i>image</i>: downloading "
        "the software image (0 when the node had it); <i>startup</i>: the notebook "
        "server starting; <i>other</i>: the rest (creating objects, init containers, "
        "waiting for the proxy).</p>"
    )
    rows = [
        [f"<td>{_e(s.profile)}</td>", *(_num(s.mean_phases[p]) for p in PHASE_ORDER)] for s in timed
    ]
    return [*parts, _table(["profile", *PHASE_ORDER], rows, "phases"), img("phases", "Phases")]


def _failure_section(data: ReportData, img: Callable[[str, str], str]) -> list[str]:
    failures = failure_counts(data.spawns)
    parts = ["<h2>Failures by reason</h2>"]
    if not failures:
        return [*parts, "<p>No failed, refused or cancelled spawn in this period.</p>"]
    rows = [
        [f"<td>{_e(f.outcome)}</td>", f"<td>{_e(f.reason)}</td>",
         f'<td class="num">{f.count}</td>', f"<td>{_e(', '.join(f.profiles))}</td>"]
        for f in failures
    ]  # fmt: skip
    return [
        *parts,
        "<p class='note'><i>refused</i>: stopped before any pod was made (not allowed, "
        "profile full, no room); <i>failure</i>: started then failed; <i>cancelled</i>: "
        "stopped by the user.</p>",
        _table(["outcome", "reason", "spawns", "profiles"], rows, "failures"),
        img("failures", "Failures by reason"),
    ]


def _staging_section(data: ReportData, img: Callable[[str, str], str]) -> list[str]:
    throughput = staging_throughput(data.staging)
    parts = ["<h2>Staging throughput</h2>"]
    if not throughput:
        return [*parts, "<p>No staging request finished in this period.</p>"]
    rates = [t.bytes_per_second for t in throughput if math.isfinite(t.bytes_per_second)]
    moved = sum(t.bytes for t in throughput)
    median = f"{format_bytes(percentile(rates, 50))}/s" if rates else "-"
    return [
        *parts,
        f"<p>{len(throughput)} staging requests moved {_e(format_bytes(moved))}; "
        f"median throughput {_e(median)} (bytes brought to the destination storage "
        "divided by the time from request to completion).</p>",
        img("staging", "Staging throughput per request"),
    ]


def _availability_section(data: ReportData, img: Callable[[str, str], str]) -> list[str]:
    parts = ["<h2>Availability over time</h2>"]
    if not data.availability:
        return [*parts, "<p>No availability samples in this period.</p>"]
    return [
        *parts,
        "<p class='note'>Per profile: how many more servers could start at once "
        "(<i>can start now</i>) and how many were running, as sampled by the spawner.</p>",
        img("availability", "Availability over time per profile"),
    ]


def write_report(data: ReportData, out: Path, *, generated: datetime) -> Path:
    """Write ``index.html`` and its PNGs into ``out`` (created if needed); returns the page."""
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
