"""``tools/kube-up --kubeconfig OUT [--nodes FILE]``: start a real control plane, write OUT once
it serves, stop everything on Ctrl-C or SIGTERM (OUT and the temporary folder removed too)."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from tools.kube.control_plane import ControlPlane, ControlPlaneError, default_binaries


class Stop(Exception):
    """A stop signal arrived."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kube-up",
        description="Start a real Kubernetes control plane (etcd, kube-apiserver, kube-scheduler, "
        "kube-controller-manager, kwok nodes) on 127.0.0.1 with free ports; write an admin "
        "kubeconfig once the API server answers /readyz; Ctrl-C or SIGTERM stops everything.",
    )
    parser.add_argument("--kubeconfig", required=True, help="where to write the kubeconfig")
    parser.add_argument(
        "--nodes",
        help="a cluster file (the simulator's format: nodes, namespaces, pods) to register",
    )
    parser.add_argument(
        "--bin", help="the binary folder (default: $ESAP_KUBE_BIN, else tools/build-kube --print)"
    )
    parser.add_argument("-v", "--verbosity", type=int, default=1, help="components' --v level")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = Path(args.kubeconfig)
    if out.exists():
        print(f"kube-up: {out} exists; remove it or choose another path", file=sys.stderr)
        return 2
    cluster = None
    if args.nodes:
        from esap_spawner.dev.sim.cluster import ClusterError, load_cluster

        try:
            cluster = load_cluster(args.nodes)
        except ClusterError as error:
            print(f"kube-up: {error}", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    plane: ControlPlane | None = None
    try:
        folder = Path(args.bin) if args.bin else default_binaries()
        plane = ControlPlane(folder, log_level=args.verbosity)
        started = time.monotonic()
        plane.start()
        if cluster is not None:
            plane.register(cluster.nodes, namespaces=cluster.namespaces, pods=cluster.pods)
        plane.write_kubeconfig(out)
        version = plane.api.get("/version")["gitVersion"]
        print(
            f"kube-up: Kubernetes {version} at {plane.api_url}, etcd {plane.etcd_url}, "
            f"ready in {time.monotonic() - started:.1f} s\n"
            f"kube-up: kubeconfig {out}; logs in {plane.folder}; Ctrl-C stops everything",
            flush=True,
        )
        while True:
            plane.check()
            time.sleep(0.5)
    except Stop as stop:
        print(f"kube-up: {stop}, stopping", file=sys.stderr, flush=True)
        return 0
    except (ControlPlaneError, subprocess.CalledProcessError) as error:
        print(f"kube-up: {error}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        out.unlink(missing_ok=True)
        if plane is not None:
            plane.stop()
