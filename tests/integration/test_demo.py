"""`esap-spawner demo` as a newcomer runs it: it comes up, answers, and stops cleanly."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.harness.demo import DemoProcess, nothing_listens
from tests.harness.hub import query_keys, running_version

pytestmark = pytest.mark.integration


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoProcess]:
    running = DemoProcess(tmp_path)
    yield running
    running.stop()


def test_demo_comes_up_answers_and_stops_clean(demo: DemoProcess) -> None:
    banner = demo.wait_ready()
    token = re.search(r"Authorization: token ([0-9a-f]+)", banner)
    assert token, banner
    assert "password: demo-pw" in banner

    assert requests.get(f"{demo.url}/hub/login", timeout=10).status_code == 200
    profiles = requests.get(
        f"{demo.url}/services/esap/api/v1/profiles",
        headers={"Authorization": f"token {token[1]}"},
        timeout=20,
    )
    assert profiles.status_code == 200, profiles.text
    slugs = [p["slug"] for p in profiles.json()["profiles"]]
    assert slugs == ["small", "casa", "gammapy", "gpu"]  # the example site file's profiles

    # live availability from the demo cluster: three 16-CPU nodes, one tainted 2-GPU node
    deadline = time.monotonic() + 30
    answer = profiles.json()
    while answer["stale"] and time.monotonic() < deadline:
        time.sleep(0.5)
        answer = requests.get(
            f"{demo.url}/services/esap/api/v1/profiles",
            headers={"Authorization": f"token {token[1]}"},
            timeout=20,
        ).json()
    can_start = {p["slug"]: p["availability"]["can_start_now"] for p in answer["profiles"]}
    assert can_start == {"small": 96, "casa": 10, "gammapy": 48, "gpu": 2}, answer
    link = re.search(r"ESAP link:\s+(\S+)", banner)
    assert link and link[1].startswith(f"{demo.url}/hub/spawn?opt-profile=gammapy&opt-dataset=")
    workflow = re.search(r"Workflow:\s+(https://127\.0\.0\.1:(\d+)/\S+\.git)", banner)
    assert workflow, banner
    query = parse_qs(urlsplit(link[1]).query)
    assert query["opt-workflow"] == [workflow[1]]
    assert query["opt-filepath"] == ["notebooks/crab.ipynb"]
    # ESAP's Deploy link lands on the service's launch route, which finds the default branch
    deploy = re.search(r"ESAP Deploy:\s+(\S+)", banner)
    assert deploy and deploy[1].startswith(f"{demo.url}/services/esap/v2/git/"), banner
    launched = requests.get(deploy[1], allow_redirects=False, timeout=30)
    assert launched.status_code == 302, launched.text
    target = parse_qs(urlsplit(launched.headers["Location"]).query)
    keys = query_keys(running_version(demo.url))  # in the running hub's style
    assert target[keys["workflow"]] == [workflow[1]] and target[keys["ref"]] == ["main"]
    # the workflow answers git's smart protocol, trusting the demo's certificate
    refs = subprocess.run(
        ["git", "ls-remote", workflow[1]],
        env={**os.environ, "GIT_SSL_CAINFO": str(demo.workdir / "git/git-cert.pem")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refs.returncode == 0 and "refs/heads/main" in refs.stdout, refs.stderr

    assert demo.stop() == 0
    assert "nothing is left running" in demo.text()
    assert nothing_listens(demo.port)
    assert nothing_listens(int(workflow[2]))


def test_busy_port_is_reported(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        demo = DemoProcess(tmp_path, port=port)
        assert demo.proc.wait(60) == 1
    assert f"port {port}" in demo.text() and "already in use" in demo.text()


def test_a_folder_the_demo_did_not_make_is_never_wiped(tmp_path: Path) -> None:
    foreign = tmp_path / "state"  # Demo's --workdir
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    demo = DemoProcess(tmp_path)
    assert demo.proc.wait(60) == 1
    assert "holds files the demo did not make" in demo.text()
    assert (foreign / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]


def test_the_demo_empties_only_its_own_folder(tmp_path: Path) -> None:
    from esap_spawner.dev.demo import WORKDIR_MARK, DemoError, prepare_workdir

    workdir = tmp_path / "made-by-demo"
    prepare_workdir(workdir)  # new: made and marked
    assert (workdir / WORKDIR_MARK).is_file()
    (workdir / "old.log").write_text("from the last run")
    prepare_workdir(workdir)  # marked: emptied
    assert sorted(p.name for p in workdir.iterdir()) == [WORKDIR_MARK]

    empty = tmp_path / "empty"
    empty.mkdir()
    prepare_workdir(empty)  # empty: taken
    assert (empty / WORKDIR_MARK).is_file()

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    link = tmp_path / "link"
    link.symlink_to(workdir)
    for refused in (a_file, link):
        with pytest.raises(DemoError, match="not a folder"):
            prepare_workdir(refused)
    assert a_file.read_text() == "x" and (workdir / WORKDIR_MARK).is_file()
