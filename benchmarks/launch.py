"""Benchmark of the launch route's default-branch lookup (``HEAD`` of ESAP's Deploy links).

Run: ``.venv/bin/python benchmarks/launch.py [--rounds N]`` (about 30 s; needs git).

Against the demo's https git server (``esap_spawner.dev.demo_git``: ``git http-backend``
behind TLS, on 127.0.0.1), in the same run:

- **in-loop**: :class:`esap_spawner.service.git_remote.DefaultBranches` with the cache off,
  one ``GET info/refs`` read up to the first ref line, in the service's event loop;
- **git**: ``git ls-remote --symref URL HEAD`` as a subprocess (the baseline: what the
  lookup replaces), awaited with ``asyncio.create_subprocess_exec``;
- **cached**: the in-loop lookup of a repository asked within the cache's minute.

Printed: the median and p90 of each, the ratios against git, and the event loop's longest
stall while 16 uncached lookups run at once (a ticker every 1 ms records how late it wakes):
the lookup must never block the loop that answers every other request (the same figure for
16 git subprocesses is the baseline). The git server runs in a process of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.queues
import os
import statistics
import tempfile
import time
from pathlib import Path

from _headline import headline

from esap_spawner.dev import demo_git
from esap_spawner.service.git_remote import DefaultBranches


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(coro_factory, rounds: int) -> list[float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        await coro_factory()
        times.append(time.perf_counter() - start)
    return times


async def git_ls_remote(repo: str, ca_file: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "git", "ls-remote", "--symref", repo, "HEAD",
        env={**os.environ, "GIT_SSL_CAINFO": ca_file, "GIT_TERMINAL_PROMPT": "0"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(err.decode())
    first = out.decode().splitlines()[0]  # "ref: refs/heads/main\tHEAD"
    return first.split()[1].removeprefix("refs/heads/")


async def loop_stall(lookup, concurrent: int) -> float:  # type: ignore[no-untyped-def]
    """The event loop's longest lateness (s) while ``concurrent`` lookups run."""
    stop = asyncio.Event()
    worst = 0.0

    async def ticker() -> None:
        nonlocal worst
        while not stop.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - start - 0.001)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    await asyncio.gather(*(lookup() for _ in range(concurrent)))
    stop.set()
    await tick
    return worst


def serve_git(folder: str, address: multiprocessing.queues.Queue) -> None:  # type: ignore[type-arg]
    """The git server, in a process of its own (so its threads do not share our GIL)."""
    git = demo_git.start(Path(folder))
    address.put((git.workflow, str(git.ca_file)))
    time.sleep(3600)


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="esap-bench-launch-") as folder:
        address: multiprocessing.queues.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        server = multiprocessing.Process(target=serve_git, args=(folder, address), daemon=True)
        server.start()
        try:
            repo, ca = address.get(timeout=60)
            uncached = DefaultBranches(ca_file=ca, cache_seconds=0)
            cached = DefaultBranches(ca_file=ca)
            assert await uncached.lookup(repo) == await git_ls_remote(repo, ca) == "main"
            await cached.lookup(repo)
            results = {
                "in-loop": await timed(lambda: uncached.lookup(repo), rounds),
                "git": await timed(lambda: git_ls_remote(repo, ca), rounds),
                "cached": await timed(lambda: cached.lookup(repo), rounds),
            }
            stall = await loop_stall(lambda: uncached.lookup(repo), 16)
            git_stall = await loop_stall(lambda: git_ls_remote(repo, ca), 16)
        finally:
            server.terminate()
            server.join(10)
    base = statistics.median(results["git"])
    print(f"default-branch lookup, {rounds} rounds each, demo git server (https, 127.0.0.1)")
    for name, times in results.items():
        median = statistics.median(times)
        p90 = quantile(times, 0.9)
        print(
            f"  {name:8s} median {median * 1000:8.2f} ms   p90 {p90 * 1000:8.2f} ms"
            f"   git/this {base / median:9.1f}x"
        )
    print("  event loop's longest stall during 16 concurrent lookups:")
    print(f"    in-loop {stall * 1000:.1f} ms, git subprocesses {git_stall * 1000:.1f} ms")
    faster = base / statistics.median(results["in-loop"])
    headline("launch", "default-branch lookup: git ls-remote / in-loop lookup (median)",
             f"{faster:.1f}x", "> 1 (faster than the git it replaces)", faster > 1)  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    asyncio.run(main(parser.parse_args().rounds))
