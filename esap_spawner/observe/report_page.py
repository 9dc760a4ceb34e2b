"""The report's page: plain figures from :mod:`esap_spawner.observe.report` laid into the Jinja
template ``templates/report.html`` (autoescaped, like the spawn form).

:func:`page_context` is pure (what the page says, cell by cell); :func:`render_html` renders it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from esap_spawner.observe.report import (
    MIN_SAMPLES,
    PHASE_ORDER,
    ProfileSummary,
    ReportData,
    availability_profiles,
    failure_counts,
    format_seconds,
    headlines,
    staging_summary,
    staging_throughput,
    summarise_spawns,
)

OUTCOMES = ("success", "failure", "refused", "cancelled")

_templates = Environment(
    loader=PackageLoader("esap_spawner.observe", "templates"),
    autoescape=select_autoescape(["html"]),
)


def seconds_cell(value: float | None, why: str = "") -> dict[str, Any]:
    """A table cell of seconds: the figure as text, the exact value for machines (data-value),
    or a dash and why there is no figure."""
    if value is None:
        return {"value": None, "text": format_seconds(None), "why": why}
    return {"value": repr(value), "text": format_seconds(value), "why": ""}


def spawn_rows(summaries: Sequence[ProfileSummary]) -> list[dict[str, Any]]:
    rows = []
    for s in summaries:
        cells = []
        for q, value in ((50, s.p50), (90, s.p90), (99, s.p99)):
            need = MIN_SAMPLES[q]
            why = f"p{q} needs at least {need} successful spawns; this profile has {s.timed}"
            cells.append(seconds_cell(value, why))
        rows.append(
            {
                "profile": s.profile,
                "total": s.total,
                "outcomes": [s.outcomes.get(o, 0) for o in OUTCOMES],
                "percentiles": cells,
            }
        )
    return rows


def page_context(data: ReportData, plots: dict[str, str], generated: datetime) -> dict[str, Any]:
    """Everything the template shows. ``plots`` maps a section to its PNG file name."""
    summaries = summarise_spawns(data.spawns)
    known, unknown = availability_profiles(data.availability)
    if not data.availability:
        availability_summary = "No availability samples in this period."
    else:
        availability_summary = (
            f"{len(data.availability)} availability samples in this period, none with a value "
            "(the cluster view was not known when they were taken), so no chart."
        )
    timed = [s for s in summaries if s.mean_phases]
    return {
        "period": f"{data.since:%Y-%m-%d %H:%M} to {data.until:%Y-%m-%d %H:%M} UTC",
        "generated": f"{generated:%Y-%m-%d %H:%M}",
        "empty": data.empty,
        "plots": plots,
        "headlines": headlines(summaries),
        "spawn_headers": ["profile", "spawns", *OUTCOMES, "p50", "p90", "p99"],
        "spawn_rows": spawn_rows(summaries),
        "min_samples": ", ".join(f"p{q} needs {n}" for q, n in MIN_SAMPLES.items()),
        "phase_order": PHASE_ORDER,
        "phase_rows": [
            {
                "profile": s.profile,
                "timed": s.timed,
                "phases": [seconds_cell(s.mean_phases[p]) for p in PHASE_ORDER],
            }
            for s in timed
        ],
        "failures": failure_counts(data.spawns),
        "staging_summary": staging_summary(staging_throughput(data.staging)),
        "availability_profiles": known,
        "availability_unknown": unknown,
        "availability_summary": availability_summary,
    }


def render_html(data: ReportData, plots: dict[str, str], generated: datetime) -> str:
    """The page, from :func:`page_context`."""
    return _templates.get_template("report.html").render(page_context(data, plots, generated))
