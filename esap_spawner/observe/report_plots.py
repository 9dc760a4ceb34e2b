"""The report's plots: matplotlib with the Agg backend, one PNG per section.

Only :mod:`esap_spawner.observe.report` imports this (and only when there is something to plot),
so the rest of the package never needs matplotlib (the ``report`` extra). Each function
draws from figures already computed by the report's pure layer and returns the file name.
"""

from __future__ import annotations

import math
import random
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
    ax.boxplot(data, orientation="horizontal", whis=(5, 95), showfliers=False, widths=0.5,
               medianprops={"color": "black", "linewidth": 2})  # fmt: skip
    jitter = random.Random(0)
    for i, values in enumerate(data, start=1):
        ys = [i + jitter.uniform(-0.18, 0.18) for _ in values]
        ax.scatter(values, ys, s=10, alpha=0.5, color="#0072b2", zorder=3)
    for i, s in enumerate(timed, start=1):
        ax.plot([s.p90 or 0.0], [i], marker="|", markersize=22, mew=2.5, color="#cc0000", zorder=4)
    ax.set_yticks(range(1, len(timed) + 1), [s.profile for s in timed])
    positive = [v for v in (x for d in data for x in d) if v > 0]
    if positive and max(positive) / min(positive) > 30:
        ax.set_xscale("log")
    ax.set_xlabel("seconds from request to ready (successful spawns)")
    ax.set_title(
        "Spawn time per profile: box = middle half, black line = median,\n"
        "whiskers 5-95 %, red tick = p90"
    )
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, out, "spawn-durations.png")


def plot_phases(summaries: list[ProfileSummary], out: Path) -> str | None:
    timed = [s for s in summaries if s.mean_phases]
    if not timed:
        return None
    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.6 * len(timed)))
    names = [s.profile for s in timed]
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
    from esap_spawner.observe.report import staging_throughput

    rows = [t for t in staging_throughput(data.staging) if math.isfinite(t.bytes_per_second)]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9, 4))
    for outcome in sorted({t.outcome for t in rows}):
        chosen = [t for t in rows if t.outcome == outcome]
        sizes = [20 + 200 * t.bytes / max(r.bytes for r in rows) for t in chosen]
        when = [mdates.date2num(t.started) for t in chosen]
        ax.scatter(when, [t.bytes_per_second / 1e6 for t in chosen],
                   s=sizes, alpha=0.6, label=outcome)  # fmt: skip
    ax.set_ylabel("MB/s (bytes staged / request duration)")
    ax.set_title("Staging throughput per request (dot size: bytes)")
    ax.set_xlabel("request time (UTC)")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return _save(fig, out, "staging.png")


def plot_availability(data: ReportData, out: Path) -> str | None:
    by_profile: dict[str, list[Any]] = {}
    for sample in data.availability:
        by_profile.setdefault(sample.profile, []).append(sample)
    if not by_profile:
        return None
    profiles = sorted(by_profile)
    fig, axes = plt.subplots(len(profiles), 1, figsize=(9, 0.5 + 2.0 * len(profiles)),
                             sharex=True, squeeze=False)  # fmt: skip
    for ax, profile in zip(axes[:, 0], profiles, strict=True):
        samples = by_profile[profile]
        times = [s.time for s in samples]
        for attr, label, colour in (("can_start_now", "can start now", "#009e73"),
                                    ("running", "running", "#0072b2")):  # fmt: skip
            values = [math.nan if getattr(s, attr) is None else getattr(s, attr) for s in samples]
            ax.step(times, values, where="post", label=label, color=colour)
        ax.set_ylabel(profile)
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="lower left", bbox_to_anchor=(0.0, 1.02), ncol=2, frameon=False)
    fig.suptitle("Availability over time per profile (servers)")
    axes[-1, 0].set_xlabel("time (UTC)")
    axes[-1, 0].xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    fig.autofmt_xdate()
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
