"""Benchmark of data locality against a real Rucio server: bulk calls versus a per-dataset loop.

Run: ``.venv/bin/python benchmarks/locality.py [--datasets 100] [--files 100] [--repeat 3]``
(needs ``make setup-rucio``; ``ESAP_RUCIO_VENV`` points elsewhere if wanted). It starts a Rucio
server (SQLite, gunicorn, 2 workers) with the test harness, uploads ``--datasets`` datasets of
``--files`` files (40% at the hub's local RSE, 30% remote, 30% half local), then measures, in
one run, with a cold cache each time:

- ``RucioCatalogue.locality`` over all DIDs (bulk: one ``bulk_list_files``, one
  ``list_replicas`` with ``sort='random'`` per batch of DIDs);
- a naive loop: ``locality([did])`` for one dataset at a time, in sequence;
- the same loop with all calls in flight at once (``asyncio.gather``, 4 worker threads);
- the same bulk question as one ``list_replicas(resolve_parents=True)`` (the alternative to
  ``bulk_list_files``) and one without ``sort=`` (the server then tries GeoIP per replica);
- a repeat of the bulk call, served from the catalogue's cache.

Rucio calls are counted by the catalogue's own call wrapper; times are medians of ``--repeat``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from esap_spawner.data.catalogue.rucio import RucioCatalogue, RucioSettings  # noqa: E402
from esap_spawner.site.model import LocalRSE  # noqa: E402
from tests.harness.rucio_server import (  # noqa: E402
    LOCAL_RSE,
    REMOTE_RSE,
    RucioServer,
    make_files,
)


def seed(server: RucioServer, datasets: int, files: int) -> list[str]:
    scope = server.new_scope("bench")
    dids = []
    for i in range(datasets):
        content = make_files(scope, f"d{i:03d}", files, 1000)
        kind = i % 10
        if kind < 4:
            server.upload_dataset(scope, f"ds{i:03d}", content, LOCAL_RSE)
        else:
            server.upload_dataset(scope, f"ds{i:03d}", content, REMOTE_RSE)
            if kind >= 7:
                server.add_replicas(LOCAL_RSE, content[: files // 2])
        dids.append(f"{scope}:ds{i:03d}")
    return dids


def catalogue(server: RucioServer) -> RucioCatalogue:
    return RucioCatalogue(
        RucioSettings(
            host=server.url,
            identity=server.identity("alice"),
            local_rses=(
                LocalRSE(LOCAL_RSE, pfn_prefix=server.pfn_prefix(LOCAL_RSE), mount_path="/rucio"),
            ),
            throughput=50e6,
        )
    )


async def measure(
    cat: RucioCatalogue, run: Callable[[], Awaitable[Any]], repeat: int, *, cold: bool = True
) -> tuple[float, int]:
    """Median seconds and Rucio calls per run."""
    times, calls = [], []
    for _ in range(repeat):
        if cold:
            cat.invalidate()
        before = sum(cat.calls.values())
        start = time.perf_counter()
        await run()
        times.append(time.perf_counter() - start)
        calls.append(sum(cat.calls.values()) - before)
    return statistics.median(times), max(calls)


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="esap-bench-rucio-") as tmp:
        server = RucioServer(Path(tmp))
        started = time.perf_counter()
        server.start()
        print(f"Rucio server up in {time.perf_counter() - started:.1f}s at {server.url}")
        try:
            started = time.perf_counter()
            dids = seed(server, args.datasets, args.files)
            print(
                f"seeded {len(dids)} datasets x {args.files} files "
                f"in {time.perf_counter() - started:.1f}s"
            )
            cat = catalogue(server)
            await cat.locality(dids[:1])  # log in once, outside the measurements

            async def bulk() -> None:
                results = await cat.locality(dids)
                assert len(results) == len(dids)

            async def loop() -> None:
                for did in dids:
                    await cat.locality([did])

            async def gathered() -> None:
                await asyncio.gather(*(cat.locality([did]) for did in dids))

            rucio_dids = [{"scope": d.split(":")[0], "name": d.split(":")[1]} for d in dids]

            async def parents() -> None:
                await cat._call(
                    "list_replicas",
                    rucio_dids,
                    sort="random",
                    all_states=True,
                    resolve_parents=True,
                )

            async def unsorted() -> None:
                await cat._call("bulk_list_files", rucio_dids)
                await cat._call("list_replicas", rucio_dids, all_states=True)

            rows = [
                ("bulk: RucioCatalogue.locality(all DIDs)", await measure(cat, bulk, args.repeat)),
                (
                    "naive: locality([did]) per dataset, in sequence",
                    await measure(cat, loop, args.repeat),
                ),
                (
                    "naive, all in flight (gather, 4 threads)",
                    await measure(cat, gathered, args.repeat),
                ),
                (
                    "alternative: list_replicas(resolve_parents=True)",
                    await measure(cat, parents, args.repeat),
                ),
                (
                    "alternative: bulk without sort='random'",
                    await measure(cat, unsorted, args.repeat),
                ),
            ]
            await bulk()
            rows.append(
                (
                    "repeat of the bulk call (cache)",
                    await measure(cat, bulk, args.repeat, cold=False),
                )
            )
            base = rows[0][1][0]
            print(f"\n{args.datasets} datasets x {args.files} files, median of {args.repeat}:\n")
            print("| question | Rucio calls | wall time | vs bulk |")
            print("|---|---:|---:|---:|")
            for label, (seconds, calls) in rows:
                shown = f"{seconds * 1000:.2f} ms" if seconds < 0.1 else f"{seconds:.2f} s"
                print(f"| {label} | {calls} | {shown} | {seconds / base:.2f}x |")
            await cat.close()
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=100)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
