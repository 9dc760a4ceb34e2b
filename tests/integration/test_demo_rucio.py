"""`esap-spawner demo` with a real local Rucio server: a local dataset and one to stage."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from esap_spawner.dev import demo_rucio
from tests.harness.demo import DemoProcess, nothing_listens

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not demo_rucio.available(), reason="no Rucio server venv (make setup-rucio)"
    ),
]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoProcess]:
    running = DemoProcess(tmp_path)
    yield running
    running.stop()


def test_demo_with_rucio_answers_locality_and_stops_clean(demo: DemoProcess) -> None:
    banner = demo.wait_ready(timeout=180)
    assert "transfers are emulated by the demo" in banner
    rucio_url = re.search(r"Rucio at (http://127\.0\.0\.1:\d+)", banner)
    assert rucio_url, banner
    token = re.search(r"Authorization: token ([0-9a-f]+)", banner)
    assert token, banner
    staging = re.search(r"Staging:\s+(\S+)", banner)
    assert staging and "dataset=escape%3Acta-sim-2024" in staging[1], banner

    r = requests.post(
        f"{demo.url}/services/esap/api/v1/locality",
        headers={"Authorization": f"token {token[1]}"},
        json={"dids": [demo_rucio.LOCAL_DID, demo_rucio.REMOTE_DID]},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    got = {x["did"]: x for x in r.json()["results"]}
    assert got[demo_rucio.LOCAL_DID]["status"] == "local", got
    assert got[demo_rucio.REMOTE_DID]["status"] == "remote", got
    assert got[demo_rucio.REMOTE_DID]["staging_required"] is True, got

    assert demo.stop() == 0
    assert "nothing is left running" in demo.text()
    assert nothing_listens(demo.port)
    assert nothing_listens(int(rucio_url[1].rsplit(":", 1)[1]))
