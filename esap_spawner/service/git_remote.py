"""A repository's default branch, asked over git's smart HTTP protocol without blocking.

What ``git ls-remote --symref URL HEAD`` does, in the event loop: ``GET
<URL>/info/refs?service=git-upload-pack`` (protocol v0/v1, which every git server speaks),
then read the first pkt-line of the ref advertisement: ``<sha> HEAD\\0<capabilities>``, whose
``symref=HEAD:refs/heads/<branch>`` names the default branch. Only that first line is read:
the download stops there, however many refs the repository has. A server without the
``symref`` capability (git before 1.8.4) gets git's old answer: the branch whose commit is
HEAD's (``main`` or ``master`` first when several are).

:class:`DefaultBranches` adds a timeout, redirects followed only to https hosts the site
allows, a small cache (a link opened many times asks once a minute) and a limit on
lookups at once. Every failure is a :class:`RemoteError` with an HTTP status (404: no
public repository there; 502: the server does not speak git; 504: no answer in time) and
a sentence; nothing of the remote's answer is echoed.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Sequence
from urllib.parse import urljoin, urlsplit

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.httputil import HTTPHeaders

from esap_spawner.spawn.option_values import host_allowed

__all__ = ["DefaultBranches", "RemoteError", "default_branch", "first_pkt_line"]

ADVERTISEMENT = "application/x-git-upload-pack-advertisement"
MAX_ADVERTISEMENT_START = 256 * 1024
REDIRECTS = 3


class RemoteError(Exception):
    """The default branch could not be found: ``status`` for the page, and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _pkt_lines(data: bytes) -> list[bytes]:
    """The complete pkt-lines at the start of ``data`` (flush packets dropped)."""
    lines, pos = [], 0
    while pos + 4 <= len(data):
        try:
            size = int(data[pos : pos + 4], 16)
        except ValueError:
            raise RemoteError(502, "the server's answer is not git's protocol") from None
        if size == 0:
            pos += 4
            continue
        if size < 4:
            raise RemoteError(502, "the server's answer is not git's protocol")
        if pos + size > len(data):
            break
        lines.append(data[pos + 4 : pos + size].rstrip(b"\n"))
        pos += size
    return lines


def first_pkt_line(data: bytes) -> tuple[bytes, list[bytes]] | None:
    """The first ref line of an upload-pack advertisement and all complete ref lines
    read so far, or None while the first one is incomplete."""
    lines = [line for line in _pkt_lines(data) if not line.startswith(b"# service=")]
    return (lines[0], lines) if lines else None


def default_branch(data: bytes) -> str | None:
    """The default branch an advertisement names, None for an empty repository."""
    found = first_pkt_line(data)
    if found is None:
        raise RemoteError(502, "the server's answer ended before the first ref")
    first, lines = found
    sha_name, _, capabilities = first.partition(b"\0")
    for capability in capabilities.decode("utf-8", "replace").split():
        if capability.startswith("symref=HEAD:refs/heads/"):
            return capability.removeprefix("symref=HEAD:refs/heads/")
    sha, _, name = sha_name.decode("utf-8", "replace").partition(" ")
    if name != "HEAD":
        return None  # no HEAD: an empty repository (or a detached one without branches)
    branches = []
    for line in lines[1:]:
        other_sha, _, ref = line.split(b"\0")[0].decode("utf-8", "replace").partition(" ")
        if other_sha == sha and ref.startswith("refs/heads/"):
            branches.append(ref.removeprefix("refs/heads/"))
    for preferred in ("main", "master"):
        if preferred in branches:
            return preferred
    return sorted(branches)[0] if branches else None


def _reason(exc: BaseException) -> str:
    """A network failure in a few words (the certificate problem for TLS errors)."""
    return str(getattr(exc, "verify_message", "") or getattr(exc, "strerror", "") or exc)


class _Answer:
    """What one request got: the status line, the headers, the body's start."""

    def __init__(self) -> None:
        self.status = 0
        self.headers = HTTPHeaders()
        self.body = bytearray()
        self.error = ""

    def header_line(self, line: str) -> None:
        if line.startswith("HTTP/"):
            self.status = int(line.split()[1])
            self.headers = HTTPHeaders()  # a new response (after a 100 Continue)
        elif line.strip():
            self.headers.parse_line(line)

    def header(self, name: str) -> str:
        return str(self.headers.get(name, ""))


class DefaultBranches:
    """Default branches of remote repositories, looked up with a timeout and cached.

    ``allowed_hosts``: redirects may only lead to these (empty: any https host).
    ``ca_file``: CA bundle for the remotes' certificates (None: the system's).
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        ca_file: str | None = None,
        allowed_hosts: Sequence[str] = (),
        cache_seconds: float = 60.0,
        concurrency: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout = timeout
        self.ca_file = ca_file or None
        # one TLS context for every lookup: loading the CA bundle per request costs the
        # event loop milliseconds each time (benchmarks/launch.py)
        self._tls = ssl.create_default_context(cafile=self.ca_file)
        self.allowed_hosts = tuple(allowed_hosts)
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: dict[str, tuple[float, str]] = {}
        self._limit = asyncio.Semaphore(concurrency)

    async def lookup(self, repo: str) -> str:
        """The default branch of ``repo`` (an https URL already validated)."""
        hit = self._cache.get(repo)
        now = self.clock()
        if hit is not None and now - hit[0] < self.cache_seconds:
            return hit[1]
        async with self._limit:
            try:
                data = await asyncio.wait_for(self._advertisement(repo), self.timeout)
            except TimeoutError:
                raise RemoteError(504, f"{repo} did not answer within {self.timeout:g} s") from None
        branch = default_branch(data)
        if branch is None:
            raise RemoteError(404, f"{repo} has no default branch (is it empty?)")
        if len(self._cache) >= 1024:
            self._cache.clear()
        self._cache[repo] = (now, branch)
        return branch

    async def _advertisement(self, repo: str) -> bytes:
        url = repo.rstrip("/") + "/info/refs?service=git-upload-pack"
        for _ in range(REDIRECTS + 1):
            answer = await self._fetch(url)
            if answer.status in (301, 302, 303, 307, 308):
                url = self._redirect(repo, url, answer.header("Location"))
                continue
            if answer.status == 200:
                if answer.header("Content-Type").split(";")[0].strip() != ADVERTISEMENT:
                    raise RemoteError(502, f"{repo} is not served by git's smart HTTP protocol")
                return bytes(answer.body)
            if answer.status in (401, 403, 404, 410):
                raise RemoteError(
                    404, f"there is no public git repository at {repo} "
                    f"(the server answered {answer.status})"
                )  # fmt: skip
            if answer.status == 0:
                raise RemoteError(502, f"{repo} could not be reached ({answer.error})")
            raise RemoteError(502, f"{repo} answered {answer.status} to git's request")
        raise RemoteError(502, f"{repo} redirected more than {REDIRECTS} times")

    async def _fetch(self, url: str) -> _Answer:
        """One GET; returns as soon as the first ref line is in (the rest of the answer is
        read in the background, bounded by the timeout, and dropped)."""
        answer = _Answer()
        enough = asyncio.get_running_loop().create_future()

        def collect(chunk: bytes) -> None:
            if enough.done():
                return
            answer.body.extend(chunk)
            if first_pkt_line(bytes(answer.body)) is not None:
                enough.set_result(None)
            elif len(answer.body) > MAX_ADVERTISEMENT_START:
                answer.body.clear()
                enough.set_exception(RemoteError(502, "the server's first ref line is too long"))

        request = HTTPRequest(
            url,
            headers={"User-Agent": "git/2.0 (esap-spawner)", "Accept": "*/*"},
            follow_redirects=False,
            connect_timeout=self.timeout,
            request_timeout=self.timeout,
            ssl_options=self._tls,
            header_callback=answer.header_line,
            streaming_callback=collect,
        )
        fetch = asyncio.ensure_future(AsyncHTTPClient().fetch(request, raise_error=False))
        await asyncio.wait([fetch, enough], return_when=asyncio.FIRST_COMPLETED)
        if enough.done():
            enough.result()  # raises RemoteError for an endless first line
            fetch.add_done_callback(lambda f: f.exception())  # drained in the background
            return answer
        enough.cancel()
        try:
            response = fetch.result()
        except (OSError, HTTPClientError) as exc:  # refused, reset, TLS: no HTTP answer
            answer.status, answer.error = 0, _reason(exc)
            return answer
        if response.code == 599:
            answer.status, answer.error = 0, str(response.error)
        else:
            answer.status = answer.status or response.code
        return answer

    def _redirect(self, repo: str, url: str, location: str) -> str:
        target = urljoin(url, location)
        parts = urlsplit(target)
        if parts.scheme != "https" or not parts.hostname:
            raise RemoteError(502, f"{repo} redirects to a location that is not https")
        if not host_allowed(parts.hostname, self.allowed_hosts):
            raise RemoteError(
                403, f"{repo} redirects to {parts.hostname}, a host this hub does not allow"
            )
        return target
