"""What the HTTP benchmarks share: server processes, their CPU counter, and load generation.

- :class:`Child`: runs this benchmark script again as a server (``--serve ...``) and
  learns its port from the ``READY <port>`` line it prints;
- :func:`listen`: serves a tornado app on a free port of 127.0.0.1 with ``GET /bench/stats``
  added (the process's CPU seconds and answers so far), so CPU per answer can be computed
  from the server's own counters, which the load of other jobs on the machine barely moves;
- :func:`load`: keeps ``connections`` HTTP/1.1 keep-alive connections busy for ``seconds``
  with **wrk** (``wrk -t2 -cN --latency`` and a Lua script for method, body and headers)
  when it is installed (``make setup-bench`` installs Debian's package), else with a
  Python asyncio client in this process; the result says which one ran;
- :func:`instructions_per_answer`: runs a server under valgrind's callgrind and counts the
  instructions it executes (user space) per answer over a fixed number of requests sent
  one after another on one connection: the same count on a quiet or a busy machine, so a
  ratio of two servers is repeatable where throughput swings with other jobs.
"""

from __future__ import annotations

import asyncio
import glob
import http.client
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


class Child:
    """A server process of the calling script (``script --serve ...``)."""

    def __init__(self, script: str, *argv: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, script, *argv], stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            self.stop()
            raise RuntimeError(f"server {argv} did not start: {line!r}")
        self.port = int(line.split()[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stats(self) -> dict[str, float]:
        """The server's CPU seconds and the answers it counted so far."""
        with urllib.request.urlopen(self.url("/bench/stats"), timeout=600) as r:
            result: dict[str, float] = json.load(r)
        return result

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def listen(app: Any, counted: str, extra: Callable[[], dict[str, float]] | None = None) -> int:
    """Serve ``app`` on a free port of 127.0.0.1 with ``GET /bench/stats``; answers whose
    path ends with ``counted`` are counted, ``extra()`` adds figures of the server's own.
    Prints ``READY <port>``; returns the port."""
    import tornado.web
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    answers = [0]

    def log_function(handler: tornado.web.RequestHandler) -> None:
        if handler.request.path.endswith(counted):
            answers[0] += 1

    class Stats(tornado.web.RequestHandler):
        def get(self) -> None:
            self.write({"cpu": time.process_time(), "answers": answers[0], **(extra or dict)()})

    app.settings["log_function"] = log_function
    app.add_handlers(r".*", [(r"/bench/stats", Stats)])
    sockets = bind_sockets(0, address="127.0.0.1")
    HTTPServer(app).add_sockets(sockets)
    port = int(sockets[0].getsockname()[1])
    print(f"READY {port}", flush=True)
    return port


@dataclass
class Load:
    """One load window: answers per second, latency percentiles, the tool that made it."""

    rps: float
    p50_ms: float
    p99_ms: float
    answers: int
    errors: int
    tool: str


_WRK_SCRIPT = """
wrk.method = %(method)s
wrk.body = %(body)s
%(headers)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "errors": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def _lua(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid Lua string literal for ASCII text


def tool() -> str:
    """``wrk`` when installed, else ``python`` (the in-process asyncio client)."""
    return "wrk" if shutil.which("wrk") else "python"


def load(url: str, *, seconds: float, connections: int = 32, headers: dict[str, str],
         method: str = "GET", body: bytes = b"") -> Load:  # fmt: skip
    """Keep ``connections`` connections busy on ``url`` for ``seconds``."""
    if tool() == "wrk":
        return _wrk(url, seconds, connections, headers, method, body)
    return asyncio.run(_python_load(url, seconds, connections, headers, method, body))


def _wrk(url: str, seconds: float, connections: int, headers: dict[str, str], method: str,
         body: bytes) -> Load:  # fmt: skip
    lines = "\n".join(f"wrk.headers[{_lua(k)}] = {_lua(v)}" for k, v in headers.items())
    script = _WRK_SCRIPT % {"method": _lua(method), "body": _lua(body.decode()), "headers": lines}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
             "-s", f.name, url],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        ).stdout  # fmt: skip
    finally:
        os.unlink(f.name)
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    r = json.loads(line[len("RESULT ") :])
    duration = r["duration_us"] / 1e6
    return Load(r["requests"] / duration, r["p50_us"] / 1000, r["p99_us"] / 1000,
                r["requests"], r["errors"], "wrk")  # fmt: skip


async def _python_load(url: str, seconds: float, connections: int, headers: dict[str, str],
                       method: str, body: bytes) -> Load:  # fmt: skip
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, _, port = host_port.partition(":")
    head = f"{method} /{path} HTTP/1.1\r\nHost: {host_port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    request = head.encode() + b"\r\n" + body
    latencies: list[float] = []
    errors = [0]
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, int(port), limit=2**24)
        try:
            while (now := time.perf_counter()) < deadline:
                writer.write(request)
                try:
                    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), deadline - now)
                except TimeoutError:
                    return  # in flight when the window closed: not counted
                length = 0
                for line in answer.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                if not answer.startswith(b"HTTP/1.1 2"):
                    errors[0] += 1
                latencies.append(time.perf_counter() - now)
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    if not latencies:
        return Load(0.0, math.nan, math.nan, 0, errors[0], "python")
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else latencies[0]
    return Load(len(latencies) / seconds, statistics.median(latencies) * 1000, p99 * 1000,
                len(latencies), errors[0], "python")  # fmt: skip


def loaded(server: Child, url: str, **kwargs: Any) -> tuple[Load, float]:
    """:func:`load` on ``server``, and the server's CPU microseconds per answer meanwhile."""
    before = server.stats()
    result = load(url, **kwargs)
    after = server.stats()
    answers = max(after["answers"] - before["answers"], 1)
    return result, (after["cpu"] - before["cpu"]) / answers * 1e6


class Callgrind:
    """A command run under valgrind's callgrind with counting off until :meth:`on`; each
    :meth:`dump` closes an interval (begun by :meth:`zero`) whose instructions
    :meth:`intervals` reads back. None of it without valgrind (:func:`callgrind_found`)."""

    def __init__(self, argv: list[str], folder: str, **popen: Any) -> None:
        self.out = f"{folder}/callgrind.out"
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no",
             f"--callgrind-out-file={self.out}", *argv],
            stderr=subprocess.DEVNULL, **popen,
        )  # fmt: skip

    def _control(self, *flags: str) -> None:
        subprocess.run(["callgrind_control", *flags, str(self.proc.pid)], check=True,
                       capture_output=True)  # fmt: skip

    def on(self) -> None:
        self._control("-i", "on")

    def zero(self) -> None:
        self._control("-z")

    def dump(self) -> None:
        self._control("-d")

    def intervals(self) -> list[int]:
        """Instructions of each dumped interval, in order."""
        found = []
        for name in sorted(glob.glob(self.out + ".*"), key=lambda n: int(n.rsplit(".", 1)[1])):
            for line in Path(name).read_text().splitlines():
                if line.startswith(("summary:", "totals:")):
                    found.append(int(line.split()[1]))
                    break
        return found


def callgrind_found() -> bool:
    return bool(shutil.which("valgrind") and shutil.which("callgrind_control"))


def instructions_per_answer(script: str, argv: list[str], path: str, *, headers: dict[str, str],
                            method: str = "GET", body: bytes = b"", answers: int = 500,
                            warmup: int = 100) -> float | None:  # fmt: skip
    """Instructions the server ``script --serve ...`` executes per answer (callgrind), after
    ``warmup`` answers; None without valgrind. The server must not do timed work of its own
    (under valgrind it runs about 50x slower, so anything per second would be counted
    50x too often per answer)."""
    if not callgrind_found():
        return None
    with tempfile.TemporaryDirectory(prefix="esap-callgrind-") as tmp:
        server = Callgrind([sys.executable, script, *argv], tmp, stdout=subprocess.PIPE,
                           text=True, env={**os.environ, "PYTHONPATH": str(REPO),
                                           "PYTHONHASHSEED": "0"})  # fmt: skip
        try:
            assert server.proc.stdout is not None
            port = int(server.proc.stdout.readline().split()[1])
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

            def ask(n: int) -> None:
                for _ in range(n):
                    connection.request(method, path, body=body or None, headers=headers)
                    answer = connection.getresponse()
                    answer.read()
                    if answer.status != 200:
                        raise RuntimeError(f"{argv}: HTTP {answer.status}")

            ask(warmup)
            server.on()
            server.zero()
            ask(answers)
            server.dump()
        finally:
            server.proc.terminate()
            server.proc.wait()
        (total,) = server.intervals()
    return total / answers
