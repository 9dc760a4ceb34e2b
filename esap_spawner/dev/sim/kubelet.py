"""The simulator's kubelet: runs pods bound to nodes, in *fake* or *process* mode.

For each bound pod it records the kubelet's events (Pulling/Pulled, Created, Started),
runs init containers in order, then sets the pod Running with a podIP and ready container
statuses, each step after a configurable delay (:class:`KubeletDelays`). A pulled image is
recorded in the node's ``status.images``; an image already there is not pulled again
(Pulled "already present on machine") unless ``imagePullPolicy`` is Always.

*fake* mode only writes status. *process* mode runs each init container and the pod's first
container as local processes (``command + args`` after ``$(VAR)`` expansion, env resolved as
Kubernetes does, PATH/LANG/VIRTUAL_ENV from the simulator, HOME the image's home in the
pod's root folder and the working directory, HOSTNAME the pod name, output to a per-pod log
file) on the pod's own loopback address. Volumes are laid out in a root folder per pod and
absolute paths under a mount or the home are translated into it (:mod:`.volumes`,
:mod:`.podroot`); a volume that cannot be mounted leaves the pod Pending with a FailedMount
event, retried every ``delays.mount_retry`` seconds. Nothing else in the pod spec is
rewritten: a server told to listen on 0.0.0.0 (KubeSpawner's default ``ip``) binds every
loopback address, so a second pod on the same port fails. Configure ``c.KubeSpawner.ip =
"$(POD_IP)"`` with a downward-API ``POD_IP`` env var, as on a cluster. A container without
command and args cannot be run locally and is simulated. An exiting process sets its
container terminated with its exit code; ``restartPolicy`` Always/OnFailure restarts it
after ``delays.restart_backoff`` seconds (the terminated state stays visible meanwhile, as
during a CrashLoopBackOff), Never ends the pod Succeeded/Failed.

Deleting a pod: the API server sets ``deletionTimestamp``; the kubelet sends SIGTERM to the
process group, SIGKILL after the grace period, reports the containers terminated (with the
processes' exit codes) and not ready, then deletes the pod with a grace period of 0.
Pods that arrive already Running (cluster fixtures) are adopted as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esap_spawner.dev.sim.clock import now_rfc3339
from esap_spawner.dev.sim.errors import ApiError
from esap_spawner.dev.sim.events import record_event
from esap_spawner.dev.sim.images import pull_image
from esap_spawner.dev.sim.podenv import Lookup, container_env, expand
from esap_spawner.dev.sim.podroot import DEFAULT_HOME, PodRoot, remove_tree
from esap_spawner.dev.sim.podrun import (
    PodRun,
    node_environment,
    ready_conditions,
    running_status,
    stopped,
    waiting_statuses,
)
from esap_spawner.dev.sim.processes import IPAllocator, exit_code, spawn, stop_process
from esap_spawner.dev.sim.store import Change, Store
from esap_spawner.dev.sim.volumes import VolumeOptions, mount_with_retries

__all__ = ["Kubelet", "KubeletDelays"]

log = logging.getLogger("esap_spawner.dev.sim.kubelet")
Obj = dict[str, Any]


@dataclass(frozen=True)
class KubeletDelays:
    """Seconds each kubelet step takes (small defaults suit tests)."""

    pull: float = 0.2
    create: float = 0.05
    start: float = 0.05
    stop: float = 0.05  # fake mode: how long a container takes to stop
    restart_backoff: float = 10.0
    mount_retry: float = 1.0  # process mode: seconds between attempts to mount volumes


class Kubelet:
    """One kubelet for every node of the simulated cluster."""

    def __init__(
        self,
        store: Store,
        *,
        mode: str,
        delays: KubeletDelays,
        workdir: Path,
        ips: IPAllocator,
        home: str = DEFAULT_HOME,
        volume_paths: Mapping[str, str] | None = None,
    ) -> None:
        if mode not in ("fake", "process"):
            raise ValueError(f"kubelet mode must be 'fake' or 'process', not {mode!r}")
        self.store = store
        self.mode = mode
        self.delays = delays
        self.workdir = workdir
        self.ips = ips
        self.home = home
        self.volumes = VolumeOptions(workdir / "pvcs", dict(volume_paths or {}))
        self.runs: dict[str, PodRun] = {}
        self._logs: dict[tuple[str, str], Path] = {}
        self._shutting_down = False
        store.listeners.append(self._on_change)

    # -- following the store ---------------------------------------------------------------

    def start_existing(self) -> None:
        for pod in self.store.objects("pods"):
            self._consider(pod)

    def _on_change(self, change: Change) -> None:
        if change.resource == "persistentvolumeclaims" and change.type == "DELETED":
            self._release_claim(change.namespace, change.entry.obj["metadata"]["name"])
        if change.resource != "pods":
            return
        pod = change.entry.obj
        run = self.runs.get(pod["metadata"]["uid"])
        if change.type == "DELETED":
            if run is not None:
                run.gone = True
                run.deleting.set()
            return
        if run is not None:
            if "deletionTimestamp" in pod["metadata"]:
                run.deleting.set()
            return
        self._consider(pod)

    def _consider(self, pod: Obj) -> None:
        meta = pod["metadata"]
        if not pod.get("spec", {}).get("nodeName") or meta["uid"] in self.runs:
            return
        status = pod.get("status") or {}
        settled = status.get("phase") in ("Running", "Succeeded", "Failed") and status.get("podIP")
        if settled and "deletionTimestamp" not in meta:
            return  # adopted as it is; a run starts only to delete it (cheap at 100k pods)
        run = PodRun(
            meta["namespace"],
            meta["name"],
            meta["uid"],
            self.workdir / "pods" / meta["namespace"] / f"{meta['name']}-{meta['uid'][:8]}",
        )
        self.runs[run.uid] = run
        if "deletionTimestamp" in meta:
            run.deleting.set()
        run.task = asyncio.ensure_future(self._lifecycle(run))

    def log_path(self, namespace: str, name: str) -> Path | None:
        """The log file of a pod's first container (process mode), if it ran."""
        return self._logs.get((namespace, name))

    # -- status helpers --------------------------------------------------------------------

    def _pod(self, run: PodRun) -> Obj | None:
        pod = self.store.find("pods", run.namespace, run.name)
        if pod is None or pod["metadata"]["uid"] != run.uid:
            return None
        return pod

    def _status(self, run: PodRun, fn: Any) -> Obj | None:
        if run.gone or self._pod(run) is None:
            return None
        try:
            return self.store.modify("pods", run.namespace, run.name, lambda p: fn(p["status"]))
        except ApiError:
            return None

    def _event(
        self,
        run: PodRun,
        reason: str,
        message: str,
        type_: str = "Normal",
        *,
        container: Obj | None = None,
    ) -> None:
        pod = self._pod(run)
        if pod is None:
            return
        field_path = None
        if container is not None:
            inits = {c["name"] for c in pod["spec"].get("initContainers") or []}
            kind = "initContainers" if container["name"] in inits else "containers"
            field_path = f"spec.{kind}{{{container['name']}}}"
        record_event(
            self.store,
            pod,
            reason,
            message,
            type_=type_,
            host=pod["spec"].get("nodeName"),
            field_path=field_path,
        )

    # -- the pod's life --------------------------------------------------------------------

    async def _lifecycle(self, run: PodRun) -> None:
        starter = asyncio.ensure_future(self._run_pod(run))
        deleting = asyncio.ensure_future(run.deleting.wait())
        try:
            await asyncio.wait({starter, deleting}, return_when=asyncio.FIRST_COMPLETED)
            if not deleting.done():
                await deleting
        finally:
            starter.cancel()
            deleting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starter
            await self._terminate(run)
            self.runs.pop(run.uid, None)
            if run.root is not None:
                run.root.remove()
                for namespace, claim in run.root.claims:
                    if self.store.find("persistentvolumeclaims", namespace, claim) is None:
                        self._release_claim(namespace, claim)

    def _release_claim(self, namespace: str, claim: str) -> None:
        """A deleted claim's folder goes once no pod mounts it (reclaim policy Delete)."""
        if not any(r.root and (namespace, claim) in r.root.claims for r in self.runs.values()):
            remove_tree(self.volumes.pvc_root / namespace / claim)

    async def _terminate(self, run: PodRun) -> None:
        pod = self._pod(run)
        grace = float((pod or {}).get("metadata", {}).get("deletionGracePeriodSeconds", 0) or 0)
        if pod is not None and not run.gone:
            for container in pod["spec"]["containers"]:
                self._event(
                    run, "Killing", f"Stopping container {container['name']}", container=container
                )
        codes: list[int] = []
        if run.processes:
            grace = 2.0 if self._shutting_down else 0.0 if run.gone else grace
            codes = await asyncio.gather(*(stop_process(p, grace) for p in run.processes))
        elif not run.gone:
            await asyncio.sleep(min(self.delays.stop, grace))
        if not run.gone and self._pod(run) is not None:
            # as the kubelet: the containers' end is reported, then the pod deleted for good
            self._status(run, lambda status: stopped(status, codes))
            self.store.delete("pods", run.namespace, run.name, grace=0)

    async def _run_pod(self, run: PodRun) -> None:
        pod = self._pod(run)
        if pod is None:
            return
        if pod.get("status", {}).get("phase") in ("Running", "Succeeded", "Failed"):
            if not pod["status"].get("podIP"):  # adopted as it is, given an address
                address = self.ips.allocate()

                def adopt(status: Obj) -> None:
                    status.update(podIP=address, podIPs=[{"ip": address}])
                    status.update(hostIP=self.ips.host_ip, hostIPs=[{"ip": self.ips.host_ip}])

                self._status(run, adopt)
            return
        node = pod["spec"]["nodeName"]
        ip = self.ips.allocate()
        started = now_rfc3339()

        def sandbox(status: Obj) -> None:
            status.update(hostIP=self.ips.host_ip, hostIPs=[{"ip": self.ips.host_ip}])
            status.update(podIP=ip, podIPs=[{"ip": ip}], startTime=started)
            status["conditions"] = ready_conditions(False, initialized=False)

        self._status(run, sandbox)
        if self.mode == "process" and not await self._mount(run):
            return
        if not await self._run_init_containers(run, node):
            return
        pod = self._pod(run)
        if pod is None:
            return
        containers = pod["spec"]["containers"]
        for container in containers:
            await self._pull(run, node, container)
        processes: dict[str, asyncio.subprocess.Process] = {}
        for n, container in enumerate(containers):
            await asyncio.sleep(self.delays.create)
            self._event(
                run, "Created", f"Created container {container['name']}", container=container
            )
            await asyncio.sleep(self.delays.start)
            if n == 0 and self._runnable(container):
                proc = await self._start_process(run, container)
                if proc is None:
                    return
                processes[container["name"]] = proc
            self._event(
                run, "Started", f"Started container {container['name']}", container=container
            )
        statuses = [running_status(c, 0) for c in containers]

        def running(status: Obj) -> None:
            status["phase"] = "Running"
            status["conditions"] = ready_conditions(True)
            status["containerStatuses"] = statuses

        self._status(run, running)
        if processes:
            proc = next(iter(processes.values()))
            await self._supervise(run, containers[0], proc)

    async def _mount(self, run: PodRun) -> bool:
        """Lay out the pod's root and volumes; FailedMount events and retries until it works."""

        def failed(message: str) -> None:
            self._event(run, "FailedMount", message, "Warning")
            spec = (self._pod(run) or {}).get("spec") or {}
            inits = waiting_statuses(spec.get("initContainers") or [], "PodInitializing")
            mains = waiting_statuses(spec.get("containers") or [], "ContainerCreating")

            def pending(status: Obj) -> None:
                status.update(containerStatuses=mains, conditions=ready_conditions(False, False))
                if inits:
                    status["initContainerStatuses"] = inits

            self._status(run, pending)

        run.root = PodRoot(run.folder.resolve() / "root", self.home)
        return await mount_with_retries(
            lambda: self._pod(run),
            run.root,
            lookup=self._lookup(run),
            options=self.volumes,
            failed=failed,
            deleting=run.deleting,
            retry=self.delays.mount_retry,
        )

    def _lookup(self, run: PodRun) -> Lookup:
        def lookup(resource: str, name: str) -> Obj | None:
            return self.store.find(resource, run.namespace, name)

        return lookup

    def _runnable(self, container: Obj) -> bool:
        return self.mode == "process" and bool(container.get("command") or container.get("args"))

    async def _pull(self, run: PodRun, node_name: str, container: Obj) -> None:
        def event(reason: str, message: str) -> None:
            self._event(run, reason, message, container=container)

        await pull_image(self.store, node_name, container, delay=self.delays.pull, event=event)

    async def _run_init_containers(self, run: PodRun, node: str) -> bool:
        pod = self._pod(run)
        if pod is None:
            return False
        inits = pod["spec"].get("initContainers") or []
        done: list[Obj] = []
        for container in inits:
            await self._pull(run, node, container)
            await asyncio.sleep(self.delays.create)
            self._event(
                run, "Created", f"Created container {container['name']}", container=container
            )
            begin = now_rfc3339()
            code = 0
            if self._runnable(container):
                proc = await self._start_process(run, container, init=True)
                if proc is None:
                    return False
                self._event(
                    run, "Started", f"Started container {container['name']}", container=container
                )
                code = exit_code(await proc.wait())
                run.processes.remove(proc)
            else:
                self._event(
                    run, "Started", f"Started container {container['name']}", container=container
                )
                await asyncio.sleep(self.delays.start)
            state = {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": begin,
                "finishedAt": now_rfc3339(),
            }
            entry = running_status(container, 0)
            entry.update(ready=code == 0, started=False, state={"terminated": state})
            done.append(entry)
            waiting = waiting_statuses(inits[len(done) :], "PodInitializing")
            failed = code != 0
            never = pod["spec"].get("restartPolicy") == "Never"

            def init_status(
                status: Obj, statuses: list[Obj] = done + waiting, stop: bool = failed and never
            ) -> None:
                status["initContainerStatuses"] = statuses
                if stop:
                    status["phase"] = "Failed"

            self._status(run, init_status)
            if failed:
                self._event(
                    run,
                    "Failed",
                    f"Error: init container {container['name']} exited with code {code}",
                    "Warning",
                    container=container,
                )
                return False
        return True

    async def _start_process(
        self, run: PodRun, container: Obj, *, init: bool = False
    ) -> asyncio.subprocess.Process | None:
        pod = self._pod(run)
        if pod is None:
            return None
        if run.root is None:  # adopted pods are never started; keep a root anyway
            run.root = PodRoot(run.folder.resolve() / "root", self.home)
            run.root.root.mkdir(parents=True, exist_ok=True)
            run.root.make_home()
        root = run.root
        node = node_environment()
        base = dict(node, HOME=root.home, HOSTNAME=run.name)
        try:
            env = container_env(pod, container, base=base, lookup=self._lookup(run))
        except ValueError as exc:
            self._fail_container(run, container, "CreateContainerConfigError", str(exc))
            return None
        argv = [expand(str(a), env) for a in (container.get("command") or [])]
        argv += [expand(str(a), env) for a in (container.get("args") or [])]
        argv = root.argv(argv)
        env = root.environment(env, node)
        cwd = root.working_dir(container.get("workingDir"))
        log_path = run.log_path(container["name"])
        try:
            proc = await spawn(argv, env, cwd, log_path)
        except OSError as exc:
            self._fail_container(run, container, "StartError", f"failed to start {argv!r}: {exc}")
            return None
        if not init:
            self._logs[(run.namespace, run.name)] = log_path
        run.processes.append(proc)
        log.info("pod %s/%s: started %r as pid %s", run.namespace, run.name, argv, proc.pid)
        return proc

    def _fail_container(self, run: PodRun, container: Obj, reason: str, message: str) -> None:
        self._event(run, "Failed", f"Error: {message}", "Warning", container=container)

        def waiting(status: Obj) -> None:
            entry = running_status(container, 0)
            entry.update(ready=False, started=False)
            entry["state"] = {"waiting": {"reason": reason, "message": message}}
            status["containerStatuses"] = [entry]

        self._status(run, waiting)

    async def _supervise(
        self, run: PodRun, container: Obj, proc: asyncio.subprocess.Process
    ) -> None:
        restarts = 0
        while True:
            started = now_rfc3339()
            code = exit_code(await proc.wait())
            run.processes.remove(proc)
            terminated = {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": started,
                    "finishedAt": now_rfc3339(),
                    "containerID": f"sim://{secrets.token_hex(16)}",
                }
            }
            pod = self._pod(run)
            if pod is None or run.deleting.is_set():
                return
            policy = pod["spec"].get("restartPolicy", "Always")
            restart = policy == "Always" or (policy == "OnFailure" and code != 0)

            def stopped(
                status: Obj, state: Obj = terminated, final: bool = not restart, rc: int = code
            ) -> None:
                for entry in status.get("containerStatuses") or []:
                    if entry["name"] == container["name"]:
                        entry.update(ready=False, started=False, state=state)
                status["conditions"] = ready_conditions(False)
                if final:
                    status["phase"] = "Succeeded" if rc == 0 else "Failed"

            self._status(run, stopped)
            if not restart:
                return
            await asyncio.sleep(self.delays.restart_backoff)
            new = await self._start_process(run, container)
            if new is None:
                return
            proc = new
            restarts += 1
            self._event(
                run, "Started", f"Started container {container['name']}", container=container
            )
            entry = running_status(container, restarts, terminated)

            def again(status: Obj, new_entry: Obj = entry) -> None:
                status["containerStatuses"] = [
                    new_entry if e["name"] == container["name"] else e
                    for e in status.get("containerStatuses") or []
                ]
                status["conditions"] = ready_conditions(True)

            self._status(run, again)

    async def shutdown(self) -> None:
        """Stop every process of every pod (the simulator is stopping)."""
        self._shutting_down = True
        runs = list(self.runs.values())
        for run in runs:
            run.gone = True
            run.deleting.set()
        tasks = [r.task for r in runs if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        for run in runs:
            for proc in list(run.processes):
                await stop_process(proc, 0)
            if run.root is not None:
                run.root.remove()
