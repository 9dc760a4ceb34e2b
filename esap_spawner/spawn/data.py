"""The data side of ESAPSpawner: staging, the datalinks ConfigMap, mounts, progress, state.

A mixin over KubeSpawner, so that ``spawner.py`` stays about profiles and admission. It
wires :mod:`esap_spawner.data.staging` (the orchestration) and
:mod:`esap_spawner.spawn.objects` (the
pure pod parts) into KubeSpawner's seams:

- the site's catalogue and the database come from the hub's context
  (:mod:`esap_spawner.spawn.context`); the catalogue's ``local_rses`` are the storage pods
  may mount;
- ``_prepare_data(options)``, called by ``ESAPSpawner.load_user_options`` after admission:
  resolves and stages the requested datasets (one bulk resolve; rules created or reused;
  polled until OK or the deadline), builds the plan and (re)creates the pod's ConfigMap
  (``<pod>-datalinks``: the plan and the datalinks program) before the pod exists, which
  owns it once it exists (:mod:`esap_spawner.spawn.pod_owned`). Every failure is a
  :class:`~esap_spawner.data.staging.StagingError` with an HTTP status and the reason in
  words, which the spawner turns into a refusal;
- ``add_data_to_pod(pod)``, called by ``get_pod_manifest``: storage volumes mounted
  read-only, the datasets folder, the init containers, ``ESAP_DATASETS``;
- ``get_env``: a workflow opens at ``/lab/tree/<folder>/<filepath>``
  (``JUPYTERHUB_DEFAULT_URL``);
- ``progress``: the staging messages first (0-30%), then KubeSpawner's pod events;
- ``get_state``/``load_state``: staging requests (rule ids, times, outcomes) are kept, so a
  spawn after a hub restart reuses its rules (and the database's in-flight rows, and
  Rucio's own rule for the same DID, RSE and account, back that up). JupyterHub saves a
  spawner's state when a start ends or a server stops, not in the middle of a start;
- the staging rules' care (renewed at spawn and while the server runs, released at
  ``stop``, removed only when that is safe) is :mod:`esap_spawner.spawn.staging_rules`, the
  base of this mixin.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from kubernetes_asyncio.client import V1Container, V1EnvVar, V1Volume, V1VolumeMount
from kubespawner.utils import get_k8s_model

from esap_spawner.data import staging
from esap_spawner.data.catalogue.base import (
    CatalogueError,
    DidFiles,
    StagingStatus,
)
from esap_spawner.data.staging import StagingError
from esap_spawner.data.staging_limits import StagingLimits
from esap_spawner.site.model import DEFAULT_STAGING_TIMEOUT, LocalRSE, Site
from esap_spawner.site.quantity import format_bytes
from esap_spawner.spawn import objects
from esap_spawner.spawn.options import UserOptions
from esap_spawner.spawn.plan import DataPlanError, dataset_plan, narrow_to_datasets
from esap_spawner.spawn.staging_rules import StagingRules


def staging_settings(site: Site, *, poll_min: float, poll_max: float) -> staging.StagingSettings:
    """Destination, lifetime and limits from the site file's ``data.rucio.staging``."""
    rucio = site.data.rucio
    if site.data.catalogue != "rucio" or rucio is None:
        return staging.StagingSettings(destination_rse=None, lifetime=0, poll_min=poll_min)
    return staging.StagingSettings(
        destination_rse=rucio.staging.destination_rse,
        lifetime=rucio.staging.rule_lifetime,
        poll_min=poll_min,
        poll_max=max(poll_min, poll_max),
        limits=StagingLimits(
            max_files=rucio.staging.max_files,
            max_bytes=rucio.staging.max_bytes,
            max_rules_per_user=rucio.staging.max_rules_per_user,
        ),
    )


def site_staging_timeout(site: Site) -> float:
    rucio = site.data.rucio
    return float(rucio.staging.timeout) if rucio is not None else float(DEFAULT_STAGING_TIMEOUT)


def _field(obj: Any, attribute: str, key: str) -> Any:
    """A field of a Kubernetes object given as a ``V1*`` model or as a plain dict."""
    if obj is None:
        return None
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, attribute, None)


class DataSpawnerMixin(StagingRules):
    """Datasets and workflow for a KubeSpawner subclass that is a
    :class:`~esap_spawner.spawn.host.SpawnerHost`
    (ESAPSpawner)."""

    _esap_plan: dict[str, Any] | None = None
    _esap_storage: tuple[LocalRSE, ...] = ()
    _esap_messages: list[dict[str, Any]] | None = None
    _esap_data_ready: asyncio.Event | None = None

    def _progress_message(self, message: str, fraction: float) -> None:
        if self._esap_messages is None:
            self._esap_messages = []
        progress = int(30 * max(0.0, min(1.0, fraction)))
        self._esap_messages.append({"progress": progress, "message": message})

    async def _prepare_data(self, options: UserOptions) -> None:
        """Stage and lay out the requested datasets; ship the plan in a ConfigMap."""
        self._esap_plan = None
        self._esap_storage = ()
        if self._esap_data_ready is None or self._esap_data_ready.is_set():
            # not started through start() (tests, tools): a fresh page of messages
            self._esap_data_ready = asyncio.Event()
            self._esap_messages = []
        try:
            resolved = await self._stage(options) if options.datasets else None
            if resolved is not None:
                self._esap_plan = self._plan(resolved)
            if options.workflow:
                self._say_where_the_workflow_goes(options.workflow)
            if self._esap_plan is not None or options.workflow:
                await self._create_config_map(self._esap_plan or {"version": 1, "datasets": {}})
        finally:
            self._esap_data_ready.set()

    async def _stage(self, options: UserOptions) -> dict[str, DidFiles] | None:
        catalogue = await self._catalogue_for_user()
        if catalogue is None:
            self.log.warning(
                "esap: %s asked for datasets %s, but the site has no data catalogue",
                self.user.name,
                ", ".join(options.datasets),
            )
            return None
        attempt = self._attempt()
        saved = staging.load_staging_state(self._esap_saved_staging)
        stager = staging.Stager(
            catalogue=catalogue,
            user=self.user.name,
            settings=staging_settings(
                self.site, poll_min=self.staging_poll_interval, poll_max=self.staging_poll_max
            ),
            deadline=staging.staging_deadline(
                now=time.monotonic(),
                site_timeout=site_staging_timeout(self.site),
                start_timeout=float(self.start_timeout),
                started=attempt.requested,
                wall_now=time.time(),
                pod_margin=self.staging_pod_margin,
            ),
            db=await self.context.database(),
            metrics=self.context.metrics,
            saved=saved,
            on_message=self._progress_message,
        )
        self._esap_stager = stager
        started = time.time()
        try:
            resolved = await stager.run(list(options.datasets))
        except CatalogueError as e:
            raise StagingError(500, f"Staging failed: {e}", StagingStatus.failure) from None
        finally:
            self._esap_saved_staging = stager.state()
            if stager.staged:
                attempt.staging_started, attempt.staging_finished = started, time.time()
        await self._rules_last(catalogue, list(resolved))
        files = sum(len(f.files) for f in resolved.values())
        size = sum(f.bytes for f in resolved.values())
        self._progress_message(
            f"Datasets ready: {len(resolved)} datasets, {files} files, {format_bytes(size)} "
            f"under {self.site.data.mount_root}",
            1.0,
        )
        return resolved

    def _plan(self, resolved: dict[str, DidFiles]) -> dict[str, Any]:
        catalogue = self.context.catalogue
        storage = catalogue.local_rses if catalogue is not None else ()
        try:
            plan = dataset_plan(resolved, storage, self.site.data.mount_root)
            if self.site.data.catalogue == "static":  # only the datasets asked for
                plan = narrow_to_datasets(plan, storage, [s.name for s in storage])
        except ValueError as e:  # DataPlanError, PathOutsideMount
            raise StagingError(
                500, f"The datasets cannot be mounted: {e}", StagingStatus.failure
            ) from None
        self._esap_storage = storage
        return plan

    async def _create_config_map(self, plan: dict[str, Any]) -> None:
        """Replace this pod's ConfigMap (plan + program); the pod owns it once created."""
        try:
            manifest = objects.datalinks_config_map(
                self.pod_name, plan, labels=self._build_common_labels({})
            )
        except DataPlanError as e:
            raise StagingError(413, str(e), StagingStatus.failure) from None
        await self.create_before_pod(manifest)

    def _pod_data(self, pod: Any) -> objects.PodData:
        options = getattr(self, "esap_options", None)
        container = pod.spec.containers[0]
        mounts = [
            {
                "name": _field(m, "name", "name"),
                "mountPath": _field(m, "mount_path", "mountPath"),
                "subPath": _field(m, "sub_path", "subPath"),
            }
            for m in container.volume_mounts or []
        ]
        return objects.pod_data(
            pod_name=self.pod_name,
            image=container.image,
            uid=_field(container.security_context, "run_as_user", "runAsUser")
            or _field(pod.spec.security_context, "run_as_user", "runAsUser"),
            plan=self._esap_plan,
            storage=self._esap_storage,
            workflow=options.workflow if options else None,
            ref=options.ref if options else None,
            home=self.home_dir,
            home_volume=objects.find_home_volume(mounts, self.home_dir),
            reserved=self.site.data.mount_paths,
            image_pull_policy=container.image_pull_policy,
            checkout_env=self.checkout_env,
        )

    def get_env(self) -> dict[str, str]:
        env: dict[str, str] = super().get_env()
        options = getattr(self, "esap_options", None)
        if options is not None and options.workflow:
            folder = self._checkout_folder(options.workflow)
            env["JUPYTERHUB_DEFAULT_URL"] = objects.workflow_url(folder, options.filepath)
        return env

    def _checkout_folder(self, workflow: str) -> str:
        return objects.checkout_folder(
            workflow, home=self.home_dir, reserved=self.site.data.mount_paths
        )

    def _say_where_the_workflow_goes(self, workflow: str) -> None:
        """A progress message when the workflow cannot have its own name as its folder."""
        folder, name = self._checkout_folder(workflow), objects.workflow_folder(workflow)
        if folder != name:
            home = self.home_dir.rstrip("/")
            self._progress_message(
                f"The workflow is checked out into {home}/{folder}: {home}/{name} is where "
                "this hub mounts data",
                1.0,
            )

    async def progress(self) -> Any:
        """Staging messages first (0-30%), then KubeSpawner's pod events."""
        sent = 0
        while True:
            messages = self._esap_messages or []
            for message in messages[sent:]:
                yield message
            sent = len(messages)
            ready = self._esap_data_ready
            future = getattr(self, "_start_future", None)
            over = (ready is not None and ready.is_set()) or (future is not None and future.done())
            if over and sent >= len(self._esap_messages or []):
                break
            if not over:
                await asyncio.sleep(0.25)
        async for event in super().progress():
            yield event

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        if self._esap_stager is not None:
            self._esap_saved_staging = self._esap_stager.state()
        if self._esap_saved_staging:
            state["esap_staging"] = self._esap_saved_staging
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        saved = state.get("esap_staging")
        if isinstance(saved, dict):
            self._esap_saved_staging = saved

    def start_data(self) -> None:
        """A new start: a fresh page of progress messages."""
        self._esap_messages = []
        self._esap_data_ready = asyncio.Event()

    def add_data_to_pod(self, pod: Any) -> None:
        """Add the datasets' and the workflow's volumes, mounts, env and init containers."""
        options = getattr(self, "esap_options", None)
        if self._esap_plan is None and not (options and options.workflow):
            return  # neither: nothing to add (objects.pod_data), so nothing to work out
        data = self._pod_data(pod)
        if not data.init_containers:
            return
        pod.spec.volumes = [
            *(pod.spec.volumes or []),
            *(get_k8s_model(V1Volume, v) for v in data.volumes),
        ]
        notebook = pod.spec.containers[0]
        notebook.volume_mounts = [
            *(notebook.volume_mounts or []),
            *(get_k8s_model(V1VolumeMount, m) for m in data.mounts),
        ]
        notebook.env = [
            *(notebook.env or []),
            *(V1EnvVar(name=k, value=v) for k, v in data.env.items()),
        ]
        pod.spec.init_containers = [
            *(pod.spec.init_containers or []),
            *(get_k8s_model(V1Container, c) for c in data.init_containers),
        ]
