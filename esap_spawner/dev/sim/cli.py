"""``esap-spawner sim``: run the Kubernetes API simulator standalone.

    esap-spawner sim --cluster cluster.yaml --kubeconfig kubeconfig.yaml --kubelet process
        [--home /home/jovyan] [--volume-path nfs.example.org:/archive=/srv/archive]

Prints the URL, writes a kubeconfig, and serves until Ctrl-C or SIGTERM; on the way out
it stops every pod process it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from esap_spawner.dev.sim.cluster import ClusterError, load_cluster
from esap_spawner.dev.sim.kubelet import KubeletDelays
from esap_spawner.dev.sim.podroot import DEFAULT_HOME
from esap_spawner.dev.sim.simulator import Simulator

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster",
        metavar="FILE",
        help="YAML cluster fixture (nodes, pre-existing pods); default: an empty cluster",
    )
    parser.add_argument(
        "--kubeconfig",
        metavar="OUT",
        required=True,
        help="where to write a kubeconfig pointing at the simulator",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free)")
    parser.add_argument(
        "--kubelet",
        choices=["fake", "process"],
        default="fake",
        help="fake: status only; process: run each pod's command as a local process",
    )
    parser.add_argument(
        "--pull-seconds", type=float, default=1.0, help="simulated image pull time (1.0)"
    )
    parser.add_argument(
        "--start-seconds", type=float, default=0.2, help="simulated container start time (0.2)"
    )
    parser.add_argument(
        "--home",
        default=DEFAULT_HOME,
        help=f"process mode: the image's home directory inside each pod ({DEFAULT_HOME})",
    )
    parser.add_argument(
        "--volume-path",
        action="append",
        default=[],
        metavar="KEY=FOLDER",
        help="process mode: mount a volume the kubelet cannot emulate from a local folder; KEY "
        "is an NFS 'server:/path' or a volume's name (repeatable), e.g. "
        "--volume-path nfs.example.org:/archive=/srv/archive",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (INFO)")


def volume_paths(values: list[str]) -> dict[str, str]:
    """``KEY=FOLDER`` arguments as a mapping (the last ``=`` separates: NFS keys hold ':')."""
    out = {}
    for value in values:
        key, sep, folder = value.rpartition("=")
        if not sep or not key or not folder:
            raise ValueError(f"--volume-path {value!r}: expected KEY=FOLDER")
        out[key] = folder
    return out


async def _serve(args: argparse.Namespace) -> int:
    cluster = load_cluster(args.cluster) if args.cluster else None
    delays = KubeletDelays(pull=args.pull_seconds, create=0.1, start=args.start_seconds)
    sim = Simulator(
        cluster,
        kubelet=args.kubelet,
        delays=delays,
        home=args.home,
        volume_paths=volume_paths(args.volume_path),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        url = await sim.start(host=args.host, port=args.port)
        sim.write_kubeconfig(args.kubeconfig)
        print(f"Kubernetes API simulator serving at {url}", flush=True)
        print(f"kubeconfig written to {args.kubeconfig}", flush=True)
        await stop.wait()
    finally:
        print("stopping the simulator", flush=True)
        await sim.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(_serve(args))
    except (ClusterError, ValueError) as exc:
        print(f"esap-spawner sim: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"esap-spawner sim: cannot serve: {exc}", file=sys.stderr)
        return 1
