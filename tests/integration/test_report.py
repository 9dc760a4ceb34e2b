"""`esap-spawner report` on a real SQLite database: the page, its plots and its figures."""

from __future__ import annotations

import argparse
import random
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import numpy
import pytest
from PIL import Image

from esap_spawner import cli
from esap_spawner.observe import report
from esap_spawner.observe.db import Database
from esap_spawner.spawn.status import Phase
from tests.harness.report_data import SCENARIOS, Avail, write_scenario

pytestmark = pytest.mark.integration

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Tables(HTMLParser):
    """Rows of every <table id=...>: each cell as (text, data-value or None)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str | None]]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._value: str | None = None
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell, self._value = [], a.get("data-value")
        elif tag == "img":
            self.images.append(a["src"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append(("".join(self._cell).strip(), self._value))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def run_report(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    return report.run(parser.parse_args(list(argv)))


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[str, dict[str, list[float]]]:
    """A database with known spawns of three profiles, staging and availability."""
    url = f"sqlite:///{tmp_path / 'esap.sqlite'}"
    db = Database(url)
    db.ensure_schema()
    rng = random.Random(42)
    base = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=2)
    durations: dict[str, list[float]] = {"small": [], "gpu": []}
    for i in range(40):
        profile = "small" if i % 3 else "gpu"
        seconds = rng.uniform(3, 20) if profile == "small" else rng.uniform(30, 400)
        start = base + timedelta(minutes=17 * i)
        image = 0.0 if profile == "small" else seconds * 0.6
        phases = {Phase.validate: 0.05, Phase.scheduling: seconds * 0.2, Phase.image: image,
                  Phase.startup: seconds * 0.1}  # fmt: skip
        db.record_spawn(profile=profile, user=f"user{i % 7}", outcome="success",
                        started_at=start, finished_at=start + timedelta(seconds=seconds),
                        phases=phases, pod_name=None)  # fmt: skip
        durations[profile].append((start + timedelta(seconds=seconds) - start).total_seconds())
    for i, (outcome, reason) in enumerate([
        ("refused", "profile gpu is at its limit of 2 servers"),
        ("refused", "profile gpu is at its limit of 2 servers"),
        ("failure", "image pull failed: ErrImagePull"),
        ("cancelled", None),
    ]):  # fmt: skip
        start = base + timedelta(hours=5, minutes=i)
        end = start + timedelta(seconds=2)
        db.record_spawn(profile="gpu", user="carol", outcome=outcome, started_at=start,
                        finished_at=end, failure_reason=reason)  # fmt: skip
    # a profile whose only spawn was refused: counted, not timed
    db.record_spawn(profile="bigmem", user="dave", outcome="refused", started_at=base,
                    finished_at=base, failure_reason="no node has 512 GiB free")  # fmt: skip
    for i, size in enumerate([10**9, 5 * 10**9, 2 * 10**8]):
        rec = db.start_staging(user=f"u{i}", did=f"lofar:L{i}", destination_rse="HUB_DISK",
                               bytes_total=size, at=base + timedelta(hours=i))  # fmt: skip
        db.finish_staging(rec.id, outcome="success", bytes_done=size,
                          at=base + timedelta(hours=i, seconds=50 * (i + 1)))  # fmt: skip
    for minute in range(0, 240, 10):
        at = base + timedelta(minutes=minute)
        db.record_availability({"small": Avail(10 - minute // 30, minute // 30, "available"),
                                "gpu": Avail(minute % 3, 2, "limited")}, at=at)  # fmt: skip
    db.dispose()
    return url, durations


def test_report_figures_match_an_independent_computation(recorded, tmp_path: Path) -> None:
    url, durations = recorded
    out = tmp_path / "report"
    assert run_report("--db", url, "--since", "7d", "--out", str(out)) == 0
    page = (out / "index.html").read_text()
    parsed = Tables()
    parsed.feed(page)

    rows = {row[0][0]: row for row in parsed.tables["spawn-times"][1:]}
    assert set(rows) == {"small", "gpu", "bigmem"}
    header = [text for text, _ in parsed.tables["spawn-times"][0]]
    for profile, values in durations.items():
        row = rows[profile]
        for q in (50, 90, 99):
            cell = row[header.index(f"p{q}")]
            if len(values) < report.MIN_SAMPLES[q]:  # 27 and 14 spawns: no p99 yet
                assert cell == ("-", None)
                continue
            assert cell[1] is not None
            assert float(cell[1]) == pytest.approx(float(numpy.percentile(values, q)), rel=1e-12)
    assert rows["gpu"][header.index("refused")][0] == "2"
    assert rows["gpu"][header.index("spawns")][0] == str(len(durations["gpu"]) + 4)
    assert rows["bigmem"][header.index("p50")][1] is None  # no success: no time

    # phases: means over successful spawns; image is 60 % of gpu spawns, 0 for small
    phase_rows = {row[0][0]: row for row in parsed.tables["phases"][1:]}
    phase_header = [text for text, _ in parsed.tables["phases"][0]]
    gpu_image = float(phase_rows["gpu"][phase_header.index("image")][1] or "nan")
    assert gpu_image == pytest.approx(0.6 * sum(durations["gpu"]) / len(durations["gpu"]))
    assert float(phase_rows["small"][phase_header.index("image")][1] or "nan") == 0.0

    failures = [[text for text, _ in row] for row in parsed.tables["failures"][1:]]
    assert failures[0] == ["refused", "profile gpu is at its limit of 2 servers", "2", "gpu"]
    assert ["cancelled", "no reason recorded", "1", "gpu"] in failures

    assert "3 staging requests moved 6.2 GB" in page
    # the summary names the slow profile and its dominant phase (image: 60 % by design)
    assert f"<li>gpu: 9 in 10 of its {len(durations['gpu'])} successful spawns were ready" in page
    assert "most of the time goes to pulling the image (60 %" in page
    assert len(parsed.images) == 5
    for src in parsed.images:
        png = out / src
        assert png.read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            assert image.size[0] > 400 and image.size[1] > 100


def test_since_limits_the_period(recorded, tmp_path: Path) -> None:
    url, _ = recorded
    out = tmp_path / "recent"
    assert run_report("--db", url, "--since", "1h", "--out", str(out)) == 0
    assert "Nothing recorded yet" in (out / "index.html").read_text()


@pytest.mark.parametrize("create_tables", [True, False])
def test_empty_database_still_writes_a_page(tmp_path: Path, create_tables: bool) -> None:
    path = tmp_path / "empty.sqlite"
    db = Database(f"sqlite:///{path}")
    if create_tables:
        db.ensure_schema()
    else:
        path.touch()
    db.dispose()
    out = tmp_path / "out"
    assert run_report("--db", f"sqlite:///{path}", "--out", str(out)) == 0
    page = (out / "index.html").read_text()
    assert "Nothing recorded yet" in page
    assert list(out.glob("*.png")) == []


@pytest.mark.parametrize(
    ("since", "message"),
    [("yesterday", "neither a duration"), ("7x", "neither a duration"),
     ("2999-01-01", "in the future"), ("", "neither a duration")],
)  # fmt: skip
def test_bad_since_is_a_clear_error(tmp_path: Path, capsys, since: str, message: str) -> None:
    out = tmp_path / "out"
    assert run_report("--db", f"sqlite:///{tmp_path / 'x.sqlite'}", "--since", since,
                      "--out", str(out)) == 1  # fmt: skip
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_missing_database_file_is_a_clear_error(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.sqlite"
    assert run_report("--db", f"sqlite:///{missing}", "--out", str(tmp_path / "o")) == 1
    assert "no database file" in capsys.readouterr().err
    assert not missing.exists()


def test_the_cli_runs_the_report(recorded, tmp_path: Path) -> None:
    url, _ = recorded
    out = tmp_path / "via-cli"
    assert cli.main(["report", "--db", url, "--since", "2026-01-01", "--out", str(out)]) == 0
    assert (out / "spawn-durations.png").exists()


SECRET = "S3cret-Pw%40x"  # percent-encoded in the URL: "S3cret-Pw@x" once decoded
URLS_WITH_A_PASSWORD = [
    f"postgresql+psycopg://esap:{SECRET}@127.0.0.1:1/esap",  # no driver, or nothing listening
    f"postgresql+psycopg://esap:{SECRET}@127.0.0.1:notaport/esap",  # a port that is not one
    f"postgresql+nosuchdriver://esap:{SECRET}@db.example.org/esap",
    f"mysql://esap:{SECRET}@127.0.0.1:1/esap",
    f"esap:{SECRET}@db.example.org/esap",  # not a URL at all
]


@pytest.mark.parametrize("url", URLS_WITH_A_PASSWORD)
@pytest.mark.parametrize("command", [["report"], ["db", "status"], ["db", "upgrade"]])
def test_a_database_password_is_never_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, command: list[str]
) -> None:
    """Finding 12: the commands once printed the URL as given, password and all."""
    extra = ["--out", str(tmp_path / "out")] if command == ["report"] else []
    assert cli.main([*command, "--db", url, *extra]) == 1
    said = capsys.readouterr()
    printed = said.out + said.err
    assert "cannot use" in printed
    for secret in (SECRET, "S3cret-Pw@x", "S3cret"):
        assert secret not in printed, printed


@pytest.mark.parametrize("url", URLS_WITH_A_PASSWORD)
async def test_the_hub_logs_a_database_without_its_password(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from esap_spawner.spawn.context import HubContext

    context = HubContext(site_file="unused", db_url=url)
    assert await context.database() is None  # the spawn goes on without it
    assert "cannot use" in caplog.text
    assert "S3cret" not in caplog.text, caplog.text


# --- the report at any amount of data: 0, 1 and 1,000 recorded spawns ----------------------
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_report_reads_well_at_any_amount_of_data(tmp_path: Path, scenario: str) -> None:
    url = write_scenario(tmp_path / "esap.sqlite", scenario)
    out = tmp_path / "report"
    assert run_report("--db", url, "--since", "7d", "--out", str(out)) == 0
    page = (out / "index.html").read_text()
    parsed = Tables()
    parsed.feed(page)
    charts = sorted(p.name for p in out.glob("*.png"))
    assert sorted(parsed.images) == charts  # every chart is shown, none is missing
    for chart in charts:
        with Image.open(out / chart) as image:
            image.verify()

    if scenario == "none":
        assert "Nothing recorded yet in this period" in page and charts == []
        return
    rows = {row[0][0]: row for row in parsed.tables["spawn-times"][1:]}
    header = [text for text, _ in parsed.tables["spawn-times"][0]]
    if scenario == "one":
        # no percentile of one spawn, no "9 in 10", and a sentence instead of empty axes
        assert [rows["gammapy"][header.index(q)] for q in ("p50", "p90", "p99")] == [
            ("-", None)
        ] * 3
        assert "9 in 10" not in page
        assert "gammapy: its one successful spawn was ready in 14.2 s" in page
        assert "1 staging request moved 1.8 kB of escape:crab-2020 in 6.10 s (300 B/s)" in page
        assert "none with a value" in page  # availability: words, no chart
        assert charts == ["phases.png", "spawn-durations.png", "staging.png"]
    else:
        assert set(rows) == {"small", "gammapy", "gpu"}
        for profile, row in rows.items():
            successes = int(row[header.index("success")][0])
            assert successes >= report.MIN_SAMPLES[90], profile
            p99 = row[header.index("p99")]
            assert (p99[1] is None) == (successes < report.MIN_SAMPLES[99]), profile
        assert page.count("9 in 10 of its") == 3
        assert "60 staging requests moved" in page
        assert charts == ["availability.png", "failures.png", "phases.png",
                          "spawn-durations.png", "staging.png"]  # fmt: skip


def test_recorded_text_is_escaped_on_the_page(tmp_path: Path) -> None:
    """Failure reasons and names come from the database as recorded (a Kubernetes message can
    quote a user's input): the template escapes them, so the page shows them as text."""
    url = f"sqlite:///{tmp_path / 'esap.sqlite'}"
    db = Database(url)
    db.ensure_schema()
    at = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1)
    db.record_spawn(profile="small", user="mallory", outcome="failure", started_at=at,
                    finished_at=at + timedelta(seconds=3),
                    failure_reason='no dataset "<img src=x onerror=alert(1)>" & more')  # fmt: skip
    db.dispose()
    out = tmp_path / "report"
    assert run_report("--db", url, "--out", str(out)) == 0
    page = (out / "index.html").read_text()
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&amp; more" in page
    parsed = Tables()
    parsed.feed(page)
    assert parsed.tables["failures"][1][1][0] == 'no dataset "<img src=x onerror=alert(1)>" & more'
