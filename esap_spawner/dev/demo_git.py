"""The demo's workflow: a git repository of notebooks, served over https on 127.0.0.1.

ESAP hands a hub a workflow as an https URL of a git repository (see
:func:`esap_spawner.spawn.options.validate_workflow`); the spawn's ``esap-checkout`` init container
clones it with ``git clone --depth 1``. A shallow clone needs git's *smart* HTTP protocol, so
:class:`GitServer` answers through ``git http-backend`` (read-only: it refuses pushes without
an authenticated user), behind TLS with a self-signed certificate made at start. The demo
hands that certificate to the checkout as ``GIT_SSL_CAINFO`` through
``ESAPSpawner.checkout_env``, as a site would hand its own CA bundle.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import ssl
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

REPOSITORY = "esap-demo-notebooks"
NOTEBOOK_PATH = "notebooks/crab.ipynb"
HOST = "127.0.0.1"
MAX_BODY = 16 * 1024 * 1024


def _code(cell_id: str, source: str) -> dict[str, object]:
    return {
        "id": cell_id,
        "cell_type": "code",
        "execution_count": None,
        "metadata": {},
        "outputs": [],
        "source": source.strip("\n").splitlines(keepends=True),
    }


def _markdown(cell_id: str, source: str) -> dict[str, object]:
    return {
        "id": cell_id,
        "cell_type": "markdown",
        "metadata": {},
        "source": source.strip("\n").splitlines(keepends=True),
    }


def crab_notebook() -> dict[str, object]:
    """A small notebook that finds the Crab dataset through ``$ESAP_DATASETS`` and reads it."""
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {
                "name": "python3",
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
            },
            "language_info": {"name": "python"},
        },
        "cells": [
            _markdown(
                "about",
                """
# Crab nebula: a first look

This notebook came with the ESAP link (the *workflow*); the dataset `escape:crab-2020`
was mounted before the server started. `$ESAP_DATASETS` names the manifest of the
datasets this server was started with.
""",
            ),
            _code(
                "manifest",
                """
import csv, json, os
from pathlib import Path

manifest_file = Path(os.environ["ESAP_DATASETS"])
manifest = json.loads(manifest_file.read_text())
for did, entry in manifest["datasets"].items():
    print(did, entry["files_total"], "files,", entry["bytes_total"], "bytes")
""",
            ),
            _code(
                "events",
                """
# paths in the manifest are the pod's; the folder of the manifest is the mount root
crab = manifest_file.parent / "escape" / "crab-2020"
for row in csv.DictReader((crab / "events.csv").open()):
    print(row)
""",
            ),
        ],
    }


FILES = {
    "README.md": (
        "# ESAP demo notebooks\n\nServed by `esap-spawner demo`; opened by its ESAP link at "
        f"`{NOTEBOOK_PATH}`.\n"
    ),
    NOTEBOOK_PATH: json.dumps(crab_notebook(), indent=1) + "\n",
}


def make_repository(root: Path) -> Path:
    """A bare repository ``<root>/esap-demo-notebooks.git`` holding :data:`FILES` on ``main``."""
    bare = root / f"{REPOSITORY}.git"
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "esap-spawner demo",
        "GIT_AUTHOR_EMAIL": "demo@esap.invalid",
        "GIT_COMMITTER_NAME": "esap-spawner demo",
        "GIT_COMMITTER_EMAIL": "demo@esap.invalid",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    with tempfile.TemporaryDirectory(prefix="esap-demo-git-") as tmp:
        work = Path(tmp) / REPOSITORY
        for name, text in FILES.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_text(text)
        for argv in (
            ["init", "--quiet", "--initial-branch=main"],
            ["add", "--all"],
            ["commit", "--quiet", "--message", "Demo notebooks for ESAP"],
        ):
            _git(argv, cwd=work, env=env)
        root.mkdir(parents=True, exist_ok=True)
        _git(["clone", "--quiet", "--bare", str(work), str(bare)], cwd=root, env=env)
    return bare


def _git(argv: list[str], *, cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(["git", *argv], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(argv)} failed: {done.stderr.strip()}")


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for ``127.0.0.1`` (valid for 30 days) and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "esap-spawner demo git")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / "git-cert.pem", folder / "git-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.touch(mode=0o600)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def cgi_response(output: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body of a CGI program's output (``git http-backend``'s)."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, body = output.partition(separator)
        if found:
            break
    else:
        return 502, [("Content-Type", "text/plain")], b"git http-backend gave no headers\n"
    status, headers = 200, []
    for line in head.decode("latin-1").splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "status":
            status = int(value.split()[0])
        elif key.strip():
            headers.append((key.strip(), value.strip()))
    return status, headers, body


class _Handler(BaseHTTPRequestHandler):
    """git's smart HTTP protocol, through ``git http-backend`` (CGI), for GET and POST."""

    server: _Server

    def do_GET(self) -> None:
        self._backend(b"")

    def do_POST(self) -> None:
        # git sends small fetch negotiations with a length; a chunked body means a big one
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            self.send_error(411, "the demo git server needs a Content-Length")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.send_error(413, f"request bodies above {MAX_BODY} bytes are refused")
            return
        self._backend(self.rfile.read(length))

    def _backend(self, body: bytes) -> None:
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": self.request_version,
            "REQUEST_METHOD": self.command,
            "PATH_INFO": unquote(path),
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
        }
        if encoding := self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = encoding
        if protocol := self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = protocol
        done = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, timeout=120
        )
        status, headers, payload = cgi_response(done.stdout)
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        with self.server.log.open("a") as out:
            out.write(f"{self.log_date_time_string()} {format % args}\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    root: Path
    log: Path


@dataclass
class GitServer:
    """The demo's https git server, started by :func:`start`; :meth:`stop` ends it."""

    url: str
    ca_file: Path
    _server: _Server
    _thread: threading.Thread

    @property
    def workflow(self) -> str:
        return f"{self.url}/{REPOSITORY}.git"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


def start(folder: Path, port: int = 0) -> GitServer:
    """Make the repository and a certificate under ``folder``, then serve on 127.0.0.1."""
    folder = folder.resolve()  # git http-backend needs an absolute GIT_PROJECT_ROOT
    root = folder / "repositories"
    make_repository(root)
    cert, key = self_signed_certificate(folder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = _Server((HOST, port), _Handler)
    server.root, server.log = root, folder / "git-server.log"
    # the handshake happens in the request's thread, not in the accept loop
    server.socket = context.wrap_socket(
        server.socket, server_side=True, do_handshake_on_connect=False
    )
    thread = threading.Thread(target=server.serve_forever, name="demo-git", daemon=True)
    thread.start()
    return GitServer(f"https://{HOST}:{server.server_address[1]}", cert, server, thread)
