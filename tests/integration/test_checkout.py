"""The checkout init program against real git servers: https only, no redirect followed.

The program (``datalinks.py checkout``) is run as the init container runs it, against the
demo's https git server (``esap_spawner.dev.demo_git``, ``git http-backend`` behind TLS)
holding a small repository with a branch and two commits. Security review finding 13:
the program accepted ``file://`` and ``ssh://`` although the spawner allows https only,
and git followed redirects; now the program takes https URLs only and git itself runs
with every other transport refused and redirects off.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import esap_spawner.data.datalinks as datalinks_module
from esap_spawner.dev import demo_git

pytestmark = pytest.mark.integration

SCRIPT = Path(datalinks_module.__file__)


def git(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


def run(*args: str, ca: Path) -> subprocess.CompletedProcess[str]:
    """``python3 datalinks.py checkout ...`` trusting the servers' certificates."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), "checkout", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "GIT_SSL_CAINFO": str(ca), "HOME": str(ca.parent)},
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[demo_git.GitServer]:
    """The demo's https git server, also serving ``origin.git``: a branch ``v1`` with one
    notebook, ``main`` with two."""
    folder = tmp_path_factory.mktemp("git")
    running = demo_git.start(folder)
    work = folder / "work"
    work.mkdir()
    git("init", "--quiet", "--initial-branch=main", cwd=work)
    for key, value in (("user.email", "t@example.org"), ("user.name", "t")):
        git("config", key, value, cwd=work)
    for name in ("analysis.ipynb", "second.ipynb"):
        (work / name).write_text("{}")
        git("add", name, cwd=work)
        git("commit", "--quiet", "-m", name, cwd=work)
        if name == "analysis.ipynb":
            git("branch", "v1", cwd=work)
    bare = folder / "repositories" / "origin.git"
    git("clone", "--quiet", "--bare", str(work), str(bare), cwd=folder)
    git("config", "uploadpack.allowReachableSHA1InWant", "true", cwd=bare)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def origin(server: demo_git.GitServer) -> str:
    return f"{server.url}/origin.git"


def test_checkout_branch_commit_and_keep_existing(
    tmp_path: Path, server: demo_git.GitServer, origin: str
) -> None:
    dest = tmp_path / "home" / "origin"
    done = run("--url", origin, "--ref", "v1", "--dest", str(dest), ca=server.ca_file)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in dest.iterdir() if p.name != ".git") == ["analysis.ipynb"]

    again = run("--url", origin, "--ref", "main", "--dest", str(dest), ca=server.ca_file)
    assert again.returncode == 0
    assert "already holds files: kept as it is" in again.stdout
    assert not (dest / "second.ipynb").exists()

    first_commit = git("rev-parse", "v1", cwd=dest)
    pinned = tmp_path / "pinned"
    done = run("--url", origin, "--ref", first_commit, "--dest", str(pinned), ca=server.ca_file)
    assert done.returncode == 0, done.stderr
    assert git("rev-parse", "HEAD", cwd=pinned) == first_commit


def test_checkout_refuses_option_like_arguments_and_cleans_up(
    tmp_path: Path, server: demo_git.GitServer, origin: str
) -> None:
    dest = tmp_path / "w"
    bad_url = run("--url=--upload-pack=touch /tmp/x", f"--dest={dest}", ca=server.ca_file)
    assert bad_url.returncode == 2 and "is not usable" in bad_url.stderr
    bad_ref = run(f"--url={origin}", "--ref=-evil", f"--dest={dest}", ca=server.ca_file)
    assert bad_ref.returncode == 2 and "not a valid branch" in bad_ref.stderr
    missing = run("--url", origin, "--ref", "nope", "--dest", str(dest), ca=server.ca_file)
    assert missing.returncode != 0
    assert not dest.exists() or not any(dest.iterdir())


@pytest.mark.parametrize(
    "scheme", ["file", "path", "ssh", "git", "http", "ext"], ids=lambda s: f"{s}-url"
)
def test_only_https_urls_are_checked_out(
    tmp_path: Path, server: demo_git.GitServer, scheme: str
) -> None:
    bare = server._server.root / "origin.git"
    url = {
        "file": bare.as_uri(),
        "path": str(bare),
        "ssh": "ssh://git@127.0.0.1:1/origin.git",
        "git": "git://127.0.0.1:1/origin.git",
        "http": server.url.replace("https://", "http://") + "/origin.git",
        "ext": "ext::sh -c touch% /tmp/esap-pwned",
    }[scheme]
    dest = tmp_path / "w"
    done = run(f"--url={url}", f"--dest={dest}", ca=server.ca_file)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "is not an https URL" in done.stderr or "is not usable" in done.stderr
    assert not dest.exists()


@pytest.mark.parametrize("scheme", ["file", "ssh", "http"])
def test_git_itself_refuses_every_transport_but_https(
    tmp_path: Path, server: demo_git.GitServer, scheme: str
) -> None:
    """The program's git commands, with another transport's URL put in (as a redirect, a
    submodule or an alternate would): git refuses it on its own."""
    bare = server._server.root / "origin.git"
    url = {
        "file": bare.as_uri(),
        "ssh": "ssh://git@127.0.0.1:1/origin.git",
        "http": server.url.replace("https://", "http://") + "/origin.git",
    }[scheme]
    (argv,) = datalinks_module.git_argvs("https://placeholder.invalid/r.git", None, "DEST")
    argv = [url if a == "https://placeholder.invalid/r.git" else a for a in argv]
    argv = [str(tmp_path / "w") if a == "DEST" else a for a in argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"transport '{scheme}' not allowed" in done.stderr, done.stderr


class _Redirect(BaseHTTPRequestHandler):
    """Every request: 302 to the same path on the real git server."""

    target = ""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_redirect_is_not_followed(tmp_path: Path, server: demo_git.GitServer) -> None:
    """An https host that sends git elsewhere (even to another https server) gets no clone:
    the checkout fetches from the host the user was shown, or not at all."""
    cert, key = demo_git.self_signed_certificate(tmp_path / "redirect")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    handler = type("Redirect", (_Redirect,), {"target": server.url})
    redirector = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    redirector.socket = context.wrap_socket(redirector.socket, server_side=True)
    thread = threading.Thread(target=redirector.serve_forever, daemon=True)
    thread.start()
    both = tmp_path / "both-ca.pem"
    both.write_bytes(server.ca_file.read_bytes() + cert.read_bytes())
    url = f"https://127.0.0.1:{redirector.server_address[1]}/origin.git"
    try:
        followed = subprocess.run(  # plain git follows the first redirect...
            ["git", "clone", "--depth", "1", "--", url, str(tmp_path / "plain")],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "GIT_SSL_CAINFO": str(both), "GIT_TERMINAL_PROMPT": "0"},
        )
        assert followed.returncode == 0, followed.stderr
        done = run(f"--url={url}", f"--dest={tmp_path / 'w'}", ca=both)  # ...the program not
    finally:
        redirector.shutdown()
        redirector.server_close()
    assert done.returncode != 0
    assert "redirect" in done.stderr.lower(), done.stderr
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())
