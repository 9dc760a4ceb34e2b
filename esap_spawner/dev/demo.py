"""``esap-spawner demo``: the whole product on one machine, without a cluster.

Starts, on 127.0.0.1:

- the Kubernetes API simulator (:mod:`esap_spawner.dev.sim`) with a small cluster (three CPU
  nodes, one tainted GPU node) and the *process* kubelet, so every "pod" is a real
  ``jupyterhub-singleuser`` on its own loopback address;
- a real JupyterHub with configurable-http-proxy, DummyAuthenticator (any user name, one
  printed password) and ESAPSpawner, configured by the same ``jupyterhub_config.d``
  snippets an administrator uses, plus the simulator specifics of :mod:`esap_spawner.dev.local`;
- the ``esap`` advertising service, run by the hub, with a portal token;
- a workflow: a git repository of notebooks served over https (:mod:`esap_spawner.dev.demo_git`),
  which the banner's ESAP link asks the spawn to check out and open at its notebook;
- a data catalogue: a real local Rucio server (:mod:`esap_spawner.dev.demo_rucio`, with a dataset
  that must be staged; transfers are emulated by the demo) when the Rucio server venv and
  ``rucio-clients`` are installed (``--catalogue auto``, the default, or ``rucio``), else a
  static catalogue with a few small datasets written into the work folder.

The profiles are those of ``site/examples/site.yaml`` (the ones the docs describe); the GPU
profile is for the group ``gpu-users``, whose demo member is the user ``gpu-user``.
It prints the URLs and stops everything on Ctrl-C (or SIGTERM), leaving nothing running.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlencode

import yaml

from esap_spawner.dev import demo_git
from esap_spawner.dev.local import (
    ProxyNotFound,
    find_proxy,
    local_hub_config,
    simulator_hub_config,
)
from esap_spawner.dev.prerequisites import missing_demo_packages

EXAMPLES = Path(__file__).resolve().parents[1] / "site" / "examples"
NAMESPACE = "esap-demo"
# Left in the work folder the demo makes: only a folder holding it is wiped at the next start.
WORKDIR_MARK = ".esap-demo-workdir"

DEMO_CLUSTER: dict[str, Any] = {
    "nodes": [
        *(
            {
                "name": f"cpu-{i}",
                "labels": {"esap.escape.eu/node-pool": "cpu"},
                "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"},
            }
            for i in (1, 2, 3)
        ),
        {
            "name": "gpu-1",
            "labels": {"esap.escape.eu/node-pool": "gpu", "nvidia.com/gpu.product": "A100"},
            "allocatable": {"cpu": "32", "memory": "128Gi", "nvidia.com/gpu": "2", "pods": "110"},
            "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
        },
    ]
}

DEMO_DATASETS = {
    "escape:crab-2020": {
        "events.csv": "time,energy_tev,ra,dec\n0.1,1.2,83.63,22.01\n0.4,3.4,83.62,22.02\n",
        "README.txt": "Crab nebula gamma-ray events (demo data).\n",
    },
    "lofar:L123456": {
        "visibilities.csv": "u,v,re,im\n1.0,2.0,0.5,0.1\n2.0,1.0,0.4,-0.2\n",
        "README.txt": "A LOFAR observation (demo data).\n",
    },
}


class DemoError(RuntimeError):
    """Something the person running the demo must fix (a busy port, a missing tool)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8000, help="public hub port (8000)")
    parser.add_argument(
        "--password", help="the password every demo user logs in with (default: random)"
    )
    parser.add_argument(
        "--workdir",
        default=".demo",
        help="folder for the demo's state, logs and data (.demo); emptied at start if the "
        "demo made it, refused if it holds anything else",
    )
    parser.add_argument(
        "--service-port", type=int, default=0, help="port of the esap service (0: any free)"
    )
    parser.add_argument(
        "--git-port",
        type=int,
        default=0,
        help="port of the https git server holding the demo workflow (0: any free)",
    )
    parser.add_argument(
        "--catalogue",
        choices=("auto", "rucio", "static"),
        default="auto",
        help="data catalogue: a local Rucio server (rucio), demo files (static), or rucio "
        "when its server venv is installed (auto, the default; `make setup-rucio`)",
    )


# -- pure parts -------------------------------------------------------------------------


def demo_site(archive: Path, url: str) -> dict[str, Any]:
    """The example site file's facility and profiles, with a static catalogue on ``archive``."""
    site: dict[str, Any] = yaml.safe_load((EXAMPLES / "site.yaml").read_text())
    site["facility"]["url"] = f"{url}/"
    site["data"] = {
        "catalogue": "static",
        "mount_root": "/home/jovyan/datasets",
        "static": {
            "volume": {"hostPath": {"path": str(archive), "type": "Directory"}},
            # the hub and the service read the archive where the pods see it
            "mount_path": str(archive),
            "datasets": [
                {"did": did, "path": did.replace(":", "/")} for did in sorted(DEMO_DATASETS)
            ],
        },
    }
    return site


def deep_link(
    base_url: str, *, profile: str, datasets: list[str], workflow: str = "", filepath: str = ""
) -> str:
    """An ESAP-style deep link into this hub's spawn page (JupyterHub 6's ``opt-`` style)."""
    query = [("opt-profile", profile), *(("opt-dataset", d) for d in datasets)]
    if workflow:
        query.append(("opt-workflow", workflow))
    if filepath:
        query.append(("opt-filepath", filepath))
    return f"{base_url}/hub/spawn?{urlencode(query)}"


def deploy_link(facility_url: str, workflow: str, ref: str, filepath: str) -> str:
    """What ESAP's Deploy button opens for this facility (its f-string, as ESAP writes it)."""
    return f"{facility_url}v2/git/{quote_plus(workflow)}/{ref}?urlpath=lab" + (
        "/tree/" + quote_plus(filepath) if filepath else ""
    )


def hub_config(
    *,
    workdir: Path,
    port: int,
    hub_port: int,
    proxy_api_port: int,
    password: str,
    proxy: str,
    snippets: Path,
    site_file: Path,
    checkout_env: dict[str, str] | None = None,
) -> str:
    """The demo hub's ``jupyterhub_config.py``."""
    load = "\n".join(
        f"load_subconfig({str(path)!r})" for path in sorted(snippets.glob("[0-9]*.py"))
    )
    base = local_hub_config(
        workdir=workdir,
        port=port,
        hub_port=hub_port,
        proxy_api_port=proxy_api_port,
        password=password,
        proxy=proxy,
    )
    return f"""# Written by `esap-spawner demo`; regenerated at every start.
{base}c.JupyterHub.load_groups = {{"gpu-users": {{"users": ["gpu-user"]}}}}
c.ESAPSpawner.db_url = "sqlite:///{workdir}/esap.sqlite"
c.ESAPSpawner.checkout_env = {checkout_env or {}!r}
{simulator_hub_config(site_file=site_file, namespace=NAMESPACE)}
# The same snippets an administrator loads (z2jh loads this folder in sorted order).
{load}
"""


# -- I/O edges ----------------------------------------------------------------------------


def check_port_free(port: int, what: str) -> None:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise DemoError(
                f"port {port} ({what}) is already in use on 127.0.0.1: stop what uses it, "
                f"or choose another port (see `esap-spawner demo --help`)"
            ) from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_snippets() -> Path:
    for candidate in (
        Path(__file__).resolve().parents[2] / "jupyterhub_config.d",
        Path(__file__).resolve().parents[1] / "jupyterhub_config.d",
    ):
        if candidate.is_dir():
            return candidate
    raise DemoError("the jupyterhub_config.d snippets were not found next to the package")


def prepare_workdir(workdir: Path) -> None:
    """Make ``workdir`` empty and marked as the demo's, refusing to wipe a folder it did not make.

    A missing or empty folder is taken; a folder holding the demo's mark (from an earlier run)
    is emptied; anything else is refused, whatever it holds.
    """
    if workdir.is_symlink() or (workdir.exists() and not workdir.is_dir()):
        raise DemoError(f"--workdir {workdir} is not a folder: choose a folder for the demo")
    if workdir.is_dir() and any(workdir.iterdir()):
        if not (workdir / WORKDIR_MARK).is_file():
            raise DemoError(
                f"--workdir {workdir} holds files the demo did not make, and the demo empties "
                "its work folder at start: choose a new or empty folder"
            )
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / WORKDIR_MARK).write_text(
        "Made by `esap-spawner demo`, which empties this folder when it starts again.\n"
    )


def write_datasets(archive: Path) -> None:
    for did, files in DEMO_DATASETS.items():
        folder = archive.joinpath(*did.split(":"))
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / name).write_text(text)


def wait_for_hub(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise DemoError(f"JupyterHub exited with {proc.returncode}; its log ends:\n{tail}")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(f"{url}/hub/login", timeout=2) as answer,
        ):
            if answer.status == 200:
                return
        time.sleep(0.3)
    raise DemoError(f"JupyterHub did not answer at {url} within {timeout:.0f} s (see {log})")


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except DemoError as e:
        print(f"esap-spawner demo: {e}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from esap_spawner.dev.sim import SimulatorThread

    missing = missing_demo_packages()
    if missing:
        raise DemoError(
            f"the demo needs {', '.join(missing)}, not installed here: "
            "pip install 'esap-spawner[demo]' (or run `make demo` in a checkout)"
        )
    check_port_free(args.port, "--port, the hub")
    if args.service_port:
        check_port_free(args.service_port, "--service-port, the esap service")
    if args.git_port:
        check_port_free(args.git_port, "--git-port, the workflow's git server")
    try:
        proxy = find_proxy()
    except ProxyNotFound as e:
        raise DemoError(str(e)) from None
    if not shutil.which("git"):
        raise DemoError("git is not installed: the demo's workflow is a git repository it serves")
    snippets = find_snippets()
    workdir = Path(args.workdir).absolute()
    prepare_workdir(workdir)
    password = args.password or secrets.token_urlsafe(9)
    portal_token = secrets.token_hex(16)
    archive = workdir / "archive"
    write_datasets(archive)
    site_file = workdir / "site.yaml"
    url = f"http://127.0.0.1:{args.port}"
    site = demo_site(archive, url)
    rucio = None
    if args.catalogue != "static":
        from esap_spawner.dev import demo_rucio

        if demo_rucio.available():
            print("Starting a local Rucio server ...", flush=True)
            rucio = demo_rucio.start(workdir, mount_root=site["data"]["mount_root"])
            site["data"] = rucio.site_data
        elif args.catalogue == "rucio":
            raise DemoError(
                "--catalogue rucio needs the Rucio server venv (`make setup-rucio` or "
                "ESAP_RUCIO_VENV) and rucio-clients (the rucio extra)"
            )
    site_file.write_text(yaml.safe_dump(site, sort_keys=False))

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    sim = SimulatorThread(DEMO_CLUSTER, kubelet="process", workdir=workdir / "pods")
    hub: subprocess.Popen[bytes] | None = None
    git: demo_git.GitServer | None = None
    try:
        git = demo_git.start(workdir / "git", port=args.git_port)
        sim.start()
        sim.create_namespace(NAMESPACE)
        kubeconfig = sim.write_kubeconfig(workdir / "kubeconfig.yaml", namespace=NAMESPACE)
        config = workdir / "jupyterhub_config.py"
        config.write_text(
            hub_config(
                workdir=workdir,
                port=args.port,
                hub_port=free_port(),
                proxy_api_port=free_port(),
                password=password,
                proxy=proxy,
                snippets=snippets,
                site_file=site_file,
                # the checkout trusts the demo's own certificate, as a site's would its CA
                checkout_env={"GIT_SSL_CAINFO": str(git.ca_file)},
            )
        )
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "ESAP_SITE_FILE": str(site_file),
            "ESAP_SERVICE_PORT": str(args.service_port or free_port()),
            "ESAP_PORTAL_API_TOKEN": portal_token,
            # the service looks up the workflow's default branch: trust the demo's certificate
            "GIT_SSL_CAINFO": str(git.ca_file),
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        }
        log = workdir / "jupyterhub.log"
        with log.open("ab") as out:
            hub = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(config)],
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        print(f"Starting JupyterHub at {url} (log: {log}) ...", flush=True)
        wait_for_hub(url, hub, log, timeout=90)
        print(banner(url, password, portal_token, sim.url, git.workflow, rucio), flush=True)
        while not stop.is_set():
            if hub.poll() is not None:
                raise DemoError(
                    f"JupyterHub stopped unexpectedly (exit {hub.returncode}); see {log}"
                )
            stop.wait(0.5)
        print("Stopping: JupyterHub (and its servers), then the simulator ...", flush=True)
    finally:
        stop_process(hub)
        sim.stop()
        if git is not None:
            git.stop()
        if rucio is not None:
            rucio.stop()
    print("Stopped; nothing is left running.", flush=True)
    return 0


def banner(
    url: str, password: str, portal_token: str, sim_url: str, workflow: str, rucio: Any = None
) -> str:
    api = f"{url}/services/esap/api/v1"
    link = deep_link(
        url,
        profile="gammapy",
        datasets=["escape:crab-2020"],
        workflow=workflow,
        filepath=demo_git.NOTEBOOK_PATH,
    )
    deploy = deploy_link(f"{url}/services/esap/", workflow, "HEAD", demo_git.NOTEBOOK_PATH)
    dids, data = '"escape:crab-2020", "lofar:L123456"', "static (demo files in the work folder)"
    if rucio is not None:
        dids = f'"{rucio.local_did}", "{rucio.remote_did}"'
        data = f"""Rucio at {rucio.url} (local; transfers are emulated by the demo)
  Staging:    {deep_link(url, profile="gammapy", datasets=[rucio.remote_did])}
              ({rucio.remote_did} is only on REMOTE_ARCHIVE: the spawn stages it first)"""
    return f"""
esap-spawner demo is ready.

  Hub:        {url}/hub/login   (any user name; password: {password})
              log in as gpu-user to see the GPU profile (group gpu-users)
  ESAP link:  {link}
              (gammapy with escape:crab-2020, opening {demo_git.NOTEBOOK_PATH} of the workflow)
  ESAP Deploy: {deploy}
              (what ESAP's own Deploy button opens: login, confirm, JupyterLab)
  Workflow:   {workflow}   (git over https, demo certificate)
  API:        {api}/profiles
  Portal:     curl -H "Authorization: token {portal_token}" {api}/profiles
  Locality:   curl -H "Authorization: token {portal_token}" -H "Content-Type: application/json" \\
                -d '{{"dids": [{dids}]}}' {api}/locality
  Kubernetes: {sim_url}   (KUBECONFIG in the work folder; kubectl works)
  Data:       {data}

Press Ctrl-C to stop everything.
"""
