"""The report's pure layer: percentiles, --since parsing, per-profile summaries."""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esap_spawner.observe.report import (
    MIN_SAMPLES,
    StagingThroughput,
    availability_profiles,
    failure_counts,
    format_seconds,
    headlines,
    parse_since,
    percentile,
    rate_unit,
    staging_summary,
    summarise_spawns,
)
from esap_spawner.spawn.status import Phase

NOW = datetime(2026, 11, 23, 20, 0, 0)


@dataclass
class Spawn:
    profile: str
    outcome: str
    duration_seconds: float
    failure_reason: str | None = None
    phases: dict[Phase, float] = field(default_factory=dict)

    def phase_seconds(self) -> dict[Phase, float]:
        return self.phases


def inclusive_percentile(values: list[float], q: int) -> float:
    """Independent: statistics.quantiles' inclusive method is the same definition."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


@given(st.lists(st.floats(min_value=0, max_value=1e5), min_size=1, max_size=200),
       st.integers(min_value=1, max_value=99))  # fmt: skip
def test_percentile_matches_statistics_quantiles(values: list[float], q: int) -> None:
    assert percentile(values, q) == pytest.approx(inclusive_percentile(values, q), abs=1e-6)


def test_percentile_edges() -> None:
    assert percentile([5.0], 99) == 5.0
    assert percentile([1.0, 2.0], 0) == 1.0
    assert percentile([1.0, 2.0], 100) == 2.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], 101)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("7d", NOW - timedelta(days=7)), ("24h", NOW - timedelta(hours=24)),
     ("30m", NOW - timedelta(minutes=30)), ("2w", NOW - timedelta(weeks=2)),
     (" 90s ", NOW - timedelta(seconds=90)), ("1.5h", NOW - timedelta(minutes=90)),
     ("2026-11-01", datetime(2026, 11, 1)),
     ("2026-11-01T12:00:00Z", datetime(2026, 11, 1, 12)),
     ("2026-11-01T14:00:00+02:00", datetime(2026, 11, 1, 12))],
)  # fmt: skip
def test_parse_since(text: str, expected: datetime) -> None:
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "7 days", "d7", "-1d", "", "2026-13-01"])
def test_parse_since_refuses_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="neither a duration"):
        parse_since(text, now=NOW)


def test_parse_since_refuses_the_future() -> None:
    with pytest.raises(ValueError, match="in the future"):
        parse_since("2026-12-01", now=NOW)


def test_summaries_time_successes_and_explain_the_rest_as_other() -> None:
    spawns = [
        Spawn("gpu", "success", 100.0, phases={Phase.scheduling: 20.0, Phase.image: 60.0}),
        Spawn(
            "gpu",
            "success",
            50.0,
            phases={Phase.scheduling: 10.0, Phase.image: 0.0, Phase.staging: 30.0},
        ),
        Spawn("gpu", "refused", 0.1, "full"),
        Spawn("small", "failure", 300.0, "timeout"),
    ]
    gpu, small = summarise_spawns(spawns)
    assert gpu.profile == "gpu" and gpu.total == 3
    assert gpu.outcomes == {"success": 2, "refused": 1}
    assert gpu.durations == [100.0, 50.0]
    assert gpu.p50 == 75.0
    assert gpu.mean_phases["scheduling"] == 15.0
    assert gpu.mean_phases["image"] == 30.0
    assert gpu.mean_phases["staging"] == 15.0
    assert gpu.mean_phases["validate"] == 0.0
    assert gpu.mean_phases["other"] == (20.0 + 10.0) / 2
    assert small.p50 is None and small.mean_phases == {}


def test_failure_counts_group_by_outcome_and_reason() -> None:
    long = "0/3 nodes are available: 3 Insufficient cpu. " * 10
    spawns = [Spawn("a", "refused", 0, "full"), Spawn("b", "refused", 0, "full"),
              Spawn("a", "failure", 1, long + "pod-1"), Spawn("a", "failure", 1, long + "pod-2"),
              Spawn("a", "cancelled", 1), Spawn("a", "success", 1)]  # fmt: skip
    counts = failure_counts(spawns, width=80)
    assert [(f.outcome, f.count, f.profiles) for f in counts] == [
        ("failure", 2, ("a",)), ("refused", 2, ("a", "b")), ("cancelled", 1, ("a",))
    ]  # fmt: skip
    assert len(counts[0].reason) == 80
    assert counts[2].reason == "no reason recorded"


def test_formatting() -> None:
    assert format_seconds(None) == "-"
    assert format_seconds(1.234) == "1.23 s"
    assert format_seconds(42.0) == "42.0 s"
    assert format_seconds(300.0) == "5.0 min"


def test_percentile_of_shuffled_input_is_order_independent() -> None:
    values = [random.Random(1).uniform(0, 100) for _ in range(50)]
    shuffled = values[:]
    random.Random(2).shuffle(shuffled)
    assert percentile(values, 90) == percentile(shuffled, 90)


def test_headlines_name_the_slowest_profile_and_its_largest_phase_first() -> None:
    spawns = [
        *(Spawn("small", "success", 10.0, phases={Phase.scheduling: 1.0, Phase.startup: 8.0})
          for _ in range(12)),
        *(Spawn("gpu", "success", 200.0, phases={Phase.scheduling: 20.0, Phase.image: 150.0})
          for _ in range(10)),
        Spawn("bigmem", "refused", 0.1, "no room"),
    ]  # fmt: skip
    lines = headlines(summarise_spawns(spawns))
    assert len(lines) == 2
    assert lines[0].startswith("gpu: 9 in 10 of its 10 successful spawns were ready within 3.3 min")
    assert "pulling the image (75 % of the mean 3.3 min)" in lines[0]
    assert lines[1].startswith("small: 9 in 10 of its 12 successful spawns")
    assert "the server starting (80 %" in lines[1]


def test_small_samples_are_described_as_they_are() -> None:
    one = [Spawn("gammapy", "success", 14.2, phases={Phase.staging: 6.1, Phase.startup: 5.2})]
    four = [Spawn("small", "success", s, phases={Phase.startup: s / 2}) for s in (4, 5, 6, 30)]
    summaries = summarise_spawns([*one, *four])
    gammapy = next(s for s in summaries if s.profile == "gammapy")
    small = next(s for s in summaries if s.profile == "small")
    assert (gammapy.p50, gammapy.p90, gammapy.p99) == (None, None, None)  # no percentile of one
    assert (small.p50, small.p90, small.p99) == (5.5, None, None)
    lines = headlines(summaries)
    assert lines == [
        "small: its 4 successful spawns were ready within 30.0 s (median 5.50 s); most of the "
        "time goes to the server starting (50 % of the mean 11.2 s).",
        "gammapy: its one successful spawn was ready in 14.2 s; most of the time goes to "
        "staging data (43 % of its 14.2 s).",
    ]
    assert not any("9 in 10" in line for line in lines)


@pytest.mark.parametrize(("q", "needed"), [(50, 2), (90, 10), (99, 100)])
def test_a_percentile_needs_one_spawn_expected_above_it(q: int, needed: int) -> None:
    assert MIN_SAMPLES[q] == needed
    assert needed * (100 - q) / 100 >= 1 > (needed - 1) * (100 - q) / 100


@pytest.mark.parametrize(
    ("largest", "unit", "size"),
    [(0.0, "B/s", 1.0), (300.0, "B/s", 1.0), (999.0, "B/s", 1.0), (1000.0, "kB/s", 1e3),
     (1830.0, "kB/s", 1e3), (2.5e6, "MB/s", 1e6), (4e9, "GB/s", 1e9), (7e15, "TB/s", 1e12)],
)  # fmt: skip
def test_rates_are_charted_in_the_unit_that_fits(largest: float, unit: str, size: float) -> None:
    assert rate_unit(largest) == (unit, size)


def staged(did: str, seconds: float, size: int) -> StagingThroughput:
    return StagingThroughput(did, "HUB", NOW, seconds, size, "success")


def test_the_staging_sentence_fits_the_number_of_requests() -> None:
    assert staging_summary([]) == "No staging request finished in this period."
    assert staging_summary([staged("escape:crab", 6.1, 1830)]) == (
        "1 staging request moved 1.8 kB of escape:crab in 6.10 s (300 B/s), from the request "
        "to completion."
    )
    many = [staged("a:1", 10, 10**8), staged("a:2", 10, 3 * 10**8), staged("a:3", 0, 10**6)]
    assert staging_summary(many).startswith(
        "3 staging requests moved 401.0 MB; median throughput 20.0 MB/s"
    )


@dataclass
class Sample:
    profile: str
    can_start_now: int | None
    running: int | None


def test_availability_is_charted_only_for_profiles_with_a_known_value() -> None:
    samples = [Sample("gpu", None, None), Sample("small", None, None), Sample("small", 3, 1),
               Sample("casa", None, None)]  # fmt: skip
    assert availability_profiles(samples) == (["small"], ["casa", "gpu"])
    assert availability_profiles([]) == ([], [])
