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

Then the service: ``POST api/v1/locality`` with all the DIDs, asked once (cold: Rucio
calls), then repeated under load, against a bare tornado handler that reads the same body
and writes the same answer; the service (``--serve service``: the real app, a portal token,
:class:`~esap_spawner.service.catalogue.CatalogueLocality` over the RucioCatalogue, its
cache lifetime set to 10 minutes so the measured windows stay inside it) and the bare
handler each run in a process of their own. Load by wrk (``_load``), alternated over
``--rounds``; instructions per answer by callgrind; the service's Rucio calls during the
repeats are counted (target: none) and the ratio service/bare is printed (target >= 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _headline import headline  # noqa: E402
from _load import Child, instructions_per_answer, listen, loaded, tool  # noqa: E402

from esap_spawner.data.catalogue.rucio import RucioCatalogue, RucioSettings  # noqa: E402
from esap_spawner.site.model import LocalRSE  # noqa: E402
from tests.harness.rucio_server import (  # noqa: E402
    ALICE_PASSWORD,
    LOCAL_RSE,
    REMOTE_RSE,
    RucioServer,
    make_files,
)

PREFIX = "/services/esap/"
ROUTE = PREFIX + "api/v1/locality"
TOKEN = "bench-portal-token"
REPEAT_TARGET = 0.5


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


def catalogue(url: str, pfn_prefix: str, *, cache_ttl: float = 60.0) -> RucioCatalogue:
    """The catalogue as alice, with the hub's local RSE at ``pfn_prefix``."""
    from esap_spawner.data.catalogue.rucio_client import RucioIdentity

    return RucioCatalogue(
        RucioSettings(
            host=url,
            identity=RucioIdentity.userpass("alice", username="alice", password=ALICE_PASSWORD),
            local_rses=(LocalRSE(LOCAL_RSE, pfn_prefix=pfn_prefix, mount_path="/rucio"),),
            throughput=50e6,
            cache_ttl=cache_ttl,
        )
    )


def serve(args: argparse.Namespace) -> None:
    """A server process: the service over the Rucio catalogue, or the bare handler."""
    import tornado.web

    async def main() -> None:
        if args.serve == "bare":
            constant = Path(args.body_file).read_bytes()

            class Bare(tornado.web.RequestHandler):
                def post(self) -> None:
                    self.set_header("Content-Type", "application/json")
                    self.finish(constant)

            listen(tornado.web.Application([(ROUTE, Bare)]), counted="/locality")
        else:
            from esap_spawner.capacity.model import ClusterModel
            from esap_spawner.service.app import make_app
            from esap_spawner.service.auth import StaticTokenAuth
            from esap_spawner.service.catalogue import CatalogueLocality
            from esap_spawner.site.model import parse_site

            cat = catalogue(args.rucio_url, args.pfn_prefix, cache_ttl=600)
            facility = {"name": "Bench", "url": "https://hub.example.org/"}
            site = parse_site(
                {"facility": facility, "profiles": [{"slug": "s", "display_name": "S"}]}
            )
            tokens = [{"token": TOKEN, "kind": "service", "scopes": ["custom:esap:read"]}]
            app = make_app(site=site, capacity=ClusterModel(), auth=StaticTokenAuth(tokens),
                           catalogue=CatalogueLocality(cat), prefix=PREFIX)  # fmt: skip
            listen(app, counted="/locality", extra=lambda: {"rucio_calls": sum(cat.calls.values())})
        await asyncio.Event().wait()

    asyncio.run(main())


def service_repeat(args: argparse.Namespace, server: RucioServer, dids: list[str]) -> None:
    """The repeat question through the service against the bare handler (see the docstring)."""
    import urllib.request

    question = json.dumps({"dids": dids}).encode()
    headers = {"Authorization": f"token {TOKEN}", "Content-Type": "application/json"}
    rucio = ["--rucio-url", server.url, "--pfn-prefix", server.pfn_prefix(LOCAL_RSE)]
    service = Child(__file__, "--serve", "service", *rucio)
    children = [service]
    try:
        before = service.stats()["rucio_calls"]
        ask = urllib.request.Request(service.url(ROUTE), data=question, headers=headers)
        started = time.perf_counter()
        with urllib.request.urlopen(ask, timeout=600) as r:
            answer = r.read()
        cold = time.perf_counter() - started
        cold_calls = service.stats()["rucio_calls"] - before
        with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as f:
            f.write(answer)
        bare = Child(__file__, "--serve", "bare", "--body-file", f.name)
        children.append(bare)
        servers = {"bare": bare, "service": service}
        for s in servers.values():  # warm-up
            loaded(s, s.url(ROUTE), seconds=1, headers=headers, method="POST", body=question)
        rows: dict[str, list[tuple[float, float]]] = {kind: [] for kind in servers}
        calls_before = service.stats()["rucio_calls"]
        for _ in range(args.rounds):
            for kind, s in servers.items():
                result, cpu_us = loaded(s, s.url(ROUTE), seconds=args.seconds, headers=headers,
                                        method="POST", body=question)  # fmt: skip
                if result.errors:
                    raise RuntimeError(f"{kind}: {result.errors} failed requests")
                rows[kind].append((result.rps, cpu_us))
        repeat_calls = service.stats()["rucio_calls"] - calls_before
    finally:
        for child in children:
            child.stop()
    instructions = {
        "bare": instructions_per_answer(__file__, ["--serve", "bare", "--body-file", f.name],
                                        ROUTE, headers=headers, method="POST", body=question),
        "service": instructions_per_answer(__file__, ["--serve", "service", *rucio], ROUTE,
                                           headers=headers, method="POST", body=question),
    }  # fmt: skip
    Path(f.name).unlink()
    rps = {kind: statistics.median(r[0] for r in rows[kind]) for kind in rows}
    cpu = {kind: statistics.median(r[1] for r in rows[kind]) for kind in rows}
    print(f"\nthe service, POST api/v1/locality with {len(dids)} DIDs ({len(answer)} B answer;"
          f" load by {tool()}, {args.rounds} round(s) of {args.seconds:g} s):")  # fmt: skip
    print(f"  first time: {cold * 1000:.0f} ms, {cold_calls:.0f} Rucio calls")
    for kind in rows:
        ir = instructions[kind]
        print(f"  {kind:8}{rps[kind]:8.0f} req/s  CPU per answer {cpu[kind]:5.0f} us"
              f"  instructions per answer {ir / 1e3 if ir else float('nan'):.0f}k")  # fmt: skip
    print(f"  Rucio calls during the repeats: {repeat_calls:.0f}")
    ir_ratio = (instructions["bare"] or 0) / (instructions["service"] or float("inf"))
    ratio = rps["service"] / rps["bare"]
    print(f"  service/bare: {ir_ratio:.2f} from instructions per answer; {ratio:.2f} measured;"
          f" {cpu['bare'] / cpu['service']:.2f} from CPU per answer")  # fmt: skip
    headline("locality", f"repeat POST locality ({len(dids)} DIDs) service/bare, from "
             "instructions (req/s measured); Rucio calls", f"{ir_ratio:.2f} ({ratio:.2f});"
             f" {repeat_calls:.0f} calls", f">= {REPEAT_TARGET}; 0 calls",
             ir_ratio >= REPEAT_TARGET and repeat_calls == 0)  # fmt: skip


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
            cat = catalogue(server.url, server.pfn_prefix(LOCAL_RSE))
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
            await asyncio.to_thread(service_repeat, args, server, dids)
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=100)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10, help="load window per round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating load rounds")
    parser.add_argument("--serve", choices=["bare", "service"], help=argparse.SUPPRESS)
    parser.add_argument("--body-file", help=argparse.SUPPRESS)
    parser.add_argument("--rucio-url", help=argparse.SUPPRESS)
    parser.add_argument("--pfn-prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
