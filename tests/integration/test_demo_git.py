"""The demo's workflow server: a real git client clones over https, shallow, trusting only the
demo's certificate; pushes are refused."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import nbformat
import pytest

from esap_spawner.data.datalinks import checkout
from esap_spawner.dev import demo_git
from esap_spawner.spawn.objects import workflow_folder
from esap_spawner.spawn.options import validate_workflow

pytestmark = pytest.mark.integration


def git(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *argv],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("GIT_SSL")},
            "GIT_TERMINAL_PROMPT": "0",
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> demo_git.GitServer:
    running = demo_git.start(tmp_path_factory.mktemp("git"))
    yield running  # type: ignore[misc]
    running.stop()


def test_the_notebook_is_a_valid_notebook_that_reads_the_manifest() -> None:
    notebook = nbformat.reads(demo_git.FILES[demo_git.NOTEBOOK_PATH], as_version=4)
    nbformat.validate(notebook)
    code = "".join(c.source for c in notebook.cells if c.cell_type == "code")
    assert 'os.environ["ESAP_DATASETS"]' in code and "events.csv" in code


def test_the_notebook_runs_against_a_datasets_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from esap_spawner.dev.demo import DEMO_DATASETS

    crab = tmp_path / "datasets" / "escape" / "crab-2020"
    crab.mkdir(parents=True)
    for name, text in DEMO_DATASETS["escape:crab-2020"].items():
        (crab / name).write_text(text)
    manifest = {"datasets": {"escape:crab-2020": {"files_total": 2, "bytes_total": 99}}}
    (tmp_path / "datasets" / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("ESAP_DATASETS", str(tmp_path / "datasets" / "manifest.json"))
    notebook = nbformat.reads(demo_git.FILES[demo_git.NOTEBOOK_PATH], as_version=4)
    namespace: dict[str, object] = {}
    for cell in notebook.cells:
        if cell.cell_type == "code":
            exec(cell.source, namespace)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "escape:crab-2020 2 files, 99 bytes"
    assert out[1].startswith("{'time': '0.1', 'energy_tev': '1.2'") and len(out) == 3


def test_the_workflow_url_passes_the_options_validator(server: demo_git.GitServer) -> None:
    assert validate_workflow(server.workflow) == server.workflow
    assert server.workflow.startswith("https://127.0.0.1:")
    assert workflow_folder(server.workflow) == demo_git.REPOSITORY


def test_the_checkout_script_clones_it_shallow_with_the_ca(
    server: demo_git.GitServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "home" / demo_git.REPOSITORY
    monkeypatch.setenv("GIT_SSL_CAINFO", str(server.ca_file))
    assert checkout(server.workflow, None, str(dest)) == 0
    assert (dest / demo_git.NOTEBOOK_PATH).read_text() == demo_git.FILES[demo_git.NOTEBOOK_PATH]
    assert git("-C", str(dest), "rev-parse", "--is-shallow-repository").stdout.strip() == "true"
    assert checkout(server.workflow, "main", str(tmp_path / "by-branch")) == 0


def test_without_the_ca_the_clone_fails_and_pushes_are_refused(
    server: demo_git.GitServer, tmp_path: Path
) -> None:
    untrusted = git("clone", server.workflow, str(tmp_path / "x"))
    assert untrusted.returncode != 0
    assert "certificate" in untrusted.stderr
    trusted = {"GIT_SSL_CAINFO": str(server.ca_file)}
    assert git("clone", server.workflow, str(tmp_path / "y"), env=trusted).returncode == 0
    push = git("-C", str(tmp_path / "y"), "push", "origin", "HEAD:refs/heads/x", env=trusted)
    assert push.returncode != 0 and "403" in push.stderr
    refs = git("ls-remote", server.workflow, env=trusted).stdout
    assert "refs/heads/x" not in refs and "refs/heads/main" in refs


def test_cgi_response_reads_status_headers_and_body() -> None:
    assert demo_git.cgi_response(b"Status: 403 Forbidden\r\nX-A: b\r\n\r\nno") == (
        403,
        [("X-A", "b")],
        b"no",
    )
    assert demo_git.cgi_response(b"Content-Type: t\n\nbody") == (
        200,
        [("Content-Type", "t")],
        b"body",
    )
    status, _, body = demo_git.cgi_response(b"garbage")
    assert status == 502 and b"no headers" in body


def test_the_repository_holds_exactly_the_files(tmp_path: Path) -> None:
    bare = demo_git.make_repository(tmp_path)
    listed = git("--git-dir", str(bare), "ls-tree", "-r", "--name-only", "main").stdout.split()
    assert sorted(listed) == sorted(demo_git.FILES)
    shown = git("--git-dir", str(bare), "show", f"main:{demo_git.NOTEBOOK_PATH}").stdout
    assert json.loads(shown)["nbformat"] == 4


def test_a_relative_folder_serves_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--workdir`` may be relative; git http-backend only finds an absolute project root."""
    monkeypatch.chdir(tmp_path)
    running = demo_git.start(Path("relative"))
    try:
        trusted = {"GIT_SSL_CAINFO": str(running.ca_file)}
        cloned = git("clone", "--depth", "1", running.workflow, "copy", env=trusted)
        assert cloned.returncode == 0, cloned.stderr
        assert (tmp_path / "copy" / demo_git.NOTEBOOK_PATH).is_file()
    finally:
        running.stop()


def test_bodies_without_a_length_or_too_big_are_refused(server: demo_git.GitServer) -> None:
    import http.client
    import ssl

    context = ssl.create_default_context(cafile=str(server.ca_file))
    port = int(server.url.rsplit(":", 1)[1])
    path = f"/{demo_git.REPOSITORY}.git/git-upload-pack"
    for headers, status in (
        ({"Transfer-Encoding": "chunked"}, 411),
        ({"Content-Length": str(demo_git.MAX_BODY + 1)}, 413),
    ):
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        conn.putrequest("POST", path)
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.endheaders()
        assert conn.getresponse().status == status
        conn.close()
