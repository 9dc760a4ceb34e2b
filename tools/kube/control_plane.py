"""etcd, kube-apiserver, kube-scheduler, kube-controller-manager and kwok as local processes.

:class:`ControlPlane` owns a temporary folder (certificates, etcd data, logs) and five child
processes on 127.0.0.1 with free ports. Children run in their own session (a Ctrl-C in the
terminal reaches only the owner, which stops them in order) and die with their owner even when
it is killed (``PR_SET_PDEATHSIG``). :meth:`ControlPlane.stop` stops them (TERM, then KILL) in
reverse order and removes the folder.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tools.kube import certs
from tools.kube.http import Client, HTTPError

KWOK_CONFIG = Path(__file__).with_name("kwok.yaml")
SERVICE_RANGE = "10.96.0.0/16"
# Pods' and nodes' addresses on loopback, outside the simulator's ranges
# (esap_spawner/dev/sim/processes.py): a connection to a pod reaches nothing but this machine.
POD_RANGE = "127.254.0.0/16"  # kwok hands pod IPs out of this range
# what the node lifecycle controller puts on nodes until they are Ready
LIFECYCLE_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
NODE_IP = "127.255.0.1"  # every kwok node's InternalIP (no kubelet listens there)
STORAGE_CLASS = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {
        "name": "kube-up",
        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
    },
    "provisioner": "kube-up",  # kwok.yaml's claim-provision stage plays the provisioner
    "reclaimPolicy": "Delete",
    "volumeBindingMode": "Immediate",
}
COMPONENTS = ("etcd", "kube-apiserver", "kube-scheduler", "kube-controller-manager", "kwok")


class ControlPlaneError(RuntimeError):
    """The control plane could not start, or one of its processes died."""


def default_binaries() -> Path:
    """The binary folder: ``ESAP_KUBE_BIN``, else the one ``tools/build-kube --print`` names."""
    given = os.environ.get("ESAP_KUBE_BIN")
    if given:
        return Path(given)
    build = Path(__file__).resolve().parents[1] / "build-kube"
    printed = subprocess.run([str(build), "--print"], capture_output=True, text=True, check=True)
    return Path(printed.stdout.strip())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the parent dies (Linux), no orphan left behind.

    The kernel ties this to the *thread* that forked: a child started from a worker thread
    would die with that thread, so only children of the main thread get it (Component.start).
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@dataclass
class Component:
    """One child process with its command line and log file."""

    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if _in_main_thread() else None,
            )

    def exited(self) -> int | None:
        """The exit status once the process has ended, else None."""
        return None if self.process is None else self.process.poll()

    def stop(self, timeout: float = 15) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def wait_until(
    check: Callable[[], bool], what: str, timeout: float, *, alive: Callable[[], None]
) -> None:
    """Poll ``check`` until it is true; ``alive`` raises when a process the wait depends on died."""
    deadline = time.monotonic() + timeout
    while not check():
        alive()
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig(server: str, ca: certs.Pair, user: certs.Pair, *, embed: bool) -> dict[str, Any]:
    """A kubeconfig for ``user`` (a client certificate); ``embed`` puts the PEM data inline."""
    if embed:
        cluster = {"server": server, "certificate-authority-data": _b64(ca.cert)}
        identity = {
            "client-certificate-data": _b64(user.cert),
            "client-key-data": _b64(user.key),
        }
    else:
        cluster = {"server": server, "certificate-authority": str(ca.cert)}
        identity = {"client-certificate": str(user.cert), "client-key": str(user.key)}
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kube-up", "cluster": cluster}],
        "users": [{"name": "kube-up", "user": identity}],
        "contexts": [{"name": "kube-up", "context": {"cluster": "kube-up", "user": "kube-up"}}],
        "current-context": "kube-up",
    }


class ControlPlane:
    """A real control plane with kwok nodes; ``start()`` returns once it serves.

    ``bin_dir`` holds the five binaries (``tools/build-kube --print``)."""

    def __init__(
        self, bin_dir: Path, *, log_level: int = 1, apiserver_flags: Sequence[str] = ()
    ) -> None:
        missing = [name for name in COMPONENTS if not os.access(bin_dir / name, os.X_OK)]
        if missing:
            raise ControlPlaneError(
                f"missing binaries in {bin_dir}: {', '.join(missing)} (build them with "
                "tools/build-kube)"
            )
        self.bin_dir = bin_dir
        self.log_level = log_level
        self.apiserver_flags = list(apiserver_flags)  # e.g. ["--watch-cache=false"]
        self.folder = Path(tempfile.mkdtemp(prefix="kube-up-"))
        self.ports = {
            "etcd": free_port(), "etcd-peer": free_port(), "kube-apiserver": free_port(),
            "kube-scheduler": free_port(), "kube-controller-manager": free_port(),
        }  # fmt: skip
        self.components: dict[str, Component] = {}
        self.api_url = f"https://127.0.0.1:{self.ports['kube-apiserver']}"
        self.etcd_url = f"http://127.0.0.1:{self.ports['etcd']}"
        authority = certs.Authority(self.folder)
        self.ca = authority.pair
        self.serving = authority.issue(
            "apiserver", "kube-apiserver",
            server_names=("localhost", "kubernetes", "kubernetes.default",
                          "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"),
            server_ips=("127.0.0.1", certs.SERVICE_IP),
        )  # fmt: skip
        self.admin = authority.issue("admin", *certs.ADMIN)
        self.identities = {
            "kube-scheduler": authority.issue("scheduler", *certs.SCHEDULER),
            "kube-controller-manager": authority.issue(
                "controller-manager", *certs.CONTROLLER_MANAGER
            ),
            "kwok": authority.issue("kwok", *certs.NODE_AGENT),
        }
        self.service_account_keys = certs.service_account_keys(self.folder)
        self.api = Client(self.api_url, ca=self.ca, identity=self.admin)

    # -- life cycle ---------------------------------------------------------------------

    def start(self, timeout: float = 120) -> ControlPlane:
        """Start every component, wait until each serves; on failure stop all and raise."""
        try:
            self._start_etcd(timeout)
            self._start_apiserver(timeout)
            for name in ("kube-scheduler", "kube-controller-manager"):
                self._launch(name, self._controller_argv(name))
            self._launch("kwok", self._kwok_argv())
            for name in ("kube-scheduler", "kube-controller-manager"):
                health = Client(f"https://127.0.0.1:{self.ports[name]}")
                wait_until(
                    lambda h=health: h.answers("/healthz"), f"{name} /healthz", timeout,
                    alive=self.check,
                )  # fmt: skip
            # the ServiceAccount controllers are up once `default` has its account
            wait_until(
                lambda: self.api.answers("/api/v1/namespaces/default/serviceaccounts/default"),
                "the default ServiceAccount", timeout, alive=self.check,
            )  # fmt: skip
            self.api.post("/apis/storage.k8s.io/v1/storageclasses", STORAGE_CLASS)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_etcd(self, timeout: float) -> None:
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        self._launch("etcd", [
            str(self.bin_dir / "etcd"), "--name", "kube-up",
            "--data-dir", str(self.folder / "etcd"),
            "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"kube-up={peer}", "--unsafe-no-fsync", "--log-level", "warn",
        ])  # fmt: skip
        etcd = Client(self.etcd_url)
        wait_until(lambda: etcd.answers("/health"), "etcd /health", timeout, alive=self.check)

    def _start_apiserver(self, timeout: float) -> None:
        self._launch("kube-apiserver", self._apiserver_argv())
        wait_until(
            lambda: self.api.answers("/readyz"), "kube-apiserver /readyz", timeout,
            alive=self.check,
        )  # fmt: skip

    def _launch(self, name: str, argv: list[str]) -> None:
        component = Component(name, argv, self.folder / f"{name}.log")
        self.components[name] = component
        component.start()

    def check(self) -> None:
        """Raise :class:`ControlPlaneError` with its log when a component has exited."""
        for component in self.components.values():
            status = component.exited()
            if status is not None:
                raise ControlPlaneError(
                    f"{component.name} exited with status {status}; the end of its log:\n"
                    + component.log_tail()
                )

    def stop(self) -> None:
        """Stop every component (reverse order) and remove the temporary folder."""
        for component in reversed(list(self.components.values())):
            component.stop()
        self.components.clear()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def restart_apiserver(self, timeout: float = 120, *, down: float = 0) -> None:
        """Stop the API server, wait ``down`` seconds, start it again on the same port."""
        self.components.pop("kube-apiserver").stop()
        time.sleep(down)
        self._start_apiserver(timeout)

    # -- command lines --------------------------------------------------------------------

    def _apiserver_argv(self) -> list[str]:
        sa = self.service_account_keys
        return [
            str(self.bin_dir / "kube-apiserver"),
            "--etcd-servers", self.etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(self.ports["kube-apiserver"]),
            "--tls-cert-file", str(self.serving.cert),
            "--tls-private-key-file", str(self.serving.key),
            "--client-ca-file", str(self.ca.cert),
            "--authorization-mode", "RBAC",
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(sa.cert),
            "--service-account-signing-key-file", str(sa.key),
            "--service-cluster-ip-range", SERVICE_RANGE,
            "--allow-privileged=true",
            "--profiling=false",
            "--v", str(self.log_level),
            *self.apiserver_flags,
        ]  # fmt: skip

    def _component_kubeconfig(self, name: str) -> Path:
        path = self.folder / f"{name}.kubeconfig"
        data = kubeconfig(self.api_url, self.ca, self.identities[name], embed=False)
        path.write_text(yaml.safe_dump(data))
        return path

    def _controller_argv(self, name: str) -> list[str]:
        config = str(self._component_kubeconfig(name))
        argv = [
            str(self.bin_dir / name), "--kubeconfig", config,
            "--authentication-kubeconfig", config, "--authorization-kubeconfig", config,
            "--leader-elect=false", "--bind-address", "127.0.0.1",
            "--secure-port", str(self.ports[name]), "--v", str(self.log_level),
        ]  # fmt: skip
        if name == "kube-controller-manager":
            argv += [
                "--controllers", "*",
                "--use-service-account-credentials=true",
                "--service-account-private-key-file", str(self.service_account_keys.key),
                "--root-ca-file", str(self.ca.cert),
                "--cluster-signing-cert-file", str(self.ca.cert),
                "--cluster-signing-key-file", str(self.ca.key),
                "--service-cluster-ip-range", SERVICE_RANGE,
            ]  # fmt: skip
        return argv

    def _kwok_argv(self) -> list[str]:
        return [
            str(self.bin_dir / "kwok"),
            "--kubeconfig", str(self._component_kubeconfig("kwok")),
            "--config", str(KWOK_CONFIG),
            "--manage-all-nodes",
            "--node-ip", NODE_IP,
            "--node-lease-duration-seconds", "40",
            "--cidr", POD_RANGE,
        ]  # fmt: skip

    # -- what runs on it ----------------------------------------------------------------

    def kubeconfig(self) -> dict[str, Any]:
        """The admin's kubeconfig, self-contained (certificates inline)."""
        return kubeconfig(self.api_url, self.ca, self.admin, embed=True)

    def write_kubeconfig(self, path: Path) -> Path:
        """Write the admin kubeconfig to ``path`` at once (readers never see half a file)."""
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(yaml.safe_dump(self.kubeconfig()))
        partial.chmod(0o600)
        partial.replace(path)
        return path

    def register(
        self,
        nodes: Iterable[dict[str, Any]],
        *,
        namespaces: Iterable[str] = (),
        pods: Iterable[dict[str, Any]] = (),
        timeout: float = 120,
    ) -> None:
        """Create Node objects (their status too) and wait until the node agent has them Ready;
        then namespaces and pods."""
        names = []
        for node in nodes:
            names.append(self.api.post("/api/v1/nodes", node)["metadata"]["name"])
        for name in names:
            wait_until(
                lambda n=name: self.node_ready(n), f"node {name} to be Ready", timeout,
                alive=self.check,
            )  # fmt: skip
        for namespace in namespaces:
            with contextlib.suppress(HTTPError):  # 409: it exists (default)
                self.api.post("/api/v1/namespaces", {"metadata": {"name": namespace}})
        for pod in pods:
            namespace = pod["metadata"].get("namespace", "default")
            self.api.post(f"/api/v1/namespaces/{namespace}/pods", pod)

    def create_namespace(self, name: str, timeout: float = 60) -> str:
        """Create namespace ``name`` and wait for its ``default`` ServiceAccount (until it
        exists, ServiceAccount admission refuses the namespace's pods)."""
        self.api.post("/api/v1/namespaces", {"metadata": {"name": name}})
        account = f"/api/v1/namespaces/{name}/serviceaccounts/default"
        wait_until(
            lambda: self.api.answers(account), f"the ServiceAccount of {name}", timeout,
            alive=self.check,
        )  # fmt: skip
        return name

    def node_ready(self, name: str) -> bool:
        """True once the node's Ready condition is True and the lifecycle taints are gone."""
        node = self.api.get(f"/api/v1/nodes/{name}")
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in node.get("status", {}).get("conditions", [])
        )
        tainted = any(t["key"] in LIFECYCLE_TAINTS for t in node["spec"].get("taints", []))
        return ready and not tainted

    def etcd_revision(self) -> int:
        """The current revision of etcd's key space (its v3 JSON gateway)."""
        answer = Client(self.etcd_url).post(
            "/v3/kv/range", {"key": base64.b64encode(b"/").decode()}
        )
        return int(answer["header"]["revision"])

    def compact_etcd(self) -> int:
        """Compact etcd's history up to the current revision; returns that revision."""
        revision = self.etcd_revision()
        Client(self.etcd_url).post(
            "/v3/kv/compaction", {"revision": str(revision), "physical": True}
        )
        return revision
