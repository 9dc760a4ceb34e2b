"""The report's plots: matplotlib with the Agg backend, one PNG per section.

Only :mod:`esap_spawner.observe.report` imports this (and only when there is something to plot),
so the rest of the package never needs matplotlib (the ``report`` extra). Each function
draws from figures already computed by the report's pure layer and returns the file name, or
None when it has nothing to draw (the page then says so in words).

Charts hold up with little data: time axes span the report's period (not matplotlib's guess
around a single point), byte rates are in the unit that fits them, spawn times start at 0 and
every profile's label says how many spawns it shows (n); a profile with fewer than
:data:`BOX_MIN` spawns gets its dots without a box.
"""

from __future__ import annotations

import math
import random
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:
    from esap_spawner.observe.report import ProfileSummary, ReportData

PHASE_COLOURS = {
    "validate": "#8c8c8c",
    "staging": "#e69f00",
    "scheduling": "#d55e00",
    "image": "#0072b2",
    "startup": "#009e73",
    "other": "#cccccc",
}
OUTCOME_COLOURS = {"failure": "#d55e00", "refused": "#e69f00", "cancelled": "#999999"}
DPI = 100
BOX_MIN = 5  # spawns of a profile below which its box (quartiles, whiskers) would mislead


def _period_axis(ax: Any, since: datetime, until: datetime) -> None:
    """A time axis over exactly the report's period, with ticks that suit its length."""
    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.set_xlim(mdates.date2num(since), mdates.date2num(until))
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("time (UTC)")


def _save(fig: Any, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=DPI, format="png", bbox_inches="tight")
    plt.close(fig)
    return name


def plot_durations(summaries: list[ProfileSummary], out: Path) -> str | None:
    timed = [s for s in summaries if s.durations]
    if not timed:
        return None
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.7 * len(timed)))
    data = [s.durations for s in timed]
    boxed = [i for i, s in enumerate(timed, start=1) if s.timed >= BOX_MIN]
    if boxed:
        ax.boxplot([data[i - 1] for i in boxed], positions=boxed, orientation="horizontal",
                   whis=(5, 95), showfliers=False, widths=0.5,
                   medianprops={"color": "black", "linewidth": 2})  # fmt: skip
    jitter = random.Random(0)
    for i, values in enumerate(data, start=1):
        ys = [i + jitter.uniform(-0.18, 0.18) for _ in values]
        ax.scatter(values, ys, s=10 if len(values) > 20 else 30, alpha=0.6, color="#0072b2",
                   zorder=3)  # fmt: skip
    for i, s in enumerate(timed, start=1):
        if s.p90 is not None:
            ax.plot([s.p90], [i], marker="|", markersize=22, mew=2.5, color="#cc0000", zorder=4)
    ax.set_yticks(range(1, len(timed) + 1), [f"{s.profile} (n={s.timed})" for s in timed])
    ax.set_ylim(0.4, len(timed) + 0.6)
    positive = [v for v in (x for d in data for x in d) if v > 0]
    if positive and max(positive) / min(positive) > 30:
        ax.set_xscale("log")
    else:
        ax.set_xlim(0, max(max(d) for d in data) * 1.08 or 1)
    ax.set_xlabel("seconds from request to ready (successful spawns)")
    ax.set_title(
        "Spawn time per profile: one dot per spawn; box = middle half, black line = median,\n"
        f"whiskers 5-95 % (profiles with {BOX_MIN}+ spawns), red tick = p90 (10+ spawns)"
    )
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, out, "spawn-durations.png")


def plot_phases(summaries: list[ProfileSummary], out: Path) -> str | None:
    timed = [s for s in summaries if s.mean_phases]
    if not timed:
        return None
    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.6 * len(timed)))
    names = [f"{s.profile} (n={s.timed})" for s in timed]
    left = [0.0] * len(timed)
    for phase, colour in PHASE_COLOURS.items():
        widths = [s.mean_phases.get(phase, 0.0) for s in timed]
        ax.barh(names, widths, left=left, color=colour, label=phase, edgecolor="white")
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_xlabel("mean seconds per successful spawn")
    ax.set_title("Where the time goes, per profile")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, out, "phases.png")


def plot_failures(data: ReportData, out: Path) -> str | None:
    from esap_spawner.observe.report import failure_counts

    failures = failure_counts(data.spawns, width=60)[:12]
    if not failures:
        return None
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.45 * len(failures)))
    labels = [f"{f.outcome}: {f.reason}" for f in failures]
    colours = [OUTCOME_COLOURS.get(f.outcome, "#555555") for f in failures]
    ax.barh(labels, [f.count for f in failures], color=colours)
    ax.invert_yaxis()
    ax.set_xlabel("spawns")
    ax.set_title("Spawns that did not succeed, by reason (most frequent first)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, out, "failures.png")


def plot_staging(data: ReportData, out: Path) -> str | None:
    from esap_spawner.observe.report import rate_unit, staging_throughput

    rows = [t for t in staging_throughput(data.staging) if math.isfinite(t.bytes_per_second)]
    if not rows:
        return None
    unit, size = rate_unit(max(t.bytes_per_second for t in rows))
    biggest = max(t.bytes for t in rows)
    fig, ax = plt.subplots(figsize=(9, 4))
    for outcome in sorted({t.outcome for t in rows}):
        chosen = [t for t in rows if t.outcome == outcome]
        ax.scatter([mdates.date2num(t.started) for t in chosen],
                   [t.bytes_per_second / size for t in chosen],
                   s=[30 + 200 * t.bytes / biggest for t in chosen], alpha=0.6,
                   label=f"{outcome} ({len(chosen)})")  # fmt: skip
    ax.set_ylim(0, max(t.bytes_per_second for t in rows) / size * 1.15)
    ax.set_ylabel(f"{unit} (bytes staged / request duration)")
    ax.set_title(f"Staging throughput per request, {len(rows)} in the period (dot size: bytes)")
    _period_axis(ax, data.since, data.until)
    ax.legend(title="outcome (requests)")
    ax.grid(alpha=0.3)
    return _save(fig, out, "staging.png")


def plot_availability(data: ReportData, out: Path) -> str | None:
    """One strip per profile with at least one known value; unknown samples are gaps."""
    from esap_spawner.observe.report import availability_profiles

    profiles, _ = availability_profiles(data.availability)
    by_profile: dict[str, list[Any]] = {}
    for sample in data.availability:
        by_profile.setdefault(sample.profile, []).append(sample)
    if not profiles:
        return None
    fig, axes = plt.subplots(len(profiles), 1, figsize=(9, 0.8 + 1.8 * len(profiles)),
                             sharex=True, squeeze=False)  # fmt: skip
    for ax, profile in zip(axes[:, 0], profiles, strict=True):
        samples = sorted(by_profile[profile], key=lambda s: s.time)
        times = [mdates.date2num(s.time) for s in samples]
        top = 1.0
        for attr, label, colour in (("can_start_now", "can start now", "#009e73"),
                                    ("running", "running", "#0072b2")):  # fmt: skip
            values = [math.nan if getattr(s, attr) is None else getattr(s, attr) for s in samples]
            top = max([top, *(v for v in values if not math.isnan(v))])
            ax.step(times, values, where="post", label=label, color=colour,
                    marker="o" if len(samples) < 30 else None, markersize=3)  # fmt: skip
        ax.set_ylabel(f"{profile}\n(n={len(samples)})")
        ax.set_ylim(0, top * 1.15 + 0.5)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="lower left", bbox_to_anchor=(0.0, 1.02), ncol=2, frameon=False)
    fig.suptitle("Availability over the report's period, per profile (servers; n: samples)")
    _period_axis(axes[-1, 0], data.since, data.until)
    return _save(fig, out, "availability.png")


def write_plots(data: ReportData, summaries: list[ProfileSummary], out: Path) -> dict[str, str]:
    """Every plot there is data for: section name -> PNG file name in ``out``."""
    made = {
        "durations": plot_durations(summaries, out),
        "phases": plot_phases(summaries, out),
        "failures": plot_failures(data, out),
        "staging": plot_staging(data, out),
        "availability": plot_availability(data, out),
    }
    return {k: v for k, v in made.items() if v is not None}
